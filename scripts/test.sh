#!/usr/bin/env bash
# The README's test command (and exactly what .ci/run runs): set up libtorch if needed, build
# every binary (the end-to-end tests start the real `advsweep` and `advsweep-worker`), then run
# the whole workspace's tests, then validate the deployment files (kustomize builds, shellcheck,
# systemd-analyze: each where its tool exists).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
# The dashboard's browser test drives headless Chromium (Debian's package), installed when
# missing where this runs as root with apt (CI, a fresh machine); elsewhere the test says so.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The torch venv first on PATH: its python3 has PyYAML and its bin holds shellcheck.
PATH="$(dirname "$ADVSWEEP_TORCH_PYTHON"):$PATH" bash scripts/validate-deploy.sh
