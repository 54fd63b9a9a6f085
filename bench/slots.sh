#!/usr/bin/env bash
# Worker slots (issue 6): how many small runs per second one worker process finishes with 1, 2,
# 4 … runs trained at once on its device. Small models leave a big GPU idle between kernels;
# slots fill it. Prints one JSON object (one entry per slot count) on stdout.
#
#   bench/slots.sh [--device cpu|cuda] [--slots "1 2 4"] [--runs N] [--threads T] [--train N]
#
# Each slot count gets a fresh `advsweep coordinator` (loopback, own state dir), a synthetic
# sweep of N BasicNet runs (one per seed: 1 epoch on --train images, clean + FGSM evaluation
# on 500), and one `advsweep-worker --slots S --exit-when-idle`; the time is from the worker's
# start to its exit. Binaries: $ADVSWEEP_BIN_DIR/{advsweep,advsweep-worker} when set, else a
# release build made here (after `source scripts/env.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cpu slots="1 2 4" runs=8 threads="" train=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --slots) slots="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --train) train="$2"; shift 2 ;;
    *) echo "bench/slots.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -n "${ADVSWEEP_BIN_DIR:-}" ]; then
  bin_dir="$ADVSWEEP_BIN_DIR"
else
  # shellcheck source=scripts/env.sh disable=SC1091
  source scripts/env.sh
  cargo build --release --locked --bins >&2
  bin_dir="$CARGO_TARGET_DIR/release"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-slots-XXXXXX")"
coordinator_pid=""
cleanup() {
  if [ -n "$coordinator_pid" ]; then kill "$coordinator_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

seeds="$(seq -s, 0 $((runs - 1)))"
cat >"$work/sweep.toml" <<TOML
version = 1
name = "bench-slots"
[data]
source = "synthetic"
train_size = $train
test_size = 500
[training]
epochs = 1
batch_size = 128
[evaluation]
limit = 500
[grid]
models = ["basic"]
defenses = ["standard"]
attacks = ["none", "fgsm"]
epsilons = ["8/255"]
seeds = [$seeds]
TOML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

results=()
for s in $slots; do
  state="$work/state-$s"
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  "$bin_dir/advsweep" coordinator --listen "127.0.0.1:$port" --state-dir "$state" \
    2>"$work/coordinator-$s.log" &
  coordinator_pid=$!
  for _ in $(seq 100); do
    "$bin_dir/advsweep" health --coordinator "$url" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sweep_id="$("$bin_dir/advsweep" submit "$work/sweep.toml" --coordinator "$url" |
    sed -n 's/.*(\(s-[0-9a-f]*\)).*/\1/p' | head -1)"
  wargs=(--coordinator "$url" --device "$device" --slots "$s" --exit-when-idle --sweep "$sweep_id")
  [ -n "$threads" ] && wargs+=(--threads "$threads")
  t0=$(date +%s.%N)
  "$bin_dir/advsweep-worker" "${wargs[@]}" 2>"$work/worker-$s.log"
  t1=$(date +%s.%N)
  done_cells="$("$bin_dir/advsweep" status "$sweep_id" --json --coordinator "$url" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for c in d["cells"] if c["state"]=="done"))')"
  kill "$coordinator_pid" 2>/dev/null || true
  wait "$coordinator_pid" 2>/dev/null || true
  coordinator_pid=""
  secs="$(python3 -c "print(round($t1 - $t0, 3))")"
  echo "bench/slots: $s slot(s): $runs runs, $done_cells cells done in ${secs}s" >&2
  results+=("{\"slots\": $s, \"runs\": $runs, \"cells_done\": $done_cells, \"seconds\": $secs, \"runs_per_s\": $(python3 -c "print(round($runs / ($t1 - $t0), 4))")}")
done

joined="$(IFS=,; echo "${results[*]}")"
printf '{"bench": "slots", "device": "%s", "threads": "%s", "train_images": %s, "host": "%s", "results": [%s]}\n' \
  "$device" "${threads:-default}" "$train" "$(hostname)" "$joined"
