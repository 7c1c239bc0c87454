#!/usr/bin/env bash
# Proves that the CUDA kernels compile on a machine without a GPU (called by .ci/run).
#
# The CPU torch wheel has no CUDA headers, so this builds against a CUDA build of torch kept in its own venv
# (${PYMUSICRBM_CUDA_VENV:-~/.cache/pymusicrbm-cuda-venv}, created on first use and cached). Only nvcc and the
# CUDA runtime come from the local toolkit; the cuBLAS/cuSPARSE/cuRAND/... headers and libraries that ATen's CUDA
# headers and torch's CMake package ask for come from the nvidia-* wheels installed next to that torch.
#
# Default: configure and build the whole extension (CPU + every csrc/cuda/*.cu) with CMake, CUDA ON, for sm_80 and
# sm_90, in build/cuda-ci; then load the library into that torch and check that every pymusicrbm op has a CUDA
# kernel (the ops cannot run here: no driver). PYMUSICRBM_CUDA_CI_MODE=nvcc (or no cmake/ninja) instead compiles
# each .cu to an object with nvcc directly. Either way a .cu that does not compile fails the script with the
# compiler's error, and the last line is a one-line summary.
#
# Our package is never pip-installed here, so pip can never fetch a torch into a build-isolation env.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PYMUSICRBM_CUDA_VENV:-$HOME/.cache/pymusicrbm-cuda-venv}
TORCH_SPEC=${PYMUSICRBM_CUDA_TORCH:-torch==2.14.1}
BUILD=${PYMUSICRBM_CUDA_BUILD_DIR:-build/cuda-ci}
JOBS=${PYMUSICRBM_CUDA_JOBS:-2}
MODE=${PYMUSICRBM_CUDA_CI_MODE:-cmake}
ARCHS=(80 90)
SM_LIST=$(printf 'sm_%s ' "${ARCHS[@]}")
SM_LIST=${SM_LIST% }
start=$SECONDS

fail() {
  echo "build_cuda: FAILED after $((SECONDS - start)) s: $*" >&2
  exit 1
}

shopt -s nullglob
CU_FILES=(csrc/cuda/*.cu)
[ ${#CU_FILES[@]} -gt 0 ] || fail "no csrc/cuda/*.cu files found"

# --- the CUDA toolkit: nvcc's own idea of its root (a /usr/local/bin/nvcc wrapper script is common) ---
nvcc_cmd=${CUDACXX:-$(command -v nvcc || true)}
[ -n "$nvcc_cmd" ] || fail "nvcc not found: install the CUDA toolkit's nvcc or set CUDACXX"
CUDA_ROOT=${CUDA_HOME:-$("$nvcc_cmd" -dryrun -x cu -c /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -1)}
CUDA_ROOT=$(realpath "$CUDA_ROOT")
NVCC=$CUDA_ROOT/bin/nvcc
[ -x "$NVCC" ] || fail "no nvcc in the CUDA toolkit root $CUDA_ROOT (set CUDA_HOME)"

# --- the CUDA torch venv (cached) ---
has_cuda_torch() { "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; }
if ! has_cuda_torch; then
  echo "build_cuda: creating $VENV with $TORCH_SPEC (CUDA build, ~5.5 GB, cached for later runs)"
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$TORCH_SPEC" numpy ||
    fail "pip install $TORCH_SPEC into $VENV failed"
  has_cuda_torch || fail "$VENV has a torch without CUDA; remove it or point PYMUSICRBM_CUDA_VENV elsewhere"
fi
PY=$VENV/bin/python
# CMake learned the CUDA20 dialect for nvcc only in 3.26+ (Debian 12 ships 3.25): take CMake and ninja from PyPI.
if ! "$VENV/bin/cmake" --version 2>/dev/null | grep -qE 'version (3\.(2[89]|[3-9][0-9])|[4-9])\.'; then
  "$PY" -m pip install --disable-pip-version-check -q "cmake>=3.28" ninja || fail "pip install cmake ninja failed"
fi
export PATH=$VENV/bin:$PATH
info=$("$PY" -c '
import os, sysconfig, torch
print(torch.__version__, torch.version.cuda, os.path.dirname(torch.__file__), sysconfig.get_paths()["purelib"],
      int(torch._C._GLIBCXX_USE_CXX11_ABI))') || fail "cannot import torch from $PY"
read -r TORCH_VERSION TORCH_CUDA TORCH_DIR SITE CXX11_ABI <<<"$info"

# Headers and libraries of the nvidia-* wheels (nvidia/cu13/{include,lib} for CUDA 13, nvidia/<lib>/... for 12),
# searched after the toolkit's own. CMake's find_library wants unversioned names: link libcublas.so -> .so.13 etc.
mkdir -p "$BUILD"
BUILD=$(realpath "$BUILD")
WHEEL_INCLUDES=("$SITE"/nvidia/*/include)
LIBDIR=$BUILD/cuda-libs
rm -rf "$LIBDIR" && mkdir -p "$LIBDIR"
for lib in "$SITE"/nvidia/*/lib/lib*.so.*; do
  name=$(basename "$lib")
  ln -sfn "$lib" "$LIBDIR/${name%%.so*}.so"
done
ISYSTEM=""
for d in "${WHEEL_INCLUDES[@]}"; do ISYSTEM+=" -isystem $d"; done

echo "build_cuda: torch $TORCH_VERSION (CUDA $TORCH_CUDA) from $VENV; nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') at $NVCC"
echo "build_cuda: ${#CU_FILES[@]} CUDA source(s): ${CU_FILES[*]}; targets $SM_LIST; mode $MODE"

if [ "$MODE" = cmake ] && ! { command -v cmake && command -v ninja; } >/dev/null; then
  echo "build_cuda: cmake or ninja missing: compiling the .cu files with nvcc only"
  MODE=nvcc
fi

if [ "$MODE" = cmake ]; then
  # torch's CMake package ignores CMAKE_CUDA_ARCHITECTURES and takes the gencode flags from TORCH_CUDA_ARCH_LIST.
  arch_list=""
  for a in "${ARCHS[@]}"; do arch_list+="${arch_list:+;}${a:0:-1}.${a: -1}"; done  # 80 -> 8.0
  TORCH_CUDA_ARCH_LIST=$arch_list cmake -S . -B "$BUILD" -G Ninja \
    -DPython_EXECUTABLE="$PY" \
    -DPYMUSICRBM_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$(IFS=';'; echo "${ARCHS[*]}")" \
    -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DCUDAToolkit_ROOT="$CUDA_ROOT" \
    -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_ROOT" \
    -DCUDA_NVCC_EXECUTABLE="$NVCC" \
    -DCMAKE_LIBRARY_PATH="$LIBDIR" \
    -DCMAKE_CUDA_FLAGS="$ISYSTEM" \
    -DCMAKE_CXX_FLAGS="$ISYSTEM" >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; fail "CMake configure with CUDA ON failed (log above, $BUILD/configure.log)"; }
  ninja -C "$BUILD" -j "$JOBS" -k 0 || fail "the CUDA build failed (compiler errors above)"
  for f in "${CU_FILES[@]}"; do
    [ -n "$(find "$BUILD" -name "$(basename "$f").o")" ] || fail "$f was not compiled by the CMake build"
  done
  so=$(find "$BUILD" -maxdepth 1 -name '_C*.so' | head -1)
  [ -n "$so" ] || fail "the build produced no _C*.so"
  # Load the library into the CUDA torch: every op defined must have a CUDA kernel (running one needs a GPU).
  "$PY" - "$so" <<'EOF' || fail "$so does not load or lacks CUDA kernels"
import sys, torch
torch.ops.load_library(sys.argv[1])
ops = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("pymusicrbm::"))
keys = ("CUDA", "CompositeExplicitAutograd", "CompositeImplicitAutograd")
missing = [n for n in ops if not any(torch._C._dispatch_has_kernel_for_dispatch_key(n, k) for k in keys)]
if not ops or missing:
    sys.exit(f"build_cuda: ops without a CUDA kernel: {missing or 'no pymusicrbm ops registered'}")
print(f"build_cuda: {sys.argv[1].rsplit('/', 1)[-1]} loads into torch {torch.__version__}; CUDA kernels for all "
      f"{len(ops)} ops ({', '.join(n.split('::')[1] for n in ops)})")
EOF
  # The build info a CUDA wheel ships: the torch it needs and that it holds CUDA kernels (pymusicrbm._extension).
  grep -qx "TORCH_VERSION = \"$TORCH_VERSION\"" "$BUILD/_build_info.py" &&
    grep -qx "CUDA_VERSION = \"$TORCH_CUDA\"" "$BUILD/_build_info.py" ||
    fail "$BUILD/_build_info.py does not record torch $TORCH_VERSION with CUDA $TORCH_CUDA"
  what="compiled for $SM_LIST and linked into $(basename "$so")"
else
  OBJ=$BUILD/objects
  mkdir -p "$OBJ"
  flags=(-std=c++20 --expt-relaxed-constexpr -O3 -Xcompiler -fPIC "-D_GLIBCXX_USE_CXX11_ABI=$CXX11_ABI"
         -Icsrc -isystem "$TORCH_DIR/include" -isystem "$TORCH_DIR/include/torch/csrc/api/include" $ISYSTEM)
  for a in "${ARCHS[@]}"; do flags+=(-gencode "arch=compute_$a,code=sm_$a"); done
  export NVCC OBJ
  # One nvcc per file, $JOBS at a time; every failure is reported, not only the first.
  printf '%s\0' "${CU_FILES[@]}" | xargs -0 -P "$JOBS" -I{} sh -c \
    'f="$1"; shift; "$NVCC" "$@" -c "$f" -o "$OBJ/$(basename "$f").o" || { echo "build_cuda: $f does not compile" >&2; exit 1; }' \
    _ {} "${flags[@]}" || fail "at least one .cu file does not compile (compiler errors above)"
  what="compiled to objects for $SM_LIST by nvcc"
fi

echo "build_cuda: OK: ${#CU_FILES[@]} CUDA file(s) $what in $((SECONDS - start)) s"
