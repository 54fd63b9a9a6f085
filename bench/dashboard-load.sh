#!/usr/bin/env bash
# The dashboard under load: the coordinator load benchmark's sweep (default 1,000 cells, 100
# no-op workers, batched reports) run without and with dashboard pages open on it (default 50),
# interleaved, and cells/s of both with their ratio; prints one JSON object.
#
#   bench/dashboard-load.sh                      # 5 rounds, each: one run without pages, one with
#   bench/dashboard-load.sh --rounds 3 --clients 20 --scenario 100x10000 [-- BENCH ARGS…]
#
# Both sides serve the dashboard (`advsweep coordinator --http-listen`); they differ only in the
# pages open on it (`--dashboard-clients 0` against `--dashboard-clients N`). A page (see
# coordinator/cli/benches/load/dashboard.rs) loads the sweep page's JSON, holds the event stream
# open and re-reads the report, the runs and table.md on every event, at most once per 2 s, as
# coordinator/src/web/assets/app.js does. Every run is a fresh coordinator and state directory;
# the order within a round alternates (without pages first in odd rounds, with pages first in
# even ones), so that a drift of the machine's load falls on both sides alike; in both, the
# workers start 3.1 s after the submission (the pages open over the first 2 s), so both sides
# have idled alike before a sweep that may last 25 ms. A run whose
# pages saw an error or no `done` fails the script.
#
# The bench and the `advsweep` binary it starts are built once (release, `cargo bench
# --no-run`) and copied next to the results, so a build in the shared target directory during
# the rounds cannot change what is measured. Anything after `--` goes to every bench run (e.g.
# `--reporting per-event`, `--compute-ms 100`). Progress goes to stderr; the JSON to stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
ADVSWEEP_CACHE="${ADVSWEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/advsweep}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ADVSWEEP_CACHE/target}"

rounds=5
clients=50
scenario=100x1000
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --scenario) scenario="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--rounds N] [--clients N] [--scenario WORKERSxCELLS] [-- BENCH ARGS…]" >&2
       exit 2 ;;
  esac
done

out="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-dashboard-load-XXXXXX")"
trap 'rm -rf "$out"' EXIT

echo "bench: building the load bench and advsweep (release)" >&2
cargo bench -q -p advsweep-cli --bench load --no-run --message-format=json >"$out/build.jsonl"
python3 - "$out/build.jsonl" "$out" <<'EOF'
import json, shutil, sys
found = {}
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kinds, name = m["target"]["kind"], m["target"]["name"]
    if name == "load" and "bench" in kinds:
        found["load"] = m["executable"]
    elif name == "advsweep" and "bin" in kinds:
        found["advsweep"] = m["executable"]
for name in ("load", "advsweep"):
    if name not in found:
        sys.exit(f"bench: cargo built no {name} executable")
    shutil.copy2(found[name], f"{sys.argv[2]}/{name}")
EOF
export ADVSWEEP_BENCH_BIN="$out/advsweep"

run() { # run NAME CLIENTS
  local busy
  busy="$(pgrep -c -x 'rustc|cargo' || true)"
  echo "bench: $1 ($scenario, $2 dashboard pages; load average $(cut -d' ' -f1-3 /proc/loadavg), compiler processes: ${busy:-0})" >&2
  echo "${busy:-0}" >"$out/$1.busy"
  "$out/load" --scenarios "$scenario" --repeats 1 --dashboard-clients "$2" "${extra[@]}" \
    >"$out/$1.json"
}

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    run "without-$round" 0
    run "with-$round" "$clients"
  else
    run "with-$round" "$clients"
    run "without-$round" 0
  fi
done

python3 - "$out" "$rounds" "$clients" "$scenario" "${extra[*]:-}" <<'EOF'
import json, statistics, sys
out, rounds, clients, scenario, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def sample(name):
    d = json.load(open(f"{out}/{name}.json"))
    s = d["scenarios"][0]["samples"][0]
    s["compiler_processes_at_start"] = int(open(f"{out}/{name}.busy").read())
    s["loadavg_at_start"] = d["machine"]["loadavg_at_start"]
    return d, s
rows, meta = [], None
for r in range(1, rounds + 1):
    meta, without = sample(f"without-{r}")
    _, with_ = sample(f"with-{r}")
    rows.append({"round": r, "without": without, "with": with_,
                 "cells_per_s_ratio": round(with_["cells_per_s"] / without["cells_per_s"], 3)})
def med(side, key):
    xs = [row[side][key] for row in rows if isinstance(row[side].get(key), (int, float))]
    return round(statistics.median(xs), 3) if xs else None
keys = ["cells_per_s", "wall_s", "coordinator_cpu_us_per_cell", "client_cpu_us_per_cell",
        "lease_p50_ms", "lease_p99_ms", "complete_cell_p99_ms", "peak_rss_mb"]
dash_keys = sorted(k for k in rows[0]["with"] if k.startswith("dashboard_")
                   and isinstance(rows[0]["with"][k], (int, float)))
summary = {
    "without": {k: med("without", k) for k in keys},
    "with": {k: med("with", k) for k in keys + dash_keys},
}
ratio = summary["with"]["cells_per_s"] / summary["without"]["cells_per_s"]
cpu = summary["with"]["coordinator_cpu_us_per_cell"] / summary["without"]["coordinator_cpu_us_per_cell"]
summary["cells_per_s_ratio_of_medians"] = round(ratio, 3)
summary["cells_per_s_ratio_per_round"] = [row["cells_per_s_ratio"] for row in rows]
summary["slowdown_percent"] = round((1 - ratio) * 100, 1)
summary["coordinator_cpu_per_cell_ratio"] = round(cpu, 3)
print(json.dumps({
    "bench": "advsweep dashboard under load",
    "scenario": scenario, "dashboard_clients": clients, "rounds": rounds, "bench_args": extra,
    "machine": meta["machine"], "dashboard_page_model": meta.get("dashboard_page_model"),
    "summary": summary, "rounds_detail": rows,
}, indent=2))
print(f"bench: {scenario}: without pages {summary['without']['cells_per_s']} cells/s, with "
      f"{clients} pages {summary['with']['cells_per_s']} cells/s (medians of {rounds}): ratio "
      f"{ratio:.3f}, slowdown {summary['slowdown_percent']} %; coordinator CPU per cell x{cpu:.2f}",
      file=sys.stderr)
EOF
