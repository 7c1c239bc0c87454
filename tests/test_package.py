"""Importing the package is cheap and changes nothing process-wide; the command sets its OpenMP policy itself."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_changes_no_process_settings_and_loads_no_torch():
    assert _python("import os, sys, pymusicrbm; print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))") \
        == "False None"


def test_names_load_on_first_use():
    code = ("import pymusicrbm, torch; r = pymusicrbm.RBM; "
            "print(r.__module__, hasattr(torch.ops.pymusicrbm, 'cd_step_'), sorted(pymusicrbm.__all__)[:3])")
    assert _python(code) == "pymusicrbm.rbm True ['ConvDBN', 'ConvRBM', 'ConvVAE']"


def test_command_sets_passive_omp_before_torch_loads():
    code = ("import os, sys\nfrom pymusicrbm import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    assert _python(code).splitlines()[-1] == "PASSIVE"
