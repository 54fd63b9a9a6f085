#!/usr/bin/env bash
# One expensive cell on many workers (issue 20): an evaluate-only AutoAttack of a trained
# BasicNet, run with `[evaluation] shards = N` on N local workers for each N given, each in a
# fresh state directory, against shards = 1 on one worker. Prints one JSON object: the wall time
# of each `advsweep run` (upload, leases, evaluation, merge), the speedup over one worker, and
# whether every merged cell equals the unsharded one (it must: counts are summed, and every
# batch draws the same random numbers however the images are cut).
#
#   bench/shards.sh [--device cpu|cuda] [--threads T] [--test N] [--shards "2 4"]
#
# The model: BasicNet trained for 2 epochs on 4,000 synthetic images (one `advsweep run`, then
# `advsweep export weights`), evaluated as given (`epochs = 0`) on --test images (default 500)
# in batches of 50 with `none`, PGD-ℓ∞ and AutoAttack at 8/255 (APGD-CE 20 steps, APGD-T 20 ×
# 3 targets, FAB-T 20 × 3, Square 300 queries). Each worker has T threads (default 1).
#
# Binaries: $ADVSWEEP_BIN_DIR/{advsweep,advsweep-worker} when set, else a release build made
# here (after `source scripts/env.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cpu threads=1 test=500 shard_counts="2 4"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --test) test="$2"; shift 2 ;;
    --shards) shard_counts="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/shards.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
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

work="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-shards-XXXXXX")"
trap 'rm -rf "$work"' EXIT

run() { # run STATE_DIR FILE WORKERS
  "$bin_dir/advsweep" run --device "$device" --workers "$3" --threads "$threads" \
    --state-dir "$1" --worker-bin "$bin_dir/advsweep-worker" "$2" >>"$work/log" 2>&1 || {
    echo "bench/shards.sh: advsweep run $2 failed; its log:" >&2
    tail -40 "$work/log" >&2
    exit 1
  }
}

data() {
  cat <<TOML
[data]
source = "synthetic"
seed = 7
train_size = 4000
test_size = $test
TOML
}

echo "shards: training the model once" >&2
{
  printf 'version = 1\nname = "shards-model"\n'
  data
  printf '[training]\nepochs = 2\n[evaluation]\nlimit = 100\n'
  printf '[grid]\nmodels = ["basic"]\ndefenses = ["standard"]\nattacks = ["none"]\nepsilons = [0]\n'
} >"$work/train.toml"
run "$work/train-state" "$work/train.toml" 1
"$bin_dir/advsweep" export weights shards-model --state-dir "$work/train-state" \
  --out "$work/models" >>"$work/log" 2>&1
weights="$(ls "$work"/models/*.safetensors | head -1)"

sweep_file() { # sweep_file SHARDS
  printf 'version = 1\nname = "shards"\n'
  data
  cat <<TOML
[training]
epochs = 0
[evaluation]
limit = $test
batch_size = 50
shards = $1
[attacks.apgd-ce-20]
kind = "apgd"
loss = "ce"
steps = 20
[attacks.apgd-t-20]
kind = "apgd"
targets = 3
steps = 20
[attacks.fab-t-20]
kind = "fab"
targets = 3
steps = 20
[attacks.square-300]
kind = "square"
queries = 300
[attacks.autoattack-quick]
kind = "autoattack"
stages = ["apgd-ce-20", "apgd-t-20", "fab-t-20", "square-300"]
[grid]
models = ["trained"]
defenses = ["standard"]
attacks = ["none", "pgd-linf", "autoattack-quick"]
epsilons = ["8/255"]
[models.trained]
arch = "basic"
weights = "$weights"
TOML
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for n in 1 $shard_counts; do
  echo "shards: $n shard(s) on $n worker(s)" >&2
  sweep_file "$n" >"$work/shards-$n.toml"
  start=$(date +%s.%N)
  run "$work/state-$n" "$work/shards-$n.toml" "$n"
  end=$(date +%s.%N)
  "$bin_dir/advsweep" status shards --json --state-dir "$work/state-$n" >"$work/cells-$n.json" 2>>"$work/log"
  results+=("$n:$start:$end")
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" "$device" "$threads" "$test" "$load_before" "$load_after" "${results[@]}" <<'PY'
import json, os, sys

work, device, threads, test, load_before, load_after, *results = sys.argv[1:]
keys = ["accuracy", "attack_success_rate", "examples", "clean_correct", "flipped", "stages"]

def cells(n):
    with open(os.path.join(work, f"cells-{n}.json")) as f:
        report = json.load(f)
    return {c["attack"]: c for c in report["cells"]}

rows, base = [], None
whole = cells(1)
for item in results:
    n, start, end = item.split(":")
    wall = float(end) - float(start)
    base = base or wall
    merged = cells(n)
    equal = all(
        merged[a]["result"].get(k) == whole[a]["result"].get(k) for a in whole for k in keys
    ) and all(
        abs(merged[a]["result"][k] - whole[a]["result"][k]) <= 1e-12
        for a in whole for k in ("mean_linf", "mean_l2")
    )
    rows.append({
        "shards_and_workers": int(n),
        "wall_seconds": round(wall, 2),
        "speedup": round(base / wall, 2),
        "cells_equal_unsharded": equal,
        "autoattack_accuracy": merged["autoattack-quick"]["result"]["accuracy"],
        "autoattack_compute_seconds": round(merged["autoattack-quick"]["result"]["seconds"], 2),
    })
print(json.dumps({
    "bench": "advsweep one cell across workers (shards)",
    "command": f"bench/shards.sh --device {device} --threads {threads} --test {test}",
    "cores": os.cpu_count(),
    "load_before": load_before,
    "load_after": load_after,
    "runs": rows,
}, indent=2))
PY
