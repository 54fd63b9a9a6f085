#!/usr/bin/env bash
# Everything issue 6 still measures on a GPU, as one prepared device call (a session that is
# lent a GPU gets 15 minutes of device time, start-up included):
#
#   # here, before asking for the device (several minutes on 2 cores, no device time):
#   bench/worker-for-torch.sh 2.11.0 .devbin/advsweep-worker   # built for the device's torch
#   source scripts/env.sh && cargo build --release --locked --bin advsweep \
#     && cp "$CARGO_TARGET_DIR/release/advsweep" .devbin/       # the CLI has no libtorch in it
#   grep -qx '/.devbin/' .git/info/exclude || echo /.devbin/ >>.git/info/exclude
#   # then one device call:  command "bench/gpu-session.sh", carry [".devbin"], timeout_s 560
#
#   bench/gpu-session.sh [--device cuda|cpu] [--quick]
#
# Steps, each under its own time limit (540 s together) so that one failure leaves the others
# their time:
#   1. `advsweep-worker --self-check` on the device (CUDA seen, libtorch_cuda loaded);
#   2. the compute bench, fp32: BasicNet and ResNet-18, 4 modes, next to PyTorch eager on the
#      device's own Python (bench/compute.sh, 1 round × 3 repeats);
#   3. bf16 autocast, ResNet-18 standard training and PGD-AT, both sides (1 round × 2 repeats);
#   4. worker slots 1, 2, 4 (bench/slots.sh);
#   5. train once vs one training per cell (bench/train-once.sh, 10,000 training images; the
#      per-cell side starts 36 CUDA worker processes).
# Results: JSON files and log.txt under $OUT (the device tool brings back at most 8 files).
# --device cpu --quick runs the same steps with tiny sizes on a CPU, with the binaries of
# scripts/env.sh's build, to check this script without a GPU.
#
# Environment: BIN_DIR (default .devbin) holds advsweep and advsweep-worker; PYTHON (default
# python3 on cuda, $ADVSWEEP_TORCH_PYTHON on cpu) has torch; OUT (default a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

device=cuda quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/gpu-session.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/advsweep-gpu-session-XXXXXX")}"
mkdir -p "$OUT"
log="$OUT/log.txt"
if [ "$device" = cpu ]; then
  # shellcheck source=scripts/env.sh disable=SC1091
  source scripts/env.sh
  BIN_DIR="${BIN_DIR:-$CARGO_TARGET_DIR/release}"
  PYTHON="${PYTHON:-$ADVSWEEP_TORCH_PYTHON}"
else
  BIN_DIR="${BIN_DIR:-.devbin}"
  PYTHON="${PYTHON:-python3}"
  # A worker built for the device's torch finds its libraries through that torch.
  torch_lib="$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
    echo "bench/gpu-session.sh: $PYTHON cannot import torch (set PYTHON)" >&2
    exit 2
  }
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
BIN_DIR="$(cd "$BIN_DIR" && pwd)"
worker="$BIN_DIR/advsweep-worker"
for bin in "$worker" "$BIN_DIR/advsweep"; do
  [ -x "$bin" ] || { echo "bench/gpu-session.sh: $bin is missing (see --help)" >&2; exit 2; }
done
export ADVSWEEP_BIN_DIR="$BIN_DIR"

if [ "$quick" = 1 ]; then
  fp32=(--model basic --images 256 --batch-size 128 --rounds 1 --repeats 1)
  bf16=(--model basic --images 256 --batch-size 128 --rounds 1 --repeats 1)
  slots=(--slots "1 2" --runs 2 --train 500)
  once=(--train 200 --test 50)
else
  fp32=(--rounds 1 --repeats 3)
  bf16=(--model resnet18 --rounds 1 --repeats 2)
  slots=(--slots "1 2 4" --runs 8 --train 10000)
  once=(--train 10000 --test 2000)
fi

failed=()
# step NAME SECONDS OUTPUT COMMAND...: stdout to OUTPUT, stderr to the log.
step() {
  local name="$1" limit="$2" output="$3"
  shift 3
  local started=$SECONDS
  echo "== $name (at most ${limit}s): $*" | tee -a "$log" >&2
  timeout --kill-after=10 "$limit" "$@" >"$output" 2>>"$log"
  local rc=$?
  echo "== $name: rc $rc after $((SECONDS - started))s" | tee -a "$log" >&2
  [ "$rc" = 0 ] || failed+=("$name (rc $rc)")
}

{
  echo "device: $device; binaries: $BIN_DIR; python: $PYTHON"
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} >>"$log" 2>&1

step self-check 30 "$OUT/self-check.txt" "$worker" --self-check --device "$device"
step compute-fp32 180 "$OUT/compute-fp32.json" \
  env WORKER_BIN="$worker" PYTHON="$PYTHON" bench/compute.sh --device "$device" "${fp32[@]}"
for mode in standard at-pgd; do
  step "compute-bf16-$mode" 50 "$OUT/compute-bf16-$mode.json" \
    env WORKER_BIN="$worker" PYTHON="$PYTHON" bench/compute.sh --device "$device" \
    --mode "$mode" --precision bf16 "${bf16[@]}"
done
step slots 90 "$OUT/slots.json" bench/slots.sh --device "$device" "${slots[@]}"
step train-once 140 "$OUT/train-once.json" bench/train-once.sh --device "$device" "${once[@]}"

echo "results in $OUT" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed: ${failed[*]}" | tee -a "$log" >&2
  exit 1
fi
