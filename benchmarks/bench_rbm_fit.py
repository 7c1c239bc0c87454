"""Wall time of RBM.fit and DBN.fit (513 -> 50 -> 50 -> 50 on spectrum-like frames) against the same training
written in eager PyTorch (sigmoid / bernoulli / matmul, one line each) and against scikit-learn's BernoulliRBM.

Correctness first: every implementation's model is scored with the same mean-field reconstruction error on the
same frames, and they must agree within a tolerance before any time is reported.

    python benchmarks/bench_rbm_fit.py                      # 200k frames, 5 epochs a layer, batch 100
    python benchmarks/bench_rbm_fit.py --frames 50000 --json out.json
    python benchmarks/bench_rbm_fit.py --device cuda --skip-sklearn

Besides the like-for-like rows (``monitor=False``), the RBM is also timed with every monitor at its default, as a
user fits it.
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

from pymusicrbm.dbn import DBN
from pymusicrbm.rbm import RBM

V, LAYERS = 513, (50, 50, 50)


def make_frames(n: int, seed: int = 0) -> np.ndarray:
    """Log-magnitude-spectrum-like frames: sparse mixtures of smooth non-negative spectral templates + noise."""
    rng = np.random.default_rng(seed)
    k = 40
    templates = np.abs(rng.normal(size=(k, V)))
    kernel = np.hanning(15)
    templates = np.apply_along_axis(lambda t: np.convolve(t, kernel / kernel.sum(), "same"), 1, templates)
    templates *= np.exp(-np.arange(V) / 150.0)  # energy falls with frequency
    act = (rng.random((n, k)) < 0.1) * rng.gamma(2.0, 1.0, (n, k))
    X = np.log1p(act @ templates + 0.05 * np.abs(rng.normal(size=(n, V))))
    return X.astype(np.float32)


def to_unit(X: np.ndarray) -> np.ndarray:
    lo, hi = X.min(0), X.max(0)
    return ((X - lo) / np.where(hi > lo, hi - lo, 1)).astype(np.float32)


def standardise(X: np.ndarray) -> np.ndarray:
    return ((X - X.mean(0)) / X.std(0)).astype(np.float32)


# ---- the same training in eager PyTorch, written the obvious way ---------------------------------------------------

def eager_rbm_fit(X: torch.Tensor, H: int, epochs: int, B: int, lr: float, momentum: float, gaussian: bool,
                  seed: int):
    dev = X.device
    g = torch.Generator(device=dev).manual_seed(seed)
    n, nv = X.shape
    W = torch.randn(nv, H, generator=g, device=dev) * 0.01
    if gaussian:
        b = X.mean(0)
    else:
        p = X.mean(0).clamp(0.01, 0.99)
        b = torch.log(p / (1 - p))
    c = torch.zeros(H, device=dev)
    W_vel, b_vel, c_vel = torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g, device=dev)
        err = torch.zeros((), device=dev)
        for i in range(0, n, B):
            v0 = X[perm[i:i + B]]
            ph0 = torch.sigmoid(v0 @ W + c)
            h0 = torch.bernoulli(ph0, generator=g)
            if gaussian:
                mv = h0 @ W.t() + b
                v1 = mv + torch.randn(mv.shape, generator=g)
            else:
                mv = torch.sigmoid(h0 @ W.t() + b)
                v1 = torch.bernoulli(mv, generator=g)
            ph1 = torch.sigmoid(v1 @ W + c)
            dW = (v0.t() @ ph0 - v1.t() @ ph1) / len(v0)
            db = (v0 - v1).mean(0)
            dc = (ph0 - ph1).mean(0)
            W_vel = momentum * W_vel + lr * dW
            b_vel = momentum * b_vel + lr * db
            c_vel = momentum * c_vel + lr * dc
            W = W + W_vel
            b = b + b_vel
            c = c + c_vel
            err += ((v0 - mv) ** 2).mean() * len(v0)
    return W, b, c


def eager_dbn_fit(X: torch.Tensor, epochs, B, lrs, momentum, seed):
    layers, h = [], X
    for i, H in enumerate(LAYERS):
        W, b, c = eager_rbm_fit(h, H, epochs, B, lrs[i], momentum, i == 0, seed + i)
        layers.append((W, b, c))
        h = torch.sigmoid(h @ W + c)
    return layers


# ---- scoring: one definition for every implementation ---------------------------------------------------------------

def recon_error(W, b, c, X, gaussian):
    """Mean squared error of the mean-field reconstruction v -> p(h|v) -> E[v|h] (numpy, float64)."""
    W, b, c, X = (np.asarray(t.cpu() if torch.is_tensor(t) else t, dtype=np.float64) for t in (W, b, c, X))
    h = 1 / (1 + np.exp(-(X @ W + c)))
    m = h @ W.T + b
    if not gaussian:
        m = 1 / (1 + np.exp(-m))
    return float(np.mean((X - m) ** 2))


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per layer")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per implementation (median)")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (scikit-learn runs on the CPU only: skipped)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    args.skip_sklearn = args.skip_sklearn or dev.type != "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    E, B, mom = args.epochs, args.batch_size, 0.5
    lr_b, lr_g = 0.05, 0.005
    X = make_frames(args.frames)
    Xu, Xs = to_unit(X), standardise(X)
    check = slice(0, min(5000, len(X)))
    results = {"frames": args.frames, "epochs": E, "batch_size": B, "threads": torch.get_num_threads(),
               "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "loadavg_start": os.getloadavg(), "device": str(dev), "cases": []}

    # warm-up: one small fit each, so that first-call costs (allocation, MKL init) are not timed
    RBM(8, n_iter=1, batch_size=B, monitor=False, random_state=0, device=dev).fit(Xu[:2000])
    eager_rbm_fit(torch.from_numpy(Xu[:2000]).to(dev), 8, 1, B, lr_b, mom, False, 0)

    def record(case, impl, seconds, err, n_layers=1):
        row = dict(case=case, impl=impl, seconds=seconds, frames_per_s=args.frames * E * n_layers / seconds,
                   recon_error=err)
        results["cases"].append(row)
        print(f"  {impl:<34s} {seconds:9.2f} s  {row['frames_per_s']:12.0f} frames/s  recon {err:.4f}",
              flush=True)
        return row

    # 1. Bernoulli RBM 513 -> 50 (data scaled to [0, 1])
    print(f"RBM bernoulli {V}->50, {args.frames} frames, {E} epochs, batch {B}")
    t, ours = timed(lambda: RBM(50, learning_rate=lr_b, batch_size=B, n_iter=E, momentum=mom, monitor=False,
                                random_state=0, device=dev).fit(Xu), args.repeats)
    e_ours = recon_error(ours.components_.T, ours.intercept_visible_, ours.intercept_hidden_, Xu[check], False)
    r_ours = record("rbm_bernoulli", "pymusicrbm RBM (CD-1)", t, e_ours)
    t, _ = timed(lambda: RBM(50, learning_rate=lr_b, batch_size=B, n_iter=E, momentum=mom, random_state=0,
                             device=dev).fit(Xu), args.repeats)
    r_default = record("rbm_bernoulli", "pymusicrbm RBM (CD-1, default monitors)", t, e_ours)
    Xt = torch.from_numpy(Xu).to(dev)
    t, (W, b, c) = timed(lambda: eager_rbm_fit(Xt, 50, E, B, lr_b, mom, False, 0), args.repeats)
    e_eager = recon_error(W, b, c, Xu[check], False)
    r_eager = record("rbm_bernoulli", "eager PyTorch (CD-1)", t, e_eager)
    if not args.skip_sklearn:
        from sklearn.neural_network import BernoulliRBM
        # like for like with scikit-learn's algorithm: PCD-1, batch_size chains, no momentum
        t, ours_pcd = timed(lambda: RBM(50, learning_rate=lr_b, batch_size=B, n_iter=E, momentum=0.0,
                                        persistent=True, monitor=False, random_state=0, device=dev).fit(Xu),
                            args.repeats)
        e_pcd = recon_error(ours_pcd.components_.T, ours_pcd.intercept_visible_, ours_pcd.intercept_hidden_,
                            Xu[check], False)
        r_pcd = record("rbm_bernoulli", "pymusicrbm RBM (PCD-1, no momentum)", t, e_pcd)
        t, sk = timed(lambda: BernoulliRBM(50, learning_rate=lr_b, batch_size=B, n_iter=E, random_state=0).fit(Xu),
                      args.repeats)
        e_sk = recon_error(sk.components_.T, sk.intercept_visible_, sk.intercept_hidden_, Xu[check], False)
        r_sk = record("rbm_bernoulli", "scikit-learn BernoulliRBM (PCD-1)", t, e_sk)
        # same algorithm, different visible-bias initialisation (data log-odds here, zeros in scikit-learn):
        # ours must reconstruct at least about as well
        assert e_pcd < 1.25 * e_sk, (e_pcd, e_sk)
        results["ratio_sklearn_over_ours_pcd"] = r_sk["seconds"] / r_pcd["seconds"]
    assert abs(e_ours - e_eager) < 0.15 * max(e_ours, e_eager), (e_ours, e_eager)
    results["ratio_eager_over_ours_rbm_bernoulli"] = r_eager["seconds"] / r_ours["seconds"]
    results["ratio_eager_over_ours_rbm_bernoulli_default_monitors"] = r_eager["seconds"] / r_default["seconds"]

    # 2. Gaussian RBM 513 -> 50 (standardised data)
    print(f"RBM gaussian {V}->50")
    t, ours = timed(lambda: RBM(50, visible="gaussian", learning_rate=lr_g, batch_size=B, n_iter=E, momentum=mom,
                                monitor=False, random_state=0, device=dev).fit(X), args.repeats)
    e_ours = recon_error(ours.components_.T, ours.intercept_visible_, ours.intercept_hidden_, Xs[check], True)
    r_ours = record("rbm_gaussian", "pymusicrbm RBM (CD-1)", t, e_ours)
    Xt = torch.from_numpy(Xs).to(dev)
    t, (W, b, c) = timed(lambda: eager_rbm_fit(Xt, 50, E, B, lr_g, mom, True, 0), args.repeats)
    e_eager = recon_error(W, b, c, Xs[check], True)
    r_eager = record("rbm_gaussian", "eager PyTorch (CD-1)", t, e_eager)
    assert abs(e_ours - e_eager) < 0.15 * max(e_ours, e_eager), (e_ours, e_eager)
    results["ratio_eager_over_ours_rbm_gaussian"] = r_eager["seconds"] / r_ours["seconds"]

    # 3. DBN 513 -> 50 -> 50 -> 50, Gaussian first layer
    print(f"DBN gaussian {V}->{'->'.join(map(str, LAYERS))}")
    lrs = [lr_g, lr_b, lr_b]
    t, dbn = timed(lambda: DBN(LAYERS, visible="gaussian", learning_rate=lr_b, batch_size=B, n_iter=E, momentum=mom,
                               monitor=False, layer_params=[{"learning_rate": lr_g}, {}, {}],
                               random_state=0, device=dev).fit(X), args.repeats)
    r0 = dbn.rbms_[0]
    e_ours = recon_error(r0.components_.T, r0.intercept_visible_, r0.intercept_hidden_, Xs[check], True)
    r_ours = record("dbn", "pymusicrbm DBN", t, e_ours, len(LAYERS))
    Xt = torch.from_numpy(Xs).to(dev)
    t, layers = timed(lambda: eager_dbn_fit(Xt, E, B, lrs, mom, 0), args.repeats)
    e_eager = recon_error(*layers[0], Xs[check], True)
    r_eager = record("dbn", "eager PyTorch DBN", t, e_eager, len(LAYERS))
    assert abs(e_ours - e_eager) < 0.15 * max(e_ours, e_eager), (e_ours, e_eager)
    results["ratio_eager_over_ours_dbn"] = r_eager["seconds"] / r_ours["seconds"]
    results["loadavg_end"] = os.getloadavg()

    print("\nspeed-up of pymusicrbm over eager PyTorch (same algorithm):")
    for key in ("rbm_bernoulli", "rbm_gaussian", "dbn"):
        print(f"  {key:<14s} {results['ratio_eager_over_ours_' + key]:.2f}x")
    if "ratio_sklearn_over_ours_pcd" in results:
        print(f"speed-up over scikit-learn BernoulliRBM (PCD-1): {results['ratio_sklearn_over_ours_pcd']:.2f}x")
    print(f"load average start {results['loadavg_start']}, end {results['loadavg_end']} on "
          f"{results['cpu_count']} cores, {results['threads']} torch threads")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
