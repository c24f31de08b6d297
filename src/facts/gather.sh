# kbs facts: read-only, one key=value per line. Runs under sh on any Linux host.
. /etc/os-release 2>/dev/null
echo "os_id=${ID:-unknown}"
echo "os_version=${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo "cgroup=2"; else echo "cgroup=1"; fi
if [ -d /run/systemd/system ]; then echo "systemd=yes"; else echo "systemd=no"; fi
awk '/^MemTotal:/ {print "mem_kb=" $2} /^SwapTotal:/ {print "swap_kb=" $2}' /proc/meminfo
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
ss -Hltnp 2>/dev/null | awk '{n = split($4, a, ":"); print "listen=" a[n] " " $6}'
ip -o addr show 2>/dev/null | awk '{print "addr=" $2 " " $4}'
for b in kubeadm kubelet etcd containerd haproxy keepalived; do
  p=$(command -v "$b" 2>/dev/null) && echo "binary=$b $p"
done
echo "clock_ns=$(date +%s%N)"
