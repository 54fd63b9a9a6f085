#!/usr/bin/env bash
# The README's first command: set up libtorch if needed, build, and run sweeps/quickstart.toml
# on this machine (embedded coordinator + local workers over gRPC on 127.0.0.1).
# Extra arguments go to `advsweep run`, e.g. `scripts/quickstart.sh --workers 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
cargo build --bins --locked
exec "$CARGO_TARGET_DIR/debug/advsweep" run sweeps/quickstart.toml "$@"
