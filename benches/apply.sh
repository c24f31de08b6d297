#!/usr/bin/env bash
# kbs apply on lab hosts: from bare on 3 hosts, a no-op apply on 3 and on 20 hosts, and add-node of
# a worker on a 3-host and on a 12-host cluster (median of three joins each). Prints wall times
# (targets: no-op under 3 s on 3 hosts and under 10 s on 20; the two add-node times within 20% of
# each other).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
kbs=${CARGO_TARGET_DIR:-$PWD/target}/release/kbs
lab=tests/lab/lab   # honours KBS_LAB_ID, so a bench can run beside a test run
state=$(mktemp -d)
trap 'rm -rf "$state"; $lab down >/dev/null 2>&1 || true' EXIT

# The median of three runs of a command that changes nothing.
median3() { for _ in 1 2 3; do secs "$@"; done | sort -n | sed -n 2p; }
secs() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'; }
fresh() { $lab down >/dev/null 2>&1; rm -rf "$state"; mkdir -p "$state"; $lab up "$1" >/dev/null 2>&1; $kbs bundle "$($lab inventory)" >/dev/null; }
apply() { $kbs apply "$($lab inventory)" --state-dir "$state" --log-format plain; }
add_node() { $kbs add-node "$($lab inventory)" --state-dir "$state" --log-format plain --host "$1"; }

fresh 3
printf 'apply, 3 hosts from bare   %6.1f s\n' "$(secs apply)"
printf 'no-op apply, 3 hosts       %6.1f s   (target < 3 s; median of 3)\n' "$(median3 apply)"
# add-node: three workers joined one at a time (the cluster grows by one each time); the median.
add3() { for i in 0 1 2; do secs add_node "node-$(($1 + i))"; done | sort -n | sed -n 2p; }
$lab up 6 >/dev/null 2>&1
printf 'add-node, 3-host cluster   %6.1f s   (median of 3)\n' "$(add3 4)"

fresh 12
apply >/dev/null 2>&1
$lab up 15 >/dev/null 2>&1
printf 'add-node, 12-host cluster  %6.1f s   (median of 3; target: within 20%% of the 3-host figure)\n' "$(add3 13)"
$lab up 20 >/dev/null 2>&1
apply >/dev/null 2>&1
printf 'no-op apply, 20 hosts      %6.1f s   (target < 10 s; median of 3)\n' "$(median3 apply)"
