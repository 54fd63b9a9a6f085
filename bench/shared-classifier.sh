#!/usr/bin/env bash
# Train once across inference-only defenses (issue 20): the seed's denoiser sweep
# (sweeps/seed-denoiser.toml: standard, dncnn-10, dncnn-15) and noise-injection sweep
# (sweeps/seed-noise-injection.toml: at-fgsm, at-fgsm-noise, at-pgd-linf, at-pgd-linf-noise),
# each run as one advsweep sweep — defenses that act only at inference share their classifier's
# run — against the same grid with every defense in a sweep of its own (one classifier per
# defense, as advsweep trained them before). Prints one JSON object: per sweep, the classifiers
# trained, the training seconds, the wall time, and the largest accuracy difference between the
# two ways (0: the shared classifier is the same classifier).
#
#   bench/shared-classifier.sh [--device cpu|cuda] [--threads T] [--train N] [--test N] [--epochs E]
#
# The seed files run on synthetic data here (--train training images, default 2000; --test
# evaluated, default 200; --epochs classifier epochs, default 2; the denoisers train 2 and 3
# epochs instead of 10 and 15). One worker with T threads (default: all cores).
#
# Binaries: $ADVSWEEP_BIN_DIR/{advsweep,advsweep-worker} when set, else a release build made
# here (after `source scripts/env.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cpu threads="" train=2000 test=200 epochs=2
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --train) train="$2"; shift 2 ;;
    --test) test="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/shared-classifier.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
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

work="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-shared-XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The seed file on synthetic data at this budget; with a defense given, that defense alone.
shrink() { # shrink FILE [DEFENSE]
  python3 - "$1" "$train" "$test" "$epochs" "${2:-}" <<'PY'
import re, sys
path, train, test, epochs, only = sys.argv[1:]
text = open(path).read()
text = re.sub(r'\[data\]\n(?:[^\[]*\n)', f'[data]\nsource = "synthetic"\nseed = 7\ntrain_size = {train}\ntest_size = {test}\n\n', text, count=1)
text = re.sub(r'(\[training\]\n)epochs = \d+', rf'\g<1>epochs = {epochs}', text, count=1)
text = re.sub(r'limit = \d+', f'limit = {test}', text, count=1)
text = text.replace('epochs = 10 }', 'epochs = 2 }').replace('epochs = 15 }', 'epochs = 3 }')
if only:
    text = re.sub(r'defenses = \[[^\]]*\]', f'defenses = ["{only}"]', text, count=1)
print(text)
PY
}

run() { # run STATE_DIR FILE
  "$bin_dir/advsweep" run --device "$device" --workers 1 --threads "$threads" \
    --state-dir "$1" --worker-bin "$bin_dir/advsweep-worker" "$2" >>"$work/log" 2>&1 || {
    echo "bench/shared-classifier.sh: advsweep run $2 failed; its log:" >&2
    tail -40 "$work/log" >&2
    exit 1
  }
}

results=()
for seed_file in sweeps/seed-denoiser.toml sweeps/seed-noise-injection.toml; do
  name="$(basename "$seed_file" .toml)"
  echo "shared-classifier: $name as one sweep" >&2
  shrink "$seed_file" >"$work/$name.toml"
  start=$(date +%s.%N)
  run "$work/$name-shared" "$work/$name.toml"
  shared_s=$(python3 -c "print($(date +%s.%N) - $start)")
  defenses="$(python3 -c 'import sys, tomllib; print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["grid"]["defenses"]))' "$work/$name.toml")"
  start=$(date +%s.%N)
  for d in $defenses; do
    echo "shared-classifier: $name, $d alone" >&2
    shrink "$seed_file" "$d" >"$work/$name-$d.toml"
    run "$work/$name-alone-$d" "$work/$name-$d.toml"
  done
  alone_s=$(python3 -c "print($(date +%s.%N) - $start)")
  results+=("$name:$shared_s:$alone_s")
done

python3 - "$work" "$device" "$threads" "$train" "$test" "$epochs" "${results[@]}" <<'PY'
import glob, json, os, sqlite3, sys

work, device, threads, train, test, epochs, *results = sys.argv[1:]

def measure(states):
    cells, trainings, training_s = {}, 0, 0.0
    for state in states:
        db = sqlite3.connect(os.path.join(state, "state.sqlite"))
        for cell_defense, run_defense, attack, eps, acc in db.execute(
            "SELECT json_extract(c.spec_json, '$.defense_name'), r.defense_name, c.attack_name,"
            " c.epsilon, json_extract(c.result_json, '$.accuracy')"
            " FROM cells c JOIN runs r ON r.run_id = c.run_id WHERE c.state = 'done'"
        ):
            cells[(cell_defense or run_defense, attack, eps)] = acc
        trainings += db.execute("SELECT COUNT(*) FROM runs WHERE state = 'done'").fetchone()[0]
        training_s += db.execute("SELECT COALESCE(SUM(seconds), 0) FROM epochs").fetchone()[0]
    return cells, trainings, training_s

rows = []
for item in results:
    name, shared_s, alone_s = item.split(":")
    shared, shared_runs, shared_train = measure([os.path.join(work, f"{name}-shared")])
    alone, alone_runs, alone_train = measure(glob.glob(os.path.join(work, f"{name}-alone-*")))
    assert shared.keys() == alone.keys(), (sorted(shared), sorted(alone))
    rows.append({
        "sweep": name,
        "cells": len(shared),
        "classifiers_trained": {"shared": shared_runs, "one_per_defense": alone_runs},
        "classifier_training_seconds": {"shared": round(shared_train, 1), "one_per_defense": round(alone_train, 1)},
        "wall_seconds": {"shared": round(float(shared_s), 1), "one_per_defense": round(float(alone_s), 1)},
        "max_accuracy_difference": max(abs(shared[k] - alone[k]) for k in shared),
    })
print(json.dumps({
    "bench": "advsweep train once across inference-only defenses",
    "command": f"bench/shared-classifier.sh --device {device} --threads {threads} --train {train} --test {test} --epochs {epochs}",
    "sweeps": rows,
}, indent=2))
PY
