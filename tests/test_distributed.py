"""Data-parallel training on torch.distributed (gloo): 2 ranks started from the test as torchrun would start them
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; one thread each); the rank side is tests/_distributed_worker.py."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pymusicrbm import RBM, distributed

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_worker as worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds a scenario may take before the test fails (it never waits forever)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               PYMUSICRBM_DIST_TIMEOUT="20", **extra)
    env.pop("WORLD_SIZE", None)
    return env


def run_ranks(scenario: str, out: Path, world: int = 2, **env) -> list[subprocess.CompletedProcess]:
    """Start ``world`` ranks of a worker scenario and wait for all (bounded)."""
    port = _free_port()
    procs = []
    for r in range(world):
        e = _env(**env)
        e.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "_distributed_worker.py"), scenario,
                                       str(out)], env=e, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    done = []
    deadline = time.monotonic() + TIMEOUT
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"scenario {scenario!r} hung for {TIMEOUT}s")
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def _ok(results):
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]


# ---- without a process group nothing changes -----------------------------------------------------------------


def test_helpers_without_a_group_are_no_ops():
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    t = torch.arange(4.0)
    assert distributed.all_reduce_([t])[0].tolist() == [0, 1, 2, 3]
    assert distributed.all_sum([1.5, 2]) == [1.5, 2.0]
    X = np.arange(10)
    assert distributed.shard(X) is X
    assert distributed.shard_indices(10, 1, 3).tolist() == [1, 4, 7]
    assert distributed.rank_seed(0, 0) != distributed.rank_seed(0, 1)
    m, v = np.array([1.0]), np.array([2.0])
    assert distributed.pooled_moments(5, m, v) == (m, v)


def test_pooled_moments_match_numpy_on_simulated_ranks(monkeypatch):
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 3)) * 4 + 1 for n in (7, 12)]
    rows = torch.tensor(np.stack([np.concatenate([[len(p)], p.mean(0), p.var(0)]) for p in parts]))
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "all_gather_rows", lambda t, what="": rows)
    monkeypatch.setattr(distributed, "_host", lambda: "cpu")
    mean, var = distributed.pooled_moments(len(parts[0]), parts[0].mean(0), parts[0].var(0))
    X = np.concatenate(parts)
    np.testing.assert_allclose(mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, X.var(0), rtol=1e-12)


def test_init_from_env_without_world_size_is_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    assert not torch.distributed.is_initialized()


def _initialized(model, X):
    """The training tensor of a freshly initialised model (what fit does before its epochs)."""
    model._check_params()
    return model._initialize(model._validate_input(X, reset=True))


@pytest.mark.parametrize("kw", [dict(), dict(persistent=True, k=2, sparsity_target=0.1, weight_decay=1e-3),
                                dict(visible="gaussian", learning_rate=0.01)])
def test_one_rank_data_parallel_step_is_the_fused_step(kw):
    """The data-parallel step with one rank (cd_stats weighted 1/B, no reduction, cd_apply_) is cd_step_ bit for
    bit: the two halves of the split op, and the weights the epoch loop passes."""
    X = worker._bernoulli() if "visible" not in kw else worker.step_data("gaussian")
    fused, split = (RBM(8, batch_size=6, random_state=0, **kw) for _ in range(2))
    Xt = [_initialized(m, X) for m in (fused, split)]
    for t in range(3):
        a = fused._batch_update(Xt[0][6 * t:6 * t + 6], 0.1, 0)
        b = split._data_parallel_update(Xt[1][6 * t:6 * t + 6], 0.1, 0)
        assert torch.equal(a, b)
    for name in ("_W", "_b", "_c", "_W_vel", "_chains"):
        if getattr(fused, name) is not None:
            assert torch.equal(getattr(fused, name), getattr(split, name)), name


@pytest.mark.parametrize("persistent", [False, True])
def test_one_rank_data_parallel_conv_step_is_the_fused_step(persistent):
    from pymusicrbm import ConvRBM

    X = np.random.default_rng(1).standard_normal((8, 1, 10, 10)).astype(np.float32)
    fused, split = (ConvRBM(3, (3, 3), batch_size=4, persistent=persistent, sparsity_target=0.1, random_state=0)
                    for _ in range(2))
    Xt = [_initialized(m, X) for m in (fused, split)]
    for t in range(2):
        assert torch.equal(fused._batch_update(Xt[0][4 * t:4 * t + 4], 0.01, 0),
                           split._data_parallel_update(Xt[1][4 * t:4 * t + 4], 0.01, 0))
    for name in ("_W", "_b", "_c", "_W_vel"):
        assert torch.equal(getattr(fused, name), getattr(split, name)), name


# ---- 2 ranks ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def steps_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("steps")
    _ok(run_ranks("steps", out))
    return out


@pytest.mark.parametrize("name", list(worker.STEP_CASES))
def test_two_ranks_with_half_batches_give_the_update_of_one_rank(steps_out, name):
    """Same random draws (a function of each row), 2 x B/2 rows all-reduced == 1 x B rows, up to rounding."""
    one = worker.run_steps(name, 0, 1)
    ranks = [load_file(str(steps_out / f"steps_{name}_rank{r}.safetensors")) for r in range(2)]
    for key, ref in one.items():
        for r in range(2):
            torch.testing.assert_close(ranks[r][key.lstrip("_")], ref, rtol=1e-10, atol=1e-12)
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert not torch.equal(one["_W"], RBM(6, random_state=0).fit(worker.step_data("bernoulli"))._W.double())


@pytest.fixture(scope="module")
def train_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    _ok(run_ranks("train", out))
    return out


def test_parameters_are_bitwise_equal_across_ranks_after_training(train_out):
    r0, r1 = (load_file(str(train_out / f"train_rank{r}.safetensors")) for r in range(2))
    assert set(r0) == set(r1)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    i0, i1 = (json.loads((train_out / f"train_rank{r}.json").read_text()) for r in range(2))
    for name in ("rbm_pcd", "rbm_fast", "rbm_sigma"):  # the same loss and monitors: the same decisions
        h0, h1 = ({k: v for k, v in i[name]["history"].items() if k != "time"} for i in (i0, i1))
        assert h0 == h1
        assert i0[name]["wrote_checkpoint"] and not i1[name]["wrote_checkpoint"]  # rank 0 alone writes
    assert {k: v for k, v in i0["clf"].items() if k != "time"} == {k: v for k, v in i1["clf"].items() if k != "time"}


def test_pooled_statistics_are_those_of_the_whole_data(train_out):
    r0 = load_file(str(train_out / "train_rank0.safetensors"))
    F = np.random.default_rng(3).standard_normal((101, 8)) @ np.random.default_rng(4).standard_normal((8, 8))
    np.testing.assert_allclose(r0["pca.mean"].numpy(), F.mean(0), rtol=1e-5, atol=1e-6)
    from sklearn.decomposition import PCA
    ref = PCA(3).fit(F).components_
    comps = r0["pca.components"].numpy()
    np.testing.assert_allclose(np.abs(comps @ ref.T), np.eye(3), atol=1e-4)  # the same directions (up to sign)
    Xv = np.random.default_rng(2).standard_normal((12, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(r0["vae.mean"].numpy(), Xv.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    Xc = np.random.default_rng(1).standard_normal((12, 1, 10, 10)).astype(np.float32)
    from pymusicrbm import ConvRBM
    whole = ConvRBM(3, (3, 3), n_iter=0, random_state=0).fit(Xc)  # one process, all the maps
    np.testing.assert_allclose(r0["conv.mean"].numpy(), whole.mean_, rtol=1e-6, atol=1e-7)


def test_checkpoint_of_two_ranks_resumes_on_two_and_on_one(tmp_path):
    _ok(run_ranks("resume", tmp_path))
    r = [load_file(str(tmp_path / f"resume_rank{k}.safetensors")) for k in range(2)]
    for k in range(2):  # 2 -> 2 ranks: exactly the uninterrupted run, each rank with its own chains back
        assert torch.equal(r[k]["resumed"], r[k]["full"])
        assert torch.equal(r[k]["chains_resumed"], r[k]["chains_full"])
    assert not torch.equal(r[0]["chains_full"], r[1]["chains_full"])
    # 2 -> 1 rank: continues from the same weights with rank 0's chains
    ckpt = tmp_path / "resume_2epochs.safetensors"
    from pymusicrbm.checkpoint import load_state
    tensors, meta = load_state(ckpt)
    assert tensors["chains"].shape[0] == 12 and meta["state"]["world_size"] == 2  # both ranks' chains
    one = RBM(n_components=8, batch_size=6, persistent=True, random_state=0, n_iter=4)
    one.fit(worker._bernoulli(seed=5), resume=ckpt)
    assert one.n_iter_ == 4 and one._chains.shape == (6, 12)
    assert len(one.history_["recon_error"]) == 4 and np.isfinite(one.components_).all()


def test_a_killed_rank_stops_the_others_with_a_clear_error(tmp_path):
    t0 = time.monotonic()
    results = run_ranks("fault", tmp_path)
    assert results[1].returncode != 0  # killed
    res = json.loads((tmp_path / "fault_rank0.json").read_text())
    assert res["type"] == "DistributedError"
    assert "rank 0 of 2" in res["error"] and "another rank probably died" in res["error"]
    assert res["seconds"] < 60 and time.monotonic() - t0 < TIMEOUT


def test_sharded_extraction_returns_every_clip_on_every_rank(tiny_gtzan, tmp_path):
    from pymusicrbm import audio, datasets

    _ok(run_ranks("extract", tmp_path, PYMUSICRBM_TEST_DATA=str(tiny_gtzan)))
    ds = datasets.load_dataset(tiny_gtzan)
    ref = audio.extract(ds, "mfcc", {}, n_jobs=1, verbose=0)
    got = [load_file(str(tmp_path / f"extract_rank{r}.safetensors")) for r in range(2)]
    for tag in ("cache", "nocache"):
        for i, f in enumerate(ref):
            # (the ranks run one thread each: FFT rounding may differ from this process's)
            np.testing.assert_allclose(got[0][f"{tag}.{i}"].numpy(), f, rtol=1e-4, atol=1e-4)
            assert torch.equal(got[0][f"{tag}.{i}"], got[1][f"{tag}.{i}"])  # every rank returns the same arrays
    assert len(list((tmp_path / "cache" / "mfcc").glob("*.npy"))) == len(ref)


def _dbn_study(data, out, scratch, *extra, ranks: int = 2) -> subprocess.CompletedProcess:
    """The tiny DBN study through the CLI: under torchrun with ``ranks`` processes, or plainly with one."""
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    cmd = [sys.executable, *launch, "-m", "pymusicrbm", "dbn", "--data", str(data), "--out", str(out), "--hidden",
           "16", "16", "--pretrain-epochs", "1", "--pretrain-frames", "3000", "--finetune-epochs", "2",
           "--pca-components", "16", "--window-seconds", "2", "--folds", "2", "--jobs", "1", "--threads", "1", *extra]
    r = subprocess.run(cmd, env=_env(TMPDIR=str(scratch)), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _dbn_study_on_two_machines(data, out, tmp) -> list[subprocess.CompletedProcess]:
    """The tiny DBN study as two machines run it (two torchrun agents, --nnodes=2, c10d rendezvous), simulated on
    this one: each agent has its own scratch folder (its local disk); data and OUT are shared."""
    port = _free_port()
    procs = []
    for node in range(2):
        scratch = tmp / f"node{node}"
        scratch.mkdir(parents=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=pmr-test",
               f"--rdzv-conf=is_host={int(node == 0)}", "-m", "pymusicrbm", "dbn", "--data", str(data), "--out",
               str(out), "--hidden", "16", "16", "--pretrain-epochs", "1", "--pretrain-frames", "3000",
               "--finetune-epochs", "2", "--pca-components", "16", "--window-seconds", "2", "--folds", "2", "--jobs",
               "1", "--threads", "1"]
        procs.append(subprocess.Popen(cmd, env=_env(TMPDIR=str(scratch)), cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    done = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"the two-machine study hung for {TIMEOUT}s")
        assert p.returncode == 0, stderr[-3000:]
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def test_cli_under_torchrun_writes_one_results_json(tmp_path):
    from pymusicrbm import datasets

    ds = datasets.make_synthetic_genres(tmp_path / "data", n_per_class=3, seconds=5.0, seed=3)
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    r = _dbn_study(ds.root, out, scratch)
    assert len(list(out.rglob("results.json"))) == 1  # rank 0 alone wrote OUT
    res = json.loads((out / "results.json").read_text())
    assert res["study"] == "hamel_eck" and len(res["models"]["dbn_svm"]["clip_accuracy"]["folds"]) == 2
    assert r.stdout.count("results: ") == 1 and r.stdout.count("dbn_svm: clip accuracy") == 1  # rank 0 prints
    assert list(scratch.glob("pymusicrbm-rank*")) == []  # the other rank's scratch folder is gone

    # A run stopped during fold 1 (its record not yet written) and resumed: under torchrun with 2 ranks, and then
    # with 1 process. Fold 0 reruns from its checkpoints, fold 1 resumes from its own; same folds, same results.
    def folds(path):
        return json.loads(path.read_text())["models"]["dbn_svm"]["clip_accuracy"]["folds"]

    def weights():
        return {f"{p.name}/{k}": t for p in sorted((out / "folds" / "fold1").rglob("*.safetensors"))
                for k, t in load_file(str(p)).items()}

    first, trained = folds(out / "results.json"), weights()
    assert trained

    # The same study on two (simulated) machines: the same two ranks, so the same results, written once
    out2 = tmp_path / "out_two_machines"
    runs = _dbn_study_on_two_machines(ds.root, out2, tmp_path / "machines")
    assert len(list(out2.rglob("results.json"))) == 1 and folds(out2 / "results.json") == first
    assert sum(r.stdout.count("results: ") for r in runs) == 1
    for ranks in (2, 1):
        (out / "folds" / "fold1" / "fold_results.json").unlink()
        (out / "results.json").unlink()
        _dbn_study(ds.root, out, scratch, "--resume", ranks=ranks)
        assert folds(out / "results.json") == first
        assert (out / "folds" / "fold1" / "fold_results.json").exists()
        # training resumed, not redone (one process would train other weights than two ranks: other streams)
        resumed = weights()
        assert resumed.keys() == trained.keys() and all(torch.equal(resumed[k], trained[k]) for k in trained)


def test_tags_study_under_torchrun_writes_one_results_json_and_one_saved_pipeline(tmp_path):
    from pymusicrbm import datasets
    from pymusicrbm.pipelines import load_pipeline

    ds = datasets.make_synthetic_tags(tmp_path / "data", n_clips=24, seconds=5.0, seed=3)
    out, model, scratch = tmp_path / "out", tmp_path / "model", tmp_path / "tmp"
    scratch.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pymusicrbm",
           "tags", "--data", str(ds.root), "--out", str(out), "--hidden", "16", "16", "--pretrain-epochs", "1",
           "--pretrain-frames", "3000", "--pca-components", "16", "--window-seconds", "2", "--folds", "2",
           "--jobs", "1", "--threads", "1", "--save-model", str(model)]
    r = subprocess.run(cmd, env=_env(TMPDIR=str(scratch)), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(out.rglob("results.json"))) == 1
    res = json.loads((out / "results.json").read_text())
    assert res["study"] == "tagging"
    pipe = load_pipeline(model)  # rank 0 wrote it, and it is complete
    assert pipe.task == "tags" and pipe.labels and set(pipe.labels) <= set(ds.tags)
    assert list(scratch.glob("pymusicrbm-rank*")) == []
