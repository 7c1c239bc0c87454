"""The one estimator contract every trained model follows (RBM, ConvRBM, the stacks DBN / ConvDBN, DBNClassifier,
ConvVAE): parameters checked from a ``_parameter_constraints`` table the scikit-learn way, one seeding scheme,
device/dtype, one epoch loop (shuffle, loss summed on the device and read once per epoch, divergence check,
history, tqdm / verbose, early stopping with the best weights kept, per-epoch checkpoint), resume checks and
generator pickling. A model supplies only its initialisation, its batch update and its monitors.
"""
from __future__ import annotations

import inspect
import math
import time
import warnings
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, Options, StrOptions

from . import distributed
from ._utils import (draw_seed, generator_from_state, generator_to_state, layer_seed, make_generator,
                     resolve_device, resolve_dtype, split_indices)
from .checkpoint import CheckpointMixin, load_state, save_state

__all__ = ["TrainingDivergedError", "TrainedEstimator", "StackEstimator", "COMMON_CONSTRAINTS", "Interval",
           "StrOptions", "Options"]


MAX_ABS_WEIGHT = 1e3      # |W| beyond this means training blew up, even if everything is still finite


class TrainingDivergedError(FloatingPointError):
    """Training produced non-finite or exploding parameters; the message says which setting to change."""


# Constraints shared by every estimator (the naming table: the same name means the same thing everywhere).
COMMON_CONSTRAINTS = {
    "verbose": ["verbose"],
    "random_state": ["random_state"],
    "device": [str, torch.device],
    "dtype": [StrOptions({"float32", "float64", "torch.float32", "torch.float64"}),
              Options(torch.dtype, {torch.float32, torch.float64})],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "n_iter": [Interval(Integral, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 0.9, closed="both"), None],
}


def _take_rows(data, idx):
    """Rows ``idx`` (numpy) of a tensor, an array or a tuple of them."""
    if isinstance(data, tuple):
        return tuple(_take_rows(d, idx) for d in data)
    return data.index_select(0, torch.from_numpy(idx).to(data.device)) if torch.is_tensor(data) else data[idx]


def _as_tuples(x):
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _same(a, b) -> bool:
    """Parameters compared as JSON stores them (tuples become lists)."""
    return _as_tuples(a) == _as_tuples(b)


class TrainedEstimator(CheckpointMixin, BaseEstimator):
    """Base of every trained model. Subclasses set ``_parameter_constraints`` (start from ``COMMON_CONSTRAINTS``)
    and implement the hooks below; ``fit(X, y=None, *, resume=None, checkpoint=None)`` is shared.

    Hooks: ``_validate_input(X, reset)`` (checked array), ``_initialize(X)`` (fresh state, returns the training
    tensor), ``_input(X)`` (the tensor of a fitted/restored model), ``_batch_update(batch, lr, epoch)`` (one step,
    returns the batch's mean loss as a 0-d or 1-d tensor on the device), optionally ``_epoch_update(data, order,
    lr, epoch)`` (an epoch's steps in one call), ``_epoch_record(loss, lr, X, X_valid)``
    (the monitors of an epoch), ``_check_divergence(loss, epoch, lr)``, ``_divergence_advice(lr)``,
    ``_get_state`` / ``_set_state`` (checkpoint). Early stopping: ``_early_stopping_score(record)`` returns the
    score to minimise (None: no early stopping), ``_snapshot()`` / ``_restore_snapshot(s)`` the weights kept.
    """

    _parameter_constraints: dict = dict(COMMON_CONSTRAINTS)
    # old parameter name -> new name; the old keyword works for one release with a FutureWarning
    _renamed_params: dict[str, str] = {}
    # parameters a resumed fit must share with the checkpoint (the run would differ otherwise)
    _structural_params: tuple[str, ...] = ()
    # torch.Generator attributes (pickled through their states)
    _generators: tuple[str, ...] = ("_rng", "_shuffle_rng")
    # history keys shown on the progress bar
    _progress_keys: tuple[str, ...] = ()
    # verbose >= 1 prints ``_epoch_line(record)`` after every epoch (scikit-learn's style) instead of the bar
    _verbose_lines = False

    # ---- parameters --------------------------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and cls._renamed_params:
            # the **renamed catch-all of the old names is no parameter: hide it from signature() (get_params,
            # clone and scikit-learn's checks read the signature)
            sig = inspect.signature(init)
            init.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values()
                                                         if p.kind is not p.VAR_KEYWORD])

    def _apply_renamed(self, renamed: dict):
        """``__init__(..., **renamed)``: map old keywords to their new names, with a FutureWarning naming both."""
        for old, value in renamed.items():
            new = self._renamed_params.get(old)
            if new is None:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument {old!r}")
            warnings.warn(f"{type(self).__name__}: the parameter {old!r} was renamed {new!r} (the name every "
                          f"pymusicrbm estimator uses); {old!r} will stop working in the next release",
                          FutureWarning, stacklevel=3)
            setattr(self, new, value)

    def set_params(self, **params):
        renamed = {k: params.pop(k) for k in list(params) if k in self._renamed_params}
        if renamed:
            self._apply_renamed(renamed)
        return super().set_params(**params)

    def _check_params(self):
        """Validate the constructor parameters (InvalidParameterError naming the parameter), then resolve device
        and dtype and check the combinations a single constraint cannot express (``_check_combinations``)."""
        self._validate_params()
        self._device = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype)
        self._check_combinations()

    def _check_combinations(self):
        pass

    def _require_fitted(self):
        if not self.__sklearn_is_fitted__():
            from sklearn.exceptions import NotFittedError
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first.")

    # ---- seeds, generators, pickling -----------------------------------------------------------------------

    def _seed_generators(self, seed: int | None = None):
        """The one seeding scheme: ``_seed`` from random_state; the sampling generator on the device is seeded
        with it, the (CPU) shuffling one with seed + 1; the train/held-out split uses seed + 2 and a stack's
        layer i ``layer_seed(seed, i)``."""
        self._seed = draw_seed(self.random_state) if seed is None else int(seed)
        self._rng = make_generator(self._seed, self._device)
        self._shuffle_rng = torch.Generator().manual_seed(self._seed + 1)

    def _generator_tensors(self) -> dict:
        return {"rng_state": self._rng.get_state(), "shuffle_rng_state": self._shuffle_rng.get_state()}

    def _restore_generators(self, tensors: dict, seed: int):
        self._seed = int(seed)
        self._rng = torch.Generator(device=self._device)
        self._rng.set_state(tensors["rng_state"])
        self._shuffle_rng = torch.Generator()
        self._shuffle_rng.set_state(tensors["shuffle_rng_state"])

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_ddp", None)
        for name in self._generators:
            if isinstance(state.get(name), torch.Generator):
                state[name] = generator_to_state(state[name])
        return state

    def __setstate__(self, state):
        state = dict(state)
        for name in self._generators:
            if isinstance(state.get(name), tuple):
                state[name] = generator_from_state(state[name])
        super().__setstate__(state)

    # ---- checkpoint tensors ---------------------------------------------------------------------------------

    # attributes saved as tensors under their name without the leading underscore (None: not saved)
    _STATE_TENSORS: tuple[str, ...] = ()

    def _state_tensors(self) -> dict:
        """The ``_STATE_TENSORS``, the generators' states and the input standardisation (``mean_``, ``scale_``)."""
        tensors = {name[1:]: self.__dict__[name].detach() for name in self._STATE_TENSORS
                   if self.__dict__.get(name) is not None}
        for name in self._RANK_TENSORS:  # a process group: rank 0 writes every rank's chains, in rank order
            if name[1:] in tensors:
                tensors[name[1:]] = distributed.all_gather_rows(tensors[name[1:]])
        tensors.update(self._generator_tensors())
        if "mean_" in self.__dict__:
            tensors["mean_"] = torch.from_numpy(np.asarray(self.mean_, dtype=np.float64))
            tensors["scale_"] = torch.from_numpy(np.asarray(self.scale_, dtype=np.float64))
        return tensors

    def _load_state_tensors(self, tensors: dict, seed: int):
        opts = dict(device=self._device, dtype=self._dtype)
        for name in self._STATE_TENSORS:
            t = tensors.get(name[1:])
            self.__dict__[name] = None if t is None else t.to(**opts).contiguous()
        self._restore_generators(tensors, seed)
        if "mean_" in tensors:
            self.mean_ = tensors["mean_"].double().numpy()
            self.scale_ = tensors["scale_"].double().numpy()
        else:
            self.__dict__.pop("mean_", None)
            self.__dict__.pop("scale_", None)

    # ---- resume and checkpoints --------------------------------------------------------------------------

    def _read_resume(self, resume) -> tuple[dict, dict]:
        """(tensors, state) of a checkpoint to continue from, after checking its structural parameters."""
        tensors, meta = load_state(resume)
        saved = type(self)._params_from_meta(meta, resume)
        for name in self._structural_params:
            if not _same(saved.get(name), getattr(self, name)):
                raise ValueError(f"resume: the checkpoint {str(resume)!r} was trained with {name}="
                                 f"{saved.get(name)!r} but this estimator has {name}={getattr(self, name)!r}")
        return tensors, meta.get("state", {})

    def _checkpointer(self, checkpoint):
        return None if checkpoint is None else (lambda: self.save(checkpoint))

    def save(self, path):
        """Write the model (and its training state) to ``path`` (safetensors + JSON, atomically). In a process
        group every rank must call it: the per-rank state (PCD chains) is gathered and rank 0 alone writes."""
        if not distributed.is_distributed():
            return super().save(path)
        tensors, state = self._get_state()
        if distributed.is_main():
            save_state(path, tensors, self._checkpoint_meta(state))
        distributed.barrier("writing a checkpoint on rank 0")
        return Path(path)

    # ---- data parallel (a torch.distributed group of more than one rank; see pymusicrbm.distributed) --------
    # Every rank fits its own shard of the data. The epoch loop pads the shards to one length (as
    # DistributedSampler does), so every rank takes the same number of steps of the same size; a model's step
    # all-reduces its statistics once (``_data_parallel_update``) or its network is wrapped in
    # DistributedDataParallel. Rank 0's initial parameters are broadcast; each rank draws its own streams
    # (re-seeded from (seed, rank, epoch) at every epoch, so a resumed run continues exactly); the epoch's loss and
    # monitors are averaged over the ranks, so that every rank takes the same decisions (divergence, early
    # stopping). Checkpoints: rank 0 writes, with every rank's chains; see ``_share_rank_tensors``.

    # state tensors that stay on their rank (PCD chains); the other _STATE_TENSORS are the same on every rank
    _RANK_TENSORS: tuple[str, ...] = ("_chains",)

    def _shared_tensors(self) -> list:
        """The tensors every rank must hold identically (broadcast from rank 0 when training starts)."""
        return [self.__dict__[n] for n in self._STATE_TENSORS
                if n not in self._RANK_TENSORS and self.__dict__.get(n) is not None]

    # a model trained by autograd names its network: in a group its steps call it wrapped in
    # DistributedDataParallel (which broadcasts rank 0's weights and averages the gradients)
    _ddp_module: str | None = None

    def _start_data_parallel(self):
        distributed.broadcast_(self._shared_tensors())
        if self._ddp_module is not None:
            from torch.nn.parallel import DistributedDataParallel

            dev = self._device
            gpu = [torch.cuda.current_device() if dev.index is None else dev.index] if dev.type == "cuda" else None
            self._ddp = DistributedDataParallel(getattr(self, self._ddp_module), device_ids=gpu)

    def _train_module(self):
        """The network a training step calls: ``_ddp_module``, wrapped in DDP while training in a group."""
        ddp = self.__dict__.get("_ddp")
        return ddp if ddp is not None else getattr(self, self._ddp_module)

    def _agreed_resume(self, resume):
        """Rank 0 decides whether (and from which file) a run resumes; every rank reads that file."""
        return distributed.broadcast_object(None if resume is None else str(resume), what="agreeing on resume") \
            if distributed.is_distributed() else resume

    def _seed_rank_epoch(self, epoch: int):
        """Each rank's own sampling and shuffling streams for this epoch (independent of the other ranks')."""
        r = distributed.rank()
        self._rng.manual_seed(distributed.rank_seed(self._seed, r, 2 * epoch))
        self._shuffle_rng.manual_seed(distributed.rank_seed(self._seed, r, 2 * epoch + 1))

    def _share_rank_tensors(self, saved_world: int):
        """After loading a checkpoint written by ``saved_world`` ranks (chains stacked in rank order): this rank
        continues the chains of saved rank ``rank % saved_world``. Same world size: every rank gets its own
        chains back; fewer ranks: the chains of the missing ranks are dropped; more ranks: a saved rank's chains
        are continued by several ranks, whose own random streams make them drift apart."""
        world = distributed.world_size()
        if saved_world <= 1 and world <= 1:
            return
        r = distributed.rank() % saved_world
        for name in self._RANK_TENSORS:
            t = self.__dict__.get(name)
            if t is not None and saved_world > 1:
                n = t.shape[0] // saved_world
                self.__dict__[name] = t[r * n:(r + 1) * n].contiguous()

    def _data_parallel_update(self, batch, lr: float, epoch: int) -> torch.Tensor:
        """One data-parallel step: this rank's statistics of its batch, weighted by the global batch size,
        all-reduced in one flat buffer, then the same update applied on every rank. Returns the local loss."""
        rows = (batch[0] if isinstance(batch, tuple) else batch).shape[0]
        loss, stats = self._statistics(batch, lr, rows * distributed.world_size())
        distributed.all_reduce_(stats)
        self._apply_statistics(stats, lr, epoch)
        return loss

    def _has_statistics(self) -> bool:
        return type(self)._statistics is not TrainedEstimator._statistics

    def _statistics(self, batch, lr: float, global_rows: int):
        """(local loss, list of statistic tensors that SUM over the ranks to the global ones)."""
        raise NotImplementedError(f"{type(self).__name__} has no data-parallel step")

    def _apply_statistics(self, stats: list, lr: float, epoch: int):
        raise NotImplementedError(f"{type(self).__name__} has no data-parallel step")

    def _agree(self, record: dict) -> dict:
        """The epoch's monitors (each rank's estimate on its shard) averaged over the ranks."""
        keys = [k for k, v in record.items() if k != "epoch" and isinstance(v, (int, float)) and
                not isinstance(v, bool)]
        means = distributed.all_sum([record[k] for k in keys], what="averaging the epoch's monitors")
        out = dict(record)
        out.update({k: m / distributed.world_size() for k, m in zip(keys, means)})
        return out

    # ---- fitting ------------------------------------------------------------------------------------------

    def fit(self, X, y=None, *, resume=None, checkpoint=None):
        """Train for ``n_iter`` epochs in total (a resumed fit runs only the epochs still missing).

        resume: path of a checkpoint written by ``save`` or by ``checkpoint=`` to continue from; with the same
        data and seed the result is bitwise identical to an uninterrupted fit. checkpoint: path saved to
        (atomically) after every epoch, so that an interrupted run can be resumed.
        """
        self._check_params()
        X = self._validate_input(X, reset=True)
        resume = self._agreed_resume(resume)
        if resume is not None:
            self._set_state(*self._read_resume(resume), check_against=X)
        return self._fit_validated(X, resume is not None, self._checkpointer(checkpoint))

    def _fit_validated(self, X, resumed: bool, on_epoch=None):
        """Fit on validated X; ``resumed``: the training state is already loaded. ``on_epoch()`` runs after
        every epoch (checkpointing). Used by ``fit`` and by the stacks, layer by layer."""
        Xt = self._input(X) if resumed else self._initialize(X)
        X_train, X_valid = self._split(Xt)
        self._run_epochs(X_train, X_valid, self.n_iter - self.n_iter_, on_epoch)
        return self

    def _split(self, Xt: torch.Tensor):
        """(train, held-out or None) rows of Xt: ``validation_fraction`` of them, fixed by the seed."""
        train_idx, valid_idx = split_indices(Xt.shape[0], getattr(self, "validation_fraction", None), self._seed)
        if len(valid_idx) == 0:
            return Xt, None
        return Xt.index_select(0, train_idx.to(Xt.device)), Xt.index_select(0, valid_idx.to(Xt.device))

    def _reset_training(self):
        """Fresh training bookkeeping (call from ``_initialize``)."""
        self.n_iter_ = 0
        self.history_ = {}
        self._best = None
        self._best_score = math.inf
        self._no_improve = 0

    def _learning_rate(self, epoch: int) -> float:
        return self.learning_rate

    def _epoch_update(self, data, order: torch.Tensor, lr: float, epoch: int):
        """All the steps of an epoch in one call, for a model whose steps need nothing in Python between them:
        the batches of ``batch_size`` rows of ``data`` taken in ``order`` (row indices on the device), each
        exactly the step ``_batch_update`` would take. Returns their losses stacked (n_batches, ...), or None to
        have ``_batch_update`` called batch by batch (the default; always so in a process group or under a
        per-batch progress bar)."""
        return None

    def _batches(self, data, perm: torch.Tensor):
        """(rows, batch) pairs of one epoch in the order ``perm``; ``data`` is a tensor or a tuple of tensors."""
        perm = perm.to(self._device)
        for idx in torch.split(perm, self.batch_size):
            if isinstance(data, tuple):
                yield len(idx), tuple(d.index_select(0, idx) for d in data)
            else:
                yield len(idx), data.index_select(0, idx)

    def _progress_desc(self) -> str:
        return type(self).__name__

    def _epoch_line(self, record: dict) -> str:
        """The verbose line of an epoch (``_verbose_lines``), scikit-learn's style."""
        values = "".join(f"{k} = {record[k]:.4g}, " for k in self._progress_keys if k in record)
        return f"[{type(self).__name__}] Iteration {record['epoch']}, {values}time = {record['time']:.2f}s"

    def _run_epochs(self, data, valid, n_epochs: int, on_epoch=None):
        """The epoch loop: up to ``n_epochs`` epochs continuing from ``n_iter_``."""
        from tqdm.auto import tqdm

        dp = distributed.is_distributed()
        if dp and distributed.inputs_replicated():  # every rank was given all rows: train on this rank's share
            data = _take_rows(data, distributed.shard_indices(len(data[0] if isinstance(data, tuple) else data)))
        n = (data[0] if isinstance(data, tuple) else data).shape[0]
        n_rows = n  # rows a rank runs through per epoch: its shard padded to the longest (DistributedSampler)
        if dp:
            counts = distributed.all_gather_int(n)
            if min(counts) == 0:  # (raised on every rank, so none waits for the others)
                raise ValueError(f"{type(self).__name__}.fit: rank(s) {[r for r, c in enumerate(counts) if c == 0]} "
                                 "were given no rows; every rank needs a non-empty shard of the data")
            n_rows = max(counts)
            self._start_data_parallel()
        # a model with a statistics step all-reduces it; the others (DDP inside their _batch_update) train as usual
        update = self._data_parallel_update if dp and self._has_statistics() else self._batch_update
        quiet = self.verbose < 1 or not distributed.is_main()
        bar = tqdm(range(n_epochs), desc=self._progress_desc(), disable=quiet or self._verbose_lines,
                   leave=False, unit="epoch")
        for _ in bar:
            if self._stop_early():
                break
            epoch = self.n_iter_
            lr = self._learning_rate(epoch)
            t0 = time.perf_counter()
            if dp:
                self._seed_rank_epoch(epoch)
            perm = torch.randperm(n, generator=self._shuffle_rng)
            if n_rows > n:
                perm = perm.repeat(-(-n_rows // n))[:n_rows]
            batch_bar = self.verbose >= 2 and not quiet
            # the whole epoch in one call where the model can (nothing in Python between steps), else step by step
            losses = None if dp or batch_bar else self._epoch_update(data, perm.to(self._device), lr, epoch)
            if losses is None:
                batches = tqdm(self._batches(data, perm), total=-(-n_rows // self.batch_size),
                               disable=not batch_bar, leave=False, unit="batch")
                steps = [(rows, update(batch, lr, epoch).detach()) for rows, batch in batches]
                rows = [r for r, _ in steps]
                losses = torch.stack([loss for _, loss in steps])
            else:
                rows = [self.batch_size] * (len(losses) - 1) + [n_rows - self.batch_size * (len(losses) - 1)]
            # the losses stay on the device (no host sync per batch); weighted by the batches' rows
            total = torch.tensor(rows, dtype=torch.float64, device=losses.device) @ losses.detach().double()
            loss = (total / n).tolist()  # the one host read of the epoch
            if dp:  # the mean over every rank's rows
                sums = distributed.all_sum([*total.double().reshape(-1).tolist(), n_rows])
                loss = [s / sums[-1] for s in sums[:-1]]
                loss = loss[0] if total.dim() == 0 else loss
            self._check_divergence(loss, epoch, lr)
            self.n_iter_ = epoch + 1
            rec = {"epoch": epoch + 1}
            rec.update(self._epoch_record(loss, lr, data, valid))
            if dp:
                rec = self._agree(rec)
            rec["time"] = time.perf_counter() - t0
            for key, val in rec.items():
                if not key.startswith("_"):  # "_name": for the hooks only, not history
                    self.history_.setdefault(key, []).append(val)
            self._track_best(rec)
            if self.verbose and self._verbose_lines and not quiet:
                print(self._epoch_line(rec), flush=True)
            elif not quiet:
                bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k in self._progress_keys})
            if on_epoch is not None:
                on_epoch()
        bar.close()
        self._end_training()

    # ---- divergence ----------------------------------------------------------------------------------------

    def _divergence_advice(self, lr: float) -> list[str]:
        return [f"lower learning_rate (now {lr:.3g})"]

    def _diverged(self, epoch: int, lr: float, what: str) -> TrainingDivergedError:
        return TrainingDivergedError(f"{type(self).__name__} training diverged in epoch {epoch + 1}: {what}. "
                                     f"Try to: {'; '.join(self._divergence_advice(lr))}.")

    _loss_name = "the training loss"
    _weights = None             # (attribute, what) of the weights watched for explosion, e.g. ("_W", "weights")

    def _check_divergence(self, loss, epoch: int, lr: float):
        values = loss if isinstance(loss, list) else [loss]
        if not all(math.isfinite(v) for v in values):
            raise self._diverged(epoch, lr, f"{self._loss_name} is {loss}")
        if self._weights is not None:
            name, what = self._weights
            wmax = float(getattr(self, name).abs().max())
            if not math.isfinite(wmax) or wmax > MAX_ABS_WEIGHT:
                raise self._diverged(epoch, lr, f"the {what} exploded (max |W| = {wmax:.3g} > {MAX_ABS_WEIGHT:g})")

    # ---- early stopping, best weights ----------------------------------------------------------------------

    def _early_stopping_score(self, record: dict):
        return None

    def _patience(self):
        return getattr(self, "n_iter_no_change", None)

    def _improved(self, score: float) -> bool:
        return score < self._best_score - getattr(self, "tol", 0.0)

    def _keep_best(self) -> bool:
        return True

    def _track_best(self, record: dict):
        score = self._early_stopping_score(record)
        if score is None:
            return
        if self._improved(score):
            self._best_score, self._no_improve, self.best_epoch_ = score, 0, self.n_iter_
            if self._keep_best():
                self._best = self._snapshot()
        else:
            self._no_improve += 1

    def _stop_early(self) -> bool:
        patience = self._patience()
        return patience is not None and self._no_improve >= patience

    def _end_training(self):
        self.__dict__.pop("_ddp", None)
        if self.__dict__.get("_best") is not None:  # early stopping: keep the weights of the best epoch
            self._restore_snapshot(self._best)

    def _training_state(self) -> dict:
        """JSON part of the epoch loop's state (for ``_get_state``)."""
        state = {"n_iter_": self.n_iter_, "history_": self.history_}
        if distributed.is_distributed():  # the rank tensors (chains) were gathered: one block per rank
            state["world_size"] = distributed.world_size()
        if "best_epoch_" in self.__dict__:
            state.update(best_score=self._best_score, no_improve=self._no_improve, best_epoch_=self.best_epoch_)
        return state

    def _restore_training_state(self, state: dict):
        self._share_rank_tensors(int(state.get("world_size", 1)))
        self.n_iter_ = int(state["n_iter_"])
        self.history_ = {k: list(v) for k, v in state.get("history_", {}).items()}
        self._best = None
        self._best_score = float(state.get("best_score", state.get("best_loss", math.inf)))  # (v1: best_loss)
        self._no_improve = int(state.get("no_improve", 0))
        if "best_epoch_" in state:
            self.best_epoch_ = int(state["best_epoch_"])

    # ---- torch.optim state in a checkpoint --------------------------------------------------------------------

    @staticmethod
    def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "opt.") -> dict:
        out = {}
        for i, st in optimizer.state_dict()["state"].items():
            for key, val in st.items():
                out[f"{prefix}{i}.{key}"] = val.detach() if torch.is_tensor(val) else torch.tensor(val)
        return out

    def _load_optimizer(self, optimizer: torch.optim.Optimizer, tensors: dict, prefix: str = "opt."):
        state = {}
        for name, val in tensors.items():
            if name.startswith(prefix):
                i, key = name[len(prefix):].split(".", 1)
                # Adam keeps 'step' on the CPU unless capturable/fused; the moments live with the parameters
                state.setdefault(int(i), {})[key] = val if key == "step" else val.to(self._device)
        sd = optimizer.state_dict()
        sd["state"] = state
        optimizer.load_state_dict(sd)


class StackEstimator(TrainedEstimator):
    """A stack of layers (each a :class:`TrainedEstimator`) trained greedily, each on the output of the one
    below; resumable layer by layer, epoch by epoch. Subclasses give ``_layer_class``, ``_layer_shared``
    (settings passed to every layer, which ``layer_params`` may override per layer) and ``_layer_specs()`` (the
    per-layer structure), ``_combine(outputs)`` (``transform(X, layers='all')``).

    Fitted attributes: ``layers_`` (the fitted layers), ``n_layers_fitted_``.
    """

    _layer_class: type = None
    _layer_shared: tuple[str, ...] = ()        # the stack's settings every layer gets
    _layer_overridable: tuple[str, ...] = ()   # the layer settings layer_params may set (default: _layer_shared)

    def _layer_specs(self) -> list[dict]:
        raise NotImplementedError

    def _check_layer_params(self, n_layers: int):
        lp = self.layer_params
        if lp is None:
            return [{}] * n_layers
        if len(lp) != n_layers:
            raise ValueError(f"layer_params must be None or one dict per layer ({n_layers}), got {len(lp)}")
        out = []
        for i, extra in enumerate(lp):
            extra = extra or {}
            if not isinstance(extra, dict):
                raise ValueError(f"layer_params[{i}] must be a dict of {self._layer_class.__name__} parameters, "
                                 f"got {extra!r}")
            allowed = self._layer_overridable or self._layer_shared
            unknown = set(extra) - set(allowed)
            if unknown:
                raise ValueError(f"layer_params[{i}] has keys that are not per-layer {self._layer_class.__name__}"
                                 f" settings: {sorted(unknown)} (allowed: {sorted(allowed)})")
            out.append(extra)
        return out

    def _make_layers(self) -> list:
        specs = self._layer_specs()
        extras = self._check_layer_params(len(specs))
        layers = []
        for i, (spec, extra) in enumerate(zip(specs, extras)):
            params = {"verbose": self.verbose, "device": self.device, "dtype": self.dtype}
            params.update({name: getattr(self, name) for name in self._layer_shared})
            params.update(spec)
            params.update(extra)
            layer = self._layer_class(random_state=layer_seed(self._seed, i), **params)
            layer._check_params()
            layers.append(layer)
        return layers

    def fit(self, X, y=None, *, resume=None, checkpoint=None):
        """Greedy layer-wise training. ``resume`` / ``checkpoint`` as in :meth:`TrainedEstimator.fit`: the
        checkpoint holds the finished layers and the state of the layer in training, which continues."""
        self._check_params()
        seed, layer_states = None, []
        resume = self._agreed_resume(resume)
        if resume is not None:
            tensors, state = self._read_resume(resume)
            seed = state.get("seed")  # (absent from ConvDBN checkpoints of version 1: the layers hold theirs)
            layer_states = self._split_layers(tensors, state)
        return self._fit_layers(X, seed, layer_states, self._checkpointer(checkpoint))

    def _fit_layers(self, X, seed=None, layer_states=(), on_epoch=None):
        """Train the layers on X, layer i seeded with ``layer_seed(seed, i)`` (seed None: from random_state);
        ``layer_states`` are the (tensors, state) of layers restored from a checkpoint (the last one possibly
        unfinished). Used by ``fit`` and by estimators that pre-train a stack (DBNClassifier)."""
        self._check_params()
        X = self._validate_input(X, reset=True)
        self._seed = draw_seed(self.random_state) if seed is None else int(seed)
        self.layers_ = self._make_layers()
        self.n_layers_fitted_ = 0
        if len(layer_states) > len(self.layers_):
            raise ValueError(f"the checkpoint has {len(layer_states)} layers, this {type(self).__name__} "
                             f"{len(self.layers_)}")
        H = X
        for i, layer in enumerate(self.layers_):
            resumed = i < len(layer_states)
            H = layer._validate_input(H, reset=True)
            if resumed:
                layer._set_state(*layer_states[i], check_against=H)
            if not resumed or layer.n_iter_ < layer.n_iter:
                layer._fit_validated(H, resumed, on_epoch)
            self.n_layers_fitted_ = i + 1
            if on_epoch is not None:
                on_epoch()
            if i + 1 < len(self.layers_):
                H = layer.transform(H)
        return self

    def _layer_outputs(self, X) -> list:
        out, H = [], X
        for layer in self.layers_:
            H = layer.transform(H)
            out.append(H)
        return out

    def _transform_layers(self, X, layers):
        """The top layer's output (``layers='top'``) or every layer's, combined by ``_combine`` (``'all'``)."""
        if layers == "last":
            warnings.warn("transform(layers='last') was renamed layers='top'; 'last' will stop working in the "
                          "next release", FutureWarning, stacklevel=3)
            layers = "top"
        if layers not in ("top", "all"):
            raise ValueError(f"layers must be one of ('top', 'all'), got {layers!r}")
        outs = self._layer_outputs(X)
        return outs[-1] if layers == "top" else self._combine(outs)

    def _combine(self, outputs: list):
        return outputs

    @property
    def history_(self) -> list[dict]:
        """One history dict per trained layer."""
        return [layer.history_ for layer in self.__dict__.get("layers_", [])[:self.__dict__.get(
            "n_layers_fitted_", 0)] if layer.__sklearn_is_fitted__()]

    def __sklearn_is_fitted__(self):
        return "layers_" in self.__dict__ and self.n_layers_fitted_ == len(self.layers_)

    # ---- checkpoint state --------------------------------------------------------------------------------

    def _get_state(self):
        tensors, states = {}, []
        for i, layer in enumerate(self.__dict__.get("layers_", [])):
            if not layer.__sklearn_is_fitted__():
                break
            t, s = layer._get_state()
            tensors.update({f"layer{i}.{k}": v for k, v in t.items()})
            states.append(s)
        if not states:
            from sklearn.exceptions import NotFittedError
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call fit first.")
        return tensors, {"seed": self._seed, "layers": states, "n_layers_fitted_": self.n_layers_fitted_,
                         **self._stack_state()}

    def _stack_state(self) -> dict:
        return {}

    @staticmethod
    def _split_layers(tensors: dict, state: dict) -> list:
        out = []
        for i, s in enumerate(state["layers"]):
            p = f"layer{i}."
            out.append(({k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}, s))
        return out

    def _set_state(self, tensors: dict, state: dict, check_against=None):
        """Restore a finished stack (a checkpoint saved mid-training is continued by ``fit(X, resume=path)``)."""
        self._check_params()
        self._seed = int(state["seed"]) if "seed" in state else draw_seed(self.random_state)
        self.layers_ = self._make_layers()
        layer_states = self._split_layers(tensors, state)
        if len(layer_states) != len(self.layers_):
            raise ValueError(f"the checkpoint has {len(layer_states)} trained layers, this {type(self).__name__} "
                             f"needs {len(self.layers_)} (was it saved mid-training? resume it with fit)")
        for layer, (t, s) in zip(self.layers_, layer_states):
            layer._set_state(t, s)
        self.n_layers_fitted_ = len(self.layers_)
