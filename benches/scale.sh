#!/usr/bin/env bash
# What each host costs, on 3, 20, 40 and 80 lab hosts (SIZES overrides): apply from bare, a no-op
# apply, kbs status, and add-node of 10 workers, each timed once. Per run it prints the wall time,
# kbs's own CPU seconds and peak RSS, the CPU seconds the lab hosts spent (their containers'
# cgroups), of which a worker's own share, and the SSH round trips per host (kbs -v reports them);
# then the cost per host and the marginal cost per host between sizes. Not a test: figures, never assertions.
#
#   benches/scale.sh                 # ~30 min on 2 cores, needs root and Docker, as the lab does
#   SIZES="3 20" benches/scale.sh    # a quick look
#
# It brings the lab up and down itself (KBS_LAB_ID picks which lab, so it can run beside tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
export KBS=${CARGO_TARGET_DIR:-$PWD/target}/release/kbs
exec python3 benches/scale.py ${SIZES:-3 20 40 80}
