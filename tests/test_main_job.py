"""The main job (experiments/run.py) and its report (twin.report)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from twin import TwinInputError
from twin.data import read_run_data, write_run_data
from twin.report import render_report, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "twin" / "data" / "example"


@pytest.fixture(scope="module")
def main_job():
    spec = importlib.util.spec_from_file_location("main_job", REPO_ROOT / "experiments/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(overrides=()):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        return compose(config_name="run", overrides=list(overrides))


def _fake_run_folder(root: Path) -> Path:
    """A run folder as the main job leaves it, with made-up numbers and one figure."""
    (root / "backtest").mkdir(parents=True)
    (root / "forecast").mkdir()
    metrics = {"horizon_h": 60.0, "runs": 30, "mean_relative_error": 0.1234, "coverage_90": 0.5}
    (root / "backtest" / "metrics.json").write_text(json.dumps(metrics))
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1], lw=8, color="tab:red")
    fig.savefig(root / "backtest" / "backtest.png")
    plt.close(fig)
    pd.DataFrame(
        {
            "run_id": ["P001"],
            "now_h": [120.0],
            "planned_harvest_time_h": [240.0],
            "p_conforming_at_planned": [0.5],
            "recommended_harvest_time_h": [216.0],
            "p_conforming_at_recommended": [0.9],
        }
    ).to_csv(root / "forecast" / "runs.csv", index=False)
    stages = {
        "backtest": {"status": "done", "seconds": 12.0, "notes": ["a <note>"]},
        "forecast": {"status": "done", "seconds": 3.0, "notes": []},
    }
    (root / "stages.json").write_text(json.dumps(stages))
    (root / "provenance.json").write_text(json.dumps({"git_revision": "abc123", "seed": 0}))
    (root / "resolved_config.yaml").write_text("data_dir: somewhere\n")
    return root


def test_report_puts_the_key_numbers_first_and_embeds_the_figures(tmp_path):
    page = render_report(_fake_run_folder(tmp_path))
    keys = page.index("Key numbers")
    assert keys < page.index("12.3 %") < page.index("<h2 id='backtest'>")  # MRE, as a key
    assert "bad'>50 %" in page  # coverage below 80 % is flagged
    assert "P001: harvest at" in page and "216 h" in page
    assert "data:image/png;base64," in page  # the figure is inside the file
    assert "a &lt;note&gt;" in page  # text from the folder is escaped
    assert "abc123" in page and "data_dir: somewhere" in page  # provenance and config last
    assert "<h2 id='calibrate'>" not in page  # a stage that did not run has no section


def _screenshot(page: Path, png: Path) -> np.ndarray:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return plt.imread(png)


def test_report_renders_in_a_real_browser(tmp_path):
    page = write_report(_fake_run_folder(tmp_path / "run"))
    pixels = _screenshot(page, tmp_path / "report.png")[..., :3]
    ink = (pixels.min(axis=-1) < 0.5).mean()  # dark pixels: text, table rules
    red = ((pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.4) & (pixels[..., 2] < 0.4)).mean()
    assert ink > 0.005, "the page is blank"
    assert red > 1e-4, "the embedded figure (a thick red line) was not drawn"


def test_running_batches_come_from_data_dir_and_the_running_folder(main_job, tmp_path):
    example = read_run_data(EXAMPLE)
    data = example.select(example.run_ids[:3]).as_of(100.0)  # three runs, none harvested
    write_run_data(data, tmp_path / "mine")
    cfg = _config([f"data_dir={tmp_path / 'mine'}"])  # running_dir=auto: none for own data
    running, source = main_job.running_batches(cfg)
    assert running.run_ids == example.run_ids[:3] and "0 in running_dir" not in source

    cfg = _config()  # the shipped example: no run running, three in example_running
    running, source = main_job.running_batches(cfg)
    assert len(running.run_ids) == 3 and "running_dir" in source
    assert not any(running.is_finished(r) for r in running.run_ids)

    cfg = _config([f"running_dir={EXAMPLE}"])  # finished runs are not running batches
    with pytest.raises(TwinInputError, match="harvest event"):
        main_job.running_batches(cfg)


def test_stage_configs_take_the_main_jobs_settings(main_job):
    cfg = _config(["fit.max_steps=7", "backtest.folds=4", "optimize.steps=3"])
    bad = _config(["+optimize.stpes=3"])
    with main_job._hydra_context():
        calibrate = main_job.stage_config("calibrate", cfg)
        backtest = main_job.stage_config("backtest", cfg, **cfg.backtest)
        optimize = main_job.stage_config("optimize", cfg, optimize=dict(cfg.optimize))
        with pytest.raises(TwinInputError, match="stpes"):
            main_job.stage_config("optimize", bad, optimize=dict(bad.optimize))
    assert calibrate.fit.max_steps == 7 and backtest.fit.max_steps == 7
    assert backtest.folds == 4 and optimize.optimize.steps == 3


def test_unknown_stages_and_a_missing_calibration_are_refused(main_job):
    with pytest.raises(TwinInputError, match="unknown stage"):
        main_job._check_stages(_config(["stages=[validate,calibrat]"]))
    with pytest.raises(TwinInputError, match="need the calibrate stage"):
        main_job._check_stages(_config(["stages=[forecast]"]))
    order = main_job._check_stages(_config(["stages=[facility,validate]"]))
    assert order == ["validate", "facility"]


@pytest.mark.slow
def test_main_job_runs_every_stage_and_resumes(main_job, tmp_path, capsys):
    example = read_run_data(EXAMPLE)
    runs = [r for r in example.run_ids if example.donor_of(r) in {"D01", "D02", "D03", "D04"}]
    write_run_data(example.select(runs), tmp_path / "data")
    cfg = _config(["+experiment=tiny_run", f"data_dir={tmp_path / 'data'}", "progress=false"])
    record = main_job.run(cfg, tmp_path / "out")
    assert list(record) == list(main_job.STAGES)
    assert all(stage["status"] == "done" for stage in record.values())
    for name in ("calibrate/calibration.nc", "backtest/metrics.json", "optimize/comparison.csv"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "no batch is running" in " ".join(record["forecast"]["notes"])
    page = (tmp_path / "out" / "report.html").read_text()
    assert "forecast error at harvest" in page and "P(conforming), optimized recipe" in page

    resumed = OmegaConf.merge(cfg, {"resume": True})
    capsys.readouterr()
    main_job.run(resumed, tmp_path / "out")
    assert capsys.readouterr().out.count("done earlier, kept (resume)") == len(main_job.STAGES)


def test_report_command_renders_a_folder_again_or_says_what_it_needs(tmp_path, capsys):
    from twin.report import main

    assert main([str(tmp_path / "missing")]) == 2
    assert "usage: python -m twin.report RUN_DIR" in capsys.readouterr().err
    folder = _fake_run_folder(tmp_path / "run")
    assert main([str(folder)]) == 0
    assert (folder / "report.html").is_file()
