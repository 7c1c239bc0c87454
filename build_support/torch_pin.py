"""Build-time metadata provider (``[[tool.dynamic-metadata]]`` in pyproject.toml): pins the torch a wheel was built
against.

A compiled extension built for one torch minor release does not load into another (the C++ ABI of libtorch changes
between minors), so a wheel declares ``torch==<major>.<minor>.*`` of the torch installed at build time (the build runs
with ``--no-build-isolation``, so that is the torch CMake compiles against). The constraint has no local version label,
so it matches the CPU and the CUDA builds of that release alike: the CUDA variant of a wheel additionally needs a CUDA
torch, which pip cannot express, and the import check in ``pymusicrbm._extension`` says so. An sdist keeps the loose
requirement: the wheel built from it is pinned when it is built.
"""
from __future__ import annotations

import re
from importlib import metadata

__all__ = ["TorchPin", "torch_requirement"]

SDIST_REQUIREMENT = "torch>=2.4"


def torch_requirement(version: str) -> str:
    """``'2.13.0+cpu'`` -> ``'torch==2.13.*'``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"cannot read a major.minor release from the installed torch version {version!r}")
    return f"torch=={match[1]}.{match[2]}.*"


class TorchPin:
    """The provider: adds the torch requirement to ``[project].dependencies`` (which lists everything else)."""

    def __init__(self):
        self.state = None

    def build_state(self, state: str) -> None:
        self.state = state

    def dynamic_metadata(self, settings, project) -> dict:
        if self.state == "sdist":
            return {"dependencies": [SDIST_REQUIREMENT]}
        try:
            version = metadata.version("torch")
        except metadata.PackageNotFoundError:
            raise RuntimeError(
                "pymusicrbm is built against the torch already installed, and this Python has none. Install torch "
                "first (e.g. `pip install torch==2.13.0`), then build with `pip install --no-build-isolation .` or "
                "`pip wheel --no-build-isolation --no-deps .`") from None
        return {"dependencies": [torch_requirement(version)]}

    def dynamic_wheel(self, settings) -> dict:
        # the sdist's loose requirement becomes a pin in each wheel built from it
        return {"dependencies": True}
