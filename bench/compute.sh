#!/usr/bin/env bash
# Worker compute benchmark: `advsweep-worker bench` next to the same computations in PyTorch
# eager (bench/compute_reference.py), on the same machine, device, batch size and threads.
#
#   bench/compute.sh [--device cpu|cuda|auto] [--model basic|resnet18|wrn-16-4|vgg11|vgg16|all]
#                    [--mode standard|at-fgsm|at-pgd|pgd10-eval|all] [--rounds N] [--repeats R]
#                    [--threads T] [--images N] [--batch-size B] [--reference-cudnn-benchmark]
#                    [--precision fp32|bf16]
#
# For every round and every (model, mode) it runs the worker, then the reference (the other
# order on even rounds), each process doing one warm-up pass and R timed passes; it prints one
# JSON document with, per (model, mode), the medians over all rounds × repeats of both, their
# ratio (advsweep / PyTorch) and every timed value, in images per second and per CPU-second
# of the process (`cpu_ratio`: steadier than wall-clock time on a shared machine, with one
# thread). Progress goes to stderr.
#
# Environment:
#   WORKER_BIN=path   the worker binary to measure (default: build it in release with cargo,
#                     through scripts/env.sh)
#   PYTHON=path       the Python with torch for the reference (default: $ADVSWEEP_TORCH_PYTHON
#                     from scripts/env.sh, torch 2.13.0); another version works and is recorded
# --precision bf16 runs the training modes of both sides under bf16 autocast (PGD evaluation
# stays fp32 on both).
# Defaults: --device auto, --model all, --mode all, --rounds 3, --repeats 3, --threads = cores,
# --precision fp32.
set -euo pipefail
cd "$(dirname "$0")/.."

device=auto model=all mode=all rounds=3 repeats=3 threads="" images="" batch="" ref_flags=()
precision=fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --mode) mode="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --images) images="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --reference-cudnn-benchmark) ref_flags+=(--cudnn-benchmark); shift ;;
    --precision) precision="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compute.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "${WORKER_BIN:-}" ] || [ -z "${PYTHON:-}" ]; then
  # shellcheck source=../scripts/env.sh
  source scripts/env.sh
fi
if [ -z "${WORKER_BIN:-}" ]; then
  echo "compute.sh: building advsweep-worker (release)" >&2
  cargo build --release -q -p advsweep-worker >&2
  WORKER_BIN="$CARGO_TARGET_DIR/release/advsweep-worker"
fi
PYTHON="${PYTHON:-$ADVSWEEP_TORCH_PYTHON}"
threads="${threads:-$(nproc)}"

case "$model" in all) models=(basic resnet18) ;; *) models=("$model") ;; esac
case "$mode" in all) modes=(standard at-fgsm at-pgd pgd10-eval) ;; *) modes=("$mode") ;; esac

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
common=(--device "$device" --threads "$threads" --repeats "$repeats" --precision "$precision" --json)
[ -n "$images" ] && common+=(--images "$images")
[ -n "$batch" ] && common+=(--batch-size "$batch")

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  for m in "${models[@]}"; do
    for k in "${modes[@]}"; do
      ours() {
        echo "round $r/$rounds: advsweep-worker $m $k" >&2
        "$WORKER_BIN" bench --model "$m" --mode "$k" "${common[@]}" >"$out/ours-$r-$m-$k.json"
      }
      theirs() {
        echo "round $r/$rounds: pytorch eager  $m $k" >&2
        "$PYTHON" bench/compute_reference.py --model "$m" --mode "$k" "${common[@]}" \
          "${ref_flags[@]}" >"$out/ref-$r-$m-$k.json"
      }
      if ((r % 2)); then ours; theirs; else theirs; ours; fi
    done
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

"$PYTHON" - "$out" "$rounds" "$repeats" "$load_before" "$load_after" <<'EOF'
import glob, json, os, platform, statistics, sys

out, rounds, repeats, load_before, load_after = sys.argv[1:6]
def load(prefix):
    docs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, prefix + "-*.json")))]
    table = {}
    for d in docs:
        for r in d["results"]:
            e = table.setdefault((r["model"], r["mode"]), {"runs": [], "cpu_runs": [], "batch_size": r["batch_size"], "images": r["images"]})
            e["runs"].extend(r["runs"])
            e["cpu_runs"].extend(r.get("cpu_runs", []))
    return docs, table

ours_docs, ours = load("ours")
ref_docs, ref = load("ref")
devices = {d["device"] for d in ours_docs} | {d["device"] for d in ref_docs}
if len(devices) != 1:
    sys.exit(f"compute.sh: the two sides ran on different devices: {sorted(devices)}")
precisions = {d.get("precision") for d in ours_docs + ref_docs}
if len(precisions) != 1:
    sys.exit(f"compute.sh: the two sides trained in different precisions: {sorted(map(str, precisions))}")
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
gpu = None
if devices != {"cpu"}:
    try:
        import torch
        gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
results = []
order = {"basic": 0, "resnet18": 1, "standard": 0, "at-fgsm": 1, "at-pgd": 2, "pgd10-eval": 3}
for key in sorted(ours, key=lambda k: (order.get(k[0], 9), k[0], order.get(k[1], 9))):
    if key not in ref:
        continue
    a, b = ours[key], ref[key]
    if (a["batch_size"], a["images"]) != (b["batch_size"], b["images"]):
        sys.exit(f"compute.sh: {key}: the two sides measured different work: {a} vs {b}")
    mo, mr = statistics.median(a["runs"]), statistics.median(b["runs"])
    co = statistics.median(a["cpu_runs"]) if a["cpu_runs"] else None
    cr = statistics.median(b["cpu_runs"]) if b["cpu_runs"] else None
    results.append({
        "model": key[0], "mode": key[1], "batch_size": a["batch_size"], "images": a["images"],
        "advsweep_images_per_second": round(mo, 1), "pytorch_images_per_second": round(mr, 1),
        "ratio": round(mo / mr, 3) if mr > 0 else None,
        "advsweep_images_per_cpu_second": round(co, 1) if co else None,
        "pytorch_images_per_cpu_second": round(cr, 1) if cr else None,
        "cpu_ratio": round(co / cr, 3) if co and cr else None,
        "samples": len(a["runs"]),
        "advsweep_runs": a["runs"], "pytorch_runs": b["runs"],
        "advsweep_cpu_runs": a["cpu_runs"], "pytorch_cpu_runs": b["cpu_runs"],
    })
doc = {
    "benchmark": "worker-compute",
    "device": devices.pop(), "gpu": gpu, "cpu": cpu, "cores": os.cpu_count(),
    "threads": ours_docs[0]["threads"], "rounds": int(rounds), "repeats": int(repeats),
    "advsweep_worker": ours_docs[0].get("version"), "reference_torch": ref_docs[0].get("torch"),
    "reference_cudnn_benchmark": ref_docs[0].get("cudnn_benchmark"),
    "precision": ours_docs[0].get("precision"),
    "python": platform.python_version(),
    "load_average_before": load_before, "load_average_after": load_after,
    "results": results,
}
print(json.dumps(doc, indent=1))
EOF
