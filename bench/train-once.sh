#!/usr/bin/env bash
# Train once, evaluate many (issue 6): a sweep of the seed's Figure 4 shape — adversarial
# training defenses whose ε is tied to the grid's, each model attacked by several attacks at
# that ε — run as one advsweep sweep (one training per (model, defense, ε), then all of that
# run's cells) against the same cells each run on its own with nothing shared (one training
# per cell, as a per-trial tool such as Optuna would run them). Prints one JSON object.
#
#   bench/train-once.sh [--device cpu|cuda] [--threads T] [--train N] [--test N] [--epochs E]
#
# Grid: BasicNet × {at-pgd-l2, at-pgd-linf, at-mixed, at-mixed-worst} × {none, pgd-l2, pgd-linf}
# × ε {0.05, 0.15, 0.40} (normalized, tied): 36 cells in 12 runs. Synthetic data (--train
# training images, --test evaluated), --epochs epochs. Both sides use the same binaries, one
# worker process with T threads (default: all cores), and a fresh state directory: the sweep
# is one `advsweep run`; per-cell training is 36 `advsweep run`s of a one-cell sweep file each.
# Every cell's accuracy is recorded on both sides: they must agree (same seeds, same training),
# which the JSON reports as `max_accuracy_difference`.
#
# Binaries: $ADVSWEEP_BIN_DIR/{advsweep,advsweep-worker} when set, else a release build made
# here (after `source scripts/env.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cpu threads="" train=2000 test=500 epochs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --train) train="$2"; shift 2 ;;
    --test) test="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/train-once.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
threads="${threads:-$(nproc)}"

if [ -n "${ADVSWEEP_BIN_DIR:-}" ]; then
  bin_dir="$ADVSWEEP_BIN_DIR"
else
  # shellcheck source=scripts/env.sh disable=SC1091
  source scripts/env.sh
  cargo build --release --locked --bins >&2
  bin_dir="$CARGO_TARGET_DIR/release"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-train-once-XXXXXX")"
trap 'rm -rf "$work"' EXIT

defenses=(at-pgd-l2 at-pgd-linf at-mixed at-mixed-worst)
attacks=(none pgd-l2 pgd-linf)
epsilons=(0.05 0.15 0.40)

# sweep_file NAME DEFENSES ATTACKS EPSILONS (TOML lists)
sweep_file() {
  cat <<TOML
version = 1
name = "$1"
description = "bench/train-once.sh: the seed's Figure 4 shape on synthetic data"
[data]
source = "synthetic"
seed = 7
train_size = $train
test_size = $test
[training]
epochs = $epochs
batch_size = 128
learning_rate = 0.01
momentum = 0.9
weight_decay = 5e-4
[evaluation]
limit = $test
[grid]
models = ["basic"]
defenses = [$2]
attacks = [$3]
epsilons = [$4]
seeds = [0]
TOML
}
quote() { local IFS=,; local q=("${@/#/\"}"); q=("${q[@]/%/\"}"); echo "${q[*]}"; }

run() { # run STATE_DIR FILE
  "$bin_dir/advsweep" run --device "$device" --workers 1 --threads "$threads" \
    --state-dir "$1" --worker-bin "$bin_dir/advsweep-worker" "$2" >>"$work/log" 2>&1 || {
    echo "bench/train-once.sh: advsweep run $2 failed; its log:" >&2
    tail -40 "$work/log" >&2
    exit 1
  }
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "train-once: the sweep (12 runs, 36 cells)" >&2
sweep_file fig4-shape "$(quote "${defenses[@]}")" "$(quote "${attacks[@]}")" \
  "$(IFS=,; echo "${epsilons[*]}")" >"$work/sweep.toml"
sweep_start=$(date +%s.%N)
run "$work/sweep-state" "$work/sweep.toml"
sweep_end=$(date +%s.%N)

echo "train-once: the same 36 cells, each on its own" >&2
mkdir -p "$work/cells"
cells_start=$(date +%s.%N)
n=0
for d in "${defenses[@]}"; do
  for a in "${attacks[@]}"; do
    for e in "${epsilons[@]}"; do
      n=$((n + 1))
      sweep_file fig4-shape "\"$d\"" "\"$a\"" "$e" >"$work/cells/$n.toml"
      run "$work/cells/state-$n" "$work/cells/$n.toml"
    done
  done
done
cells_end=$(date +%s.%N)
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" "$sweep_start" "$sweep_end" "$cells_start" "$cells_end" "$n" "$load_before" "$load_after" \
  "$device" "$threads" "$train" "$test" "$epochs" <<'PY'
import glob, json, os, sqlite3, sys

work, sweep_start, sweep_end, cells_start, cells_end, n, load_before, load_after, device, threads, train, test, epochs = sys.argv[1:]

def cells(state):
    db = sqlite3.connect(os.path.join(state, "state.sqlite"))
    rows = db.execute(
        "SELECT r.defense_name, r.defense_epsilon, c.attack_name, c.epsilon,"
        " json_extract(c.result_json, '$.accuracy')"
        " FROM cells c JOIN runs r ON r.run_id = c.run_id WHERE c.state = 'done'"
    ).fetchall()
    trainings = db.execute("SELECT COUNT(*) FROM runs WHERE state = 'done'").fetchone()[0]
    training_s = db.execute("SELECT COALESCE(SUM(seconds), 0) FROM epochs").fetchone()[0]
    evaluation_s = sum(
        json.loads(r)["seconds"]
        for (r,) in db.execute("SELECT result_json FROM cells WHERE state = 'done'")
    )
    return {tuple(row[:4]): row[4] for row in rows}, (trainings, training_s, evaluation_s)

together, (sweep_trainings, sweep_train_s, sweep_eval_s) = cells(os.path.join(work, "sweep-state"))
alone, alone_trainings, alone_train_s, alone_eval_s = {}, 0, 0.0, 0.0
for state in glob.glob(os.path.join(work, "cells", "state-*")):
    c, (t, ts, es) = cells(state)
    alone.update(c)
    alone_trainings += t
    alone_train_s += ts
    alone_eval_s += es
assert len(together) == int(n) == len(alone), (len(together), n, len(alone))
diff = max(abs(together[k] - alone[k]) for k in together)
sweep_s = float(sweep_end) - float(sweep_start)
per_cell_s = float(cells_end) - float(cells_start)
print(json.dumps({
    "bench": "advsweep train once, evaluate many",
    "command": "bench/train-once.sh --device %s --threads %s --train %s --test %s --epochs %s"
    % (device, threads, train, test, epochs),
    "grid": "basic x {at-pgd-l2, at-pgd-linf, at-mixed, at-mixed-worst} x {none, pgd-l2, pgd-linf} x eps {0.05, 0.15, 0.40} (tied, normalized)",
    "cells": int(n),
    # training_s: the epochs' own seconds; evaluation_s: the cells' own seconds; the rest of
    # wall_s is start-up (coordinator, worker process, data) and bookkeeping.
    "sweep": {"wall_s": round(sweep_s, 2), "trainings": sweep_trainings,
              "training_s": round(sweep_train_s, 2), "evaluation_s": round(sweep_eval_s, 2)},
    "per_cell": {"wall_s": round(per_cell_s, 2), "trainings": alone_trainings,
                 "training_s": round(alone_train_s, 2), "evaluation_s": round(alone_eval_s, 2)},
    "speedup": round(per_cell_s / sweep_s, 2),
    "training_speedup": round(alone_train_s / sweep_train_s, 2) if sweep_train_s else None,
    "max_accuracy_difference": diff,
    "load_before": load_before,
    "load_after": load_after,
}, indent=2))
PY
