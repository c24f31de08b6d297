# kbs fsync probe: writes and syncs small blocks where an etcd data dir will live, prints one
# latency in microseconds per write, and removes its file. The first argument is the directory;
# the nearest existing ancestor is used so that nothing is created.
d="$1"
# A member already lives there: measuring now would only slow the running etcd down.
[ -d "$d/member" ] && exit 0
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
f="$d/.kbs-fsync-probe.$$"
trap 'rm -f "$f"' EXIT
# Process start-up cost, measured the same way, is subtracted by the caller.
i=0
while [ $i -lt 20 ]; do
  s=$(date +%s%N); dd if=/dev/zero of=/dev/null bs=2300 count=1 status=none; e=$(date +%s%N)
  echo "base $(( (e - s) / 1000 ))"; i=$((i + 1))
done
i=0
while [ $i -lt 200 ]; do
  s=$(date +%s%N); dd if=/dev/zero of="$f" bs=2300 count=1 oflag=dsync conv=notrunc status=none; e=$(date +%s%N)
  echo "sync $(( (e - s) / 1000 ))"; i=$((i + 1))
done
