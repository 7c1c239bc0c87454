"""pymusicrbm._utils: helpers every layer uses."""
import sys

import numpy as np
import pytest
import torch

from pymusicrbm import RBM
from pymusicrbm._utils import finite_range, float_dtypes, is_float32, release_memory, validate_finite


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_float_dtypes_keep_a_float32_tensor_float32():
    assert float_dtypes(torch.zeros(2, dtype=torch.float32))[0] is np.float32
    assert float_dtypes(torch.zeros(2, dtype=torch.float64))[0] is np.float64
    assert float_dtypes(np.zeros(2))[0] is np.float64
    assert is_float32(np.zeros(2, np.float32)) and is_float32(torch.zeros(2)) and not is_float32(np.zeros(2))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm; malloc_trim is glibc's")
def test_release_memory_returns_freed_frames_to_the_system():
    rng = np.random.default_rng(0)
    held = [rng.random((646, 513)).astype(np.float32) for _ in range(300)]  # ~400 MB of per-clip-sized arrays
    before = _rss_mb()
    del held
    release_memory()
    assert _rss_mb() < before - 250


def test_finite_range_reuses_the_validated_range_once_and_only_for_that_array():
    X = np.array([[0.0, 0.5], [0.25, 1.0]])
    Xv = validate_finite(RBM(), X)
    Xv[0, 0] = -3.0  # (changed behind the validator's back: only the next range check of Xv may miss it)
    assert finite_range(Xv) == (0.0, 1.0)   # the range validate_finite read
    assert finite_range(Xv) == (-3.0, 1.0)  # used once: read again
    Yv = validate_finite(RBM(), np.array([[2.0, 7.0]]))
    assert finite_range(X.copy()) == (-3.0, 1.0)  # another array: its own range (and the saved one is dropped)
    assert finite_range(Yv) == (2.0, 7.0)
    with pytest.raises(ValueError, match="NaN"):
        validate_finite(RBM(), np.array([[np.nan, 0.0]]))
