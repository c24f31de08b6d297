"""The measuring half of benches/scale.sh (which builds kbs and explains the figures)."""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "tests/lab/lab"
KBS = os.environ["KBS"]
ADDED = 10  # workers joined by the add-node run
CGROUP = Path("/sys/fs/cgroup")


def lab(*args):
    subprocess.run([LAB, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def lab_out(*args):
    return subprocess.run([LAB, *args], check=True, capture_output=True, text=True).stdout.strip()


def container_cpu_ns(name):
    """CPU time a container used so far (cgroup v1 cpuacct or v2 cpu.stat), in ns."""
    cid = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], check=True,
                         capture_output=True, text=True).stdout.strip()
    for p in (CGROUP / "cpuacct/docker" / cid / "cpuacct.usage",
              CGROUP / "cpu,cpuacct/docker" / cid / "cpuacct.usage"):
        if p.exists():
            return int(p.read_text())
    for p in (CGROUP / "system.slice" / f"docker-{cid}.scope/cpu.stat", CGROUP / "docker" / cid / "cpu.stat"):
        if p.exists():
            usec = re.search(r"^usage_usec (\d+)", p.read_text(), re.M)
            return int(usec.group(1)) * 1000
    raise SystemExit(f"scale: no cgroup CPU counter for {name}")


def hosts_cpu_ns(names):
    return sum(container_cpu_ns(n) for n in names)


IDLE_SECONDS = 5


def run_resumed(label, size, args, nodes, workers):
    """`run`, and once more if it failed (kbs resumes where it stopped): on a loaded lab the API
    stand-in can fall behind hundreds of requests at once. Both runs are counted."""
    try:
        return run(label, size, args, nodes, workers)
    except SystemExit:
        first = dict(LAST_FAILED)
        again = run(label + " (resumed)", size, args, nodes, workers)
        for k in ("wall", "kbs_cpu", "hosts_cpu", "workers_cpu", "cmds"):
            again[k] += first[k]
        again["rss_mb"] = max(again["rss_mb"], first["rss_mb"])
        return again


LAST_FAILED = {}


def run(label, size, args, nodes, workers):
    """Runs kbs once; its wall time, own CPU and peak RSS (wait4), the hosts' CPU, SSH commands.

    The hosts' CPU is what they used during the run minus what they use idle (systemd, etcd,
    the stand-ins' polling), measured over IDLE_SECONDS just before: the work kbs asked for.
    It is also split: `workers` (the worker hosts the run is about) apart from the others, which
    carry the control planes' share (the API server and kubectl stand-ins, etcd)."""
    idle_from = [hosts_cpu_ns(g) for g in (nodes, workers)]
    time.sleep(IDLE_SECONDS)
    before = [hosts_cpu_ns(g) for g in (nodes, workers)]
    idle_rate = [(b - a) / IDLE_SECONDS for a, b in zip(idle_from, before)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        p = subprocess.Popen([KBS, *args, "-v", "--log-format", "plain"], stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    hosts_s, workers_s = (max(0.0, (hosts_cpu_ns(g) - b - rate * wall) / 1e9)
                          for g, b, rate in zip((nodes, workers), before, idle_rate))
    # status exits 1 when degraded (a bench cluster may be); anything else must succeed.
    m = re.search(r"SSH: (\d+) commands? on (\d+) hosts? \(most on one host: (\d+)", stderr)
    cmds, touched, most = (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, 0, 0)
    result = dict(label=label, size=size, wall=wall, kbs_cpu=ru.ru_utime + ru.ru_stime,
                  rss_mb=ru.ru_maxrss / 1024, hosts_cpu=hosts_s, workers_cpu=workers_s,
                  workers=len(workers), cmds=cmds, touched=touched, most=most)
    if p.returncode != 0 and not (label == "status" and p.returncode == 1):
        errors = "\n".join(l for l in stderr.splitlines() if "×" in l or "│" in l)
        sys.stderr.write(f"scale: kbs {' '.join(args)} failed:\n{errors}\n")
        LAST_FAILED.clear()
        LAST_FAILED.update(result)
        raise SystemExit(1)
    return result


def trimmed(inventory, n, out):
    """The lab inventory with only its first n hosts (same settings, same cluster)."""
    text = Path(inventory).read_text()
    head, *hosts = text.split("\n[[host]]\n")
    out.write_text(head + "".join("\n[[host]]\n" + h for h in hosts[:n]))
    return out


def main(sizes):
    rows = []
    state = Path(tempfile.mkdtemp(prefix="kbs-scale-"))
    try:
        for n in sizes:
            lab("down")
            lab("up", str(n + ADDED))
            full = lab_out("inventory")
            subprocess.run([KBS, "bundle", full], check=True, stdout=subprocess.DEVNULL)
            part = trimmed(full, n, Path(full).with_name(f"inventory-{n}.toml"))
            suffix = os.environ.get("KBS_LAB_ID", "0").lstrip("0")
            nodes = [f"kbs-lab{suffix}-node-{i}" for i in range(1, n + ADDED + 1)]
            sd = state / str(n)
            common = ["--state-dir", str(sd)]
            # The lab's first three hosts are its etcd members and control planes, the rest workers.
            workers = nodes[3:n]
            rows.append(run_resumed("apply from bare", n, ["apply", str(part), *common], nodes, workers))
            rows.append(run("no-op apply", n, ["apply", str(part), *common], nodes, workers))
            rows.append(run("status", n, ["status", str(part), *common], nodes, workers))
            new = ",".join(f"node-{i}" for i in range(n + 1, n + ADDED + 1))
            rows.append(run_resumed(f"add-node of {ADDED}", n, ["add-node", full, *common, "--host", new], nodes,
                                    nodes[n:]))
            report(rows)
    finally:
        lab("down")
    report(rows, final=True)


def report(rows, final=False):
    out = sys.stdout
    out.write("\n" if final else "")
    hdr = f"{'run':<16} {'hosts':>5} {'wall s':>7} {'kbs CPU s':>9} {'kbs RSS MB':>10} {'hosts CPU s':>11} {'SSH cmds/host':>13} {'kbs ms/host':>11} {'host CPU ms/host':>16} {'worker ms/host':>14}"
    out.write(hdr + "\n")
    for r in rows:
        per = max(r["touched"], 1)
        worker = 1000 * r["workers_cpu"] / r["workers"] if r["workers"] else float("nan")
        out.write(f"{r['label']:<16} {r['size']:>5} {r['wall']:>7.1f} {r['kbs_cpu']:>9.2f} {r['rss_mb']:>10.0f} "
                  f"{r['hosts_cpu']:>11.2f} {r['cmds'] / per:>9.1f} ({r['most']:>2}) "
                  f"{1000 * r['kbs_cpu'] / per:>11.1f} {1000 * r['hosts_cpu'] / per:>16.1f} {worker:>14.1f}\n")
    if not final:
        out.flush()
        return
    out.write("\nmarginal cost per added host, between sizes:\n")
    for label in dict.fromkeys(r["label"] for r in rows):
        series = [r for r in rows if r["label"] == label]
        for a, b in zip(series, series[1:]):
            d = b["size"] - a["size"]
            out.write(f"  {label:<16} {a['size']:>3} -> {b['size']:<3} wall {1000 * (b['wall'] - a['wall']) / d:7.0f} ms  "
                      f"kbs CPU {1000 * (b['kbs_cpu'] - a['kbs_cpu']) / d:6.1f} ms  "
                      f"hosts CPU {1000 * (b['hosts_cpu'] - a['hosts_cpu']) / d:7.1f} ms\n")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]])
