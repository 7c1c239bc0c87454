"""Convolutional RBM ops against the plain-PyTorch reference in pymusicrbm._reference (F.conv2d /
F.conv_transpose2d and an explicit pooling softmax) that consumes the same Philox streams (ops.philox_uniform_ /
philox_normal_ with the same generator state, one draw per sampling phase), sampled statistics against
probabilities, opcheck, gradcheck and every bad input."""
import math

import pytest
import torch
import torch.nn.functional as F

import pymusicrbm  # noqa: F401
from pymusicrbm import _reference as reference
from pymusicrbm import ops
from pymusicrbm._reference import pool_blocks as blocks
from _op_checks import assert_compiled_step_matches_eager

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=2e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def gen(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


def problem(B, C, K, fh, fw, hh, wh, device, dtype, seed=0, scale=0.5, gaussian=True):
    """v (B, C, hh + fh - 1, wh + fw - 1), W (K, C, fh, fw), b (C,), c (K,), sigma (C,)."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, C, hh + fh - 1, wh + fw - 1)
    v = torch.randn(shape, generator=g, dtype=torch.float64) if gaussian else \
        (torch.rand(shape, generator=g, dtype=torch.float64) < 0.4).double()
    W = torch.randn(K, C, fh, fw, generator=g, dtype=torch.float64) * scale
    b = torch.randn(C, generator=g, dtype=torch.float64) * 0.1
    c = torch.randn(K, generator=g, dtype=torch.float64) * 0.3
    sigma = 0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    return [t.to(device, dtype) for t in (v, W, b, c, sigma)]


# ---- hidden pass ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [1, 2, 3, 4])
@pytest.mark.parametrize("with_sigma", [False, True])
def test_hidden_pass_matches_reference(device, dtype, pool, with_sigma):
    # 2 channels, 3 filters of 3x4, hidden maps 12 x 36 (divisible by 1..4; 36 spans several SIMD vectors + a tail)
    v, W, b, c, sigma = problem(3, 2, 3, 3, 4, 12, 36, device, dtype)
    sigma = sigma if with_sigma else None
    g = gen(device, 7)
    state = g.get_state()
    P, H, Q = ops.conv_sample_hidden(v, W, c, pool, sigma, generator=g)
    Pr, Hr, Qr = reference.conv_sample_hidden(v, W, c, pool, sigma, gen(device).set_state(state))
    torch.testing.assert_close(P, Pr, **TOL[dtype])
    torch.testing.assert_close(Q, Qr, **TOL[dtype])
    assert P.shape == H.shape == (3, 3, 12, 36) and Q.shape == (3, 3, 12 // pool, 36 // pool)
    # Same uniforms: identical samples (float32 may flip a unit whose uniform lies within rounding of a boundary).
    mismatches = (H != Hr).sum().item()
    assert mismatches == 0 if dtype == torch.float64 else mismatches <= 2
    assert set(H.unique().tolist()) <= {0.0, 1.0}
    assert (blocks(H, pool).sum(-1) <= 1).all(), "more than one unit on in a pooling block"
    # The generator advanced by exactly one draw.
    g2 = gen(device).set_state(state)
    ops.philox_uniform_(torch.empty(1, device=device, dtype=dtype), g2)
    assert torch.equal(g.get_state(), g2.get_state())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [1, 2])
def test_hidden_pass_with_huge_energies(dtype, pool):
    """Energies far beyond exp's range (the kernel's overflow-safe path) give exact one-hot / all-off blocks."""
    v, W, b, c, _ = problem(2, 1, 2, 3, 3, 8, 16, "cpu", dtype)
    W = W * 1e3
    g = gen("cpu", 3)
    state = g.get_state()
    P, H, Q = ops.conv_sample_hidden(v, W, c, pool, generator=g)
    Pr, Hr, Qr = reference.conv_sample_hidden(v, W, c, pool, generator=gen("cpu").set_state(state))
    assert torch.isfinite(P).all() and torch.isfinite(Q).all()
    torch.testing.assert_close(P, Pr, **TOL[dtype])
    torch.testing.assert_close(Q, Qr, **TOL[dtype])
    assert torch.equal(H, Hr)


def test_pool_one_is_sigmoid_bernoulli():
    v, W, b, c, _ = problem(2, 1, 4, 2, 2, 6, 10, "cpu", torch.float64)
    g = gen("cpu", 1)
    state = g.get_state()
    P, H, Q = ops.conv_sample_hidden(v, W, c, 1, generator=g)
    p = torch.sigmoid(F.conv2d(v, W, c))
    torch.testing.assert_close(P, p, **TOL[torch.float64])
    assert torch.equal(P, Q)
    u = ops.philox_uniform_(torch.empty_like(p), gen("cpu").set_state(state))
    assert torch.equal(H, (u < p).double())


@pytest.mark.parametrize("device", DEVICES)
def test_probabilistic_max_pooling_sample_frequencies(device):
    """Over n independent samples, each unit's on-frequency and each block's all-off frequency match the
    probabilities within 5 binomial standard deviations."""
    n, pool = 20000, 2
    v, W, b, c, _ = problem(1, 1, 2, 2, 2, 4, 4, device, torch.float64, seed=3, scale=1.0)
    P, H, Q = ops.conv_sample_hidden(v.expand(n, -1, -1, -1).contiguous(), W, c, pool, generator=gen(device, 11))
    p_unit = P[0]
    freq_unit = H.mean(0)
    tol = 5 * torch.sqrt(p_unit * (1 - p_unit) / n) + 1e-9
    assert ((freq_unit - p_unit).abs() <= tol).all()
    off = 1 - Q[0]
    freq_off = 1 - blocks(H, pool).sum(-1).mean(0)
    assert ((freq_off - off).abs() <= 5 * torch.sqrt(off * (1 - off) / n) + 1e-9).all()
    assert (blocks(H, pool).sum(-1) <= 1).all()
    # a chi-square over the p*p + 1 outcomes of one block, for the joint distribution
    outcome = blocks(H, pool)[:, 0, 0, 0]  # (n, 4) one-hot or zero
    counts = torch.cat([outcome.sum(0), (outcome.sum(1) == 0).sum().view(1)]).double()
    probs = torch.cat([blocks(P, pool)[0, 0, 0, 0], off[0, 0, 0].view(1)])
    chi2 = ((counts - n * probs) ** 2 / (n * probs)).sum().item()
    assert chi2 < 20.5  # p = 0.0004 for 4 degrees of freedom


# ---- visible pass --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("visible, with_sigma", [("bernoulli", False), ("gaussian", False), ("gaussian", True)])
def test_visible_pass_matches_reference(device, dtype, visible, with_sigma):
    v, W, b, c, sigma = problem(3, 2, 3, 3, 5, 9, 40, device, dtype)
    sigma = sigma if with_sigma else None
    _, h, _ = ops.conv_sample_hidden(v, W, c, generator=gen(device, 2))
    g = gen(device, 5)
    state = g.get_state()
    mean, s = ops.conv_sample_visible(h, W, b, sigma, visible, generator=g)
    mr, sr = reference.conv_sample_visible(h, W, b, sigma, visible, gen(device).set_state(state))
    assert mean.shape == v.shape
    torch.testing.assert_close(mean, mr, **TOL[dtype])
    if visible == "bernoulli":
        assert (s != sr).sum().item() <= (0 if dtype == torch.float64 else 2)
    else:
        torch.testing.assert_close(s, sr, rtol=1e-5 if dtype == torch.float32 else 1e-10,
                                   atol=1e-5 if dtype == torch.float32 else 1e-10)


# ---- CD step -------------------------------------------------------------------------------------------------------

CD_CASES = [
    dict(visible="bernoulli", pool=1, k=1),
    dict(visible="bernoulli", pool=2, k=2, sparsity_target=0.1, sparsity_cost=0.5),
    dict(visible="gaussian", pool=2, k=1, sigma=True, weight_decay=0.01),
    dict(visible="gaussian", pool=3, k=1, momentum=0.5),
    dict(visible="bernoulli", pool=2, k=1, chains=True),
    dict(visible="gaussian", pool=1, k=2, chains=True, sigma=True, sparsity_target=0.05, sparsity_cost=0.2),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CD_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_cd_step_matches_reference(device, case):
    dtype = torch.float64
    case = dict(case)
    gaussian = case["visible"] == "gaussian"
    v, W, b, c, sigma = problem(4, 2, 3, 3, 3, 6, 12, device, dtype, gaussian=gaussian)
    sigma = sigma if case.pop("sigma", False) else None
    chains = None
    if case.pop("chains", False):
        chains = problem(5, 2, 3, 3, 3, 6, 12, device, dtype, seed=9, gaussian=gaussian)[0]
    hp = dict(lr=0.1, momentum=0.0, weight_decay=0.0, sparsity_target=0.0, sparsity_cost=0.0)
    hp.update(case)
    vels = [torch.randn_like(t) * 0.01 for t in (W, b, c)]
    g = gen(device, 4)
    state = g.get_state()
    ref = reference.conv_cd_step(W, b, c, *vels, v, chains, sigma, generator=gen(device).set_state(state), **hp)
    params = [t.clone() for t in (W, b, c, *vels)]
    ch = chains.clone() if chains is not None else None
    recon = ops.conv_cd_step_(*params, v, chains=ch, sigma=sigma, generator=g, **hp)
    for got, want in zip(params, ref[:6]):
        torch.testing.assert_close(got, want, **TOL[dtype])
    torch.testing.assert_close(recon, ref.recon, **TOL[dtype])
    if chains is not None:
        torch.testing.assert_close(ch, ref.chains, **TOL[dtype])


def _conv_cd_problem(device, dtype, case):
    case = dict(case)
    gaussian = case["visible"] == "gaussian"
    v, W, b, c, sigma = problem(4, 2, 3, 3, 3, 6, 12, device, dtype, gaussian=gaussian)
    sigma = sigma if case.pop("sigma", False) else None
    chains = problem(5, 2, 3, 3, 3, 6, 12, device, dtype, seed=9, gaussian=gaussian)[0] if case.pop("chains", False) \
        else None
    update = {key: case.pop(key) for key in ("momentum", "weight_decay") if key in case}
    vels = [torch.randn_like(t) * 0.01 for t in (W, b, c)]
    return [W, b, c, *vels], v, chains, dict(sigma=sigma, **case), update


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CD_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_stats_then_apply_is_the_fused_step_bitwise(device, dtype, case):
    params, v, chains, sampling, update = _conv_cd_problem(device, dtype, case)
    fused, split = [t.clone() for t in params], [t.clone() for t in params]
    ch_f, ch_s = [chains.clone() if chains is not None else None for _ in range(2)]
    for step in range(2):
        recon = ops.conv_cd_step_(*fused, v, ch_f, lr=0.1, generator=gen(device, 10 + step), **sampling, **update)
        dW, db, dc, sq_err = ops.conv_cd_stats(*split[:3], v, ch_s, generator=gen(device, 10 + step), **sampling)
        assert bool(ops.cd_apply_(*split, dW, db, dc, lr=0.1, **update))
        assert torch.equal(recon, sq_err / v.numel())
        for a, b in zip(fused, split):
            assert torch.equal(a, b)
        if chains is not None:
            assert torch.equal(ch_f, ch_s)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CD_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_cd_stats_with_weights_matches_reference(device, case):
    params, v, chains, sampling, _ = _conv_cd_problem(device, torch.float64, case)
    W, b, c = params[:3]
    W0 = W.clone()
    ch = chains.clone() if chains is not None else None
    g = gen(device, 4)
    state = g.get_state()
    got = ops.conv_cd_stats(W, b, c, v, ch, data_weight=0.03, chain_weight=0.11, generator=g, **sampling)
    want = reference.conv_cd_stats(W, b, c, v, chains, data_weight=0.03, chain_weight=0.11,
                                   generator=gen(device).set_state(state), **sampling)
    for a, e in zip(got, want[:4]):
        torch.testing.assert_close(a, e, **TOL[torch.float64])
    assert torch.equal(W, W0)  # statistics only
    if chains is not None:
        torch.testing.assert_close(ch, want.chains, **TOL[torch.float64])


def test_cd_step_float32_agrees_with_float64():
    v, W, b, c, _ = problem(4, 1, 4, 3, 3, 8, 20, "cpu", torch.float64)
    p64 = [t.clone() for t in (W, b, c)] + [torch.zeros_like(t) for t in (W, b, c)]
    p32 = [t.float() for t in p64]
    r64 = ops.conv_cd_step_(*p64, v, visible="gaussian", pool=2, lr=0.05, generator=gen("cpu", 1))
    r32 = ops.conv_cd_step_(*p32, v.float(), visible="gaussian", pool=2, lr=0.05, generator=gen("cpu", 1))
    # float32 and float64 use different uniforms (24 vs 32 bits) and may differ in a few samples: loose agreement
    torch.testing.assert_close(r32.double(), r64, rtol=0.05, atol=0.01)
    torch.testing.assert_close(p32[0].double(), p64[0], rtol=0, atol=5e-3)


def test_results_do_not_depend_on_thread_count():
    # large enough (41k inputs) that a parallel ATen reduction would split differently with 1 and 2 threads
    v, W, b, c, _ = problem(8, 1, 5, 4, 4, 36, 128, "cpu", torch.float32)
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            params = [t.clone() for t in (W, b, c)] + [torch.zeros_like(t) for t in (W, b, c)]
            recon = ops.conv_cd_step_(*params, v, visible="gaussian", pool=2, k=2, lr=0.05, generator=gen("cpu"))
            hid = ops.conv_sample_hidden(v, W, c, 2, generator=gen("cpu", 1))
            out.append([recon, *params, *hid])
    finally:
        torch.set_num_threads(threads)
    for a, bb in zip(*out):
        assert torch.equal(a, bb)


def test_same_seed_same_result_and_default_generator():
    v, W, b, c, _ = problem(2, 1, 3, 3, 3, 6, 8, "cpu", torch.float32)
    torch.manual_seed(123)
    a = ops.conv_sample_hidden(v, W, c, 2)
    torch.manual_seed(123)
    bb = ops.conv_sample_hidden(v, W, c, 2)
    assert all(torch.equal(x, y) for x, y in zip(a, bb))
    c2 = ops.conv_sample_hidden(v, W, c, 2)
    assert not torch.equal(a[1], c2[1])


def test_training_lowers_reconstruction_error():
    """Plain CD-1 on structured data (vertical bars) lowers the reconstruction error."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 10, 10)
    cols = torch.randint(0, 10, (64, 2), generator=g)
    for i in range(64):
        x[i, 0, :, cols[i]] = 1.0
    W = torch.randn(6, 1, 3, 3, generator=g) * 0.01
    b, c = torch.zeros(1), torch.zeros(6)
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    gg = gen("cpu", 1)
    errs = [ops.conv_cd_step_(W, b, c, *vels, x, pool=2, lr=0.5, momentum=0.5, generator=gg).item()
            for _ in range(150)]
    assert sum(errs[-10:]) / 10 < 0.6 * sum(errs[:10]) / 10


# ---- autograd ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pool", [1, 2])
def test_hidden_probabilities_gradcheck(pool):
    v, W, b, c, sigma = problem(1, 2, 2, 2, 3, 4, 4, "cpu", torch.float64)
    args = [t.clone().requires_grad_() for t in (v, W, c)]

    def f(v, W, c):
        P, _, Q = ops.conv_sample_hidden(v, W, c, pool, sigma)
        return P, Q

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_visible_mean_gradcheck(visible):
    v, W, b, c, sigma = problem(1, 2, 2, 2, 3, 2, 4, "cpu", torch.float64)
    h = torch.rand(1, 2, 2, 4, dtype=torch.float64)
    sig = sigma if visible == "gaussian" else None
    args = [t.clone().requires_grad_() for t in (h, W, b)]
    assert torch.autograd.gradcheck(lambda h, W, b: ops.conv_sample_visible(h, W, b, sig, visible)[0], args)


# ---- opcheck and compile -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(device, dtype):
    # Saturated filters make every probability exactly 0 or 1, so the samples do not depend on the random stream.
    v, W, b, c, sigma = problem(2, 2, 3, 2, 3, 4, 6, device, dtype)
    Ws = W * 1e4
    for pool in (1, 2):
        torch.library.opcheck(torch.ops.pymusicrbm.conv_sample_hidden, (v, Ws, c, pool, None, None))
    h = ops.conv_sample_hidden(v, Ws, c, 2)[1]
    torch.library.opcheck(torch.ops.pymusicrbm.conv_sample_visible, (h, Ws, b, None, "bernoulli", None))
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    vb = (v > 0).to(dtype)
    torch.library.opcheck(torch.ops.pymusicrbm.conv_cd_step_, (Ws.clone(), b.clone(), c.clone(), *vels, vb, None, None,
                                                               "bernoulli", 2, 1, 1e-6, 0.5, 0.0, 0.0, 0.0, None))
    torch.library.opcheck(torch.ops.pymusicrbm.conv_cd_step_, (Ws.clone(), b.clone(), c.clone(), *vels, vb,
                                                               vb[:1].clone(), None, "bernoulli", 1, 2, 1e-6, 0.5,
                                                               0.0, 0.0, 0.0, None))
    torch.library.opcheck(torch.ops.pymusicrbm.conv_cd_stats, (Ws, b, c, vb, vb[:1].clone(), None, "bernoulli", 2, 1,
                                                               0.1, 0.5, 0.2, 0.3, None))
    torch.library.opcheck(torch.ops.pymusicrbm.cd_apply_, (Ws.clone(), b.clone(), c.clone(), *vels, *vels, 0.1, 0.5,
                                                           0.01))
    # Gaussian noise is never deterministic: schema, fake and autograd registration only
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.pymusicrbm.conv_sample_visible, (h, W, b, sigma, "gaussian", None),
                          test_utils=checks)
    torch.library.opcheck(torch.ops.pymusicrbm.conv_sample_hidden, (v, W, c, 2, sigma, None), test_utils=checks)
    torch.library.opcheck(torch.ops.pymusicrbm.conv_cd_step_, (W.clone(), b.clone(), c.clone(), *vels, v, None, sigma,
                                                               "gaussian", 2, 1, 1e-3, 0.0, 0.0, 0.0, 0.0, None),
                          test_utils=checks)


def test_training_step_compiles_fullgraph():
    v, W, b, c, _ = problem(4, 1, 3, 3, 3, 6, 8, "cpu", torch.float32)
    vels = [torch.zeros_like(t) for t in (W, b, c)]

    def step(W, b, c, Wv, bv, cv, v):
        err = ops.conv_cd_step_(W, b, c, Wv, bv, cv, v, visible="gaussian", pool=2, lr=0.05)
        P, _, Q = ops.conv_sample_hidden(v, W, c, 2)
        mean, _ = ops.conv_sample_visible(P, W, b, None, "gaussian")
        return err, Q.amax((2, 3)), mean.mean()

    assert_compiled_step_matches_eager(step, (W, b, c, *vels), v)


# ---- bad input -----------------------------------------------------------------------------------------------------

def _good(dtype=torch.float32):
    v, W, b, c, _ = problem(2, 1, 3, 3, 3, 6, 8, "cpu", dtype)
    return v, W, b, c


def _cd(v, W, b, c, **kw):
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    return ops.conv_cd_step_(W, b, c, *vels, v, **kw)


def _nan(v):
    v = v.clone()
    v[0, 0, 1, 1] = float("nan")
    return v


def _log_zero(v):
    return torch.log(v.abs() * (v > 0))  # -inf where v <= 0, as an unfloored log spectrogram


HIDDEN = ops.conv_sample_hidden


@pytest.mark.parametrize("call, match", [
    (lambda v, W, b, c: HIDDEN(v[0], W, c), r"v must be 4-D \(batch, channels, height, width\)"),
    (lambda v, W, b, c: HIDDEN(v, W[0], c), r"W must be 4-D \(n_filters, channels"),
    (lambda v, W, b, c: HIDDEN(v.expand(-1, 2, -1, -1), W, c), r"v has 2 channels but W expects 1"),
    (lambda v, W, b, c: HIDDEN(v[:, :, :2], W, c), r"the filters \(3x3\) are larger than v's maps \(2x10\)"),
    (lambda v, W, b, c: HIDDEN(_nan(v), W, c), r"v contains NaN or Inf"),
    (lambda v, W, b, c: HIDDEN(_log_zero(v), W, c), r"v contains NaN or Inf \(e.g. the log of a zero"),
    (lambda v, W, b, c: HIDDEN(v.double(), W, c), r"v has dtype Double but W has dtype Float"),
    (lambda v, W, b, c: HIDDEN(v.long(), W, c), r"v must be float32 or float64"),
    (lambda v, W, b, c: HIDDEN(v[:0], W, c), r"v is an empty batch"),
    (lambda v, W, b, c: HIDDEN(v, W, c[:2]), r"c must be 1-D of size 3"),
    (lambda v, W, b, c: HIDDEN(v, W, c, 1, -torch.ones(1)), r"sigma must be > 0"),
    (lambda v, W, b, c: HIDDEN(v, W, c, 1, torch.ones(2)), r"sigma must be 1-D of size 1"),
    (lambda v, W, b, c: HIDDEN(v, W, c, 4), r"pool=4 does not divide the hidden map 6x8 .* crop the input to 6x10"),
    (lambda v, W, b, c: HIDDEN(v, W, c, 0), r"pool must be >= 1"),
    (lambda v, W, b, c: ops.conv_sample_visible(v, W, b), r"h has 1 maps but W has 3 filters"),
    (lambda v, W, b, c: ops.conv_sample_visible(v[0].expand(3, -1, -1), W, b), r"h must be 4-D"),
    (lambda v, W, b, c: ops.conv_sample_visible(HIDDEN(v, W, c)[1], W, b, visible="poisson"),
     r"visible must be 'bernoulli' or 'gaussian'"),
    (lambda v, W, b, c: ops.conv_sample_visible(HIDDEN(v, W, c)[1], W, b, torch.ones(1)), r"sigma applies to gaus"),
    (lambda v, W, b, c: ops.conv_sample_visible(HIDDEN(v, W, c)[1], W, b[:0]), r"b must be 1-D of size 1"),
    (lambda v, W, b, c: _cd(v, W, b, c, k=0), r"k \(Gibbs steps\) must be >= 1"),
    (lambda v, W, b, c: _cd(v, W, b, c, lr=-1.0), r"lr must be >= 0"),
    (lambda v, W, b, c: _cd(v, W, b, c, weight_decay=-1.0), r"weight_decay must be >= 0"),
    (lambda v, W, b, c: _cd(v, W, b, c, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda v, W, b, c: _cd(v, W, b, c, sparsity_target=1.5), r"sparsity_target must be in \[0, 1\]"),
    (lambda v, W, b, c: _cd(v, W, b, c, sparsity_cost=-1.0), r"sparsity_cost must be >= 0"),
    (lambda v, W, b, c: _cd(v, W, b, c, pool=3), r"pool=3 does not divide the hidden map 6x8"),
    (lambda v, W, b, c: _cd(v, W, b, c, chains=v[:, :, :7].contiguous()), r"chains must be \(n_chains, 1, 8, 10\)"),
    (lambda v, W, b, c: _cd(v, W, b, c, chains=_nan(v)), r"chains contains NaN or Inf"),
    (lambda v, W, b, c: _cd(v, W.transpose(2, 3).contiguous().transpose(2, 3), b, c),
     r"W is updated in place and must be contiguous"),
    (lambda v, W, b, c: ops.conv_cd_step_(W, b, c, W[:2].clone(), b, c, v), r"W_vel must have W's shape"),
    (lambda v, W, b, c: _cd(v, W, b, c, visible="gaussian", sigma=torch.zeros(1)), r"sigma must be > 0"),
    (lambda v, W, b, c: _cd(v, W, b, c, sigma=torch.ones(1)), r"sigma applies to gaussian visible units only"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(*_good())


@pytest.mark.parametrize("corrupt", [_nan, _log_zero])
def test_non_finite_data_leaves_parameters_unchanged(corrupt):
    v, W, b, c = _good()
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    before = [t.clone() for t in (W, b, c, *vels)]
    with pytest.raises(RuntimeError, match="v contains NaN or Inf.*the parameters were not changed"):
        ops.conv_cd_step_(W, b, c, *vels, corrupt(v), visible="gaussian")
    for t, t0 in zip((W, b, c, *vels), before):
        assert torch.equal(t, t0)


def test_diverging_update_is_reported_and_not_applied():
    v, W, b, c = _good()
    W += 3e38  # W + update overflows float32
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    before = [t.clone() for t in (W, b, c, *vels)]
    with pytest.raises(RuntimeError, match="the update is not finite"):
        ops.conv_cd_step_(W, b, c, *vels, v * 1e3, visible="gaussian", lr=1e38)
    for t, t0 in zip((W, b, c, *vels), before):
        assert torch.equal(t, t0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mixed_devices_are_rejected():
    v, W, b, c = _good()
    with pytest.raises(RuntimeError, match="all tensors must be on one device"):
        ops.conv_sample_hidden(v.cuda(), W, c)


def test_fake_shapes_match_real():
    from torch._subclasses.fake_tensor import FakeTensorMode

    v, W, b, c = _good()
    real = ops.conv_sample_hidden(v, W, c, 2)
    with FakeTensorMode() as mode:
        fv, fW, fc = (mode.from_tensor(t) for t in (v, W, c))
        fake = ops.conv_sample_hidden(fv, fW, fc, 2)
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert ops.conv_output_shape((8, 10), (3, 3), 2) == tuple(real[2].shape[2:])
    assert math.prod(real[0].shape) == 2 * 3 * 6 * 8
