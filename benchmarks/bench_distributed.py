"""Data-parallel scaling: samples/s of RBM training (CD-1, Bernoulli units) at 513->50 and 513->512, and clips/s
of feature extraction (DFT frames, MFCCs), with 1 and 2 processes of one thread each (gloo, started as torchrun
starts them).

    python benchmarks/bench_distributed.py --json benchmarks/results/bench_distributed_cpu.json

Correctness first: after training, every rank's weights must be bitwise equal (checked, printed). Timings: the
median over ``--repeats`` runs of an epoch after a warm-up epoch; ``batch_size`` is per rank (64 and 256), so 2
processes take half the steps of 1 per epoch over the same rows. Samples/s counts the rows of all ranks; the
CPU-time column is the speed-up an idle machine would approach (one process's CPU seconds per epoch over the busiest
rank's); the ceiling column is what this machine gives two processes that never communicate (two independent
single-process runs on half the rows each, at the same time): data-parallel training cannot beat it. Extraction: clips/s of ``extract`` (one joblib thread per process) on synthetic 10 s WAV clips, every rank
ending with every clip, through collectives (no cache) or a shared cache folder. The machine may be shared with
other jobs: the JSON records its load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, task: str, args: list[str], independent: bool = False) -> list[dict]:
    """Run ``task`` on ``world`` ranks (one thread each); each rank prints one JSON line. ``independent``: as
    many single-process runs at the same time instead, no process group between them."""
    port = _free_port()
    procs = []
    for r in range(world):
        rank, size = ("0", "1") if independent else (str(r), str(world))
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT), RANK=rank,
                   LOCAL_RANK=rank, WORLD_SIZE=size, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", task, *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=1800)
        if p.returncode:
            raise RuntimeError(f"rank failed: {stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


# ---- rank side ------------------------------------------------------------------------------------------------

def _worker_rbm(n_rows: int, n_hidden: int, repeats: int, batch_size: int) -> dict:
    import numpy as np
    import torch

    from pymusicrbm import RBM, distributed

    X = (np.random.default_rng(0).random((n_rows, 513)) < 0.3).astype(np.float32)
    Xr = distributed.shard(X)
    rbm = RBM(n_hidden, batch_size=batch_size, n_iter=1, random_state=0, monitor=False, learning_rate=0.01)
    rbm.fit(Xr)  # warm-up epoch (and initialisation)
    Xt = rbm._input(Xr)
    times, cpu = [], []
    for _ in range(repeats):
        distributed.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        rbm._run_epochs(Xt, None, 1)
        distributed.barrier()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    W = distributed.all_gather_rows(rbm._W.reshape(1, -1))
    equal = bool(all(torch.equal(W[0], w) for w in W))
    return {"seconds": sorted(times)[len(times) // 2], "cpu_seconds": sorted(cpu)[len(cpu) // 2], "rows": n_rows,
            "weights_equal_across_ranks": equal}


def _worker_extract(kind: str, data: str, cache: str, repeats: int) -> dict:
    from pymusicrbm import audio, datasets, distributed

    ds = datasets.load_dataset(data)
    times = []
    for i in range(repeats):
        distributed.barrier()
        t0 = time.perf_counter()
        feats = audio.extract(ds, kind, {}, cache_dir=None if cache == "none" else f"{cache}/{i}", n_jobs=1,
                              verbose=0)
        distributed.barrier()
        times.append(time.perf_counter() - t0)
    return {"seconds": sorted(times)[len(times) // 2], "clips": len(feats),
            "all_clips": all(f is not None for f in feats)}


def _worker_allreduce(repeats: int) -> dict:
    """Seconds of one gloo all-reduce of 4 KB, 100 KB and 1 MB (the 513->50 and 513->512 statistics buffers), both
    as ``dist.all_reduce`` blocks and as ``distributed.all_reduce_`` (the training step's) polls for it."""
    import torch
    import torch.distributed as dist

    from pymusicrbm import distributed

    out = {"blocking": {}, "polled": {}}
    for n in (1024, 25_714, 262_656):
        t = torch.ones(n)
        for how, reduce in (("blocking", dist.all_reduce), ("polled", lambda x: distributed.all_reduce_([x]))):
            for _ in range(10):
                reduce(t)
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(repeats):
                reduce(t)
            out[how][f"{4 * n} bytes"] = (time.perf_counter() - t0) / repeats
    return out


def worker(task: str, args: list[str]):
    import torch

    from pymusicrbm import distributed

    torch.set_num_threads(1)
    distributed.init_from_env(backend="gloo")
    result = (_worker_rbm(*map(int, args)) if task == "rbm" else _worker_allreduce(int(args[0])) if task == "allreduce"
              else _worker_extract(args[0], args[1], args[2], int(args[3])))
    result["rank"] = distributed.rank()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(json.dumps(result), flush=True)


# ---- driver -----------------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--rows", type=int, default=8192, help="training rows (default 8192)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, nargs="+", default=[64, 256],
                   help="rows per step and rank (default 64 and 256)")
    p.add_argument("--clips", type=int, default=16, help="synthetic clips per class for extraction (default 16)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker[0], a.worker[1:])

    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()
    results = {"machine": {"cpus": os.cpu_count(), "loadavg_before": load_before,
                           "note": "a shared machine: other jobs may have run at the same time"},
               "threads_per_process": 1, "batch_size_per_rank": a.batch_size, "rbm": {}, "extract": {}}
    print(f"{'task':<22}{'1 process':>14}{'2 processes':>14}{'speed-up':>10}{'CPU-time':>10}{'ceiling':>10}   check")
    for H, bs in ((H, bs) for bs in a.batch_size for H in (50, 512)):
        row = {}
        for world in (1, 2):
            res = launch(world, "rbm", [str(a.rows), str(H), str(a.repeats), str(bs)])
            sec = max(r["seconds"] for r in res)
            row[world] = {"samples_per_s": a.rows / sec, "seconds_per_epoch": sec,
                          "cpu_seconds_per_epoch_per_rank": [r["cpu_seconds"] for r in res],
                          "weights_equal_across_ranks": all(r["weights_equal_across_ranks"] for r in res)}
        speed = row[2]["samples_per_s"] / row[1]["samples_per_s"]
        # the speed-up an idle machine would show if the ranks never waited for a core: CPU time per epoch of one
        # process over that of the busiest rank (gloo's waits on a busy machine are mostly sleeps, not CPU)
        cpu_speed = row[1]["cpu_seconds_per_epoch_per_rank"][0] / max(row[2]["cpu_seconds_per_epoch_per_rank"])
        # the machine's own ceiling: two independent processes, each training on half the rows with no collective
        # at all (two vCPUs of a VM need not give two processes twice the throughput of one)
        alone = launch(2, "rbm", [str(a.rows // 2), str(H), str(a.repeats), str(bs)], independent=True)
        ceiling = a.rows / max(r["seconds"] for r in alone) / row[1]["samples_per_s"]
        results["rbm"][f"513->{H} batch {bs}"] = {"1": row[1], "2": row[2], "speedup": speed,
                                                  "cpu_time_speedup": cpu_speed,
                                                  "two_independent_processes_speedup": ceiling,
                                                  "fraction_of_ceiling": speed / ceiling}
        print(f"{f'RBM 513->{H} b{bs}':<22}{row[1]['samples_per_s']:>12.0f}/s{row[2]['samples_per_s']:>12.0f}/s"
              f"{speed:>9.2f}x{cpu_speed:>9.2f}x{ceiling:>9.2f}x   weights equal across ranks: "
              f"{row[2]['weights_equal_across_ranks']}")

    # what one step's collective costs here: a data-parallel step pays it once, whatever its size
    latency = launch(2, "allreduce", ["200"])[0]
    results["allreduce_seconds"] = {how: latency[how] for how in ("blocking", "polled")}
    for how in ("blocking", "polled"):
        print(f"gloo all-reduce, 2 processes, {how}: " + ", ".join(f"{k} {1e3 * v:.2f} ms"
                                                                  for k, v in latency[how].items()))

    from pymusicrbm import datasets
    with tempfile.TemporaryDirectory() as tmp:
        ds = datasets.make_synthetic_genres(Path(tmp) / "data", n_per_class=a.clips, seconds=10.0, seed=0)
        for kind, cache in (("dft", "none"), ("dft", "cache"), ("mfcc", "none"), ("mfcc", "cache")):
            row = {}
            for world in (1, 2):
                res = launch(world, "extract", [kind, str(ds.root), "none" if cache == "none" else
                                                str(Path(tmp) / f"cache{kind}{world}"), str(a.repeats)])
                sec = max(r["seconds"] for r in res)
                row[world] = {"clips_per_s": len(ds) / sec, "seconds": sec,
                              "every_rank_got_every_clip": all(r["all_clips"] and r["clips"] == len(ds) for r in res)}
            speed = row[2]["clips_per_s"] / row[1]["clips_per_s"]
            key = f"{kind}_collectives" if cache == "none" else f"{kind}_shared_cache"
            results["extract"][key] = {"1": row[1], "2": row[2], "speedup": speed, "clips": len(ds)}
            print(f"{'extract ' + key:<22}{row[1]['clips_per_s']:>10.1f}cl/s{row[2]['clips_per_s']:>10.1f}cl/s"
                  f"{speed:>9.2f}x   every rank got every clip: {row[2]['every_rank_got_every_clip']}")
    results["machine"]["loadavg_after"] = os.getloadavg()
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
