"""What a new user times: ``RBM(n_components=H, batch_size=B, n_iter=1, learning_rate=0.01).fit(X)`` with every
other setting at its default (monitors, momentum, standardisation checks, the epoch loop), against the obvious
eager-PyTorch CD-1 loop over the same rows; and ``DBN`` 513->50->50->50 against an eager layer-by-layer loop.

Correctness first: both models are scored with the same mean-field reconstruction error on the same rows, and each
must beat the untrained model, and the two must agree within 10%.

    python benchmarks/bench_fit_defaults.py                     # batch 256, then the default batch 10
    python benchmarks/bench_fit_defaults.py --device cuda --json benchmarks/results/bench_fit_defaults_cuda.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from bench_rbm_fit import eager_rbm_fit, recon_error

from pymusicrbm.dbn import DBN
from pymusicrbm.rbm import RBM

# (V, H, rows at batch 256); at batch 10 a tenth of the rows keeps the run short.
SHAPES = [(513, 512, 10_000), (513, 50, 25_000), (50, 50, 25_000)]
LR = 0.01


def binary_rows(n: int, v: int, seed: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(v, generator=g) * 0.6 + 0.2  # per-unit rates, so the data has something to learn
    return (torch.rand(n, v, generator=g) < p).float().to(device)


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


REPEAT = 1  # timed runs of each contender (--repeat), interleaved; the median is reported
CLOCK = time.perf_counter  # --clock cpu: time.process_time, the CPU time of every thread of this process


def timed_all(fns: dict, device: str) -> dict:
    """name -> (median seconds, result) of each function: one untimed run each first (first-call costs: allocator,
    op registration, cuBLAS handles), then REPEAT rounds of one timed run of each, so that load that comes and
    goes on a shared machine hits every contender alike."""
    out = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(REPEAT):
        for name, fn in fns.items():
            sync(device)
            t0 = CLOCK()
            out[name] = fn()
            sync(device)
            times[name].append(CLOCK() - t0)
    return {name: (statistics.median(times[name]), out[name]) for name in fns}


def untrained_error(X: torch.Tensor, H: int) -> float:
    """All-zero parameters: every reconstruction is 0.5."""
    return recon_error(torch.zeros(X.shape[1], H), torch.zeros(X.shape[1]), torch.zeros(H), X, gaussian=False)


def check(err_fit: float, err_eager: float, err0: float):
    # Both must have learned, and agree within 10%: the same CD-1 on the same rows (momentum and initialisation
    # differ, so not exactly).
    assert err_fit < err0 and err_eager < err0, (err_fit, err_eager, err0)
    assert abs(err_fit - err_eager) <= 0.1 * err_eager, (err_fit, err_eager)


def rbm_row(V: int, H: int, n: int, B: int, device: str) -> dict:
    X = binary_rows(n, V, 0, device)
    t = timed_all({"fit": lambda: RBM(n_components=H, batch_size=B, n_iter=1, learning_rate=LR, random_state=0,
                                      device=device).fit(X),
                   "quiet": lambda: RBM(n_components=H, batch_size=B, n_iter=1, learning_rate=LR, random_state=0,
                                        monitor=False, device=device).fit(X),
                   "eager": lambda: eager_rbm_fit(X, H, 1, B, LR, 0.0, False, 0)}, device)
    (t_fit, rbm), (t_quiet, _), (t_eager, (W, b, c)) = t["fit"], t["quiet"], t["eager"]
    err0 = untrained_error(X, H)
    err_fit = recon_error(rbm.components_.T, rbm.intercept_visible_, rbm.intercept_hidden_, X, gaussian=False)
    err_eager = recon_error(W, b, c, X, gaussian=False)
    check(err_fit, err_eager, err0)
    return dict(model="RBM", V=V, H=H, rows=n, batch_size=B, fit_s=t_fit, fit_no_monitor_s=t_quiet, eager_s=t_eager,
                speedup_defaults=t_eager / t_fit, speedup_no_monitor=t_eager / t_quiet,
                recon_fit=err_fit, recon_eager=err_eager, recon_untrained=err0)


def dbn_row(n: int, B: int, device: str) -> dict:
    X = binary_rows(n, 513, 1, device)

    def eager():
        h, layers = X, []
        for i, H in enumerate((50, 50, 50)):
            W, b, c = eager_rbm_fit(h, H, 1, B, LR, 0.0, False, i)
            layers.append((W, b, c))
            h = torch.sigmoid(h @ W + c)
        return layers

    t = timed_all({"fit": lambda: DBN((50, 50, 50), batch_size=B, n_iter=1, learning_rate=LR, random_state=0,
                                      device=device).fit(X),
                   "eager": eager}, device)
    (t_fit, dbn), (t_eager, layers) = t["fit"], t["eager"]
    W, b, c = layers[0]
    r = dbn.rbms_[0]
    err_fit = recon_error(r.components_.T, r.intercept_visible_, r.intercept_hidden_, X, gaussian=False)
    err_eager = recon_error(W, b, c, X, gaussian=False)
    err0 = untrained_error(X, 50)
    check(err_fit, err_eager, err0)
    return dict(model="DBN 513-50-50-50", V=513, H=50, rows=n, batch_size=B, fit_s=t_fit, eager_s=t_eager,
                speedup_defaults=t_eager / t_fit, recon_fit=err_fit, recon_eager=err_eager, recon_untrained=err0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 10])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row count (e.g. 0.2 for a quick run)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of each contender, interleaved (median)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: the process's CPU time, not the time spent waiting for a core on a busy machine "
                         "(CPU device; spin-waiting threads count)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global REPEAT, CLOCK
    REPEAT = args.repeat
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = []
    for B in args.batch_sizes:
        shrink = args.scale * (1.0 if B >= 100 else 0.1)
        for V, H, n in SHAPES:
            rows.append(rbm_row(V, H, max(B * 4, int(n * shrink)), B, args.device))
            print(f"RBM {V:>3}->{H:<3} B={B:<3} rows={rows[-1]['rows']:>6}: fit {rows[-1]['fit_s']:.3f}s "
                  f"(no monitor {rows[-1]['fit_no_monitor_s']:.3f}s), eager {rows[-1]['eager_s']:.3f}s -> "
                  f"{rows[-1]['speedup_defaults']:.2f}x at defaults, {rows[-1]['speedup_no_monitor']:.2f}x "
                  f"without monitors", flush=True)
        rows.append(dbn_row(max(B * 4, int(25_000 * shrink)), B, args.device))
        print(f"DBN 513-50-50-50 B={B:<3} rows={rows[-1]['rows']:>6}: fit {rows[-1]['fit_s']:.3f}s, eager "
              f"{rows[-1]['eager_s']:.3f}s -> {rows[-1]['speedup_defaults']:.2f}x", flush=True)
    if args.json:
        meta = dict(device=args.device, torch=torch.__version__, threads=torch.get_num_threads(), repeat=REPEAT,
                    clock=args.clock,
                    machine=platform.machine(), cpus=os.cpu_count(), load_average=os.getloadavg())
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
