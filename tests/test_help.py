"""The entry points' --help: a description of the script and only the config groups it uses."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_calibrate_help_describes_the_script_and_its_groups():
    # --help composes the config and exits before the task function runs: no JAX work.
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "calibrate.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("Calibrate the kinetic model to a run-data folder"), text[:300]
    assert "python experiments/calibrate.py data_dir=DIR" in text
    groups = text.split("Config groups", 1)[1].split("== Config", 1)[0]
    listed = {line.split()[0] for line in groups.splitlines()[1:] if line.strip()}
    assert listed == {"model", "noise", "fit", "forecast", "bounds"}
    # Hydra's default listing of every group in configs/ (facility, sweep, ...) is gone.
    assert "facility:" not in text
    assert "powered by Hydra" not in text
    assert "data_dir: twin/data/example" in text  # the composed config follows
