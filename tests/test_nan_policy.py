"""One policy for non-finite values in the sampling ops, dense and convolutional alike: a NaN never becomes a
plausible-looking (0/1 or finite) sample. Where the check costs no device synchronisation (CPU) the op raises
on non-finite data; the kernels themselves turn a NaN probability or mean into a NaN sample (the only behaviour
on a GPU, where a check would stall the stream, and what a NaN parameter gives on any device)."""
import pytest
import torch

from pymusicrbm import ops

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


def _dense(device, dtype, V=37, H=11, B=5):
    g = torch.Generator().manual_seed(0)
    W = (0.1 * torch.randn(V, H, generator=g, dtype=dtype)).to(device)
    b = torch.zeros(V, dtype=dtype, device=device)
    c = torch.zeros(H, dtype=dtype, device=device)
    v = (torch.rand(B, V, generator=g, dtype=dtype) < 0.5).to(dtype).to(device)
    h = (torch.rand(B, H, generator=g, dtype=dtype) < 0.5).to(dtype).to(device)
    return v, h, W, b, c


def _conv(device, dtype, B=3, C=1, K=4, size=(10, 12), f=3):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(B, C, *size, generator=g, dtype=dtype).to(device)
    W = (0.1 * torch.randn(K, C, f, f, generator=g, dtype=dtype)).to(device)
    b = torch.zeros(C, dtype=dtype, device=device)
    c = torch.zeros(K, dtype=dtype, device=device)
    h = (torch.rand(B, K, size[0] - f + 1, size[1] - f + 1, generator=g, dtype=dtype) < 0.2).to(dtype).to(device)
    return v, h, W, b, c


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_sampling_ops_raise_on_non_finite_data(bad, dtype):
    v, h, W, b, c = _dense("cpu", dtype)
    v[1, 3] = bad
    h[2, 0] = bad
    with pytest.raises(RuntimeError, match="sample_hidden: v contains NaN or Inf"):
        ops.sample_hidden(v, W, c)
    with pytest.raises(RuntimeError, match="sample_visible: h contains NaN or Inf"):
        ops.sample_visible(h, W, b)
    with pytest.raises(RuntimeError, match="sample_visible: h contains NaN or Inf"):
        ops.sample_visible(h, W, b, visible="gaussian")
    v, h, W, b, c = _conv("cpu", dtype)
    v[0, 0, 2, 2] = bad
    h[1, 0, 0, 0] = bad
    for pool in (1, 2):
        with pytest.raises(RuntimeError, match="conv_sample_hidden: v contains NaN or Inf"):
            ops.conv_sample_hidden(v, W, c, pool)
    with pytest.raises(RuntimeError, match="conv_sample_visible: h contains NaN or Inf"):
        ops.conv_sample_visible(h, W, b)


def _assert_nan_exactly_where(prob, sample, where):
    """NaN probabilities give NaN samples there; everywhere else samples are finite (0/1 for Bernoulli)."""
    assert torch.equal(torch.isnan(prob), where)
    assert torch.equal(torch.isnan(sample), where)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_nan_parameter_propagates_into_samples(device, dtype):
    v, h, W, b, c = _dense(device, dtype)
    c[4] = float("nan")                    # one hidden unit's bias: that column of p and h is NaN
    p, hs = ops.sample_hidden(v, W, c)
    where = torch.zeros_like(p, dtype=torch.bool)
    where[:, 4] = True
    _assert_nan_exactly_where(p, hs, where)
    assert set(hs[~where].unique().tolist()) <= {0.0, 1.0}

    b[7] = float("nan")                    # one visible unit's bias
    for visible in ("bernoulli", "gaussian"):
        mean, vs = ops.sample_visible(h, W, b, visible=visible)
        where = torch.zeros_like(mean, dtype=torch.bool)
        where[:, 7] = True
        _assert_nan_exactly_where(mean, vs, where)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [1, 2])
def test_conv_nan_parameter_propagates_into_samples(device, dtype, pool):
    v, h, W, b, c = _conv(device, dtype)
    c[2] = float("nan")                    # one filter's bias: its whole map is NaN
    P, H, Q = ops.conv_sample_hidden(v, W, c, pool)
    where = torch.zeros_like(P, dtype=torch.bool)
    where[:, 2] = True
    _assert_nan_exactly_where(P, H, where)
    assert torch.isnan(Q[:, 2]).all() and torch.isfinite(Q[:, [0, 1, 3]]).all()
    assert set(H[~where].unique().tolist()) <= {0.0, 1.0}

    b[0] = float("nan")
    for visible in ("bernoulli", "gaussian"):
        mean, vs = ops.conv_sample_visible(h, W, b, visible=visible)
        _assert_nan_exactly_where(mean, vs, torch.ones_like(mean, dtype=torch.bool))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_nan_input_never_gives_plausible_samples_even_unchecked(dtype):
    """The kernels propagate on the CPU too: a NaN weight reaches every hidden unit of a row through the GEMM."""
    v, h, W, b, c = _dense("cpu", dtype)
    W[5, :] = float("nan")
    p, hs = ops.sample_hidden(v, W, c)
    # every row sees W[5] (NaN * 0 is NaN too), so every probability and every sample is NaN, none a 0 or a 1
    assert torch.isnan(p).all() and torch.isnan(hs).all()
