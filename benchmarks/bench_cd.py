"""One CD-k training step: the fused pymusicrbm op against what a user would otherwise write.

For each shape (n_visible, n_hidden, batch): check the fused step against a plain-PyTorch reference that consumes
the same random streams, then time it beside eager PyTorch, the same under torch.compile, scikit-learn's
BernoulliRBM.partial_fit (CPU) and the sgemm throughput the machine reaches on the same FLOPs; also the split
path of data-parallel training (cd_stats then cd_apply_, without the all-reduce).

GFLOP/s count the dense products' FLOPs. On the CPU the fused step sums its products over the nonzeros of binary
units (the data here are 30% ones), so it can take less time than its own GEMMs alone: "% of sgemm" over 100.

    python benchmarks/bench_cd.py [--device cuda] [--json out.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings

import numpy as np
import torch

import pymusicrbm  # noqa: F401
from pymusicrbm import _reference as reference
from pymusicrbm import ops

SHAPES = [(513, 50, 256), (50, 50, 256), (513, 512, 256), (1024, 1024, 512)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_times(fns: dict, device, repeat, warmup=3, burst=5) -> dict:
    """Median seconds per call of each function, timed round-robin: each round runs every contender for a burst of
    `burst` back-to-back calls (as training runs its steps), in a shuffled order, so load that comes and goes on a
    shared machine hits every contender alike and the ratios stay meaningful."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {name: [] for name in fns}
    order = np.random.default_rng(0)
    for _ in range(repeat):
        # a fresh order every round, so that no contender always runs in the caches one other contender left
        for name in order.permutation(list(fns)):
            fn = fns[name]
            t0 = time.perf_counter()
            for _ in range(burst):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / burst)
    return {name: statistics.median(t) for name, t in times.items()}


def eager_cd(W, b, c, Wv, bv, cv, v, k, lr, momentum):
    """CD-k the obvious way, one line per formula."""
    ph0 = torch.sigmoid(v @ W + c)
    h = torch.bernoulli(ph0)
    for step in range(k):
        pv = torch.sigmoid(h @ W.t() + b)
        if step == 0:
            err = ((v - pv) ** 2).mean()
        vk = torch.bernoulli(pv)
        phk = torch.sigmoid(vk @ W + c)
        if step + 1 < k:
            h = torch.bernoulli(phk)
    n = v.shape[0]
    Wv.mul_(momentum).add_((v.t() @ ph0 - vk.t() @ phk) / n, alpha=lr)
    bv.mul_(momentum).add_((v - vk).mean(0), alpha=lr)
    cv.mul_(momentum).add_((ph0 - phk).mean(0), alpha=lr)
    W.add_(Wv)
    b.add_(bv)
    c.add_(cv)
    return err


def check_correctness(V, H, B, k, device):
    """The fused step equals the plain-PyTorch reference fed with the op's own random streams (float64)."""
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(V, H, generator=g, dtype=torch.float64) * 0.05).to(device)
    b, c = torch.zeros(V, dtype=torch.float64, device=device), torch.zeros(H, dtype=torch.float64, device=device)
    v = (torch.rand(B, V, generator=g, dtype=torch.float64) < 0.3).double().to(device)
    vel = [torch.zeros_like(t) for t in (W, b, c)]
    params = [W.clone(), b.clone(), c.clone()] + [t.clone() for t in vel]
    err = ops.cd_step_(*params, v, k=k, lr=0.1, generator=torch.Generator(device).manual_seed(1))
    ref = reference.cd_step(W, b, c, *vel, v, k=k, lr=0.1, generator=torch.Generator(device).manual_seed(1))
    for got, want in zip(params, ref[:6]):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(err, ref.recon)


def bench_shape(V, H, B, k, device, repeat, with_compile, with_sklearn):
    dt = torch.float32
    g = torch.Generator().manual_seed(0)
    W0 = (torch.randn(V, H, generator=g) * 0.05).to(device, dt)
    v = (torch.rand(B, V, generator=g) < 0.3).to(device, dt)

    def params():
        return [W0.clone(), torch.zeros(V, device=device, dtype=dt), torch.zeros(H, device=device, dtype=dt),
                torch.zeros_like(W0), torch.zeros(V, device=device, dtype=dt), torch.zeros(H, device=device, dtype=dt)]

    p_fused, p_split, p_eager, p_comp = params(), params(), params(), params()
    gen = torch.Generator(device).manual_seed(0)

    def split():  # the data-parallel path without the all-reduce: cd_stats then cd_apply_
        ops.cd_apply_(*p_split, *ops.cd_stats(*p_split[:3], v, k=k, generator=gen)[:3], lr=1e-3, momentum=0.5)

    fns = {"fused": lambda: ops.cd_step_(*p_fused, v, k=k, lr=1e-3, momentum=0.5, generator=gen),
           "split": split,
           "eager": lambda: eager_cd(*p_eager, v, k, 1e-3, 0.5)}
    if with_compile:
        compiled = torch.compile(eager_cd)
        fns["compiled"] = lambda: compiled(*p_comp, v, k, 1e-3, 0.5)
    # The GEMMs of the fused step alone (same shapes, preallocated outputs): what sgemm achieves on these FLOPs.
    hb = (torch.rand(B, H, generator=g) < 0.5).to(device, dt)
    X, Y = torch.rand(2 * B, V, device=device, dtype=dt), torch.rand(2 * B, H, device=device, dtype=dt)
    o_h, o_v, o_w = torch.empty(B, H, device=device, dtype=dt), torch.empty(B, V, device=device, dtype=dt), \
        torch.empty_like(W0)

    def gemms():
        torch.mm(v, W0, out=o_h)
        for _ in range(k):
            torch.mm(hb, W0.t(), out=o_v)
            torch.mm(v, W0, out=o_h)
        torch.mm(X.t(), Y, out=o_w)

    fns["sgemm"] = gemms
    t = median_times(fns, device, repeat)
    if with_sklearn and k == 1:
        # timed apart: numpy's OpenBLAS threads spin on after each call and would take the torch contenders' second
        # core (measured: the fused step at 2 threads 0.74 -> 1.5 ms when interleaved with BernoulliRBM)
        from sklearn.neural_network import BernoulliRBM
        X = v.cpu().numpy().astype(np.float32)
        skl = BernoulliRBM(n_components=H, batch_size=B, learning_rate=1e-3, random_state=0)
        t.update(median_times({"sklearn": lambda: skl.partial_fit(X)}, device, repeat))

    row = {"n_visible": V, "n_hidden": H, "batch": B, "k": k, "device": str(device),
           **{f"{name}_s": sec for name, sec in t.items()}}
    # GEMM work of the fused step: 3 + 2 (stacked statistics) products of 2*B*V*H flops for CD-1, +2 per extra step
    flops = 2 * B * V * H * (5 + 2 * (k - 1))
    row["sgemm_gflops"] = flops / t["sgemm"] / 1e9
    row["fused_gflops"] = flops / t["fused"] / 1e9
    row["fraction_of_sgemm"] = t["sgemm"] / t["fused"]
    for base in ("eager", "compiled", "sklearn"):
        if base in t:
            row[f"speedup_vs_{base}"] = t[base] / t["fused"]
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small shapes only, no torch.compile (smoke test)")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    shapes = SHAPES[:2] if args.quick else SHAPES
    cases = [(V, H, B, 1) for V, H, B in shapes] + [(513, 50, 256, 10)]
    warnings.filterwarnings("ignore")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    rows = []
    for V, H, B, k in cases:
        check_correctness(min(V, 200), min(H, 60), min(B, 64), k, device)
        rows.append(bench_shape(V, H, B, k, device, args.repeat if V * H < 500_000 else max(9, args.repeat // 2),
                                not (args.quick or args.no_compile), device.type == "cpu"))
        r = rows[-1]
        print(f"CD-{k} V={V:5d} H={H:5d} B={B:4d}: fused {B / r['fused_s']:10.0f} samples/s"
              f" | x eager {r['speedup_vs_eager']:5.2f}"
              + (f" | x compile {r['speedup_vs_compiled']:5.2f}" if "speedup_vs_compiled" in r else "")
              + (f" | x sklearn {r['speedup_vs_sklearn']:6.2f}" if "speedup_vs_sklearn" in r else "")
              + f" | {r['fused_gflops']:6.1f} GFLOP/s = {100 * r['fraction_of_sgemm']:4.0f}% of sgemm"
              + f" | stats+apply {r['split_s'] / r['fused_s']:4.2f}x the fused time", flush=True)
    out = {"machine": platform.machine(), "processor": platform.processor(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
           "device": str(device), "results": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
