"""Dense RBM ops against independent references: a pure-Python Philox (checked on Random123's known answers), a
pure-PyTorch RBM (pymusicrbm._reference) that consumes the same random streams, exact enumeration, opcheck and
gradcheck."""
import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

import pymusicrbm  # noqa: F401
from pymusicrbm import _reference as reference
from pymusicrbm import ops
from _op_checks import (assert_compiled_step_matches_eager, assert_split_step_equals_fused,
                        assert_step_replays_in_a_cuda_graph)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def gen(device, seed=0):
    return torch.Generator(device=device).manual_seed(seed)


def rbm(V, H, device, dtype, seed=0, scale=0.3, gaussian=False):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(V, H, generator=g, dtype=torch.float64) * scale).to(device, dtype)
    b = (torch.randn(V, generator=g, dtype=torch.float64) * 0.1).to(device, dtype)
    c = (torch.randn(H, generator=g, dtype=torch.float64) * 0.1).to(device, dtype)
    sigma = (0.5 + torch.rand(V, generator=g, dtype=torch.float64)).to(device, dtype) if gaussian else None
    return W, b, c, sigma


def data(B, V, device, dtype, seed=1, gaussian=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g, dtype=torch.float64) if gaussian else \
        (torch.rand(B, V, generator=g, dtype=torch.float64) < 0.3).double()
    return x.to(device, dtype)


# ---- Philox ---------------------------------------------------------------------------------------------------

M0, M1, W0, W1, MASK = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF


def philox_py(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0, p1 = M0 * c0, M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & MASK, p1 & MASK, ((p0 >> 32) ^ c3 ^ k1) & MASK, p0 & MASK
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return [c0, c1, c2, c3]


def test_python_philox_matches_random123_known_answers():
    assert philox_py([0] * 4, [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox_py([MASK] * 4, [MASK] * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox_py([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def cpu_generator_seed(seed):
    """The 64-bit seed a CPU op draws: torch's mt19937 random64() = (first << 32) | second 32-bit output."""
    bg = np.random.MT19937()
    bg._legacy_seeding(seed)
    hi, lo = (int(x) for x in bg.random_raw(2))
    return (hi << 32) | lo


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_uniform_stream_is_philox(dtype):
    n = 75  # two full runs of 32 and a partial one
    out = ops.philox_uniform_(torch.empty(n, dtype=dtype), gen("cpu", 123))
    s = cpu_generator_seed(123)
    # layout (philox.h): element i is word (i % 32) // 8 of block (i // 32) * 8 + i % 8
    words = [philox_py([(i // 32) * 8 + i % 8, 0, 0, 0], [s & MASK, s >> 32])[(i % 32) // 8] for i in range(n)]
    if dtype == torch.float32:
        ref = [((w >> 8) + 0.5) / 2**24 for w in words]
    else:
        ref = [(w + 0.5) / 2**32 for w in words]
    torch.testing.assert_close(out, torch.tensor(ref, dtype=dtype), rtol=0, atol=0)


def philox_np(block, key):
    """philox_py over an array of block counters (counter words 1-3 zero), as uint64 arrays of the four words."""
    c0 = np.asarray(block, dtype=np.uint64) & np.uint64(MASK)
    c1 = c2 = c3 = np.zeros_like(c0)
    k0, k1 = key
    for _ in range(10):
        p0, p1 = np.uint64(M0) * c0, np.uint64(M1) * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ np.uint64(k0), p1 & MASK, (p0 >> 32) ^ c3 ^ np.uint64(k1), p0 & MASK
        k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
    return c0, c1, c2, c3


def test_philox_np_matches_philox_py():
    blocks = [0, 1, 7, 12345, 2**32 - 1]
    got = np.stack(philox_np(blocks, [0x12345678, 0x9ABCDEF0]), axis=1)
    assert got.tolist() == [philox_py([b, 0, 0, 0], [0x12345678, 0x9ABCDEF0]) for b in blocks]


def test_cpu_float32_normal_stream_is_box_muller():
    """The float32 CPU kernel's own log/cos approximations against float64 Box-Muller on the same Philox words."""
    n = 4003  # full runs and a partial one
    out = ops.philox_normal_(torch.empty(n, dtype=torch.float32), gen("cpu", 321)).double().numpy()
    s = cpu_generator_seed(321)
    # layout (philox.h): element i takes words 2j, 2j + 1, j = (i % 16) // 8, of block (i // 16) * 8 + i % 8
    i = np.arange(n)
    words = np.stack(philox_np((i // 16) * 8 + i % 8, [s & MASK, s >> 32]), axis=1)
    j = 2 * ((i % 16) // 8)
    a, b = words[i, j], words[i, j + 1]
    # to_uniform<float>: (float(w >> 8) + 0.5f) / 2^24, rounded to float32 as the kernel rounds it
    u1, u2 = (((w >> np.uint64(8)).astype(np.float64) + 0.5) / 2**24 for w in (a, b))
    u1, u2 = u1.astype(np.float32).astype(np.float64), u2.astype(np.float32).astype(np.float64)
    ref = np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
    inside = np.abs(ref) < 5
    assert inside.mean() > 0.99
    assert np.abs(out - ref)[inside].max() < 1e-5
    assert np.abs(out - ref).max() < 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_and_normal_statistics(device, dtype):
    n = 400_000
    u = ops.philox_uniform_(torch.empty(n, device=device, dtype=dtype), gen(device, 5)).double().cpu()
    assert 0 < u.min() and u.max() < 1
    assert scipy.stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    # 6 standard errors: fixed seed, so this is deterministic, not flaky
    assert abs(u.mean() - 0.5) < 6 * math.sqrt(1 / 12 / n)
    z = ops.philox_normal_(torch.empty(n, device=device, dtype=dtype), gen(device, 6)).double().cpu()
    assert torch.isfinite(z).all()
    assert scipy.stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert abs(z.mean()) < 6 / math.sqrt(n) and abs(z.var() - 1) < 6 * math.sqrt(2 / n)


@pytest.mark.parametrize("device", DEVICES)
def test_streams_depend_on_seed_only(device):
    a = ops.philox_uniform_(torch.empty(1000, device=device), gen(device, 1))
    b = ops.philox_uniform_(torch.empty(1000, device=device), gen(device, 1))
    c = ops.philox_uniform_(torch.empty(1000, device=device), gen(device, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(7)
    d = ops.philox_uniform_(torch.empty(1000, device=device))
    torch.manual_seed(7)
    assert torch.equal(d, ops.philox_uniform_(torch.empty(1000, device=device)))


# ---- against the plain-PyTorch reference (pymusicrbm._reference), which consumes the ops' random streams ---------

def uniforms(like, g):
    """The uniforms a Bernoulli phase drawing from generator ``g`` compares its probabilities with."""
    return ops.philox_uniform_(torch.empty_like(like), g)


def close_samples(a, b, p, u):
    """Samples agree wherever the uniform is not within rounding of the probability."""
    safe = (u - p).abs() > 1e-4
    assert safe.float().mean() > 0.95
    assert torch.equal(a[safe], b[safe])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gaussian", [False, True])
def test_sample_hidden_matches_reference(device, dtype, gaussian):
    W, b, c, sigma = rbm(37, 13, device, dtype, gaussian=gaussian)
    v = data(29, 37, device, dtype, gaussian=gaussian)
    p, h = ops.sample_hidden(v, W, c, sigma, gen(device, 3))
    p_ref, h_ref = reference.sample_hidden(v, W, c, sigma, gen(device, 3))
    torch.testing.assert_close(p, p_ref, **TOL[dtype])
    close_samples(h, h_ref, p_ref, uniforms(p, gen(device, 3)))
    assert set(h.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_sample_visible_matches_reference(device, dtype, visible):
    W, b, c, sigma = rbm(37, 13, device, dtype, gaussian=visible == "gaussian")
    h = data(29, 13, device, dtype)
    m, s = ops.sample_visible(h, W, b, sigma, visible, gen(device, 4))
    m_ref, s_ref = reference.sample_visible(h, W, b, sigma, visible, gen(device, 4))
    torch.testing.assert_close(m, m_ref, **TOL[dtype])
    if visible == "gaussian":
        torch.testing.assert_close(s, s_ref, **TOL[dtype])
    else:
        close_samples(s, s_ref, m_ref, uniforms(m, gen(device, 4)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V", [1, 37, 100])
def test_gaussian_visible_without_sigma_matches_reference(device, dtype, V):
    """Unit-variance Gaussian units (sigma None): mean b + h W^T and sample mean + z, row segments across runs."""
    W, b, c, _ = rbm(V, 13, device, dtype)
    h = data(29, 13, device, dtype)
    m, s = ops.sample_visible(h, W, b, None, "gaussian", gen(device, 4))
    m_ref, s_ref = reference.sample_visible(h, W, b, None, "gaussian", gen(device, 4))
    torch.testing.assert_close(m, m_ref, **TOL[dtype])
    torch.testing.assert_close(s, s_ref, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_bernoulli_sample_frequencies_match_probabilities(device):
    W, b, c, _ = rbm(20, 8, device, torch.float64, scale=1.0)
    v = data(1, 20, device, torch.float64).expand(20000, 20)
    p, h = ops.sample_hidden(v, W, c, generator=gen(device, 9))
    freq, p = h.mean(0), p[0]
    # binomial standard error of each frequency; 5 of them (fixed seed: deterministic)
    assert ((freq - p).abs() < 5 * (p * (1 - p) / 20000).sqrt() + 1e-12).all()


# ---- free energy: exact enumeration and gradients --------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_free_energy_equals_enumeration_over_hidden_states(device, dtype):
    V, H = 6, 5
    W, b, c, _ = rbm(V, H, device, dtype, scale=1.0)
    v = data(7, V, device, dtype)
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=H)), device=device, dtype=dtype)
    energy = -(v @ b)[:, None] - hs @ c - (v @ W) @ hs.t()          # E(v, h) for every h
    ref = -torch.logsumexp(-energy, dim=1)
    torch.testing.assert_close(ops.free_energy(v, W, b, c), ref, **TOL[dtype])
    torch.testing.assert_close(reference.free_energy(v, W, b, c), ref, **TOL[dtype])  # the closed form agrees


@pytest.mark.parametrize("device", DEVICES)
def test_gaussian_free_energy_matches_formula(device):
    W, b, c, sigma = rbm(9, 4, device, torch.float64, gaussian=True)
    v = data(5, 9, device, torch.float64, gaussian=True)
    torch.testing.assert_close(ops.free_energy(v, W, b, c, sigma, "gaussian"),
                               reference.free_energy(v, W, b, c, sigma, "gaussian"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_free_energy_gradcheck(device, visible):
    W, b, c, sigma = rbm(6, 4, device, torch.float64, gaussian=visible == "gaussian")
    v = data(3, 6, device, torch.float64, gaussian=True)
    args = [t.clone().requires_grad_() for t in (v, W, b, c)]
    if sigma is not None:
        args.append(sigma.clone().requires_grad_())
    else:
        args.append(None)
    assert torch.autograd.gradcheck(lambda *a: ops.free_energy(*a, visible=visible), args)


# ---- fused CD step ----------------------------------------------------------------------------------------------

CD_CASES = [
    dict(visible="bernoulli", k=1, persistent=False, momentum=0.0, wd=0.0, target=0.0, cost=0.0),
    dict(visible="bernoulli", k=3, persistent=False, momentum=0.5, wd=1e-3, target=0.1, cost=0.5),
    dict(visible="bernoulli", k=2, persistent=True, momentum=0.9, wd=0.0, target=0.0, cost=0.0),
    dict(visible="gaussian", k=1, persistent=False, momentum=0.5, wd=1e-4, target=0.05, cost=0.1),
    dict(visible="gaussian", k=2, persistent=True, momentum=0.0, wd=0.0, target=0.0, cost=0.0),
]


def _cd_problem(device, dtype, case, V=31, H=11, B=17, N=9):
    gauss = case["visible"] == "gaussian"
    W, b, c, sigma = rbm(V, H, device, dtype, gaussian=gauss)
    v = data(B, V, device, dtype, gaussian=gauss)
    chains = data(N, V, device, dtype, seed=5, gaussian=gauss) if case["persistent"] else None
    g0 = torch.Generator().manual_seed(8)
    vels = [(torch.randn(t.shape, generator=g0, dtype=torch.float64) * 0.01).to(device, dtype) for t in (W, b, c)]
    return [W, b, c, *vels], v, chains, sigma


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CD_CASES, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_cd_step_matches_reference(device, dtype, case):
    params, v, chains, sigma = _cd_problem(device, dtype, case)
    W, b, c, *vels = params
    params = [t.clone() for t in params]
    ch = chains.clone() if chains is not None else None
    hp = dict(lr=0.05, momentum=case["momentum"], weight_decay=case["wd"], sparsity_target=case["target"],
              sparsity_cost=case["cost"])
    for step in range(2):  # two steps: the second starts from updated parameters, velocities and chains
        recon = ops.cd_step_(*params, v, ch, sigma, case["visible"], case["k"], generator=gen(device, 20 + step),
                             **hp)
        out = reference.cd_step(W, b, c, *vels, v, chains, sigma, case["visible"], case["k"],
                                generator=gen(device, 20 + step), **hp)
        W, b, c, *vels = out[:6]
        chains = out.chains if chains is not None else None
        tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
        for got, want in zip(params, out[:6]):
            torch.testing.assert_close(got, want, **tol)
        torch.testing.assert_close(recon, out.recon, **tol)
        if ch is not None:
            torch.testing.assert_close(ch, chains, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(128, 1, 64), (129, 33, 70), (300, 70, 100)], ids=str)
@pytest.mark.parametrize("case", [CD_CASES[1], CD_CASES[2], CD_CASES[3]], ids=lambda d: d["visible"] + str(d["k"]))
def test_cd_step_matches_reference_where_the_visible_product_skips_zeros(device, dtype, shape, case):
    """From 64 rows the CPU computes the visible means h W^T over the nonzeros of the hidden sample h, in tiles of
    W^T gathered from W: shapes across the tiles' edges, a single hidden unit (rows with no nonzero), more than 64
    hidden units (two tiles), PCD and CD-k, Gaussian visible units (no bias in the product)."""
    V, H, B = shape
    params, v, chains, sigma = _cd_problem(device, dtype, case, V=V, H=H, B=B, N=B)
    W, b, c, *vels = params
    params = [t.clone() for t in params]
    ch = chains.clone() if chains is not None else None
    hp = dict(lr=0.05, momentum=case["momentum"], weight_decay=case["wd"])
    recon = ops.cd_step_(*params, v, ch, sigma, case["visible"], case["k"], generator=gen(device, 21), **hp)
    out = reference.cd_step(W, b, c, *vels, v, chains, sigma, case["visible"], case["k"], generator=gen(device, 21),
                            **hp)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for got, want in zip(params, out[:6]):
        torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(recon, out.recon, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(129, 33, 70), (64, 70, 33), (200, 1, 10), (130, 150, 65), (600, 20, 1100)],
                         ids=str)
@pytest.mark.parametrize("values", ["binary", "fractional", "dense"])
@pytest.mark.parametrize("persistent", [False, True], ids=["cd1", "pcd2"])
def test_cd_step_matches_reference_where_products_skip_zeros(device, dtype, shape, values, persistent):
    """The CPU sums the hidden units' input c + X W and the weight statistic X^T Y (X = [v0; vk]) over X's nonzeros,
    in tiles of 64, when at most 0.8 of X is nonzero: binary data (values never read), sparse fractional data (values
    read) and dense data (the GEMMs instead); shapes across the tiles' edges in rows and columns, over 4 vectors of
    hidden units, over 512 rows (blocks of outputs), and PCD chains of another size."""
    V, H, B = shape
    case = dict(visible="bernoulli", k=2 if persistent else 1, persistent=persistent, momentum=0.5, wd=1e-3)
    params, _, chains, sigma = _cd_problem(device, dtype, case, V=V, H=H, B=B, N=B + 7)
    g = torch.Generator().manual_seed(3)
    u = torch.rand(B, V, generator=g, dtype=torch.float64)
    v = {"binary": (u < 0.3).double(), "fractional": (u < 0.3) * torch.rand(B, V, generator=g, dtype=torch.float64),
         "dense": 0.01 + 0.98 * u}[values].to(device, dtype)
    if values == "dense":
        params[1] += 4  # visible units mostly on in the chain too: X is over 0.8 nonzero
    W, b, c, *vels = params
    params = [t.clone() for t in params]
    ch = chains.clone() if chains is not None else None
    hp = dict(lr=0.05, momentum=case["momentum"], weight_decay=case["wd"])
    recon = ops.cd_step_(*params, v, ch, sigma, "bernoulli", case["k"], generator=gen(device, 22), **hp)
    out = reference.cd_step(W, b, c, *vels, v, chains, sigma, "bernoulli", case["k"], generator=gen(device, 22), **hp)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for got, want in zip(params, out[:6]):
        torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(recon, out.recon, **tol)
    if ch is not None:
        torch.testing.assert_close(ch, out.chains, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CD_CASES, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_steps_of_an_epoch_equal_the_loop_of_steps_bitwise(device, dtype, case):
    """cd_steps_ over a shuffled order (batches of 7 of 17 rows: the last one shorter) is a loop of cd_step_."""
    params, X, chains, sigma = _cd_problem(device, dtype, case)
    order = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(3)).to(device)
    hp = dict(sigma=sigma, visible=case["visible"], k=case["k"], lr=0.05, momentum=case["momentum"],
              weight_decay=case["wd"], sparsity_target=case["target"], sparsity_cost=case["cost"])
    looped, fused = [t.clone() for t in params], [t.clone() for t in params]
    ch_l = chains.clone() if chains is not None else None
    ch_f = chains.clone() if chains is not None else None
    g_l, g_f = gen(device, 40), gen(device, 40)
    want = torch.stack([ops.cd_step_(*looped, X.index_select(0, idx), ch_l, generator=g_l, **hp)
                        for idx in torch.split(order, 7)])
    got = ops.cd_steps_(*fused, X, order, 7, ch_f, generator=g_f, **hp)
    assert got.shape == (3,) and torch.equal(got, want)
    for a, e in zip(fused, looped):
        assert torch.equal(a, e)
    if chains is not None:
        assert torch.equal(ch_f, ch_l)
    assert torch.equal(g_f.get_state(), g_l.get_state())  # the generator advanced alike


# ---- the step in two parts: cd_stats + cd_apply_ (data-parallel training) ------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CD_CASES, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_stats_then_apply_is_the_fused_step_bitwise(device, dtype, case):
    params, v, chains, sigma = _cd_problem(device, dtype, case)
    fused = [t.clone() for t in params]
    split = [t.clone() for t in params]
    ch_f = chains.clone() if chains is not None else None
    ch_s = chains.clone() if chains is not None else None
    sampling = dict(sigma=sigma, visible=case["visible"], k=case["k"], sparsity_target=case["target"],
                    sparsity_cost=case["cost"])
    for step in range(2):
        recon = ops.cd_step_(*fused, v, ch_f, lr=0.05, momentum=case["momentum"], weight_decay=case["wd"],
                             generator=gen(device, 30 + step), **sampling)
        stats = ops.cd_stats(*split[:3], v, ch_s, generator=gen(device, 30 + step), **sampling)
        assert_split_step_equals_fused(recon, fused, ch_f, stats, split, ch_s, v, lr=0.05,
                                       momentum=case["momentum"], weight_decay=case["wd"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CD_CASES[1:4], ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_cd_stats_with_weights_matches_reference(device, dtype, case):
    params, v, chains, sigma = _cd_problem(device, dtype, case)
    W, b, c = params[:3]
    kw = dict(sigma=sigma, visible=case["visible"], k=case["k"], sparsity_target=case["target"],
              sparsity_cost=case["cost"], data_weight=0.02, chain_weight=0.07)
    ch = chains.clone() if chains is not None else None
    W0 = W.clone()
    got = ops.cd_stats(W, b, c, v, ch, generator=gen(device, 4), **kw)
    want = reference.cd_stats(W, b, c, v, chains, generator=gen(device, 4), **kw)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    for a, e in zip(got, want[:4]):
        torch.testing.assert_close(a, e, **tol)
    assert torch.equal(W, W0)  # statistics only
    if chains is not None:
        torch.testing.assert_close(ch, want.chains, **tol)


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("visible", ["bernoulli", "gaussian"])
def test_stats_of_shards_sum_to_the_whole_batch(persistent, visible):
    """Data-parallel ranks pass 1/B_global and 1/N_global: the SUM of their statistics (sparsity term and squared
    error included) is the statistic of the whole batch. Saturated Bernoulli probabilities make every sample
    independent of the random stream, so shards and the whole batch sample alike; Gaussian visible samples never
    are, so there the chains' term is left out (chain_weight=0)."""
    gauss = visible == "gaussian"
    W, b, c, sigma = saturated("cpu", torch.float64, gaussian=gauss)
    b = b if gauss else b * 1e4
    v = data(12, 12, "cpu", torch.float64)
    chains = data(8, 12, "cpu", torch.float64, seed=3) if persistent else None
    cw = 0.0 if gauss else 1 / (8 if persistent else 12)
    kw = dict(sigma=sigma, visible=visible, sparsity_target=0.2, sparsity_cost=0.7, data_weight=1 / 12,
              chain_weight=cw)
    whole = ops.cd_stats(W, b, c, v, chains.clone() if persistent else None, **kw)
    parts = [ops.cd_stats(W, b, c, v[r0:r1], chains[q0:q1].clone() if persistent else None, **kw)
             for (r0, r1), (q0, q1) in [((0, 5), (0, 3)), ((5, 12), (3, 8))]]
    for i in range(4):
        torch.testing.assert_close(parts[0][i] + parts[1][i], whole[i], rtol=1e-12, atol=1e-12)
    assert whole[2].abs().max() > 0.01  # the sparsity term is in the sum


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [[(7, 5), (7,), (5,)], [(4, 2, 3, 3), (2,), (4,)]], ids=["dense", "conv"])
def test_cd_apply_matches_reference(device, dtype, shapes):
    g = torch.Generator().manual_seed(2)
    t = [torch.randn(s, generator=g, dtype=torch.float64).to(device, dtype) for s in shapes * 3]
    params, grads = t[:6], t[6:]
    out = reference.cd_apply(*params, *grads, lr=0.1, momentum=0.9, weight_decay=0.01)
    ok = ops.cd_apply_(*params, *grads, lr=0.1, momentum=0.9, weight_decay=0.01)
    assert bool(ok)
    for a, e in zip(params, out[:6]):
        torch.testing.assert_close(a, e, **TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("where", [0, 1, 2])
def test_cd_apply_rejects_a_non_finite_update_and_changes_nothing(device, where):
    g = torch.Generator().manual_seed(2)
    params = [torch.randn(s, generator=g).to(device) for s in [(6, 4), (6,), (4,)] * 2]
    grads = [torch.randn(s, generator=g).to(device) for s in [(6, 4), (6,), (4,)]]
    grads[where][1] = float("nan")
    before = [p.clone() for p in params]
    ok = ops.cd_apply_(*params, *grads, lr=0.1, momentum=0.5)
    assert ok.device == params[0].device and not bool(ok)
    for p, p0 in zip(params, before):
        assert torch.equal(p, p0)
    grads[where][1] = 1e38  # finite, but W + update overflows float32
    params[where][1] = 3e38
    assert not bool(ops.cd_apply_(*params, *grads, lr=10.0))


def test_cd_training_raises_exact_likelihood():
    """CD-1 on a tiny world (8 visible, 6 hidden): exact log-likelihood by enumerating all 2^6 hidden states."""
    V, H = 8, 6
    patterns = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1, 0]],
                            dtype=torch.float64)
    X = patterns.repeat(20, 1)
    W, b, c, _ = rbm(V, H, "cpu", torch.float64, scale=0.01)
    vel = [torch.zeros_like(t) for t in (W, b, c)]
    hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=H)), dtype=torch.float64)
    vs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=V)), dtype=torch.float64)

    def loglik():
        log_z = torch.logsumexp(-ops.free_energy(vs, W, b, c), 0)
        return (-ops.free_energy(X, W, b, c) - log_z).mean().item()

    before = loglik()
    g = gen("cpu", 0)
    for _ in range(300):
        ops.cd_step_(W, b, c, *vel, X, lr=0.1, momentum=0.5, generator=g)
    after = loglik()
    # 3 equiprobable patterns: the best possible average log-likelihood is log(1/3)
    assert before < -5.0 and after > before + 3.0 and after <= math.log(1 / 3) + 1e-9


# ---- determinism --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streams_and_gaussian_samples_do_not_depend_on_thread_count(dtype):
    # a dozen parallel tasks (and a short last run): the kernels' loops split differently with 1 and 2 threads
    n = 400_017
    W, b, c, sigma = rbm(300, 70, "cpu", dtype, gaussian=True)
    h = (data(1500, 70, "cpu", dtype) > 0.5).to(dtype)
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append([ops.philox_uniform_(torch.empty(n, dtype=dtype), gen("cpu", 3)),
                        ops.philox_normal_(torch.empty(n, dtype=dtype), gen("cpu", 4)),
                        *ops.sample_visible(h, W, b, sigma=sigma, visible="gaussian", generator=gen("cpu", 5))])
    finally:
        torch.set_num_threads(before)
    for a, bb in zip(*out):
        assert torch.equal(a, bb)


@pytest.mark.parametrize("V, H, B", [(300, 70, 128), (40, 30, 64)])
def test_results_do_not_depend_on_thread_count(V, H, B):
    W, b, c, _ = rbm(V, H, "cpu", torch.float32)
    v = data(B, V, "cpu", torch.float32)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            p = [t.clone() for t in (W, b, c)] + [torch.zeros_like(t) for t in (W, b, c)]
            r = ops.cd_step_(*p, v, k=2, lr=0.1, momentum=0.5, generator=gen("cpu", 1))
            _, h = ops.sample_hidden(v, W, c, generator=gen("cpu", 2))
            results.append((p, r, h))
    finally:
        torch.set_num_threads(before)
    (p1, r1, h1), (p2, r2, h2) = results
    assert torch.equal(h1, h2)
    if V * H * B < 1e6:  # a small step runs on one thread whatever torch's setting, GEMMs included: bit for bit
        assert torch.equal(r1, r2) and all(torch.equal(a, bb) for a, bb in zip(p1, p2))
    # MKL may sum the GEMMs in a different order with more threads: equal up to rounding
    for a, bb in zip(p1, p2):
        torch.testing.assert_close(a, bb, rtol=1e-5, atol=1e-6)


# ---- opcheck and compile -------------------------------------------------------------------------------------------

def saturated(device, dtype, gaussian=False):
    """Parameters whose probabilities are exactly 0 or 1, so Bernoulli samples are deterministic whatever stream."""
    W, b, c, sigma = rbm(12, 5, device, dtype, gaussian=gaussian)
    return W * 1e4, b, c, sigma


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(device, dtype):
    W, b, c, _ = saturated(device, dtype)
    _, _, _, sigma = rbm(12, 5, device, dtype, gaussian=True)
    v = data(6, 12, device, dtype)
    h = data(6, 5, device, dtype)
    torch.library.opcheck(torch.ops.pymusicrbm.sample_hidden, (v, W, c, None, None))
    torch.library.opcheck(torch.ops.pymusicrbm.sample_visible, (h, W, b, None, "bernoulli", None))
    torch.library.opcheck(torch.ops.pymusicrbm.free_energy, (v, W, b, c, sigma, "gaussian"))
    torch.library.opcheck(torch.ops.pymusicrbm.free_energy, (v, W, b, c, None, "bernoulli"))
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    torch.library.opcheck(torch.ops.pymusicrbm.cd_step_, (W.clone(), b.clone(), c.clone(), *vels, v, None, None,
                                                          "bernoulli", 1, 1e-6, 0.5, 0.0, 0.0, 0.0, None))
    torch.library.opcheck(torch.ops.pymusicrbm.cd_step_, (W.clone(), b.clone(), c.clone(), *vels, v, v[:3].clone(),
                                                          None, "bernoulli", 2, 1e-6, 0.5, 0.0, 0.0, 0.0, None))
    torch.library.opcheck(torch.ops.pymusicrbm.cd_stats, (W, b, c, v, None, None, "bernoulli", 1, 0.1, 0.5, -1.0,
                                                          -1.0, None))
    torch.library.opcheck(torch.ops.pymusicrbm.cd_stats, (W, b, c, v, v[:3].clone(), None, "bernoulli", 2, 0.0, 0.0,
                                                          0.01, 0.2, None))
    order = torch.tensor([4, 0, 5, 1, 3], device=device)
    torch.library.opcheck(torch.ops.pymusicrbm.cd_steps_, (W.clone(), b.clone(), c.clone(), *vels, v, order, 2,
                                                           None, None, "bernoulli", 1, 1e-6, 0.5, 0.0, 0.0, 0.0, None))
    torch.library.opcheck(torch.ops.pymusicrbm.cd_steps_, (W.clone(), b.clone(), c.clone(), *vels, v, order, 3,
                                                           v[:3].clone(), None, "bernoulli", 2, 1e-6, 0.5, 0.0, 0.0,
                                                           0.0, None))
    grads = [torch.rand_like(t) for t in (W, b, c)]
    torch.library.opcheck(torch.ops.pymusicrbm.cd_apply_, (W.clone(), b.clone(), c.clone(), *vels, *grads, 0.1, 0.5,
                                                           0.01))
    # Gaussian noise is never deterministic: check schema, fake and autograd registration only
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.pymusicrbm.sample_visible, (h, W, b, sigma, "gaussian", None), test_utils=checks)
    torch.library.opcheck(torch.ops.pymusicrbm.philox_uniform_, (torch.empty(10, device=device, dtype=dtype), None),
                          test_utils=checks)
    torch.library.opcheck(torch.ops.pymusicrbm.philox_normal_, (torch.empty(10, device=device, dtype=dtype), None),
                          test_utils=checks)


@pytest.mark.parametrize("device", DEVICES)
def test_training_step_compiles_fullgraph(device):
    W, b, c, _ = rbm(20, 7, device, torch.float32)
    v = data(16, 20, device, torch.float32)
    vels = [torch.zeros_like(t) for t in (W, b, c)]

    def step(W, b, c, Wv, bv, cv, v):
        err = ops.cd_step_(W, b, c, Wv, bv, cv, v, lr=0.05, momentum=0.5)
        p, _ = ops.sample_hidden(v, W, c)
        return err, p.mean(), ops.free_energy(v, W, b, c).mean()

    assert_compiled_step_matches_eager(step, (W, b, c, *vels), v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("persistent", [False, True])
def test_cd_step_replays_in_a_cuda_graph(persistent):
    W, b, c, _ = rbm(513, 50, "cuda", torch.float32)
    v = data(256, 513, "cuda", torch.float32)
    params = [W, b, c] + [torch.zeros_like(t) for t in (W, b, c)]
    if persistent:
        params.append(data(64, 513, "cuda", torch.float32, seed=4))

    def step(W, b, c, Wv, bv, cv, chains=None):
        return ops.cd_step_(W, b, c, Wv, bv, cv, v, chains, k=2, lr=0.05, momentum=0.5, sparsity_target=0.1,
                            sparsity_cost=0.1)

    assert_step_replays_in_a_cuda_graph(step, params)


# ---- bad input -----------------------------------------------------------------------------------------------------

def _good(dtype=torch.float32):
    W, b, c, _ = rbm(10, 4, "cpu", dtype)
    return W, b, c, data(3, 10, "cpu", dtype)


def _cd(W, b, c, v, **kw):
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    return ops.cd_step_(W, b, c, *vels, v, **kw)


def _steps(W, b, c, X, order, batch_size=2):
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    return ops.cd_steps_(W, b, c, *vels, X, order, batch_size)


@pytest.mark.parametrize("call, match", [
    (lambda W, b, c, v: ops.sample_hidden(v[0], W, c), r"v must be 2-D"),
    (lambda W, b, c, v: ops.sample_hidden(v[:, :5], W, c), r"v has 5 columns but W implies n_visible = 10"),
    (lambda W, b, c, v: ops.sample_hidden(v, W, c[:3]), r"c must be 1-D of size 4"),
    (lambda W, b, c, v: ops.sample_hidden(v.double(), W, c), r"v has dtype Double but W has dtype Float"),
    (lambda W, b, c, v: ops.sample_hidden(v.long(), W, c), r"v must be float32 or float64"),
    (lambda W, b, c, v: ops.sample_hidden(v, W[0], c), r"W must be 2-D"),
    (lambda W, b, c, v: ops.sample_hidden(v[:0], W, c), r"v is an empty batch"),
    (lambda W, b, c, v: ops.sample_hidden(v, W, c, -torch.ones(10)), r"sigma must be > 0"),
    (lambda W, b, c, v: ops.sample_visible(v[:, :4], W, b, visible="poisson"), r"visible must be 'bernoulli' or"),
    (lambda W, b, c, v: ops.sample_visible(v[:, :4], W, b, torch.ones(10)), r"sigma applies to gaussian"),
    (lambda W, b, c, v: ops.sample_visible(v, W, b), r"h has 10 columns but W implies n_hidden = 4"),
    (lambda W, b, c, v: ops.free_energy(v, W, b[:2], c), r"b must be 1-D of size 10"),
    (lambda W, b, c, v: _cd(W, b, c, v, k=0), r"k \(Gibbs steps\) must be >= 1"),
    (lambda W, b, c, v: _cd(W, b, c, v, lr=-1.0), r"lr must be >= 0"),
    (lambda W, b, c, v: _cd(W, b, c, v, weight_decay=-1.0), r"weight_decay must be >= 0"),
    (lambda W, b, c, v: _cd(W, b, c, v, momentum=1.5), r"momentum must be in \[0, 1\)"),
    (lambda W, b, c, v: _cd(W, b, c, v, sparsity_target=2.0), r"sparsity_target must be in \[0, 1\]"),
    (lambda W, b, c, v: _cd(W, b, c, v, chains=torch.zeros(3, 9)), r"chains has 9 columns"),
    (lambda W, b, c, v: _cd(W.t().contiguous().t(), b, c, v), r"W is updated in place and must be contiguous"),
    (lambda W, b, c, v: ops.cd_step_(W, b, c, torch.zeros(3, 3), b, c, v), r"W_vel must have W's shape"),
    (lambda W, b, c, v: _steps(W, b, c, v, torch.tensor([0, 3])), r"order must index rows of data \(0 <= i < 3\)"),
    (lambda W, b, c, v: _steps(W, b, c, v, torch.tensor([0.0, 1.0])), r"order must be a non-empty 1-D int64"),
    (lambda W, b, c, v: _steps(W, b, c, v, torch.arange(3), batch_size=0), r"batch_size must be >= 1"),
    (lambda W, b, c, v: _steps(W, b, c, v[:, :5], torch.arange(3)), r"data has 5 columns but W implies n_visible"),
    (lambda W, b, c, v: ops.philox_uniform_(torch.empty(3, dtype=torch.int32)), r"out must be float32 or float64"),
    (lambda W, b, c, v: ops.cd_stats(W, b, c, v, data_weight=float("nan")), r"data_weight must be finite"),
    (lambda W, b, c, v: ops.cd_stats(W, b, c, v, k=0), r"cd_stats: k \(Gibbs steps\) must be >= 1"),
    (lambda W, b, c, v: ops.cd_apply_(W, b, c, W, b, c, W[:2], b, c, 0.1), r"dW must have W's shape"),
    (lambda W, b, c, v: ops.cd_apply_(W, b, c, W, b, c.double(), W, b, c, 0.1), r"c_vel has dtype Double"),
    (lambda W, b, c, v: ops.cd_apply_(W, b, c, W, b, c, W, b, c, 0.1, momentum=1.0), r"momentum must be in"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(*_good())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_data_leaves_parameters_unchanged(bad):
    W, b, c, v = _good()
    v[1, 2] = bad
    before = [t.clone() for t in (W, b, c)]
    with pytest.raises(RuntimeError, match="v contains NaN or Inf; the parameters were not changed"):
        _cd(W, b, c, v)
    for t, t0 in zip((W, b, c), before):
        assert torch.equal(t, t0)


def test_diverging_update_is_reported_and_not_applied():
    W, b, c, v = _good()
    W += 1e38  # W + update overflows float32
    before = [t.clone() for t in (W, b, c)]
    with pytest.raises(RuntimeError, match="the update is not finite"):
        _cd(W, b, c, v * 1e3, lr=1e38)
    for t, t0 in zip((W, b, c), before):
        assert torch.equal(t, t0)


def test_steps_stop_at_a_diverging_step_with_the_steps_before_applied():
    W, b, c, v = _good()
    X = torch.cat([v, v * 1e3])  # rows 3..5 make the update overflow
    vels = [torch.zeros_like(t) for t in (W, b, c)]
    W += 1e38
    looped = [t.clone() for t in (W, b, c, *vels)]
    ops.cd_step_(*looped, X[:3], lr=1e38, generator=gen("cpu", 1))  # the first batch still applies
    fused = [W, b, c, *vels]
    with pytest.raises(RuntimeError, match="the update is not finite"):
        ops.cd_steps_(*fused, X, torch.arange(6), 3, lr=1e38, generator=gen("cpu", 1))
    for a, e in zip(fused, looped):
        assert torch.equal(a, e)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mixed_devices_are_rejected():
    W, b, c, v = _good()
    with pytest.raises(RuntimeError, match="all tensors must be on one device"):
        ops.sample_hidden(v.cuda(), W, c)
