"""Typed Python faces of the ``torch.ops.pymusicrbm`` custom ops, with fake (meta) kernels for ``torch.compile``
and autograd where a gradient is meaningful.

Non-finite values, one policy for the dense and the convolutional sampling ops: a NaN never becomes a
plausible-looking sample. On the CPU (where the check costs no device synchronisation) an op raises a RuntimeError
naming the argument that holds NaN or Inf; on a GPU the kernels propagate instead (a NaN probability or mean gives a
NaN sample), and they do so on the CPU too for a NaN that comes from the parameters. A non-finite update is never
applied: :func:`cd_apply_` returns a 0-d bool flag on the parameters' device (no host synchronisation); the fused
steps :func:`cd_step_` / :func:`conv_cd_step_` raise on the CPU, and on a GPU return NaN as their error instead (read
once per epoch by the training loop).

The CD step in two parts, for data-parallel training (see :func:`cd_stats`): ``cd_stats`` / ``conv_cd_stats``
compute the statistics of a batch (no parameter is touched; PCD chains are advanced), the caller may all-reduce them
(a SUM over ranks), and :func:`cd_apply_` applies momentum, weight decay and the learning rate. ``cd_step_`` is
exactly ``cd_stats`` then ``cd_apply_`` with the default weights, bit for bit.

Randomness: every sampling phase of an op takes one draw from ``generator`` (the default generator of the tensors'
device when ``None``) and feeds a counter-based Philox stream, so a seed fixes the result whatever the number of
threads. :func:`philox_uniform_` and :func:`philox_normal_` expose those streams, which makes exact references
possible.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ._extension import _C  # noqa: F401  (registers torch.ops.pymusicrbm; explains a build for another torch)

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
    the batch and its first mean-field reconstruction (0-d tensor). Exactly :func:`cd_stats` (default weights) then
    :func:`cd_apply_`, bit for bit. Non-finite data or a non-finite update: on the CPU an error, the parameters (and
    chains) unchanged; on a GPU the update is not applied and the returned error is NaN (no host synchronisation).
    """
    return _lib.cd_step_(W, b, c, W_vel, b_vel, c_vel, v, chains, sigma, visible, k, lr, momentum, weight_decay,
                         sparsity_target, sparsity_cost, generator)


def cd_steps_(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, data: Tensor,
              order: Tensor, batch_size: int, chains: Tensor | None = None, sigma: Tensor | None = None,
              visible: str = "bernoulli", k: int = 1, lr: float = 0.01, momentum: float = 0.0,
              weight_decay: float = 0.0, sparsity_target: float = 0.0, sparsity_cost: float = 0.0,
              generator: torch.Generator | None = None) -> Tensor:
    """The :func:`cd_step_` steps of an epoch in one call, with no Python between them: step ``i`` is exactly
    ``cd_step_`` on the batch ``data[order[i * batch_size:(i + 1) * batch_size]]`` (the last batch may be shorter),
    drawing from ``generator`` in the same order, so the result equals that loop bit for bit.

    data: (rows, n_visible); order: 1-D int64 row indices on data's device (e.g. a permutation). Returns the steps'
    errors (what each ``cd_step_`` returns), shape (n_batches,). On the CPU a diverging step raises ``cd_step_``'s
    error with the steps before it applied; on a GPU its error is NaN.
    """
    return _lib.cd_steps_(W, b, c, W_vel, b_vel, c_vel, data, order, batch_size, chains, sigma, visible, k, lr,
                          momentum, weight_decay, sparsity_target, sparsity_cost, generator)


def cd_stats(W: Tensor, b: Tensor, c: Tensor, v: Tensor, chains: Tensor | None = None, sigma: Tensor | None = None,
             visible: str = "bernoulli", k: int = 1, sparsity_target: float = 0.0, sparsity_cost: float = 0.0,
             data_weight: float = -1.0, chain_weight: float = -1.0,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The statistics of one CD-k step (PCD-k when ``chains`` is given: they are advanced in place), without
    touching W, b, c. Returns ``(dW, db, dc, sq_err)``, new tensors of W's dtype and device:

    - ``dW = dw * X0^T p0 - cw * Xk^T pk``  (n_visible, n_hidden)
    - ``db = (dw * sum_rows X0 - cw * sum_rows Xk) / sigma``  (n_visible,)
    - ``dc = dw * sum_rows p0 - cw * sum_rows pk + sparsity_cost * dw * sum_rows (sparsity_target - p0)``
    - ``sq_err``: 0-d, the SUM over the batch of the squared differences between v and its first mean-field
      reconstruction; the mean squared error that :func:`cd_step_` returns is ``sq_err / v.numel()``.

    with ``X = v / sigma`` (Gaussian units with sigma) or ``v``, X0 the data, Xk the k-th Gibbs sample (of the data
    for CD, of the chains for PCD), p the hidden probabilities, ``dw = data_weight`` (default, any negative value:
    1 / batch) and ``cw = chain_weight`` (default: 1 / rows of the negative phase, the chains' or the batch's).

    Every term is a sum over rows times a weight, so data-parallel ranks that each pass
    ``data_weight = 1 / global_batch`` and ``chain_weight = 1 / global_chains`` get statistics whose SUM
    all-reduce is exactly the statistic of the global batch (the sparsity term included), and the SUM of ``sq_err``
    divided by ``global_batch * n_visible`` is the global reconstruction error. The generator draws are those of
    :func:`cd_step_`.
    """
    return _lib.cd_stats(W, b, c, v, chains, sigma, visible, k, sparsity_target, sparsity_cost, data_weight,
                         chain_weight, generator)


def cd_apply_(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, dW: Tensor, db: Tensor,
              dc: Tensor, lr: float, momentum: float = 0.0, weight_decay: float = 0.0) -> Tensor:
    """Apply statistics (from :func:`cd_stats` / :func:`conv_cd_stats`, maybe all-reduced) to the parameters of a
    dense or convolutional RBM, in place: ``u = momentum * vel + lr * (d - weight_decay * W)`` (decay on W only,
    0 for b and c), ``vel = u``, ``param += u``. Element-wise: any shapes, each velocity and statistic shaped as
    its parameter; dW, db, dc may be views into one flat (all-reduce) buffer.

    Returns a 0-d bool tensor on the parameters' device: True when the update was applied; False when some
    ``param + u`` was not finite, in which case nothing (no parameter, no velocity) was changed. Reading the flag
    is the caller's choice (it costs a host synchronisation on a GPU; the op itself never syncs).
    """
    return _lib.cd_apply_(W, b, c, W_vel, b_vel, c_vel, dW, db, dc, lr, momentum, weight_decay)


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


@torch.library.register_fake("pymusicrbm::cd_stats")
def _(W, b, c, v, chains=None, sigma=None, visible="bernoulli", k=1, sparsity_target=0.0, sparsity_cost=0.0,
      data_weight=-1.0, chain_weight=-1.0, generator=None):
    return torch.empty_like(W), torch.empty_like(b), torch.empty_like(c), W.new_empty(())


@torch.library.register_fake("pymusicrbm::cd_apply_")
def _(W, b, c, W_vel, b_vel, c_vel, dW, db, dc, lr, momentum=0.0, weight_decay=0.0):
    return W.new_empty((), dtype=torch.bool)


@torch.library.register_fake("pymusicrbm::cd_step_")
def _(W, b, c, W_vel, b_vel, c_vel, v, chains=None, sigma=None, visible="bernoulli", k=1, lr=0.01, momentum=0.0,
      weight_decay=0.0, sparsity_target=0.0, sparsity_cost=0.0, generator=None):
    return W.new_empty(())


@torch.library.register_fake("pymusicrbm::cd_steps_")
def _(W, b, c, W_vel, b_vel, c_vel, data, order, batch_size, chains=None, sigma=None, visible="bernoulli", k=1,
      lr=0.01, momentum=0.0, weight_decay=0.0, sparsity_target=0.0, sparsity_cost=0.0, generator=None):
    return W.new_empty(((order.shape[0] + batch_size - 1) // batch_size,))


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


# ---- Convolutional RBM -----------------------------------------------------------------------------------------
# Model (Lee, Grosse, Ranganath & Ng 2009), shapes: v (B, C, Hv, Wv) visible maps, W (K, C, fh, fw) filters,
# c (K,) hidden biases, b (C,) visible biases, sigma (C,) per-channel standard deviations of Gaussian visible
# units. Hidden maps are (B, K, Hh, Wh) = valid correlation size (Hv - fh + 1, Wv - fw + 1).

def conv_sample_hidden(v: Tensor, W: Tensor, c: Tensor, pool: int = 1, sigma: Tensor | None = None,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Hidden probabilities and a sample of a convolutional RBM, with optional probabilistic max-pooling.

    The energy of hidden unit (k, y, x) is ``e = c_k + sum_{c,dy,dx} W[k,c,dy,dx] v[c,y+dy,x+dx] / sigma_c``
    (valid 2-D correlation). ``pool == 1``: ``p = sigmoid(e)``, independent Bernoulli samples. ``pool == P > 1``
    (probabilistic max-pooling): in each P x P block of a hidden map at most one unit is on;
    ``p_i = exp(e_i) / (1 + sum_j exp(e_j))`` over the block, the remaining mass is the 'all off' state. P must
    divide both hidden-map sides (else a RuntimeError says to which size to crop the input; :class:`ConvRBM`
    crops for you).

    Returns ``(p, h, pooled)``: hidden probabilities and a sample (one unit or none per block), both
    (B, K, Hh, Wh), and the pooled-unit probabilities ``1 - P(all off)``, (B, K, Hh/P, Wh/P) (``== p`` when
    ``pool == 1``). ``p`` and ``pooled`` are differentiable in v, W and c (not in sigma); ``h`` is not.
    One generator draw: the uniform of block i (its index in the pooled map) is element i of
    :func:`philox_uniform_`'s stream; units are taken in row-major order and unit j is on when
    ``cum_{j-1} <= u < cum_j``.
    """
    return _lib.conv_sample_hidden(v, W, c, pool, sigma, generator)


def conv_sample_visible(h: Tensor, W: Tensor, b: Tensor, sigma: Tensor | None = None, visible: str = "bernoulli",
                        generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Mean of p(v | h) and a sample: ``a = sum_k full_conv(h_k, W[k, c])`` (the transpose of the hidden pass's
    correlation, i.e. ``F.conv_transpose2d(h, W)``); Bernoulli: ``sigmoid(b_c + a)``; Gaussian:
    ``N(b_c + sigma_c * a, sigma_c^2)`` (``sigma = 1`` when None).

    h: (B, K, Hh, Wh). Returns (mean, sample), both (B, C, Hh + fh - 1, Wh + fw - 1). ``mean`` is differentiable
    in h, W and b. One generator draw: element i (index in the output) of the uniform (Bernoulli) or normal
    (Gaussian) Philox stream.
    """
    return _lib.conv_sample_visible(h, W, b, sigma, visible, generator)


def conv_cd_step_(W: Tensor, b: Tensor, c: Tensor, W_vel: Tensor, b_vel: Tensor, c_vel: Tensor, v: Tensor,
                  chains: Tensor | None = None, sigma: Tensor | None = None, visible: str = "bernoulli",
                  pool: int = 1, k: int = 1, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                  sparsity_target: float = 0.0, sparsity_cost: float = 0.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """One fused CD-k step of a convolutional RBM (PCD-k when ``chains`` (N, C, Hv, Wv) is given: advanced in
    place), updating W (K, C, fh, fw), b (C,), c (K,) and their velocities in place.

    Statistics are averages over the batch and the positions of a map: ``dW[k,c,dy,dx] = <v[c,y+dy,x+dx] / sigma_c
    * p_k(y,x)>_data - <...>_model``, ``dc = <p>_data - <p>_model``, ``db = <v - v_k> / sigma^2`` (Gaussian) or
    ``<v - v_k>`` (Bernoulli), plus ``sparsity_cost * (sparsity_target - q)`` on c where q is the mean pooled-unit
    probability (pool > 1) or hidden probability (pool == 1) on the data. Then
    ``vel = momentum * vel + lr * (grad - weight_decay * W)`` (decay on W only) and ``param += vel``.
    Positive statistics use p(h | data); negative ones p(h | v_k) at the k-th Gibbs sample v_k. The hidden
    probabilities and energies are never stored: the weight statistic is accumulated in the same pass.

    Returns the mean squared error between v and its first mean-field reconstruction E[v | h0] (0-d tensor).
    Exactly :func:`conv_cd_stats` (default weights) then :func:`cd_apply_`, bit for bit. NaN/Inf in v or chains,
    or a non-finite update: on the CPU an error, every parameter unchanged; on a GPU the update is not applied and
    the returned error is NaN (no host synchronisation).
    Generator draws, in order: h0; v_1 (CD) or, for PCD, h and v of the chains; then h and v of each further
    Gibbs step.
    """
    return _lib.conv_cd_step_(W, b, c, W_vel, b_vel, c_vel, v, chains, sigma, visible, pool, k, lr, momentum,
                              weight_decay, sparsity_target, sparsity_cost, generator)


def conv_cd_stats(W: Tensor, b: Tensor, c: Tensor, v: Tensor, chains: Tensor | None = None,
                  sigma: Tensor | None = None, visible: str = "bernoulli", pool: int = 1, k: int = 1,
                  sparsity_target: float = 0.0, sparsity_cost: float = 0.0, data_weight: float = -1.0,
                  chain_weight: float = -1.0,
                  generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The statistics of one convolutional CD-k / PCD-k step (:func:`conv_cd_step_`'s), W, b, c untouched, chains
    advanced in place. Returns ``(dW, db, dc, sq_err)`` shaped as W (K, C, fh, fw), b (C,), c (K,) and 0-d. With
    ``dw = data_weight`` (default 1 / batch), ``cw = chain_weight`` (default 1 / rows of the negative phase),
    L = Hh * Wh hidden positions and Lv = Hv * Wv visible positions per map:

    - ``dW[k,c,dy,dx] = (dw * sum_data - cw * sum_model) of v[c,y+dy,x+dx] / sigma_c * p_k(y,x)``, over rows and
      positions, divided by L
    - ``dc = (dw * sum_data p - cw * sum_model p) / L + sparsity_cost * dw * sum_rows (sparsity_target - mean q)``
      (q: the pooled-unit probabilities of the data, or the hidden ones when pool == 1, mean over a map)
    - ``db = (dw * sum_data v - cw * sum_model v_k) / Lv / sigma^2`` per channel
    - ``sq_err``: the SUM of squared differences between v and E[v | h0]; ``conv_cd_step_`` returns
      ``sq_err / v.numel()``.

    As for :func:`cd_stats`, ranks passing ``1 / global_batch`` and ``1 / global_chains`` can SUM all-reduce the
    results into the global batch's statistics, then call :func:`cd_apply_`.
    """
    return _lib.conv_cd_stats(W, b, c, v, chains, sigma, visible, pool, k, sparsity_target, sparsity_cost,
                              data_weight, chain_weight, generator)


def conv_output_shape(in_hw: tuple[int, int], filter_hw: tuple[int, int], pool: int = 1) -> tuple[int, int]:
    """Pooled-map size (height, width) of the hidden pass for an input of size ``in_hw``."""
    hh, wh = in_hw[0] - filter_hw[0] + 1, in_hw[1] - filter_hw[1] + 1
    return hh // pool, wh // pool


@torch.library.register_fake("pymusicrbm::conv_sample_hidden")
def _(v, W, c, pool=1, sigma=None, generator=None):
    hh, wh = v.shape[2] - W.shape[2] + 1, v.shape[3] - W.shape[3] + 1
    shape = (v.shape[0], W.shape[0], hh, wh)
    return v.new_empty(shape), v.new_empty(shape), v.new_empty((v.shape[0], W.shape[0], hh // pool, wh // pool))


@torch.library.register_fake("pymusicrbm::conv_sample_visible")
def _(h, W, b, sigma=None, visible="bernoulli", generator=None):
    shape = (h.shape[0], W.shape[1], h.shape[2] + W.shape[2] - 1, h.shape[3] + W.shape[3] - 1)
    return h.new_empty(shape), h.new_empty(shape)


@torch.library.register_fake("pymusicrbm::conv_cd_stats")
def _(W, b, c, v, chains=None, sigma=None, visible="bernoulli", pool=1, k=1, sparsity_target=0.0, sparsity_cost=0.0,
      data_weight=-1.0, chain_weight=-1.0, generator=None):
    return torch.empty_like(W), torch.empty_like(b), torch.empty_like(c), W.new_empty(())


@torch.library.register_fake("pymusicrbm::conv_cd_step_")
def _(W, b, c, W_vel, b_vel, c_vel, v, chains=None, sigma=None, visible="bernoulli", pool=1, k=1, lr=0.01,
      momentum=0.0, weight_decay=0.0, sparsity_target=0.0, sparsity_cost=0.0, generator=None):
    return W.new_empty(())


# Autograd of the probabilities (used by ConvRBM's 'reconstruction' training, an autoencoder on these ops).

def _conv_hidden_setup(ctx, inputs, output):
    v, W, c, pool, sigma, generator = inputs
    p, _, q = output
    ctx.save_for_backward(v, W, p, q, sigma)
    ctx.pool = pool


def _conv_hidden_backward(ctx, grad_p, grad_h, grad_q):
    v, W, p, q, sigma = ctx.saved_tensors
    pool = ctx.pool
    if grad_p is None:
        grad_p = torch.zeros_like(p)
    B, K, hh, wh = p.shape
    if pool == 1:
        g = grad_p + (grad_q if grad_q is not None else 0)
        de = g * p * (1 - p)
    else:
        # p_i = exp(e_i) / Z over the block and the 'off' state; q = sum_i p_i.
        # d/de_j: p_j * (g_j - sum_i g_i p_i) + gq * p_j * (1 - q).
        hp, wp = hh // pool, wh // pool
        blocks = lambda t: t.reshape(B, K, hp, pool, wp, pool)  # noqa: E731
        gp, pb = blocks(grad_p), blocks(p)
        dot = (gp * pb).sum(dim=(3, 5), keepdim=True)
        de = pb * (gp - dot)
        if grad_q is not None:
            de = de + pb * (grad_q * (1 - q)).reshape(B, K, hp, 1, wp, 1)
        de = de.reshape(B, K, hh, wh)
    Ws = W / sigma.view(1, -1, 1, 1) if sigma is not None else W
    x = v / sigma.view(1, -1, 1, 1) if sigma is not None else v
    dv = dW = dc = None
    if ctx.needs_input_grad[0]:
        dv = torch.nn.functional.conv_transpose2d(de, Ws)
    if ctx.needs_input_grad[1]:
        dW = torch.nn.grad.conv2d_weight(x, W.shape, de)
    if ctx.needs_input_grad[2]:
        dc = de.sum(dim=(0, 2, 3))
    return dv, dW, dc, None, None, None


torch.library.register_autograd("pymusicrbm::conv_sample_hidden", _conv_hidden_backward,
                                setup_context=_conv_hidden_setup)


def _conv_visible_setup(ctx, inputs, output):
    h, W, b, sigma, visible, generator = inputs
    mean, _ = output
    ctx.save_for_backward(h, W, mean, sigma)
    ctx.visible = visible


def _conv_visible_backward(ctx, grad_mean, grad_sample):
    h, W, mean, sigma = ctx.saved_tensors
    if grad_mean is None:
        grad_mean = torch.zeros_like(mean)
    if ctx.visible == "bernoulli":
        da = grad_mean * mean * (1 - mean)
        dpre = da
    else:
        dpre = grad_mean
        da = grad_mean * sigma.view(1, -1, 1, 1) if sigma is not None else grad_mean
    dh = dW = db = None
    if ctx.needs_input_grad[0]:
        dh = torch.nn.functional.conv2d(da, W)
    if ctx.needs_input_grad[1]:
        # a = conv_transpose2d(h, W): d a / d W is the correlation of h with da.
        dW = torch.nn.grad.conv2d_weight(da, W.shape, h)
    if ctx.needs_input_grad[2]:
        db = dpre.sum(dim=(0, 2, 3))
    return dh, dW, db, None, None, None


torch.library.register_autograd("pymusicrbm::conv_sample_visible", _conv_visible_backward,
                                setup_context=_conv_visible_setup)
