#!/usr/bin/env bash
# Runs `true` on every lab host, RUNS times, with kbs (examples/exec_bench.rs), Ansible
# and OpenSSH, and prints medians and ratios.
#
#   tests/lab/lab up 20 && benches/exec.sh; tests/lab/lab down
#
# kbs cold  = connect + authenticate + run (one `kbs exec`); kbs warm = run on open
# sessions (every later command of `kbs apply`). OpenSSH fresh = `ssh host true` per host
# in a parallel shell loop; OpenSSH mux = the same over ControlMaster connections.
# Ansible: `ansible all -m command -a true -f N` (pip install ansible-core; a venv at
# $ANSIBLE_VENV is created when `ansible` is not on PATH).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_RUN=${KBS_LAB_RUN:-${KBS_LAB_DIR:-$ROOT/tests/lab}/run}
RUNS=${RUNS:-10}
ANSIBLE_VENV=${ANSIBLE_VENV:-${TMPDIR:-/tmp}/kbs-bench-venv}
KEY=$LAB_RUN/id_ed25519
KNOWN=$LAB_RUN/known_hosts
[[ -f $LAB_RUN/inventory.toml ]] || { echo "no lab: run tests/lab/lab up 20 first" >&2; exit 1; }

mapfile -t HOSTS < <(python3 -c 'import sys, tomllib
for h in tomllib.load(open(sys.argv[1], "rb"))["host"]: print(h["address"])' "$LAB_RUN/inventory.toml")
N=${#HOSTS[@]}
WORK=$(mktemp -d)
trap 'for h in "${HOSTS[@]}"; do ssh -S "$WORK/mux-$h" -O exit "root@$h" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
SSH=(ssh -i "$KEY" -o IdentitiesOnly=yes -o "UserKnownHostsFile=$KNOWN" -o GlobalKnownHostsFile=/dev/null
     -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR)

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
time_runs() { # time_runs CMD... -> median ms over RUNS
    local i t0
    for ((i = 0; i < RUNS; i++)); do
        t0=$(now_ms)
        "$@" >/dev/null
        echo $(( $(now_ms) - t0 ))
    done | median
}

ssh_all() { # ssh_all [extra ssh args]: `true` on every host in parallel
    local h pids=()
    for h in "${HOSTS[@]}"; do "${SSH[@]}" "$@" "root@$h" true & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
}
ssh_mux_all() {
    local h pids=()
    for h in "${HOSTS[@]}"; do "${SSH[@]}" -S "$WORK/mux-$h" "root@$h" true & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
}

echo "hosts: $N, runs: $RUNS" >&2
cargo build -q --release --example exec_bench --manifest-path "$ROOT/Cargo.toml"
OUT=$("$ROOT/target/release/examples/exec_bench" --user root --key "$KEY" \
    --known-hosts "$KNOWN" --runs "$RUNS" "${HOSTS[@]}")
KBS_COLD=$(awk '$1 == "cold" { print $2 }' <<<"$OUT")
KBS_WARM=$(awk '$1 == "warm" { print $2 }' <<<"$OUT")

SSH_FRESH=$(time_runs ssh_all)
for h in "${HOSTS[@]}"; do "${SSH[@]}" -M -S "$WORK/mux-$h" -o ControlPersist=300 -f -N "root@$h"; done
SSH_MUX=$(time_runs ssh_mux_all)

if ! command -v ansible >/dev/null; then
    [[ -x $ANSIBLE_VENV/bin/ansible ]] || {
        python3 -m venv "$ANSIBLE_VENV" && "$ANSIBLE_VENV/bin/pip" install -q ansible-core
    } >&2
    PATH=$ANSIBLE_VENV/bin:$PATH
fi
{
    echo "[lab]"
    printf '%s\n' "${HOSTS[@]}"
    echo "[lab:vars]"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$KEY"
    echo "ansible_python_interpreter=/usr/bin/python3"
    echo "ansible_ssh_common_args='-o UserKnownHostsFile=$KNOWN -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes'"
} >"$WORK/hosts.ini"
export ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_LOCAL_TEMP=$WORK/ansible-tmp
ANSIBLE=$(time_runs ansible all -i "$WORK/hosts.ini" -m command -a true -f "$N")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cat <<EOF
median wall time for \`true\` on $N hosts ($RUNS runs each):
  kbs cold (connect + run)     ${KBS_COLD} ms
  kbs warm (open sessions)     ${KBS_WARM} ms
  OpenSSH fresh, parallel      ${SSH_FRESH} ms
  OpenSSH ControlMaster        ${SSH_MUX} ms
  Ansible -f $N                 ${ANSIBLE} ms
ratios:
  Ansible / kbs cold           $(ratio "$ANSIBLE" "$KBS_COLD")x   (target >= 10)
  kbs cold / OpenSSH fresh     $(ratio "$KBS_COLD" "$SSH_FRESH")x   (target <= 1.5)
  kbs warm / OpenSSH mux       $(ratio "$KBS_WARM" "$SSH_MUX")x   (target <= 1.5)
EOF
