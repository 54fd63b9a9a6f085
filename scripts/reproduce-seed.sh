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
#   --together         submit every sweep to one coordinator and let one pool of workers drain
#                      them all (no idle tail between sweeps; better for a big GPU). Without it,
#                      each sweep is one `advsweep run` after the other.
#
# Binaries: $ADVSWEEP_BIN_DIR/{advsweep,advsweep-worker} when set, else a release build made here
# (after `source scripts/env.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=auto workers="" threads="" state_dir=advsweep-state/seed budget="" report_dir="" together=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --state-dir) state_dir="$2"; shift 2 ;;
    --budget-s) budget="$2"; shift 2 ;;
    --report) report_dir="$2"; shift 2 ;;
    --together) together=1; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# One coordinator for the pool mode and for the reports.
coord=""
start_coordinator() {
  port=$(( 20000 + RANDOM % 20000 ))
  url="http://127.0.0.1:$port"
  "$advsweep" coordinator --listen "127.0.0.1:$port" --state-dir "$state_dir" \
    >>"$state_dir/logs/coordinator.log" 2>&1 &
  coord=$!
  trap 'kill $coord 2>/dev/null || true' EXIT
  for _ in $(seq 100); do
    "$advsweep" status --coordinator "$url" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "reproduce-seed: the coordinator did not start; see $state_dir/logs/coordinator.log" >&2
  exit 1
}

if [ -n "$together" ]; then
  start_coordinator
  for sweep in "${sweeps[@]}"; do
    "$advsweep" submit "$sweep" --data-path "$data_dir" --coordinator "$url" >&2
  done
  n="${workers:-4}"
  echo "reproduce-seed: $n workers on $device draining ${#sweeps[@]} sweeps ($(date -u +%H:%M:%S) UTC)" >&2
  t0=$(date +%s); started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  pids=()
  for i in $(seq "$n"); do
    wargs=(--coordinator "$url" --device "$device" --name "repro-$i" --exit-when-idle)
    [ -n "$threads" ] && wargs+=(--threads "$threads")
    "$bin_dir/advsweep-worker" "${wargs[@]}" >"$state_dir/logs/worker-$i.log" 2>&1 &
    pids+=($!)
  done
  if [ -n "$budget" ]; then
    # SIGTERM at the budget: each worker releases its run (checkpoints stay for a later resume).
    # (Its output goes nowhere, so a pipe reading this script's output is not held open by it.)
    ( sleep "$budget"; kill -TERM "${pids[@]}" ) >/dev/null 2>&1 &
    watchdog=$!
  fi
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  if [ -n "$budget" ]; then pkill -P "$watchdog" sleep 2>/dev/null || true; kill "$watchdog" 2>/dev/null || true; fi
  secs=$(( $(date +%s) - t0 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "together:${#sweeps[@]}" "$secs" "$rc" "$device" "$(hostname)" "$accel" "$started" >>"$timings"
  "$advsweep" status --coordinator "$url" >&2 || true
  sweeps_run=()
else
  sweeps_run=("${sweeps[@]}")
fi

for sweep in "${sweeps_run[@]}"; do
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
  [ -n "$coord" ] || start_coordinator
  for sweep in "${sweeps[@]}"; do
    name="$(grep -m1 '^name' "$sweep" | sed 's/.*"\(.*\)".*/\1/')"
    "$advsweep" report "$name" --coordinator "$url" --out "$report_dir/$name" \
      || echo "reproduce-seed: no report for $name" >&2
  done
fi
