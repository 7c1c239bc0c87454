"""Typed Python faces of the ``torch.ops.pymusicrbm`` custom ops, with fake (meta) kernels for ``torch.compile``
and autograd where a gradient is meaningful.

Randomness: every sampling phase of an op takes one draw from ``generator`` (the default generator of the tensors'
device when ``None``) and feeds a counter-based Philox stream, so a seed fixes the result whatever the number of
threads. :func:`philox_uniform_` and :func:`philox_normal_` expose those streams, which makes exact references
possible.
"""
from __future__ import annotations

import torch
from torch import Tensor

_lib = torch.ops.pymusicrbm

VISIBLE_TYPES = ("bernoulli", "gaussian")


def philox_uniform_(out: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``out`` with uniforms in (0, 1): the stream a Bernoulli sampling phase compares its probabilities with."""
    _lib.philox_uniform_(out, generator)
    return out


def philox_normal_(out: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``out`` with standard normals: the stream a Gaussian sampling phase adds (scaled by sigma)."""
    _lib.philox_normal_(out, generator)
    return out


def sample_hidden(v: Tensor, W: Tensor, c: Tensor, sigma: Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``p = sigmoid(v' W + c)`` with ``v' = v / sigma`` (Gaussian units) or ``v``, and a Bernoulli sample of it.

    v: (batch, n_visible), W: (n_visible, n_hidden), c: (n_hidden,). Returns (p, h), both (batch, n_hidden).
    """
    return _lib.sample_hidden(v, W, c, sigma, generator)


def sample_visible(h: Tensor, W: Tensor, b: Tensor, sigma: Tensor | None = None, visible: str = "bernoulli",
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Mean of p(v | h) and a sample. Bernoulli: ``sigmoid(h W^T + b)``; Gaussian: ``N(b + sigma * h W^T, sigma^2)``
    (``sigma = 1`` when ``None``). Returns (mean, sample), both (batch, n_visible)."""
    return _lib.sample_visible(h, W, b, sigma, visible, generator)


def free_energy(v: Tensor, W: Tensor, b: Tensor, c: Tensor, sigma: Tensor | None = None,
                visible: str = "bernoulli") -> Tensor:
    """Free energy F(v) per row, so that p(v) = exp(-F(v)) / Z. Differentiable in v, W, b, c (and sigma)."""
    return _lib.free_energy(v, W, b, c, sigma, visible)


def cd_step_(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, v: Tensor,
             chains: Tensor | None = None, sigma: Tensor | None = None, visible: str = "bernoulli", k: int = 1,
             lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0, sparsity_target: float = 0.0,
             sparsity_cost: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """One fused CD-k step (or PCD-k when ``chains`` is given: the chains' visible states are advanced in place).

    Updates in place, with ``vel = momentum * vel + lr * (grad - weight_decay * W)`` and ``param += vel``:
    W (n_visible, n_hidden), b (n_visible,), c (n_hidden,); the sparsity term adds
    ``sparsity_cost * (sparsity_target - mean p(h|v))`` to the hidden-bias gradient. Positive statistics use
    p(h | data); negative ones the k-th Gibbs sample of v and p(h | v_k). Returns the mean squared error between
    the batch and its first mean-field reconstruction (0-d tensor). Non-finite input or a non-finite update raise
    an error and leave the parameters unchanged.
    """
    return _lib.cd_step_(W, b, c, W_vel, b_vel, c_vel, v, chains, sigma, visible, k, lr, momentum, weight_decay,
                         sparsity_target, sparsity_cost, generator)


# ---- fake kernels: shapes and dtypes only, so the ops trace under torch.compile -------------------------------

@torch.library.register_fake("pymusicrbm::philox_uniform_")
def _(out, generator=None):
    return None


@torch.library.register_fake("pymusicrbm::philox_normal_")
def _(out, generator=None):
    return None


@torch.library.register_fake("pymusicrbm::sample_hidden")
def _(v, W, c, sigma=None, generator=None):
    shape = (v.shape[0], W.shape[1])
    return v.new_empty(shape), v.new_empty(shape)


@torch.library.register_fake("pymusicrbm::sample_visible")
def _(h, W, b, sigma=None, visible="bernoulli", generator=None):
    shape = (h.shape[0], W.shape[0])
    return h.new_empty(shape), h.new_empty(shape)


@torch.library.register_fake("pymusicrbm::free_energy")
def _(v, W, b, c, sigma=None, visible="bernoulli"):
    return v.new_empty((v.shape[0],))


@torch.library.register_fake("pymusicrbm::cd_step_")
def _(W, b, c, W_vel, b_vel, c_vel, v, chains=None, sigma=None, visible="bernoulli", k=1, lr=0.01, momentum=0.0,
      weight_decay=0.0, sparsity_target=0.0, sparsity_cost=0.0, generator=None):
    return W.new_empty(())


# ---- autograd of the free energy ----------------------------------------------------------------------------

def _fe_setup(ctx, inputs, output):
    v, W, b, c, sigma, visible = inputs
    ctx.save_for_backward(v, W, b, c, sigma)
    ctx.visible = visible


def _fe_backward(ctx, grad):
    v, W, b, c, sigma = ctx.saved_tensors
    x = v / sigma if sigma is not None else v
    p = torch.sigmoid(torch.addmm(c, x, W))          # dF/d(pre-activation) = -p
    g = grad.unsqueeze(1)
    gp = g * p
    dW = -x.t() @ gp
    dc = -gp.sum(0)
    back = gp @ W.t()                                  # sum_j p_j W_ij, per row
    dsigma = None
    if ctx.visible == "bernoulli":
        dv = -g * b - back
        db = -(g * v).sum(0)
    else:
        s = sigma if sigma is not None else torch.ones_like(b)
        d = (v - b) / s
        dv = g * d / s - back / s
        db = -(g * d / s).sum(0)
        if sigma is not None:
            dsigma = (-(g * d * d) + back * x).sum(0) / s
    return dv, dW, db, dc, dsigma, None


torch.library.register_autograd("pymusicrbm::free_energy", _fe_backward, setup_context=_fe_setup)
