#!/usr/bin/env bash
# Before and after: two builds of advsweep-worker measured by the same `advsweep-worker bench`
# computation, alternated round by round (A B, then B A, …) so that drift in the machine's
# load falls on both alike. Prints one JSON object: per (model, mode) every timed value of
# both, their medians and the ratio after / before.
#
#   bench/ab-worker.sh BEFORE_BIN AFTER_BIN [--rounds N] [bench options…]
#   # e.g. the last commit's worker against the working tree's:
#   git worktree add /tmp/before HEAD~1 && (cd /tmp/before && source scripts/env.sh &&
#     CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p advsweep-worker)
#   bench/ab-worker.sh /tmp/before-target/release/advsweep-worker \
#     "$CARGO_TARGET_DIR/release/advsweep-worker" --rounds 3 \
#     --device cpu --model resnet18 --mode pgd10-eval --threads 2 --images 64 --batch-size 64
#
# Every option after the two binaries but --rounds (default 3) goes to `advsweep-worker bench`
# unchanged (see its --help; --json is added). Progress goes to stderr.
set -euo pipefail

if [ $# -lt 2 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
before="$1" after="$2"
shift 2
rounds=3 args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
for bin in "$before" "$after"; do
  [ -x "$bin" ] || { echo "bench/ab-worker.sh: $bin is not an executable" >&2; exit 2; }
done

out="$(mktemp -d "${TMPDIR:-/tmp}/advsweep-ab-XXXXXX")"
trap 'rm -rf "$out"' EXIT
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= rounds; r++)); do
  order=(before after)
  [ $((r % 2)) = 0 ] && order=(after before)
  for side in "${order[@]}"; do
    bin="$before"
    [ "$side" = after ] && bin="$after"
    echo "round $r/$rounds: $side" >&2
    "$bin" bench "${args[@]}" --json >"$out/$side-$r.json"
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$rounds" "$before" "$after" "$load_before" "$load_after" "${args[*]}" <<'PY'
import json, os, statistics, sys

out, rounds, before, after, load_before, load_after, args = sys.argv[1:]
values = {}
for side in ("before", "after"):
    for r in range(1, int(rounds) + 1):
        for m in json.load(open(os.path.join(out, f"{side}-{r}.json")))["results"]:
            key = (m["model"], m["mode"], m["batch_size"], m["images"])
            values.setdefault(key, {"before": [], "after": []})[side].extend(m["runs"])
results = []
for (model, mode, batch, images), v in values.items():
    b, a = statistics.median(v["before"]), statistics.median(v["after"])
    results.append({
        "model": model, "mode": mode, "batch_size": batch, "images": images,
        "before_images_per_second": round(b, 2), "after_images_per_second": round(a, 2),
        "after_over_before": round(a / b, 3),
        "before_runs": v["before"], "after_runs": v["after"],
    })
print(json.dumps({
    "bench": "advsweep-worker before/after",
    "before": before, "after": after, "rounds": int(rounds), "bench_args": args,
    "load_before": load_before, "load_after": load_after, "results": results,
}, indent=2))
PY
