#!/usr/bin/env bash
# Builds advsweep-worker (HEAD) against another PyTorch release's libtorch, for a machine that
# has that PyTorch and no cargo (a GPU box with torch 2.11, say), then run it there with
# LD_LIBRARY_PATH at that torch's lib/:
#
#   bench/worker-for-torch.sh 2.11.0 [OUT]        # OUT defaults to .gpu/advsweep-worker-torch2.11.0
#   # there:
#   export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
#   OUT --self-check --device cuda && WORKER_BIN=OUT PYTHON=python3 bench/compute.sh --device cuda
#
# Why: tch 0.26 binds libtorch 2.13, and a binary built against 2.13 does not run on another
# release (every symbol resolves, but the C++ ABI differs: the first op fails). So this fetches
# the PyPI wheel torch==VERSION (libraries and headers only, cached under $ADVSWEEP_CACHE), and
# builds an export of HEAD with torch-sys patched to a copy whose generated C wrapper lacks the
# operators that release does not have (found from the compiler's errors; 2.11.0 lacks 15, none
# used by the worker). Nothing in the checkout changes; a first build takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?usage: bench/worker-for-torch.sh TORCH_VERSION [OUT]}"
out="${2:-.gpu/advsweep-worker-torch$version}"
# shellcheck source=../scripts/env.sh
source scripts/env.sh
work="$ADVSWEEP_CACHE/libtorch-$version"
mkdir -p "$work"

if [ ! -f "$work/torch/lib/libtorch_cpu.so" ]; then
  echo "worker-for-torch: fetching torch==$version (libtorch only)" >&2
  "$(dirname "$ADVSWEEP_TORCH_PYTHON")/pip" download --disable-pip-version-check -q --no-deps \
    -d "$work/wheel" "torch==$version"
  (cd "$work" && unzip -q -o wheel/torch-*.whl 'torch/lib/*' 'torch/include/*' 'torch/share/*')
  rm -rf "$work/wheel"
fi

src="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/torch-sys-0.26.0 | head -1)"
rm -rf "$work/torch-sys" "$work/tree"
cp -r "$src" "$work/torch-sys"
mkdir -p "$work/tree"
git archive HEAD | tar -x -C "$work/tree"
printf '\n[patch.crates-io]\ntorch-sys = { path = "%s" }\n' "$work/torch-sys" >>"$work/tree/Cargo.toml"

for attempt in 1 2 3 4; do
  if LIBTORCH="$work/torch" LIBTORCH_BYPASS_VERSION_CHECK=1 CARGO_TARGET_DIR="$work/target" \
    cargo build --release -q -p advsweep-worker --manifest-path "$work/tree/Cargo.toml" \
    2>"$work/build.log"; then
    mkdir -p "$(dirname "$out")"
    cp "$work/target/release/advsweep-worker" "$out"
    echo "$out"
    exit 0
  fi
  # Drop the wrapper functions the compiler rejected, and try again.
  mapfile -t drop < <(grep -oE "In function '[a-z]+ (atg_[A-Za-z0-9_]+)\(" "$work/build.log" |
    sed -E 's/.*(atg_[A-Za-z0-9_]+)\(/\1/' | sort -u)
  if [ "${#drop[@]}" -eq 0 ]; then
    tail -40 "$work/build.log" >&2
    echo "worker-for-torch: the build failed for another reason (attempt $attempt)" >&2
    exit 1
  fi
  echo "worker-for-torch: dropping ${#drop[@]} operators torch $version lacks" >&2
  "$ADVSWEEP_TORCH_PYTHON" - "$work/torch-sys/libtch/torch_api_generated.cpp" "${drop[@]}" <<'EOF'
import re, sys
path, bad = sys.argv[1], set(sys.argv[2:])
out, skip = [], False
for line in open(path).read().split("\n"):
    m = re.match(r"^\w[\w\s\*]* (atg_\w+)\(", line)
    if m and m.group(1) in bad:
        skip = True
    if not skip:
        out.append(line)
    elif line == "}":
        skip = False
open(path, "w").write("\n".join(out))
EOF
done
echo "worker-for-torch: still failing after $attempt attempts; see $work/build.log" >&2
exit 1
