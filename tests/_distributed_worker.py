"""The rank side of tests/test_distributed.py: ``python tests/_distributed_worker.py SCENARIO OUT`` with the
variables torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Each scenario writes what the test checks
into OUT (safetensors and JSON, per rank). Also imported by the test for :func:`row_hash_sampling`."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

# ---- the same random draws on any number of ranks --------------------------------------------------------------


def _row_uniforms(x: torch.Tensor, n: int, salt: float) -> torch.Tensor:
    """(rows, n) uniforms that depend only on each row's values: a row gets the same draws on whichever rank and in
    whichever batch position it is, so 2 ranks with B/2 rows consume exactly the draws of 1 rank with B rows."""
    x = x.double()
    a = torch.linspace(0.37, 1.91, x.shape[1], dtype=torch.float64)
    base = (x * a).sum(1, keepdim=True) + salt
    j = torch.arange(1, n + 1, dtype=torch.float64)
    return torch.frac(torch.sin(base * 12.9898 + j * 78.233).abs() * 43758.5453)


def _hash_hidden(v, W, c, sigma=None, generator=None, *, sample=True):
    x = v if sigma is None else v / sigma
    p = torch.sigmoid(torch.addmm(c, x, W))
    return p, ((_row_uniforms(v, p.shape[1], 0.5).to(p.dtype) < p).to(p.dtype) if sample else None)


def _hash_visible(h, W, b, sigma=None, visible="bernoulli", generator=None, *, sample=True):
    a = h @ W.t()
    if visible == "bernoulli":
        m = torch.sigmoid(a + b)
        return m, ((_row_uniforms(h, m.shape[1], 1.5).to(m.dtype) < m).to(m.dtype) if sample else None)
    s = torch.ones_like(b) if sigma is None else sigma
    m = b + s * a
    if not sample:
        return m, None
    u1 = _row_uniforms(h, m.shape[1], 2.5).clamp_min(1e-12)
    u2 = _row_uniforms(h, m.shape[1], 3.5)
    return m, m + s * (torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * np.pi * u2)).to(m.dtype)


@contextlib.contextmanager
def row_hash_sampling():
    """Replace the sampling the RBM step uses (the sampling ops, and ``ops.cd_stats`` by its plain-PyTorch
    reference) by draws of :func:`_row_uniforms`; the training generator is not used."""
    from pymusicrbm import _reference, ops

    saved = [(ops, "sample_hidden"), (ops, "sample_visible"), (ops, "cd_stats"), (_reference, "sample_hidden"),
             (_reference, "sample_visible")]
    saved = [(m, name, getattr(m, name)) for m, name in saved]

    def cd_stats(W, b, c, v, chains=None, sigma=None, visible="bernoulli", k=1, sparsity_target=0.0,
                 sparsity_cost=0.0, data_weight=-1.0, chain_weight=-1.0, generator=None):
        r = _reference.cd_stats(W, b, c, v, chains, sigma, visible, k, sparsity_target, sparsity_cost, data_weight,
                                chain_weight, generator)
        if chains is not None:  # the op advances the chains in place
            chains.copy_(r[4])
        return r[0], r[1], r[2], r[3]

    ops.sample_hidden, ops.sample_visible, ops.cd_stats = _hash_hidden, _hash_visible, cd_stats
    _reference.sample_hidden, _reference.sample_visible = _hash_hidden, _hash_visible
    try:
        yield
    finally:
        for m, name, fn in saved:
            setattr(m, name, fn)


STEP_CASES = {  # RBM settings of the step-equivalence test
    "cd2_sparse": dict(k=2, sparsity_target=0.1, momentum=0.5, weight_decay=1e-3),
    "pcd": dict(persistent=True, n_chains=4),
    "fast_pcd": dict(persistent="fast", n_chains=4),
    "gaussian_sigma": dict(visible="gaussian", learn_sigma=True, learning_rate=0.01),
}
STEP_ROWS, STEP_BATCH, STEP_STEPS = 48, 8, 3


def step_data(visible: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.random((STEP_ROWS, 10))
    return (X > 0.5).astype(np.float64) if visible == "bernoulli" else X * 3 - 1


def run_steps(name: str, rank: int, world: int) -> dict:
    """STEP_STEPS data-parallel steps of an RBM on global batches of STEP_BATCH rows: this rank takes its half of
    every batch and of the chains. Returns the parameters."""
    from pymusicrbm import RBM

    kw = STEP_CASES[name]
    X = step_data(kw.get("visible", "bernoulli"))
    rbm = RBM(6, batch_size=STEP_BATCH, random_state=0, dtype="float64", **kw)
    rbm._check_params()
    rbm._validate_input(X, reset=True)
    Xt = rbm._initialize(X)  # the same parameters and chains on every rank (from the shared seed)
    if rbm._chains is not None:
        all_chains = torch.cat([Xt[:4], Xt[-4:]])  # the chains of both ranks of the 2-rank run
        n = all_chains.shape[0] // world
        rbm._chains = all_chains[rank * n:(rank + 1) * n].clone()
    with row_hash_sampling():
        for t in range(STEP_STEPS):
            batch = Xt[t * STEP_BATCH:(t + 1) * STEP_BATCH]
            half = STEP_BATCH // world
            rbm._data_parallel_update(batch[rank * half:(rank + 1) * half], 0.05, 0)
    out = {k: getattr(rbm, k).clone() for k in ("_W", "_b", "_c", "_W_vel")}
    if rbm._log_sigma is not None:
        out["_log_sigma"] = rbm._log_sigma.clone()
    if rbm._W_fast is not None:
        out["_W_fast"] = rbm._W_fast.clone()
    return out


# ---- scenarios ---------------------------------------------------------------------------------------------------

def _bernoulli(n=60, d=12, seed=0):
    return (np.random.default_rng(seed).random((n, d)) > 0.5).astype(np.float32)


def scenario_steps(out: Path, rank: int):
    for name in STEP_CASES:
        save_file({k.lstrip("_"): v.contiguous() for k, v in run_steps(name, rank, 2).items()},
                  str(out / f"steps_{name}_rank{rank}.safetensors"))


def scenario_train(out: Path, rank: int):
    """Every model family trained data-parallel on this rank's shard; parameters written per rank."""
    from pymusicrbm import DBN, RBM, ConvRBM, ConvVAE, DBNClassifier, distributed
    from pymusicrbm.audio import PCAWhitener

    X = _bernoulli()
    tensors, info = {}, {}
    models = {
        "rbm_pcd": RBM(8, n_iter=2, batch_size=6, persistent=True, random_state=0),
        "rbm_fast": RBM(8, n_iter=2, batch_size=6, persistent="fast", sparsity_target=0.1, random_state=0),
        "rbm_sigma": RBM(8, n_iter=2, batch_size=6, visible="gaussian", learn_sigma=True, learning_rate=0.01,
                         random_state=0),
    }
    for name, m in models.items():
        ckpt = out / f"{name}_rank{rank}.safetensors"
        m.fit(distributed.shard(X), checkpoint=ckpt)
        tensors[f"{name}.W"] = m._W
        info[name] = {"history": m.history_, "wrote_checkpoint": ckpt.exists()}
        if m._log_sigma is not None:
            tensors[f"{name}.log_sigma"] = m._log_sigma
    dbn = DBN((8, 4), n_iter=2, batch_size=5, random_state=0).fit(distributed.shard(X))
    tensors["dbn.W1"] = dbn.layers_[1]._W
    Xc = np.random.default_rng(1).standard_normal((12, 1, 10, 10)).astype(np.float32)
    conv = ConvRBM(3, (3, 3), n_iter=2, batch_size=3, persistent=True, random_state=0).fit(distributed.shard(Xc))
    tensors["conv.W"] = conv._W
    tensors["conv.mean"] = torch.from_numpy(np.ascontiguousarray(conv.mean_))
    y = (X[:, 0] + X[:, 1] > 0.5).astype(int)
    with distributed.replicated_inputs():
        clf = DBNClassifier((8,), n_iter=1, max_iter=2, random_state=0, early_stopping=True).fit(X, y)
    tensors["clf"] = torch.cat([p.detach().reshape(-1) for p in clf.network_.parameters()])
    info["clf"] = clf.history_
    Xv = np.random.default_rng(2).standard_normal((12, 16, 16)).astype(np.float32)
    vae = ConvVAE(n_mels=16, n_frames=16, latent_dim=4, channels=(4, 8), n_iter=2, batch_size=3, validation_fraction=0,
                  random_state=0).fit(distributed.shard(Xv))
    tensors["vae"] = torch.cat([p.detach().reshape(-1) for p in vae.net_.parameters()])
    tensors["vae.mean"] = torch.from_numpy(vae.mean_)
    F = np.random.default_rng(3).standard_normal((101, 8)) @ np.random.default_rng(4).standard_normal((8, 8))
    w = PCAWhitener(3).fit(distributed.shard(F))
    tensors["pca.components"] = torch.from_numpy(w.components_)
    tensors["pca.mean"] = torch.from_numpy(w.mean_)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(out / f"train_rank{rank}.safetensors"))
    (out / f"train_rank{rank}.json").write_text(json.dumps(info))


def scenario_resume(out: Path, rank: int):
    """PCD RBM: 4 epochs straight; 2 epochs with a checkpoint, then resumed to 4 (same 2 ranks)."""
    from pymusicrbm import RBM, distributed

    X = distributed.shard(_bernoulli(seed=5))
    kw = dict(n_components=8, batch_size=6, persistent=True, random_state=0)
    full = RBM(n_iter=4, **kw).fit(X)
    ckpt = out / "resume_2epochs.safetensors"
    RBM(n_iter=2, **kw).fit(X, checkpoint=ckpt)
    resumed = RBM(n_iter=4, **kw).fit(X, resume=ckpt)
    save_file({"full": full._W, "resumed": resumed._W, "chains_full": full._chains,
               "chains_resumed": resumed._chains}, str(out / f"resume_rank{rank}.safetensors"))


def scenario_fault(out: Path, rank: int):
    """Rank 1 dies (SIGKILL) in its second training step; rank 0 must stop with a clear error."""
    import signal

    from pymusicrbm import RBM, distributed

    rbm = RBM(8, n_iter=50, batch_size=2, random_state=0)
    if rank == 1:
        steps = [0]
        real = rbm._statistics

        def dying(*args, **kwargs):
            steps[0] += 1
            if steps[0] == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)

        rbm._statistics = dying
    t0 = time.perf_counter()
    try:
        rbm.fit(distributed.shard(_bernoulli(n=400)))
        result = {"error": None}
    except distributed.DistributedError as err:
        result = {"error": str(err), "type": type(err).__name__}
    result["seconds"] = time.perf_counter() - t0
    (out / f"fault_rank{rank}.json").write_text(json.dumps(result))


def scenario_extract(out: Path, rank: int):
    """Sharded feature extraction through a cache folder and through collectives."""
    from pymusicrbm import audio, datasets

    ds = datasets.load_dataset(os.environ["PYMUSICRBM_TEST_DATA"])
    tensors = {}
    for tag, cache in (("cache", out / "cache"), ("nocache", None)):
        feats = audio.extract(ds, "mfcc", {}, cache_dir=cache, n_jobs=1, verbose=0)
        for i, f in enumerate(feats):
            tensors[f"{tag}.{i}"] = torch.from_numpy(np.ascontiguousarray(f))
    save_file(tensors, str(out / f"extract_rank{rank}.safetensors"))


def main(argv):
    scenario, out = argv[0], Path(argv[1])
    torch.set_num_threads(1)
    from pymusicrbm import distributed

    distributed.init_from_env(backend="gloo")
    rank = distributed.rank()
    globals()[f"scenario_{scenario}"](out, rank)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
