#!/usr/bin/env bash
# The coordinator benchmark of issue 6, side by side with Optuna; prints one JSON object.
#
#   bench/coordinator.sh            # full: 2 workers × 1k/10k/100k cells, 1,000 workers × 100k
#                                   # cells, 3 repeats each; Optuna on the 1k grid (3 repeats)
#                                   # and on the 10k grid (1 repeat, capped at 300 s)
#   bench/coordinator.sh --quick    # 2 workers × 1k/10k, 100 workers × 10k, Optuna 1k; 1 repeat
#
# Both also run the workers that compute: 1,000 workers × 100k cells (--quick: 100 × 10k), each
# holding every run about 1 s (--quick: 0.1 s) before reporting it (`--compute-ms`), i.e. the
# coordinator serving about 10,000 cells/s instead of a closed loop of no-op workers.
#
# advsweep side: coordinator/cli/benches/load/main.rs (cargo bench, release build) — the real
# `advsweep coordinator` process and simulated workers over gRPC (see that file), twice: with
# the reports a no-op job gets from the real worker (`--reporting batched`: one ReportMetrics
# and one CompleteCells per run) and with one call per epoch and per cell (`--reporting
# per-event`, what a worker sends when every cell takes longer than a round trip). Optuna side:
# bench/optuna_grid.py on the same sweep files, 2 processes, SQLite storage, in a virtualenv
# cached outside the clone ($ADVSWEEP_CACHE/bench-venv, created on first use; needs pip).
# Progress goes to stderr; the JSON (both sides) to stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
ADVSWEEP_CACHE="${ADVSWEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/advsweep}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ADVSWEEP_CACHE/target}"
OPTUNA_VERSION="5.0.0"
VENV="$ADVSWEEP_CACHE/bench-venv"

load_args=()
optuna_runs=()
paced_args=(--scenarios 1000x100000 --repeats 3 --compute-ms 1000)
if [ "${1:-}" = "--quick" ]; then
  load_args=(--quick)
  optuna_runs=("1000 1 0")
  paced_args=(--scenarios 100x10000 --repeats 1 --compute-ms 100)
else
  optuna_runs=("1000 3 0" "10000 1 300")
fi

if [ ! -f "$VENV/.installed-optuna-$OPTUNA_VERSION" ]; then
  echo "bench: installing optuna==$OPTUNA_VERSION into $VENV (one time)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q "optuna==$OPTUNA_VERSION"
  touch "$VENV/.installed-optuna-$OPTUNA_VERSION"
fi

out="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-bench-XXXXXX")"
trap 'rm -rf "$out"' EXIT

echo "bench: advsweep coordinator (cargo bench -p advsweep-cli --bench load)" >&2
cargo bench -q -p advsweep-cli --bench load -- "${load_args[@]}" \
  --sweep-dir "$out/sweeps" --reporting batched >"$out/advsweep.json"
echo "bench: the same, one report call per epoch and per cell" >&2
cargo bench -q -p advsweep-cli --bench load -- "${load_args[@]}" \
  --reporting per-event >"$out/advsweep-per-event.json"
echo "bench: workers that compute (${paced_args[*]})" >&2
cargo bench -q -p advsweep-cli --bench load -- "${paced_args[@]}" \
  --reporting batched >"$out/advsweep-paced.json"

optuna_files=()
for spec in "${optuna_runs[@]}"; do
  read -r cells repeats limit <<<"$spec"
  echo "bench: optuna GridSampler, $cells cells" >&2
  "$VENV/bin/python" bench/optuna_grid.py --sweep "$out/sweeps/sweep-$cells.toml" \
    --processes 2 --repeats "$repeats" --time-limit "$limit" >"$out/optuna-$cells.json"
  optuna_files+=("$out/optuna-$cells.json")
done

python3 - "$out/advsweep.json" "$out/advsweep-per-event.json" "$out/advsweep-paced.json" \
  "${optuna_files[@]}" <<'EOF'
import json, sys
advsweep = json.load(open(sys.argv[1]))
per_event = json.load(open(sys.argv[2]))
paced = json.load(open(sys.argv[3]))
optuna = [json.load(open(p)) for p in sys.argv[4:]]
merged = dict(optuna[0])
merged["scenarios"] = [s for o in optuna for s in o["scenarios"]]
for s in merged["scenarios"]:
    s.pop("sweep", None)
print(json.dumps({"advsweep": advsweep, "advsweep_per_event": per_event,
                  "advsweep_computing_workers": paced, "optuna": merged}, indent=2))
EOF
