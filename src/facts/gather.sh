# kbs facts: read-only, one key=value per line. Runs under sh on any Linux host. kbs sets
# $kubelet_conf, $serving_cert, $sums (its file-sums), $kubeadm_sum, $kubeadm_is and $cas (the CA
# files that tell a host's cluster) first, and passes the etcd data dirs meant for this host.
# The clock is read first and last: their midpoint is compared with the middle of the round trip,
# so the time the script itself takes does not count as skew.
echo "clock_start_ns=$(date +%s%N)"
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
# What kbs set up here already, so that a run that changes nothing asks no more: etcd members
# (no fsync probe next to a running member), kubeadm's kubelet.conf with the kubeadm on disk,
# the kubelet's serving certificate.
for d in "$@"; do [ -d "$d/member" ] && echo "etcd_member=$d"; done
# kubeadm's version without running it where it is the bundle's kubeadm ($kubeadm_sum, of version
# $kubeadm_is) as kbs's file-sums recorded it ("size:mtime:inode:ctime sum path"), unchanged since.
if [ -f "$kubelet_conf" ]; then
  k=$(readlink -f "$(command -v kubeadm)" 2>/dev/null)
  if [ -n "$kubeadm_sum" ] && [ -n "$k" ] &&
    grep -qxF "$(stat -c '%s:%.9Y:%i:%.9Z' "$k") $kubeadm_sum $k" "$sums" 2>/dev/null; then
    echo "kubeadm_version=$kubeadm_is"
  else
    echo "kubeadm_version=$(kubeadm version -o short 2>/dev/null)"
  fi
fi
[ -s "$serving_cert" ] && echo "kubelet_serving=yes"
# The CAs of a cluster set up here already, as base64 DER: a host of another cluster is named
# before this run would overwrite its certificates.
for c in $cas; do
  [ -f "$c" ] && awk -v p="$c" '/-----BEGIN CERTIFICATE-----/ {b = 1; next}
    /-----END CERTIFICATE-----/ {print "ca=" p " " s; exit} b {sub(/\r$/, ""); s = s $0}' "$c"
done
echo "clock_ns=$(date +%s%N)"
