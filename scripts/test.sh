#!/usr/bin/env bash
# The README's test command (and exactly what .ci/run runs): set up libtorch if needed, build
# every binary (the end-to-end tests start the real `advsweep` and `advsweep-worker`), then run
# the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --workspace --bins --locked
cargo test --workspace --locked
