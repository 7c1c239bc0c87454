"""Plain-PyTorch references of the ops, written from the documented formulas, for tests and benchmarks.

Each function computes what the op of the same name in :mod:`pymusicrbm.ops` computes, the obvious way (matmuls,
``F.conv2d`` / ``F.conv_transpose2d``, an explicit softmax for probabilistic max-pooling), and draws its random
numbers from the op's own streams (:func:`~pymusicrbm.ops.philox_uniform_` for each Bernoulli phase,
:func:`~pymusicrbm.ops.philox_normal_` for each Gaussian phase), one draw per sampling phase in the op's order. So
with a generator in the same state as the op's, samples agree exactly (up to a uniform within rounding of its
probability) and a whole CD step can be compared parameter by parameter. Nothing here is fast, and nothing in the
package uses it: it is the independent side of the comparison (as torchvision keeps ``_roi_align`` beside its op).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops

__all__ = ["CDStep", "CDStats", "sample_hidden", "sample_visible", "free_energy", "cd_stats", "cd_apply", "cd_step",
           "pool_blocks", "pool_unblocks", "conv_pool", "conv_sample_hidden", "conv_sample_visible", "conv_cd_stats",
           "conv_cd_step"]


class CDStep(NamedTuple):
    """The result of one reference CD step: the updated parameters and velocities (new tensors, the inputs are
    left alone), the negative-phase visible sample (the updated chains when persistent) and the reconstruction
    error the op returns."""

    W: Tensor
    b: Tensor
    c: Tensor
    W_vel: Tensor
    b_vel: Tensor
    c_vel: Tensor
    chains: Tensor
    recon: Tensor


def _bernoulli(p: Tensor, generator) -> Tensor:
    return (ops.philox_uniform_(torch.empty_like(p), generator) < p).to(p.dtype)


# ---- dense RBM -----------------------------------------------------------------------------------------------------

def sample_hidden(v: Tensor, W: Tensor, c: Tensor, sigma: Tensor | None = None, generator=None, *,
                  sample: bool = True) -> tuple[Tensor, Tensor | None]:
    """(p, h): ``p = sigmoid(v' W + c)`` with ``v' = v / sigma`` (Gaussian units) or ``v``; ``h`` one uniform draw
    (None with ``sample=False``, which draws nothing)."""
    x = v / sigma if sigma is not None else v
    p = torch.sigmoid(x @ W + c)
    return p, (_bernoulli(p, generator) if sample else None)


def sample_visible(h: Tensor, W: Tensor, b: Tensor, sigma: Tensor | None = None, visible: str = "bernoulli",
                   generator=None, *, sample: bool = True) -> tuple[Tensor, Tensor | None]:
    """(mean, sample) of p(v | h): Bernoulli ``sigmoid(h W^T + b)`` (one uniform draw), Gaussian
    ``b + sigma * h W^T`` plus ``sigma`` times one normal draw."""
    if visible == "bernoulli":
        m = torch.sigmoid(h @ W.t() + b)
        return m, (_bernoulli(m, generator) if sample else None)
    s = sigma if sigma is not None else torch.ones_like(b)
    m = b + s * (h @ W.t())
    return m, (m + s * ops.philox_normal_(torch.empty_like(m), generator) if sample else None)


def free_energy(v: Tensor, W: Tensor, b: Tensor, c: Tensor, sigma: Tensor | None = None,
                visible: str = "bernoulli") -> Tensor:
    """F(v) per row: Bernoulli ``-v.b - sum softplus(v W + c)``; Gaussian
    ``sum (v - b)^2 / (2 sigma^2) - sum softplus((v / sigma) W + c)``."""
    if visible == "bernoulli":
        return -(v @ b) - F.softplus(v @ W + c).sum(1)
    s = sigma if sigma is not None else torch.ones_like(b)
    return ((v - b) ** 2 / (2 * s ** 2)).sum(1) - F.softplus((v / s) @ W + c).sum(1)


class CDStats(NamedTuple):
    """The result of a reference statistics step: what the op returns, and the negative-phase visible sample (the
    updated chains when persistent)."""

    dW: Tensor
    db: Tensor
    dc: Tensor
    sq_err: Tensor
    chains: Tensor


def _weight(w: float, rows: int) -> float:
    return 1.0 / rows if w < 0 else w


def cd_stats(W: Tensor, b: Tensor, c: Tensor, v: Tensor, chains: Tensor | None = None, sigma: Tensor | None = None,
             visible: str = "bernoulli", k: int = 1, sparsity_target: float = 0.0, sparsity_cost: float = 0.0,
             data_weight: float = -1.0, chain_weight: float = -1.0, generator=None) -> CDStats:
    """The statistics of :func:`pymusicrbm.ops.cd_stats`, drawing in the op's order: h0 from the data; then (CD) a
    visible sample from h0, or (PCD) a hidden and a visible sample from the chains; then k - 1 more hidden/visible
    rounds. Weighted sums over rows (weights 1 / rows by default); ``sq_err`` the summed squared error of the mean
    of p(v | h0) against v."""
    p0, h0 = sample_hidden(v, W, c, sigma, generator)
    persistent = chains is not None
    m1, vs = sample_visible(h0, W, b, sigma, visible, generator, sample=not persistent)
    sq_err = F.mse_loss(m1, v, reduction="sum")
    if persistent:
        _, h = sample_hidden(chains, W, c, sigma, generator)
        _, vs = sample_visible(h, W, b, sigma, visible, generator)
    pk, h = sample_hidden(vs, W, c, sigma, generator, sample=k > 1)
    for t in range(1, k):
        _, vs = sample_visible(h, W, b, sigma, visible, generator)
        pk, h = sample_hidden(vs, W, c, sigma, generator, sample=t + 1 < k)
    dw, cw = _weight(data_weight, len(v)), _weight(chain_weight, len(vs))
    x0 = v / sigma if sigma is not None else v
    xk = vs / sigma if sigma is not None else vs
    dW = dw * x0.t() @ p0 - cw * xk.t() @ pk
    db = dw * x0.sum(0) - cw * xk.sum(0)
    if sigma is not None:
        db = db / sigma
    dc = dw * p0.sum(0) - cw * pk.sum(0) + sparsity_cost * dw * (sparsity_target - p0).sum(0)
    return CDStats(dW, db, dc, sq_err, vs)


def cd_apply(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, dW: Tensor, db: Tensor,
             dc: Tensor, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> CDStep:
    """:func:`pymusicrbm.ops.cd_apply_` out of place (the chains and the error of the result are None):
    ``vel = momentum * vel + lr * (d - weight_decay * W)`` (decay on W only), ``param + vel``."""
    uW = momentum * W_vel + lr * (dW - weight_decay * W)
    ub = momentum * b_vel + lr * db
    uc = momentum * c_vel + lr * dc
    return CDStep(W + uW, b + ub, c + uc, uW, ub, uc, None, None)


def cd_step(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, v: Tensor,
            chains: Tensor | None = None, sigma: Tensor | None = None, visible: str = "bernoulli", k: int = 1,
            lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0, sparsity_target: float = 0.0,
            sparsity_cost: float = 0.0, generator=None) -> CDStep:
    """One CD-k (``chains=None``) or PCD-k step as :func:`pymusicrbm.ops.cd_step_` documents it: :func:`cd_stats`
    then :func:`cd_apply`; the reconstruction error is the MSE of the mean of p(v | h0) against v."""
    s = cd_stats(W, b, c, v, chains, sigma, visible, k, sparsity_target, sparsity_cost, generator=generator)
    out = cd_apply(W, b, c, W_vel, b_vel, c_vel, s.dW, s.db, s.dc, lr, momentum, weight_decay)
    return out._replace(chains=s.chains, recon=s.sq_err / v.numel())


# ---- convolutional RBM ----------------------------------------------------------------------------------------------

def pool_blocks(t: Tensor, p: int) -> Tensor:
    """(B, K, H, W) -> (B, K, H/p, W/p, p*p): the units of each pooling block, in row-major order."""
    B, K, H, W = t.shape
    return t.reshape(B, K, H // p, p, W // p, p).permute(0, 1, 2, 4, 3, 5).reshape(B, K, H // p, W // p, p * p)


def pool_unblocks(t: Tensor, p: int) -> Tensor:
    """The inverse of :func:`pool_blocks`."""
    B, K, hp, wp, _ = t.shape
    return t.reshape(B, K, hp, wp, p, p).permute(0, 1, 2, 4, 3, 5).reshape(B, K, hp * p, wp * p)


def _conv_energy(v: Tensor, W: Tensor, c: Tensor, sigma: Tensor | None) -> Tensor:
    x = v / sigma.view(1, -1, 1, 1) if sigma is not None else v
    return F.conv2d(x, W, c)


def conv_pool(e: Tensor, p: int) -> tuple[Tensor, Tensor, Tensor]:
    """Probabilistic max-pooling of hidden energies ``e``: a softmax over each block's units plus an 'off' state of
    energy 0. Returns (hidden probabilities, pooled probabilities, block probabilities (..., p*p))."""
    eb = pool_blocks(e, p)
    sm = torch.softmax(torch.cat([eb, torch.zeros_like(eb[..., :1])], -1), -1)[..., :-1]
    return pool_unblocks(sm, p), sm.sum(-1), sm


def conv_sample_hidden(v: Tensor, W: Tensor, c: Tensor, pool: int = 1, sigma: Tensor | None = None, generator=None,
                       *, sample: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
    """(P, H, Q) as :func:`pymusicrbm.ops.conv_sample_hidden`: energies ``conv2d(v / sigma, W) + c``, pooled by
    :func:`conv_pool`; one uniform per block picks the unit that is on (or none) from the cumulative block
    probabilities in row-major order (``H`` None with ``sample=False``, which draws nothing)."""
    P, Q, sm = conv_pool(_conv_energy(v, W, c, sigma), pool)
    if not sample:
        return P, None, Q
    u = ops.philox_uniform_(torch.empty_like(Q), generator).unsqueeze(-1)
    cum = sm.cumsum(-1)
    on = (u >= cum - sm) & (u < cum)
    return P, pool_unblocks(on.to(P.dtype), pool), Q


def conv_sample_visible(h: Tensor, W: Tensor, b: Tensor, sigma: Tensor | None = None, visible: str = "bernoulli",
                        generator=None, *, sample: bool = True) -> tuple[Tensor, Tensor | None]:
    """(mean, sample) of p(v | h) with ``a = conv_transpose2d(h, W)``: Bernoulli ``sigmoid(a + b)`` (one uniform
    draw), Gaussian ``b + sigma * a`` plus ``sigma`` times one normal draw (per channel b and sigma)."""
    a = F.conv_transpose2d(h, W)
    if visible == "bernoulli":
        mean = torch.sigmoid(a + b.view(1, -1, 1, 1))
        return mean, (_bernoulli(mean, generator) if sample else None)
    sd = sigma.view(1, -1, 1, 1) if sigma is not None else 1.0
    mean = b.view(1, -1, 1, 1) + sd * a
    return mean, (mean + sd * ops.philox_normal_(torch.empty_like(mean), generator) if sample else None)


def conv_cd_stats(W: Tensor, b: Tensor, c: Tensor, v: Tensor, chains: Tensor | None = None,
                  sigma: Tensor | None = None, visible: str = "bernoulli", pool: int = 1, k: int = 1,
                  sparsity_target: float = 0.0, sparsity_cost: float = 0.0, data_weight: float = -1.0,
                  chain_weight: float = -1.0, generator=None) -> CDStats:
    """The statistics of :func:`pymusicrbm.ops.conv_cd_stats`, drawing in the op's order. Weighted sums over rows
    (1 / rows by default) of averages over the map positions; the sparsity term pulls the pooled activations Q of
    the data towards ``sparsity_target``; b's statistic is divided by sigma^2 (Gaussian units with sigma)."""
    P0, H0, Q0 = conv_sample_hidden(v, W, c, pool, sigma, generator)
    if chains is None:
        mean, vs = conv_sample_visible(H0, W, b, sigma, visible, generator)
    else:
        mean, _ = conv_sample_visible(H0, W, b, sigma, visible, sample=False)
        _, h, _ = conv_sample_hidden(chains, W, c, pool, sigma, generator)
        _, vs = conv_sample_visible(h, W, b, sigma, visible, generator)
    sq_err = F.mse_loss(mean, v, reduction="sum")
    for _ in range(1, k):
        _, h, _ = conv_sample_hidden(vs, W, c, pool, sigma, generator)
        _, vs = conv_sample_visible(h, W, b, sigma, visible, generator)
    Pk, _, _ = conv_sample_hidden(vs, W, c, pool, sigma, sample=False)
    s = sigma.view(1, -1, 1, 1) if sigma is not None else 1.0
    dw, cw = _weight(data_weight, v.shape[0]), _weight(chain_weight, vs.shape[0])
    L = P0.shape[2] * P0.shape[3]
    dW = (dw * torch.nn.grad.conv2d_weight(v / s, W.shape, P0) -
          cw * torch.nn.grad.conv2d_weight(vs / s, W.shape, Pk)) / L
    dc = (dw * P0.sum((0, 2, 3)) - cw * Pk.sum((0, 2, 3))) / L
    if sparsity_cost > 0:
        dc = dc + sparsity_cost * dw * (sparsity_target - Q0.mean((2, 3))).sum(0)
    db = (dw * v.mean((2, 3)).sum(0) - cw * vs.mean((2, 3)).sum(0))
    if sigma is not None:
        db = db / sigma ** 2
    return CDStats(dW, db, dc, sq_err, vs)


def conv_cd_step(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, v: Tensor,
                 chains: Tensor | None = None, sigma: Tensor | None = None, visible: str = "bernoulli", pool: int = 1,
                 k: int = 1, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 sparsity_target: float = 0.0, sparsity_cost: float = 0.0, generator=None) -> CDStep:
    """One CD-k / PCD-k step of :func:`pymusicrbm.ops.conv_cd_step_`: :func:`conv_cd_stats` then
    :func:`cd_apply`."""
    s = conv_cd_stats(W, b, c, v, chains, sigma, visible, pool, k, sparsity_target, sparsity_cost,
                      generator=generator)
    out = cd_apply(W, b, c, W_vel, b_vel, c_vel, s.dW, s.db, s.dc, lr, momentum, weight_decay)
    return out._replace(chains=s.chains, recon=s.sq_err / v.numel())
