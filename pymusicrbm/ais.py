"""Partition function of an RBM: annealed importance sampling (Salakhutdinov & Murray 2008) and, for small models,
exact enumeration of the hidden states.

Notation: W (n_visible, n_hidden), b (n_visible,), c (n_hidden,), sigma (n_visible,) or None (= 1) for Gaussian
visible units. Energies as in :func:`pymusicrbm.ops.free_energy`:
Bernoulli ``F(v) = -b.v - sum_j softplus(c_j + v.W_j)``,
Gaussian ``F(v) = sum_i (v_i - b_i)^2 / (2 sigma_i^2) - sum_j softplus(c_j + (v/sigma).W_j)``.

AIS anneals from a base-rate model A (W = 0, visible biases ``b_A``, same sigma) to the target B through
``f_beta(v) = log sum_h exp(-(1 - beta) E_A(v, h) - beta E_B(v, h))``, which keeps both models' Gibbs conditionals
available: ``p(h | v) = sigmoid(beta (c + v' W))`` and ``p(v | h)`` with visible bias ``(1-beta) b_A + beta b_B`` and
weights ``beta W``. The transitions are the package's own sampling ops (the scaling by beta is moved onto v and h).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import ops

__all__ = ["AISResult", "beta_schedule", "ais_log_partition", "exact_log_partition"]


class AISResult(NamedTuple):
    """AIS estimate of log Z. ``std`` is one standard error of the estimate in log space (delta method);
    ``lower``/``upper`` are log(mean weight -/+ 3 standard errors) + log Z_A, the bounds Salakhutdinov & Murray
    report; ``log_weights`` are the per-chain log importance weights."""
    log_z: float
    std: float
    lower: float
    upper: float
    log_weights: np.ndarray


def beta_schedule(n_betas: int) -> np.ndarray:
    """Inverse temperatures from 0 to 1, spaced like Salakhutdinov & Murray (500 in [0, .5], 4000 in [.5, .9],
    10000 in [.9, 1]), scaled to ``n_betas`` values in total; denser near 1 where the model changes fastest."""
    if n_betas < 3:
        raise ValueError(f"n_betas must be >= 3, got {n_betas}")
    n1 = max(1, round(n_betas * 500 / 14500))
    n2 = max(1, round(n_betas * 4000 / 14500))
    n3 = max(1, n_betas - n1 - n2)
    return np.concatenate([np.linspace(0.0, 0.5, n1, endpoint=False),
                           np.linspace(0.5, 0.9, n2, endpoint=False),
                           np.linspace(0.9, 1.0, n3)])


def _visible_energy_term(v: Tensor, b: Tensor, sigma: Tensor | None, visible: str) -> Tensor:
    """-(visible part of the energy): b.v (Bernoulli) or -sum (v - b)^2 / (2 sigma^2) (Gaussian)."""
    if visible == "bernoulli":
        return v @ b
    d = v - b if sigma is None else (v - b) / sigma
    return -0.5 * d.square().sum(1)


def _log_z_base(b_A: Tensor, sigma: Tensor | None, visible: str, n_hidden: int) -> float:
    hidden = n_hidden * math.log(2.0)  # f_0 still sums over the (disconnected) hidden units
    if visible == "bernoulli":
        return float(torch.nn.functional.softplus(b_A).sum()) + hidden
    s = torch.ones_like(b_A) if sigma is None else sigma
    return float((torch.log(s) + 0.5 * math.log(2 * math.pi)).sum()) + hidden


@torch.no_grad()
def ais_log_partition(W: Tensor, b: Tensor, c: Tensor, sigma: Tensor | None = None, visible: str = "bernoulli",
                      base_visible_bias: Tensor | None = None, n_chains: int = 100, n_betas: int = 10000,
                      generator: torch.Generator | None = None) -> AISResult:
    """AIS estimate of log Z of the RBM (W, b, c[, sigma]). Runs in float64 whatever the model's dtype (the log
    weights sum ``n_betas`` small differences). ``base_visible_bias`` is b_A of the base-rate model (default: zeros
    for Bernoulli, ``b`` for Gaussian); the data's log-odds are the usual choice for Bernoulli units."""
    if visible not in ops.VISIBLE_TYPES:
        raise ValueError(f"visible must be one of {ops.VISIBLE_TYPES}, got {visible!r}")
    if n_chains < 2:
        raise ValueError(f"n_chains must be >= 2, got {n_chains}")
    dt = torch.float64
    W, b, c = W.to(dt), b.to(dt), c.to(dt)
    sigma = None if sigma is None else sigma.to(dt)
    if visible == "bernoulli":
        sigma = None
    if base_visible_bias is None:
        b_A = torch.zeros_like(b) if visible == "bernoulli" else b.clone()
    else:
        b_A = base_visible_bias.to(device=b.device, dtype=dt)
    betas = beta_schedule(n_betas)
    H = W.shape[1]

    # Exact sample of the base model: with h = 0 the visible conditional is the base model itself.
    zeros_h = torch.zeros(n_chains, H, dtype=dt, device=W.device)
    _, v = ops.sample_visible(zeros_h, torch.zeros_like(W), b_A, sigma, visible, generator)
    log_w = torch.zeros(n_chains, dtype=dt, device=W.device)
    for k in range(1, len(betas)):
        b0, b1 = float(betas[k - 1]), float(betas[k])
        x = v if sigma is None else v / sigma
        a = torch.addmm(c, x, W)
        # f_{b1}(v) - f_{b0}(v): the visible terms are linear in beta, the hidden ones are not
        log_w += (b1 - b0) * (_visible_energy_term(v, b, sigma, visible) - _visible_energy_term(v, b_A, sigma,
                                                                                                visible))
        log_w += (torch.nn.functional.softplus(b1 * a) - torch.nn.functional.softplus(b0 * a)).sum(1)
        if k < len(betas) - 1:  # a transition that leaves p_{b1} invariant
            _, h = ops.sample_hidden(b1 * v, W, b1 * c, sigma, generator)
            _, v = ops.sample_visible(b1 * h, W, (1.0 - b1) * b_A + b1 * b, sigma, visible, generator)

    log_z_a = _log_z_base(b_A, sigma, visible, H)
    lw = log_w.cpu().numpy()
    m = lw.max()
    w = np.exp(lw - m)                               # weights scaled by exp(-m)
    mean, se = w.mean(), w.std(ddof=1) / math.sqrt(len(w))
    log_z = log_z_a + m + math.log(mean)
    std = se / mean
    lower = log_z_a + m + math.log(max(mean - 3 * se, np.finfo(float).tiny))
    upper = log_z_a + m + math.log(mean + 3 * se)
    return AISResult(float(log_z), float(std), float(lower), float(upper), lw)


@torch.no_grad()
def exact_log_partition(W: Tensor, b: Tensor, c: Tensor, sigma: Tensor | None = None,
                        visible: str = "bernoulli", max_hidden: int = 20) -> float:
    """log Z by enumerating all 2^n_hidden hidden states (float64). Gaussian visible units are integrated out in
    closed form: each hidden state h contributes ``c.h + sum_i [b_i a_i / sigma_i + a_i^2 / 2 + log(sigma_i
    sqrt(2 pi))]`` with ``a = W h``."""
    H = W.shape[1]
    if H > max_hidden:
        raise ValueError(f"exact_log_partition enumerates 2^n_hidden states; n_hidden = {H} > {max_hidden} is too "
                         "many (use ais_log_partition)")
    dt = torch.float64
    W, b, c = W.to(dt), b.to(dt), c.to(dt)
    s = None if sigma is None or visible == "bernoulli" else sigma.to(dt)
    chunk = 1 << 14
    terms = []
    for start in range(0, 1 << H, chunk):
        idx = torch.arange(start, min(start + chunk, 1 << H), device=W.device)
        h = ((idx.unsqueeze(1) >> torch.arange(H, device=W.device)) & 1).to(dt)
        a = h @ W.t()
        if visible == "bernoulli":
            t = h @ c + torch.nn.functional.softplus(a + b).sum(1)
        else:
            sd = torch.ones_like(b) if s is None else s
            t = h @ c + (b / sd * a + 0.5 * a * a).sum(1) + (torch.log(sd) + 0.5 * math.log(2 * math.pi)).sum()
        terms.append(t)
    return float(torch.logsumexp(torch.cat(terms), 0))
