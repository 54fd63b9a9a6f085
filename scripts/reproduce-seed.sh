#!/usr/bin/env bash
# Re-runs the seed study's sweeps (sweeps/seed-*.toml) on real CIFAR-10 with `advsweep run`, one
# sweep after the other into ONE state directory, under an overall wall-clock budget, and writes
# a timings table. docs/RESULTS.md quotes its figures; the reports come from `advsweep report`.
#
#   scripts/reproduce-seed.sh [options] CIFAR10_BIN_DIR [SWEEP.toml ...]
#
#   CIFAR10_BIN_DIR    the `cifar-10-batches-bin` folder (data_batch_1.bin … test_batch.bin)
#   SWEEP.toml         sweeps to run, in order (default: every sweeps/seed-*.toml, cheapest first)
#   --device D         cpu, cuda or auto (default auto)
#   --workers N        local worker processes (default: advsweep's own default)
#   --threads N        intra-op threads per worker
#   --state-dir DIR    durable state (default advsweep-state/seed); cells finished there earlier
#                      are reused, so an interrupted reproduction continues where it stopped
#   --budget-s S       stop starting sweeps, and interrupt the running one, after S seconds;
#                      what finished is kept (default: no budget)
#   --report DIR       afterwards, write every sweep's report under DIR/<sweep name>
#
# Binaries: $ADVSWEEP_BIN_DIR/{advsweep,advsweep-worker} when set, else a release build made here
# (after `source scripts/env.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=auto workers="" threads="" state_dir=advsweep-state/seed budget="" report_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --state-dir) state_dir="$2"; shift 2 ;;
    --budget-s) budget="$2"; shift 2 ;;
    --report) report_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "reproduce-seed: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "usage: scripts/reproduce-seed.sh [options] CIFAR10_BIN_DIR [SWEEP.toml ...] (--help)" >&2
  exit 2
fi
data_dir="$1"; shift
if [ ! -f "$data_dir/test_batch.bin" ]; then
  echo "reproduce-seed: $data_dir has no test_batch.bin; pass the cifar-10-batches-bin folder" >&2
  exit 2
fi
if [ $# -gt 0 ]; then
  sweeps=("$@")
else
  sweeps=(sweeps/seed-fig1-epsilon-curve.toml sweeps/seed-denoiser.toml
          sweeps/seed-fig4-mixed-norm.toml sweeps/seed-noise-injection.toml
          sweeps/seed-randomization.toml sweeps/seed-vgg-capacity.toml)
fi

if [ -n "${ADVSWEEP_BIN_DIR:-}" ]; then
  bin_dir="$ADVSWEEP_BIN_DIR"
else
  # shellcheck source=scripts/env.sh
  source scripts/env.sh
  cargo build --release --locked --bins -q
  bin_dir="$CARGO_TARGET_DIR/release"
fi
advsweep="$bin_dir/advsweep"

mkdir -p "$state_dir/logs"
timings="$state_dir/timings.tsv"
[ -f "$timings" ] || printf 'sweep\tseconds\texit\tdevice\thost\taccelerator\tstarted_utc\n' >"$timings"
accel="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
accel="${accel:-none ($(nproc) CPU cores)}"
start_all=$(date +%s)

for sweep in "${sweeps[@]}"; do
  name="$(basename "$sweep" .toml)"
  limit=()
  if [ -n "$budget" ]; then
    left=$(( budget - ($(date +%s) - start_all) ))
    if [ "$left" -le 10 ]; then
      echo "reproduce-seed: budget spent; not starting $name" >&2
      break
    fi
    # SIGINT first: `advsweep run` then releases its runs cleanly (their checkpoints stay).
    limit=(timeout -s INT -k 30 "$left")
  fi
  args=(run "$sweep" --data-path "$data_dir" --device "$device" --state-dir "$state_dir"
        --worker-bin "$bin_dir/advsweep-worker")
  [ -n "$workers" ] && args+=(--workers "$workers")
  [ -n "$threads" ] && args+=(--threads "$threads")
  echo "reproduce-seed: $name ($(date -u +%H:%M:%S) UTC)" >&2
  t0=$(date +%s); started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  set +e
  "${limit[@]}" "$advsweep" "${args[@]}" >"$state_dir/logs/$name.out" 2>"$state_dir/logs/$name.log"
  rc=$?
  set -e
  secs=$(( $(date +%s) - t0 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$secs" "$rc" "$device" "$(hostname)" "$accel" "$started" >>"$timings"
  echo "reproduce-seed: $name: exit $rc after ${secs}s" >&2
  tail -n 25 "$state_dir/logs/$name.out" >&2 || true
done

if [ -n "$report_dir" ]; then
  port=$(( 20000 + RANDOM % 20000 ))
  "$advsweep" coordinator --listen "127.0.0.1:$port" --state-dir "$state_dir" \
    >"$state_dir/logs/report-coordinator.log" 2>&1 &
  coord=$!
  trap 'kill $coord 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    "$advsweep" status --coordinator "http://127.0.0.1:$port" >/dev/null 2>&1 && break
    sleep 0.2
  done
  for sweep in "${sweeps[@]}"; do
    name="$(grep -m1 '^name' "$sweep" | sed 's/.*"\(.*\)".*/\1/')"
    "$advsweep" report "$name" --coordinator "http://127.0.0.1:$port" --out "$report_dir/$name" \
      || echo "reproduce-seed: no report for $name" >&2
  done
fi
