"""Safe checkpoints: tensors in a safetensors file, configuration and training state as JSON in its metadata.

Loading never unpickles anything (safetensors only holds raw tensor bytes and a JSON header), so a checkpoint from
an untrusted source cannot execute code. Writes are atomic: the file is written next to its destination and moved
into place with ``os.replace``, so an interrupted save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "pymusicrbm-checkpoint"
# 2: parameters under the names of the naming table (version 1 checkpoints load: old names are mapped, see
#    CheckpointMixin._params_from_meta), ConvVAE as a CheckpointMixin estimator.
VERSION = 2

__all__ = ["FORMAT", "VERSION", "save_state", "load_state", "generator_state", "set_generator_state",
           "CheckpointMixin"]


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` to ``path`` atomically; returns the path."""
    from safetensors.torch import save

    path = Path(path)
    if not isinstance(meta, dict):
        raise ValueError(f"save_state: meta must be a dict, got {type(meta).__name__}")
    clean = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"save_state: tensors[{name!r}] must be a torch.Tensor, got {type(t).__name__}")
        # safetensors refuses shared or strided storage: give each tensor its own dense CPU copy
        clean[name] = t.detach().to("cpu").contiguous().clone()
    header = {"format": FORMAT, "version": str(VERSION), "meta": json.dumps(meta, allow_nan=True)}
    data = save(clean, metadata=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_state`. Raises ValueError for a missing, corrupt or foreign file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist or is not a file")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        header = _read_metadata(raw)
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file (corrupt or truncated?): "
                         f"{e}") from None
    if not header or header.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r} is a safetensors file but not a pymusicrbm checkpoint "
                         f"(metadata 'format' is {(header or {}).get('format')!r}, expected {FORMAT!r})")
    version = header.get("version", "")
    if not version.isdigit() or int(version) > VERSION:
        raise ValueError(f"checkpoint {str(path)!r} has format version {version!r}; this pymusicrbm reads "
                         f"versions <= {VERSION}")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {str(path)!r} has unreadable JSON metadata: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {str(path)!r} metadata must be a JSON object")
    return tensors, meta


def _read_metadata(raw: bytes) -> dict[str, str] | None:
    # safetensors layout: 8-byte little-endian header length, then the JSON header (with "__metadata__")
    if len(raw) < 8:
        raise ValueError("file is shorter than a safetensors header")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or 8 + n > len(raw):
        raise ValueError("header length out of range")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.get("__metadata__")
    return meta if isinstance(meta, dict) else None


def generator_state(g: torch.Generator) -> torch.Tensor:
    """The full state of a torch.Generator as a uint8 tensor (what ``get_state`` returns), on the CPU."""
    return g.get_state().clone()


def set_generator_state(g: torch.Generator, state: torch.Tensor) -> torch.Generator:
    g.set_state(state.to(torch.uint8).cpu().contiguous())
    return g


# ---- estimator mixin ------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """Constructor parameters as JSON: dtypes and devices as strings, tuples as lists, numpy scalars as Python."""
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).replace("torch.", "")}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.random.RandomState):
        return None  # its state is captured by the saved torch.Generator state instead
    raise ValueError(f"cannot store parameter value {value!r} of type {type(value).__name__} in a checkpoint")


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__dtype__"}:
            return getattr(torch, value["__dtype__"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


class CheckpointMixin:
    """``save(path)`` / ``load(path)`` for estimators that implement ``_get_state() -> (tensors, state)`` and
    ``_set_state(tensors, state)``; the constructor parameters travel as JSON next to the state."""

    _tuple_params: tuple[str, ...] = ()

    def _checkpoint_meta(self, state: dict) -> dict:
        params = {k: _jsonable(v) for k, v in self.get_params(deep=False).items()}
        return {"class": type(self).__name__, "params": params, "state": state}

    def save(self, path: str | os.PathLike) -> Path:
        """Save parameters, configuration and training state to ``path`` (safetensors + JSON, written atomically)."""
        tensors, state = self._get_state()
        return save_state(path, tensors, self._checkpoint_meta(state))

    @classmethod
    def _params_from_meta(cls, meta: dict, path) -> dict:
        if meta.get("class") != cls.__name__:
            raise ValueError(f"checkpoint {str(path)!r} holds a {meta.get('class')!r}, not a {cls.__name__}; "
                             f"load it with pymusicrbm.{meta.get('class')}.load")
        params = {k: _from_jsonable(v) for k, v in meta.get("params", {}).items()}
        for old, new in getattr(cls, "_renamed_params", {}).items():  # checkpoints saved under the old names
            if old in params:
                params[new] = params.pop(old)
        for name in cls._tuple_params:
            if isinstance(params.get(name), list):
                params[name] = tuple(params[name])
        return params

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Rebuild an estimator saved with :meth:`save` (no pickle is involved)."""
        tensors, meta = load_state(path)
        params = cls._params_from_meta(meta, path)
        try:
            est = cls(**params)
        except TypeError as e:
            raise ValueError(f"checkpoint {str(path)!r} has parameters this {cls.__name__} does not accept: {e}") \
                from None
        try:
            est._set_state(tensors, meta.get("state", {}))
        except (KeyError, RuntimeError, TypeError) as e:
            raise ValueError(f"checkpoint {str(path)!r} has an incomplete or inconsistent state: {e!r}") from None
        return est
