"""Misbehaving SSH endpoints for tests/lab/lab sim: --hung ADDR accepts on ADDR:22 and never
answers; --slow ADDR waits SLOW_SECONDS (default 3) and then relays to the real sshd on
ADDR:2222. Prints "listening" once every socket is bound."""

import argparse
import asyncio
import os

SLOW = float(os.environ.get("SLOW_SECONDS", "3"))


async def hung(reader, writer):
    await reader.read()  # until the client gives up
    writer.close()


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def slow(addr):
    async def handle(reader, writer):
        await asyncio.sleep(SLOW)
        up_reader, up_writer = await asyncio.open_connection(addr, 2222)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    return handle


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hung", action="append", default=[])
    p.add_argument("--slow", action="append", default=[])
    a = p.parse_args()
    servers = [await asyncio.start_server(hung, h, 22) for h in a.hung]
    servers += [await asyncio.start_server(slow(s), s, 22) for s in a.slow]
    print("listening", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


asyncio.run(main())
