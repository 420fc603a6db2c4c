#!/usr/bin/env bash
# One-command set-up of mmyolo_ext: creates .venv at the repository root and installs
# torch, mmcv 2.0.1 (built from its sdist with compiled ops, wheel cached), mmengine,
# mmdet, mmyolo, pycocotools and mmyolo_ext (editable). Idempotent: a second run on a
# ready environment only checks it.
#
# Environment knobs:
#   PYTHON=python3.11          interpreter used to create .venv
#   TORCH_SPEC="torch==2.13.0" what to install when no torch is there yet (a torch already in
#                              .venv, or in $PYTHON's own site-packages, CUDA or not, is kept)
#   MMYOLO_EXT_CACHE=~/.cache/mmyolo_ext   where the built mmcv wheel is cached
#   MAX_JOBS=N                 parallel compile jobs for mmcv (default: number of cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
CACHE="${MMYOLO_EXT_CACHE:-$HOME/.cache/mmyolo_ext}"
MMCV_VERSION=2.0.1
VENV="$ROOT/.venv"
START=$(date +%s)

die() { echo "setup_env: ERROR: $*" >&2; exit 1; }
say() { echo "setup_env: $*"; }

# ---- preconditions, checked before anything is installed ------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' on PATH; install Python 3.10-3.12 or set PYTHON=..."
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$PYVER" in
  3.10|3.11|3.12) ;;
  *) die "Python $PYVER found; mmcv 2.0.1 / mmdet 3.3 / mmyolo 0.6 need Python 3.10-3.12 (set PYTHON=python3.11)";;
esac
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "Python $PYVER lacks venv/ensurepip (Debian: apt-get install python3-venv)"
FREE_GB=$(df -Pk "$ROOT" | awk 'NR==2 {print int($4/1048576)}')
[ "$FREE_GB" -ge 3 ] || die "only ${FREE_GB} GB free on $(df -P "$ROOT" | awk 'NR==2{print $6}'); need at least 3 GB (8 GB with a CUDA torch)"

# ---- virtual environment ----------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  BASE_TORCH=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
  if [ -n "$BASE_TORCH" ]; then
    # keep the user's torch (a CUDA build, say): visible in .venv, not reinstalled
    say "creating $VENV with Python $PYVER, reusing its torch $BASE_TORCH"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    say "creating $VENV with Python $PYVER"
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# Build tooling: setuptools must still ship pkg_resources (mmcv's setup.py) and satisfy torch.
"$PY" - <<'PYEOF' 2>/dev/null || "${PIP[@]}" install -q "setuptools>=77,<81" wheel ninja "numpy>=2,<3" \
  || die "could not install the build tools (setuptools>=77,<81, wheel, ninja, numpy 2): is the package index reachable?"
import importlib.metadata as m
v = tuple(int(x) for x in m.version("setuptools").split(".")[:2])
assert (77, 0) <= v < (81, 0)
m.version("wheel"); m.version("ninja"); m.version("numpy")
PYEOF

# ---- torch (kept when present) ----------------------------------------------------
if "$PY" -c 'import torch' 2>/dev/null; then
  say "keeping torch $("$PY" -c 'import torch; print(torch.__version__)') already in .venv"
else
  say "installing $TORCH_SPEC"
  "${PIP[@]}" install -q "$TORCH_SPEC" \
    || die "could not install $TORCH_SPEC (is the package index reachable? TORCH_SPEC chooses another build)"
fi
# one interpreter start for all torch facts: version tag, CUDA build, nvcc
read -r TORCH_TAG CUDA_VERSION CUDA_HOME_GUESS < <("$PY" - <<'PYEOF'
import torch
from torch.utils.cpp_extension import CUDA_HOME
print(torch.__version__.replace('+', '_'), torch.version.cuda or '-', CUDA_HOME or '-')
PYEOF
)
if [ "$CUDA_VERSION" != - ] && [ -x "$CUDA_HOME_GUESS/bin/nvcc" ]; then
  OPS_KIND="cuda$CUDA_VERSION"
  export FORCE_CUDA=1
else
  OPS_KIND=cpu
fi

# ---- mmcv 2.0.1 with compiled ops, built once and cached ---------------------------
mmcv_ok() { "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; }
if mmcv_ok; then
  say "mmcv $MMCV_VERSION with ops already installed"
else
  WHEEL_DIR="$CACHE/wheels/torch-$TORCH_TAG-$OPS_KIND-py$PYVER"
  mkdir -p "$WHEEL_DIR"
  if ! ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
    command -v "${CXX:-g++}" >/dev/null 2>&1 || die "no C++ compiler (g++) found; mmcv's ops must be compiled (Debian: apt-get install build-essential)"
    "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || die "Python headers missing (Python.h); Debian: apt-get install python3-dev"
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    say "downloading the mmcv $MMCV_VERSION sdist"
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD" \
      || die "could not download the mmcv $MMCV_VERSION sdist from the package index"
    tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
    # torch>=2.1 headers need C++17; mmcv 2.0.1 hard-codes -std=c++14.
    sed -i 's/-std=c++14/-std=c++17/g' "$BUILD/mmcv-$MMCV_VERSION/setup.py"
    JOBS="${MAX_JOBS:-$(nproc)}"
    say "building mmcv $MMCV_VERSION ops ($OPS_KIND, $JOBS jobs; ~12 min on 2 cores, once per machine)"
    (cd "$BUILD/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 MAX_JOBS="$JOBS" \
      "${PIP[@]}" wheel -q --no-deps --no-build-isolation . -w "$WHEEL_DIR") > "$BUILD/build.log" 2>&1 \
      || { tail -40 "$BUILD/build.log" >&2; die "mmcv build failed (log above)"; }
  fi
  say "installing cached $(basename "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl)"
  "${PIP[@]}" install -q "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl \
    || die "could not install the cached mmcv wheel from $WHEEL_DIR (delete it to rebuild)"
  mmcv_ok || die "mmcv $MMCV_VERSION installed but 'import mmcv.ops' fails"
fi

# ---- the rest of the stack and mmyolo_ext -----------------------------------------
if "$PY" - "$ROOT" <<'PYEOF' 2>/dev/null; then
import sys, mmyolo_ext, mmyolo, mmdet, pycocotools, pytest, psutil, onnx, onnxruntime, onnxslim, openvino, nncf
assert mmyolo_ext.__file__.startswith(sys.argv[1])  # editable, this checkout
PYEOF
  say "OpenMMLab stack and mmyolo_ext already installed"
else
  say "installing mmengine, mmdet, mmyolo, pycocotools, onnx, onnxruntime, openvino, nncf and mmyolo_ext (editable)"
  "${PIP[@]}" install -q --no-build-isolation -e "$ROOT[tests,deploy]" \
    || die "could not install mmengine/mmdet/mmyolo/pycocotools or mmyolo_ext (pip's message above)"
fi

"$PY" -c 'import mmyolo_ext, mmyolo, mmdet, mmcv.ops' || die "final import check failed"
say "ready in $(( $(date +%s) - START )) s: activate with 'source .venv/bin/activate'"
