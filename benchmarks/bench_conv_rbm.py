"""One CD-1 step of a convolutional RBM (Gaussian visible units, probabilistic max-pooling) at the spectrogram
shapes of the ConvRBM study: the fused op ``pymusicrbm.ops.conv_cd_step_`` against the same step written in eager
PyTorch (``F.conv2d`` / ``conv_transpose2d`` / ``torch.nn.grad.conv2d_weight`` and unfold-based pooling, the way a
user would write it), against the same with reshape-based pooling (faster in eager mode), and against
``torch.compile`` of the unfold version.

Correctness first: at every shape the op is compared with a float64 reference that draws the same Philox numbers
(and the eager baseline's pooling with the op's probabilities); then the timings: warm-up, then rounds that run the
methods in turn (so a busy machine slows them alike), median per method, samples/s and ratios.

    python benchmarks/bench_conv_rbm.py [--device cuda] [--json out.json] [--no-compile] [--quick]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from pymusicrbm import _reference as reference
from pymusicrbm import ops

# (mel bins, n_filters, filter size, pool): batch 32, 1 channel, 431 frames (10 s at 22050 Hz, hop 512).
SHAPES = [(64, 24, 3, 1), (64, 32, 5, 2), (96, 32, 7, 2), (96, 64, 10, 2)]
BATCH, FRAMES = 32, 431
HP = dict(lr=1e-3, momentum=0.5, weight_decay=1e-4, sparsity_target=0.02, sparsity_cost=0.1)


def crop(n: int, f: int, pool: int) -> int:
    """Largest input size <= n whose hidden map (n - f + 1) is a multiple of pool."""
    h = n - f + 1
    return h - h % pool + f - 1


# ---- the step written in eager PyTorch ---------------------------------------------------------------------------

def eager_pool(e: torch.Tensor, pool: int, sample: bool):
    """Probabilistic max-pooling with unfold/fold: (probabilities, pooled probabilities, sample or None)."""
    if pool == 1:
        p = torch.sigmoid(e)
        return p, p, (torch.bernoulli(p) if sample else None)
    B, K, hh, wh = e.shape
    cols = F.unfold(e.reshape(B * K, 1, hh, wh), pool, stride=pool)          # (B*K, pool*pool, blocks)
    z = torch.cat([cols, torch.zeros_like(cols[:, :1])], 1)                   # + the 'all off' state
    sm = torch.softmax(z, 1)
    p = F.fold(sm[:, :-1], (hh, wh), pool, stride=pool).reshape(B, K, hh, wh)
    q = (1 - sm[:, -1]).reshape(B, K, hh // pool, wh // pool)
    h = None
    if sample:
        u = torch.rand_like(sm[:, :1])
        cum = sm.cumsum(1)
        onehot = ((u < cum) & (u >= cum - sm))[:, :-1].to(e.dtype)
        h = F.fold(onehot, (hh, wh), pool, stride=pool).reshape(B, K, hh, wh)
    return p, q, h


def reshape_pool(e: torch.Tensor, pool: int, sample: bool):
    """The same pooling with reshape/permute instead of unfold/fold (a stronger eager baseline: torch's CPU
    im2col/col2im are slow for one-channel maps)."""
    if pool == 1:
        return eager_pool(e, pool, sample)
    B, K, hh, wh = e.shape
    hp, wp = hh // pool, wh // pool
    blk = e.reshape(B, K, hp, pool, wp, pool).permute(0, 1, 2, 4, 3, 5).reshape(B, K, hp, wp, pool * pool)
    sm = torch.softmax(torch.cat([blk, torch.zeros_like(blk[..., :1])], -1), -1)
    unblock = lambda t: t.reshape(B, K, hp, wp, pool, pool).permute(0, 1, 2, 4, 3, 5).reshape(B, K, hh, wh)  # noqa
    p, q = unblock(sm[..., :-1]), 1 - sm[..., -1]
    h = None
    if sample:
        u = torch.rand_like(sm[..., :1])
        cum = sm.cumsum(-1)
        h = unblock(((u < cum) & (u >= cum - sm))[..., :-1].to(e.dtype))
    return p, q, h


def eager_cd1(W, b, c, W_vel, b_vel, c_vel, v, pool: int, lr: float, momentum: float, weight_decay: float,
              sparsity_target: float, sparsity_cost: float, pooling=eager_pool):
    B = v.shape[0]
    p0, q0, h0 = pooling(F.conv2d(v, W, c), pool, True)
    mean = F.conv_transpose2d(h0, W) + b.view(1, -1, 1, 1)
    v1 = mean + torch.randn_like(mean)
    p1, _, _ = pooling(F.conv2d(v1, W, c), pool, False)
    n = B * p0.shape[2] * p0.shape[3]
    gW = (torch.nn.grad.conv2d_weight(v, W.shape, p0) - torch.nn.grad.conv2d_weight(v1, W.shape, p1)) / n
    q = q0.mean((0, 2, 3))
    gc = (p0.sum((0, 2, 3)) - p1.sum((0, 2, 3))) / n + sparsity_cost * (sparsity_target - q)
    gb = (v - v1).mean((0, 2, 3))
    W_vel.mul_(momentum).add_(lr * (gW - weight_decay * W))
    b_vel.mul_(momentum).add_(lr * gb)
    c_vel.mul_(momentum).add_(lr * gc)
    W.add_(W_vel)
    b.add_(b_vel)
    c.add_(c_vel)
    return F.mse_loss(mean, v)


# ---- correctness ----------------------------------------------------------------------------------------------

def make_problem(hv, K, f, pool, batch, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    H, Wd = crop(hv, f, pool), crop(FRAMES, f, pool)
    v = torch.randn(batch, 1, H, Wd, generator=g, dtype=dtype).to(device)
    W = (0.05 * torch.randn(K, 1, f, f, generator=g, dtype=dtype)).to(device)
    b = torch.zeros(1, dtype=dtype, device=device)
    c = torch.full((K,), -1.0, dtype=dtype, device=device)
    return v, W, b, c


def check(shape, device) -> float:
    """Largest difference between the op and the reference at this shape (batch 2, float64)."""
    hv, K, f, pool = shape
    v, W, b, c = make_problem(hv, K, f, pool, 2, torch.float64, device)
    vel = [torch.full_like(t, 1e-3) for t in (W, b, c)]
    gen = torch.Generator(device=device).manual_seed(1)
    state = gen.get_state()
    ref = reference.conv_cd_step(W, b, c, *vel, v, visible="gaussian", pool=pool,
                                 generator=torch.Generator(device=device).set_state(state), **HP)
    params = [W.clone(), b.clone(), c.clone()]
    vels = [t.clone() for t in vel]
    recon = ops.conv_cd_step_(*params, *vels, v, visible="gaussian", pool=pool, generator=gen, **HP)
    err = max((a - r).abs().max().item() for a, r in zip(params + vels + [recon], ref[:6] + (ref.recon,)))
    # The eager baseline computes the same pooling probabilities as the op.
    p_op, _, q_op = ops.conv_sample_hidden(v, W, c, pool)
    for pooling in (eager_pool, reshape_pool):
        p_e, q_e, _ = pooling(F.conv2d(v, W, c), pool, False)
        err = max(err, (p_op - p_e).abs().max().item(), (q_op - q_e).abs().max().item())
    return err


# ---- timing -----------------------------------------------------------------------------------------------------

def bench(shape, device, repeats, use_compile, dtype=torch.float32):
    hv, K, f, pool = shape
    v, W, b, c = make_problem(hv, K, f, pool, BATCH, dtype, device)

    def fresh():
        return [W.clone(), b.clone(), c.clone(), torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)]

    state_op, state_eager, state_reshape, state_comp = fresh(), fresh(), fresh(), fresh()
    methods = {
        "fused op": lambda: ops.conv_cd_step_(*state_op, v, visible="gaussian", pool=pool, **HP),
        "eager": lambda: eager_cd1(*state_eager, v, pool, **HP),
        "eager (reshape pooling)": lambda: eager_cd1(*state_reshape, v, pool, **HP, pooling=reshape_pool),
    }
    if use_compile:
        compiled = torch.compile(eager_cd1, dynamic=False)
        methods["torch.compile"] = lambda: compiled(*state_comp, v, pool, **HP)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    compile_s = None
    for name, fn in methods.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        fn()
        sync()
        if name == "torch.compile":
            compile_s = time.perf_counter() - t0
        fn()
        sync()
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "shape": {"batch": BATCH, "channels": 1, "height": v.shape[2], "width": v.shape[3], "n_filters": K,
                  "filter": f, "pool": pool},
        "seconds": med,
        "samples_per_s": {name: BATCH / t for name, t in med.items()},
        "speedup_vs": {name: t / med["fused op"] for name, t in med.items() if name != "fused op"},
        "compile_seconds": compile_s,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--quick", action="store_true", help="only the first two shapes, 3 repeats")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device available")
    shapes = SHAPES[:2] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats

    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {platform.processor() or ''}")
    print("correctness (op vs float64 reference with the same Philox draws, batch 2):")
    for shape in shapes:
        err = check(shape, args.device)
        status = "ok" if err < 1e-9 else "MISMATCH"
        print(f"  {shape}: max |diff| = {err:.2e} {status}")
        if err >= 1e-9:
            raise SystemExit(f"correctness check failed at {shape}")

    results = []
    header = f"{'bins x frames':>14} {'K':>3} {'f':>3} {'pool':>4} | {'fused op':>9} {'eager':>9} {'reshape':>9} " \
             f"{'compile':>9} | {'vs eager':>8} {'vs reshape':>10} {'vs compile':>10}   (samples/s, batch {BATCH})"
    print(header)
    print("-" * len(header))
    for shape in shapes:
        r = bench(shape, args.device, repeats, not args.no_compile)
        results.append(r)
        s, sp = r["samples_per_s"], r["speedup_vs"]
        comp = f"{s['torch.compile']:9.1f}" if "torch.compile" in s else f"{'-':>9}"
        vs_comp = f"{sp['torch.compile']:9.2f}x" if "torch.compile" in sp else f"{'-':>10}"
        print(f"{r['shape']['height']:>6} x {r['shape']['width']:<5} {shape[1]:>3} {shape[2]:>3} {shape[3]:>4} | "
              f"{s['fused op']:9.1f} {s['eager']:9.1f} {s['eager (reshape pooling)']:9.1f} {comp} | "
              f"{sp['eager']:7.2f}x {sp['eager (reshape pooling)']:9.2f}x {vs_comp}", flush=True)
    if args.json:
        meta = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
                "machine": platform.machine(), "repeats": repeats}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
