#!/usr/bin/env bash
# The README's dashboard screenshots, made anew: a coordinator with the dashboard, the
# quickstart grid over two seeds, two workers; headless Chromium shows the sweep's page once
# while it runs (docs/figures/dashboard-running.png) and once it is done
# (docs/figures/dashboard-done.png), and a run's page (docs/figures/dashboard-run.png).
# Needs the binaries built (`cargo build --bins`) and `chromium`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
bin="$CARGO_TARGET_DIR/debug"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
grpc=127.0.0.1:50161 http=127.0.0.1:8161
"$bin/advsweep" coordinator --listen "$grpc" --http-listen "$http" --state-dir "$work/state" \
  >"$work/coordinator.log" 2>&1 &
sed -e 's/^seeds = \[0\]/seeds = [0, 1]/' -e 's/^name = "quickstart"/name = "dashboard"/' \
  sweeps/quickstart.toml >"$work/sweep.toml"
until "$bin/advsweep" submit "$work/sweep.toml" --coordinator "http://$grpc" >/dev/null 2>&1; do
  sleep 0.2
done
for i in 1 2; do
  XDG_CACHE_HOME="$work/cache" "$bin/advsweep-worker" --coordinator "http://$grpc" --device cpu \
    --threads 1 --name "cpu-$i" >"$work/worker-$i.log" 2>&1 &
done
# A page's screenshot once its event stream has ended (the sweep done): `--virtual-time-budget`
# waits for the network to go idle. A running sweep's page is taken through the DevTools
# protocol after a few seconds of real time (scripts/cdp_screenshot.py).
shot() { # URL FILE TIME-FLAG [HEIGHT]
  chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
    --user-data-dir="$work/profile" --window-size=1280,"${4:-2600}" \
    "$3" --screenshot="$2" "$1" 2>/dev/null
}
status() { "$bin/advsweep" status dashboard --json --coordinator "http://$grpc"; }
# Running: once a first run has finished (its cells on the charts) and others are in flight.
until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if sum(c["state"] == "done" for c in s["cells"]) >= 4 else 1)'; do
  sleep 1
done
python3 scripts/cdp_screenshot.py chromium "http://$http/sweeps/dashboard" docs/figures/dashboard-running.png 4
until status | python3 -c 'import json,sys; s=json.load(sys.stdin); sys.exit(0 if s["state"] != "running" else 1)'; do
  sleep 2
done
shot "http://$http/sweeps/dashboard" docs/figures/dashboard-done.png --virtual-time-budget=60000
run="$(status | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][1]["run_id"])')"
shot "http://$http/sweeps/dashboard/runs/$run" docs/figures/dashboard-run.png --virtual-time-budget=60000 1500
echo "wrote docs/figures/dashboard-{running,done,run}.png"
