"""Importing the package is cheap and changes nothing process-wide; the command sets its OpenMP policy itself."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_changes_no_process_settings_and_loads_no_torch():
    assert _python("import os, sys, pymusicrbm; print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'), "
                   "os.environ.get('GOMP_SPINCOUNT'))") == "False None None"


def test_names_load_on_first_use():
    code = ("import pymusicrbm, torch; r = pymusicrbm.RBM; "
            "print(r.__module__, hasattr(torch.ops.pymusicrbm, 'cd_step_'), sorted(pymusicrbm.__all__)[:3])")
    assert _python(code) == "pymusicrbm.rbm True ['ConvDBN', 'ConvRBM', 'ConvVAE']"


def test_command_sets_a_short_omp_spin_before_torch_loads():
    code = ("import os, sys\nfrom pymusicrbm import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    assert _python(code).splitlines()[-1] == "1000"
    # the user's own OpenMP policy wins
    code = "import os\nos.environ['OMP_WAIT_POLICY'] = 'ACTIVE'\n" + code
    assert _python(code).splitlines()[-1] == "None"


# --- the compiled extension and the torch it was built for (pymusicrbm._extension, build_support/torch_pin.py) ---

def _import_error(code: str) -> str:
    """Run ``code`` then ``import pymusicrbm.ops`` in a fresh interpreter; return the ImportError's message."""
    out = subprocess.run([sys.executable, "-c", code + "\ntry:\n    import pymusicrbm.ops\nexcept ImportError as e:\n"
                          "    print('ImportError:', e)\nelse:\n    print('imported')"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _fake_build_info(torch_version: str) -> str:
    return ("import sys, types\n"
            f"sys.modules['pymusicrbm._build_info'] = types.SimpleNamespace(TORCH_VERSION={torch_version!r}, "
            "CUDA_VERSION='')\n")


def _other_minor(version: str) -> str:
    major, minor = (int(x) for x in version.split(".")[:2])
    return f"{major}.{minor - 1 if minor else minor + 1}.3"


def test_extension_built_for_another_torch_minor_is_refused_naming_both_versions():
    import torch
    built = _other_minor(torch.__version__)
    msg = _import_error(_fake_build_info(built))
    assert msg.startswith("ImportError: ")
    assert f"built for torch {built}" in msg and f"torch {torch.__version__} is installed" in msg
    assert "pip install --no-build-isolation -e ." in msg and f"torch=={built.rsplit('.', 1)[0]}.*" in msg


def test_extension_from_another_patch_release_of_the_same_minor_loads():
    import torch
    major, minor = torch.__version__.split(".")[:2]
    msg = _import_error(_fake_build_info(f"{major}.{minor}.99"))
    assert msg == "imported"


def test_library_failing_to_load_names_both_versions_and_the_loader_error():
    import torch
    # no version mismatch in the build info (as when it is absent), but the library does not link: a fake loader
    # raises what the dynamic linker says for a library built against another libtorch
    code = (_fake_build_info(torch.__version__) + "import importlib.abc, importlib.machinery\n"
            "class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        return importlib.machinery.ModuleSpec(name, self) if name == 'pymusicrbm._C' else None\n"
            "    def create_module(self, spec):\n"
            "        raise ImportError('_C.so: undefined symbol: _ZN3c1017RegisterOperatorsD1Ev')\n"
            "    def exec_module(self, module):\n"
            "        pass\n"
            "sys.meta_path.insert(0, Broken())")
    msg = _import_error(code)
    assert "failed to load into torch " + torch.__version__ in msg
    assert f"built for torch {torch.__version__}" in msg and "undefined symbol: _ZN3c1017RegisterOperatorsD1Ev" in msg
    assert "pip install --no-build-isolation -e ." in msg


def test_cuda_build_needs_a_cuda_torch():
    from pymusicrbm._extension import check_build
    check_build("2.13.0+cu130", "2.13.1+cu130", "13.0", "13.0")
    check_build(None, "2.13.0", "13.0", None)  # no build info: nothing to compare
    with pytest.raises(ImportError, match=r"CUDA 13\.0 kernels for torch 2\.13\.0\+cu130.*2\.13\.0\+cpu is a CPU-only"):
        check_build("2.13.0+cu130", "2.13.0+cpu", "13.0", None)
    with pytest.raises(ImportError, match=r"built for torch 2\.12\.1, but torch 2\.13\.0 is installed"):
        check_build("2.12.1", "2.13.0", "", None)


def test_extension_loops_run_on_torch_openmp_pool():
    # at::parallel_for is inline: an extension compiled without OpenMP runs every kernel loop on one thread, silently
    import torch
    if not torch._C.has_openmp:
        pytest.skip("this torch does not use OpenMP")
    from pymusicrbm import _extension
    lib = Path(_extension._C.__file__)  # (an editable install keeps it outside the package folder)
    data = lib.read_bytes()
    assert b"GOMP_parallel" in data or b"__kmpc_fork_call" in data, f"{lib.name} was compiled without OpenMP"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_a_small_first_step_leaves_torch_thread_count_alone():
    # a step small enough to run on one thread, as the process's first parallel call, once sized ATen's OpenMP team
    # 1 for good (every later op, GEMMs included, single-threaded)
    small = ("import torch, pymusicrbm.ops as ops\n"
             "p = [torch.zeros(20, 5), torch.zeros(20), torch.zeros(5)]\n"
             "ops.cd_step_(*p, *[torch.zeros_like(t) for t in p], torch.ones(4, 20))\n"
             "print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    run = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300) for code in (small, "import torch\nprint(torch.get_num_threads())")]
    assert all(r.returncode == 0 for r in run), [r.stderr for r in run]
    after_small, default = (int(r.stdout.split()[-1]) for r in run)
    assert default > 1 and after_small == default


def _torch_pin():
    spec = importlib.util.spec_from_file_location("torch_pin", ROOT / "build_support" / "torch_pin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheel_metadata_pins_the_torch_minor_it_was_built_against():
    import torch
    from packaging.requirements import Requirement
    from packaging.version import Version

    provider = _torch_pin().TorchPin()
    provider.build_state("wheel")
    (req,) = (Requirement(r) for r in provider.dynamic_metadata({}, {})["dependencies"])
    running = Version(torch.__version__)
    assert req.name == "torch" and running in req.specifier
    # a CUDA build of the same release matches too; the next minor and the previous one do not
    assert Version(f"{running.major}.{running.minor}.{running.micro + 1}+cu130") in req.specifier
    assert Version(f"{running.major}.{running.minor + 1}.0") not in req.specifier
    assert Version(_other_minor(torch.__version__)) not in req.specifier
    # an sdist keeps the loose requirement (its wheels are pinned when built), and says it is dynamic
    provider.build_state("sdist")
    assert provider.dynamic_metadata({}, {})["dependencies"] == ["torch>=2.4"]
    assert provider.dynamic_wheel({}) == {"dependencies": True}
    with pytest.raises(ValueError, match="major.minor"):
        _torch_pin().torch_requirement("nightly")


def test_pyproject_leaves_torch_to_the_build_time_provider():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" in project["project"]["dynamic"]
    assert not [d for d in project["project"]["dependencies"] if d.startswith("torch")]
    (entry,) = project["tool"]["dynamic-metadata"]
    assert entry["provider"] == {"path": "build_support", "module": "torch_pin:TorchPin"}
