#!/usr/bin/env bash
# Builds the wheel against the installed torch and proves it works on its own (called by .ci/run):
#   1. `pip wheel --no-build-isolation --no-deps .` (reuses the build tree of the editable install, so it is quick);
#   2. its metadata pins `torch==<major>.<minor>.*` of the torch it was built against, and it carries that version
#      in pymusicrbm/_build_info.py;
#   3. a fresh virtual environment (no system site-packages) gets the wheel and the same torch, with every other
#      dependency resolved by pip from the wheel's metadata; there, outside the source tree, the package imports,
#      one op runs and matches a plain-PyTorch reference, and the `pymusicrbm` command starts.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
PY=${PYTHON:-python}
fail() {
  echo "check_wheel: FAILED after $((SECONDS - start)) s: $*" >&2
  exit 1
}

TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__)") || fail "cannot import torch from $PY"
DIST=$(mktemp -d "${TMPDIR:-/tmp}/pymusicrbm-wheel.XXXXXX")
trap 'rm -rf "$DIST"' EXIT

"$PY" -m pip wheel --no-build-isolation --no-deps -q -w "$DIST" . || fail "pip wheel failed"
wheels=("$DIST"/pymusicrbm-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one pymusicrbm wheel in $DIST, got: ${wheels[*]}"
WHEEL=${wheels[0]}

"$PY" - "$WHEEL" "$TORCH_VERSION" <<'EOF' || fail "the wheel's metadata or build info is wrong"
import re, sys, zipfile
wheel, torch_version = sys.argv[1:]
minor = re.match(r"\d+\.\d+", torch_version)[0]
with zipfile.ZipFile(wheel) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    info = z.read("pymusicrbm/_build_info.py").decode()
torch_reqs = [line.split(":", 1)[1].strip() for line in meta.splitlines()
              if line.startswith("Requires-Dist:") and re.match(r"Requires-Dist:\s*torch\b", line)]
if torch_reqs != [f"torch=={minor}.*"]:
    sys.exit(f"check_wheel: the wheel requires {torch_reqs}, expected ['torch=={minor}.*'] (built against {torch_version})")
if f'TORCH_VERSION = "{torch_version}"' not in info:
    sys.exit(f"check_wheel: pymusicrbm/_build_info.py does not record torch {torch_version}:\n{info}")
print(f"check_wheel: {wheel.rsplit('/', 1)[-1]} requires torch=={minor}.* and records torch {torch_version}")
EOF

VENV=$DIST/venv
"$PY" -m venv "$VENV" || fail "python -m venv failed"
# the torch release the wheel was built against, without the local label (+cpu): the index decides the variant
"$VENV/bin/python" -m pip install -q "$WHEEL" "torch==${TORCH_VERSION%%+*}" ||
  fail "pip install of the wheel with torch==${TORCH_VERSION%%+*} into a fresh venv failed"
# run from an empty folder, so that only the installed wheel can be imported
(cd "$DIST" && env -u PYTHONPATH "$VENV/bin/python" - <<'EOF') || fail "the installed wheel does not import or run"
import torch
import pymusicrbm
from pymusicrbm import ops

assert pymusicrbm.__file__.startswith(__import__("sys").prefix), pymusicrbm.__file__
g = torch.Generator().manual_seed(0)
v, W, c = torch.rand(8, 5, generator=g), torch.randn(5, 3, generator=g), torch.randn(3, generator=g)
p, h = ops.sample_hidden(v, W, c)
torch.testing.assert_close(p, torch.sigmoid(v @ W + c))
assert set(h.unique().tolist()) <= {0.0, 1.0}, h
print(f"check_wheel: pymusicrbm from {pymusicrbm.__file__.rsplit('/', 2)[0]} runs sample_hidden on torch "
      f"{torch.__version__} and matches the reference")
EOF
(cd "$DIST" && "$VENV/bin/pymusicrbm" --help >/dev/null) || fail "the pymusicrbm command does not start"
echo "check_wheel: OK in $((SECONDS - start)) s"
