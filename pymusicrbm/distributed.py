"""Data-parallel helpers on ``torch.distributed`` (gloo on CPU, NCCL on GPU), launched by ``torchrun``.

Nothing here starts processes or moves bytes itself: ``torchrun`` starts the ranks and sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``...; :func:`init_from_env` joins the process group; the estimators then train
data-parallel whenever :func:`is_distributed` is true (a group with more than one rank). With one process (no
group, or a group of one) every helper is a no-op and the estimators run exactly as before.

Collectives carry a timeout (:data:`DEFAULT_TIMEOUT`, environment ``PYMUSICRBM_DIST_TIMEOUT`` in seconds): a rank
that dies or raises makes the others fail with :class:`DistributedError` within that time instead of hanging.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import time

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistributedError", "DEFAULT_TIMEOUT", "init_from_env", "is_distributed", "rank", "world_size",
           "is_main", "shard_indices", "shard", "replicated_inputs", "inputs_replicated", "sharded_inputs",
           "rank_seed", "all_reduce_", "all_sum", "all_sum_array", "all_gather_int", "broadcast_", "all_gather_rows",
           "all_gather_object", "broadcast_object", "pooled_moments", "all_min_max", "barrier"]

DEFAULT_TIMEOUT = 600.0   # seconds a collective waits for the other ranks


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died, raised or stopped answering."""


def _timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get("PYMUSICRBM_DIST_TIMEOUT", DEFAULT_TIMEOUT)))


def init_from_env(backend: str | None = None, timeout: float | None = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1); True if a group
    with more than one rank is up afterwards. backend: 'gloo' (CPU) or 'nccl' (CUDA); None picks nccl when CUDA
    is available and ``LOCAL_RANK`` names a GPU, else gloo. timeout: seconds each collective may wait (None:
    ``PYMUSICRBM_DIST_TIMEOUT`` or :data:`DEFAULT_TIMEOUT`)."""
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise DistributedError("WORLD_SIZE > 1 but this torch was built without torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    td = _timeout() if timeout is None else datetime.timedelta(seconds=float(timeout))
    dist.init_process_group(backend=backend, timeout=td)
    return is_distributed()


def is_distributed() -> bool:
    """A process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or no group): the process that prints and writes results."""
    return rank() == 0


def shard_indices(n: int, rank_: int | None = None, world: int | None = None) -> np.ndarray:
    """Rows ``rank, rank + world, ...`` of ``n``: this rank's share, as ``DistributedSampler`` deals them
    (without its padding: shards differ by at most one row; the epoch loop pads)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return np.arange(r, n, w)


def shard(X):
    """This rank's rows of X (every rank holds X): what ``fit`` should be given under ``torchrun``."""
    return X if not is_distributed() else X[shard_indices(len(X))]


_replicated = False


@contextlib.contextmanager
def replicated_inputs():
    """Inside this block ``fit`` reads its X as held whole by every rank (not as this rank's shard) and trains each
    rank on its rows ``rank, rank + world, ...``: how the CLI runs a study, where every rank loads the whole set."""
    global _replicated
    before, _replicated = _replicated, True
    try:
        yield
    finally:
        _replicated = before


def inputs_replicated() -> bool:
    return _replicated


def sharded_inputs() -> bool:
    """A group of more than one rank, each fitting its own shard (data statistics must be pooled)."""
    return is_distributed() and not _replicated


def rank_seed(seed: int, rank_: int, stream: int = 0) -> int:
    """A 63-bit seed of ``rank_``'s own random stream (independent of every other rank's; SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), 0x5EED, int(stream), int(rank_)]).generate_state(1, np.uint64)[0]
               >> 1)


# How long a gloo collective is polled for before its thread blocks. A thread blocked on an idle virtual CPU wakes
# milliseconds late: polling (yielding the core) cut a 1 MB all-reduce between 2 busy processes on 2 cores from
# 3.5 ms to 1.1 ms (median), a quarter of a 513->512 step at batch 256. Past this the wait blocks, so a rank that is
# much later (writing a checkpoint) costs no CPU.
_POLL_SECONDS = 0.02
_ASYNC = (dist.all_reduce, dist.broadcast, dist.all_gather)


def _wait(work):
    deadline = time.perf_counter() + _POLL_SECONDS
    while not work.is_completed() and time.perf_counter() < deadline:
        os.sched_yield()
    work.wait()


def _collective(what: str, fn, *args, **kwargs):
    try:
        if fn in _ASYNC and dist.get_backend() == "gloo":
            return _wait(fn(*args, **kwargs, async_op=True))
        return fn(*args, **kwargs)
    except RuntimeError as e:  # (DistBackendError, gloo's timeouts and closed connections are RuntimeErrors)
        raise DistributedError(
            f"rank {rank()} of {world_size()}: {what} failed or timed out after at most "
            f"{_timeout().total_seconds():g}s: another rank probably died or raised (see its log); "
            f"the run stops here. Resume it with --resume / fit(resume=...) from the last checkpoint. ({e})"
        ) from e


def _host() -> str:
    """Where small bookkeeping tensors live for a collective: NCCL reduces only CUDA tensors."""
    return "cuda" if is_distributed() and dist.get_backend() == "nccl" else "cpu"


def _flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat_(flat, tensors):
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n
    return tensors


def all_reduce_(tensors: list[torch.Tensor], op=None, what: str = "the all-reduce of training statistics"):
    """Sum (or ``op``) each tensor over the ranks, in place, as ONE flat buffer (one collective a step). All
    tensors must share dtype and device. A no-op without a group of more than one rank."""
    if not is_distributed() or not tensors:
        return tensors
    flat = _flat(tensors)
    _collective(what, dist.all_reduce, flat, op=dist.ReduceOp.SUM if op is None else op)
    return _unflat_(flat, tensors)


def all_sum(values, what: str = "the all-reduce of epoch totals") -> list[float]:
    """Sums of Python numbers over the ranks (float64, one collective)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_host())
    all_reduce_([t], what=what)
    return t.tolist()


def all_sum_array(a, what: str = "the all-reduce of data statistics") -> np.ndarray:
    """The element-wise sum over the ranks of a float64 array (one collective)."""
    a = np.asarray(a, dtype=np.float64)
    if not is_distributed():
        return a
    t = torch.from_numpy(a.copy()).to(_host())
    all_reduce_([t], what=what)
    return t.cpu().numpy().reshape(a.shape)


def all_gather_int(value: int, what: str = "agreeing on the number of steps") -> list[int]:
    """Every rank's ``value``, in rank order."""
    t = torch.tensor([[int(value)]], dtype=torch.int64, device=_host())
    return [int(v) for v in all_gather_rows(t, what=what).reshape(-1).tolist()]


def broadcast_(tensors: list[torch.Tensor], src: int = 0, what: str = "the broadcast of rank 0's parameters"):
    """Every rank gets rank ``src``'s values of ``tensors`` (in place; tensors of one dtype per call)."""
    if not is_distributed() or not tensors:
        return tensors
    groups: dict = {}
    for t in tensors:  # one flat buffer per dtype
        groups.setdefault(t.dtype, []).append(t)
    for group in groups.values():
        flat = _flat(group)
        _collective(what, dist.broadcast, flat, src=src)
        _unflat_(flat, group)
    return tensors


def all_gather_rows(t: torch.Tensor, what: str = "gathering the persistent chains") -> torch.Tensor:
    """Rows of every rank's ``t`` (same shape on every rank) stacked in rank order."""
    if not is_distributed():
        return t
    out = [torch.empty_like(t) for _ in range(world_size())]
    _collective(what, dist.all_gather, out, t.contiguous())
    return torch.cat(out)


def all_gather_object(obj, what: str = "exchanging results between the ranks") -> list:
    """Every rank's ``obj`` (picklable; torch's object collective), in rank order; [obj] without a group."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    _collective(what, dist.all_gather_object, out, obj)
    return out


def broadcast_object(obj, src: int = 0, what: str = "taking rank 0's decision"):
    """Rank ``src``'s ``obj`` on every rank (rank 0 decides, e.g. whether to resume; the others follow)."""
    if not is_distributed():
        return obj
    box = [obj]
    _collective(what, dist.broadcast_object_list, box, src=src)
    return box[0]


def pooled_moments(n: int, mean, var, what: str = "pooling the standardisation statistics"):
    """Global (mean, population variance) of the data of every rank, from each rank's row count, mean and
    variance (Chan et al.'s pooling, float64; bitwise the same on every rank). Without a group: (mean, var)."""
    if not is_distributed():
        return mean, var
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    d = mean.size
    local = torch.from_numpy(np.concatenate([[float(n)], mean.ravel(), var.ravel()])).to(_host())
    rows = all_gather_rows(local[None], what=what).cpu().double().numpy()
    ns, ms, vs = rows[:, :1], rows[:, 1:1 + d], rows[:, 1 + d:]
    total = ns.sum()
    gmean = (ns * ms).sum(0) / total
    gvar = (ns * (vs + (ms - gmean) ** 2)).sum(0) / total
    return gmean.reshape(mean.shape), gvar.reshape(var.shape)


def all_min_max(lo: float, hi: float, what: str = "agreeing on the data range") -> tuple[float, float]:
    """(min over the ranks of lo, max over the ranks of hi)."""
    if not is_distributed():
        return lo, hi
    rows = all_gather_rows(torch.tensor([[float(lo), float(hi)]], dtype=torch.float64, device=_host()), what=what)
    return float(rows[:, 0].min()), float(rows[:, 1].max())


def barrier(what: str = "waiting for the other ranks"):
    if is_distributed():
        all_sum([0.0], what=what)
