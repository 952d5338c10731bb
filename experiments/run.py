"""The main job: the whole twin on one run-data folder, and one self-contained report.

    python experiments/run.py                                   # the shipped example
    python experiments/run.py data_dir=DIR                      # your batches (RUN_DATA.md)
    python experiments/run.py 'stages=[validate,calibrate,forecast]'
    python experiments/run.py hydra.run.dir=DIR resume=true     # continue an interrupted job

Stages, in order, each writing the files of its own command into a sub-folder of the run
directory: ``validate`` (the data), ``calibrate`` (the model to ``data_dir``), ``backtest``
(forecast accuracy on donors held out of the calibration), ``forecast`` (the batches still
running: those of ``data_dir`` without a harvest, and those of ``running_dir``), ``optimize``
(a recipe from a recorded batch of ``data_dir``, over the calibrated donor population) and
``facility`` (one Shuttle's month). Then ``report.html``: the key numbers first, the figures,
the resolved config, versions and source revision, everything embedded in the one file
(``python -m twin.report DIR`` renders it again from the folder). ``stages.json`` records each
stage's time and outcome as it finishes; ``resume=true`` skips the stages it lists as done.
"""

from __future__ import annotations

import os

# As in experiments/calibrate.py: cacheable programs, and one XLA CPU device per core so that
# the calibrations split their runs over all cores. Read once, when JAX starts.
if __name__ == "__main__":
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import contextlib
import importlib.util
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import hydra
import jax
import matplotlib
import pandas as pd
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import twin.config  # also registers the config schemas the stage configs start from
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import EXAMPLE_DATA_DIR, REPO_ROOT, exit_on_input_error, resolve_user_path
from twin.calibrate._cache import enable_compilation_cache
from twin.data import RunData, read_run_data
from twin.provenance import write_provenance
from twin.report import STAGE_TITLES, write_report

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)

STAGES = tuple(STAGE_TITLES)
CONFIG_DIR = REPO_ROOT / "configs"
EXAMPLE_RUNNING_DIR = REPO_ROOT / "twin" / "data" / "example_running"
# Keys of the main job's config that every stage config holding them takes over.
SHARED_KEYS = (
    "bounds",
    "model",
    "noise",
    "fit",
    "forecast",
    "downstream",
    "recipe",
    "facility",
    "data_dir",
    "seed",
    "progress",
    "compilation_cache_dir",
)
NEEDS_CALIBRATION = ("forecast", "optimize")


@twin.config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path) -> dict[str, dict]:
    """Run the stages of ``cfg.stages`` into sub-folders of ``out_dir`` and write
    ``report.html``; return ``stages.json``'s record (stage -> outcome, seconds, notes)."""
    stages = _check_stages(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    record_path = out_dir / "stages.json"
    record = json.loads(record_path.read_text()) if cfg.resume and record_path.exists() else {}
    began = time.perf_counter()
    with _hydra_context():
        for number, name in enumerate(stages, start=1):
            header = f"[{number}/{len(stages)}] {name}: {STAGE_TITLES[name]}"
            if record.get(name, {}).get("status") == "done":
                print(f"{header}: done earlier, kept (resume)", flush=True)
                continue
            print(header, flush=True)
            started = time.perf_counter()
            notes = STAGE_RUNNERS[name](cfg, out_dir / name)
            seconds = time.perf_counter() - started
            record[name] = {"status": "done", "seconds": seconds, "notes": notes}
            with atomic_path(record_path) as tmp:
                tmp.write_text(json.dumps(record, indent=2))
            for line in notes:
                print(f"  {line}")
            print(f"  {name} took {seconds:.0f} s", flush=True)
    report = write_report(out_dir)
    print(f"whole job: {time.perf_counter() - began:.0f} s; report: {report}")
    return record


def _check_stages(cfg: DictConfig) -> list[str]:
    stages = [str(name) for name in cfg.stages]
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise TwinInputError(f"stages={stages}: unknown stage(s) {unknown}; choose from {STAGES}")
    if any(name in stages for name in NEEDS_CALIBRATION) and "calibrate" not in stages:
        raise TwinInputError(
            f"stages={stages}: {', '.join(NEEDS_CALIBRATION)} need the calibrate stage"
        )
    return sorted(stages, key=STAGES.index)  # in the pipeline's order


@contextlib.contextmanager
def _hydra_context() -> Iterator[None]:
    """Hydra's config search path, for composing the stage configs (already there inside
    ``@hydra.main``; set up here when ``run`` is called from a notebook or a test)."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def stage_config(name: str, cfg: DictConfig, overrides=(), **values) -> DictConfig:
    """Config ``configs/<name>.yaml`` (with Hydra ``overrides``), the main job's shared keys
    and then ``values`` set (merged into mappings, so a misspelt key is refused)."""
    stage = hydra.compose(config_name=name, overrides=list(overrides))
    try:
        for key in SHARED_KEYS:
            if key in stage and key in cfg:
                stage[key] = cfg[key]
        for key, value in values.items():
            OmegaConf.update(stage, key, value, merge=True)
    except OmegaConfBaseException as error:
        raise TwinInputError(f"stage {name}: {error}".splitlines()[0]) from error
    return stage


def _module(name: str) -> ModuleType:
    """The command ``experiments/<name>.py`` as a module (its ``run`` is the stage)."""
    spec = importlib.util.spec_from_file_location(
        f"cartwin_experiment_{name}", Path(__file__).with_name(f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data_dir(cfg: DictConfig) -> Path:
    return resolve_user_path(str(cfg.data_dir))


def _validate(cfg: DictConfig, out_dir: Path) -> list[str]:
    validate = _module("validate")
    texts = [validate.run(stage_config("validate", cfg))]
    running_dir = _running_dir(cfg)
    if running_dir is not None:
        texts.append(validate.run(stage_config("validate", cfg, data_dir=str(running_dir))))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "summary.txt") as tmp:
        tmp.write_text("\n\n".join(texts) + "\n")
    return texts[0].splitlines()[1:3]


def _calibrate(cfg: DictConfig, out_dir: Path) -> list[str]:
    calibration = _module("calibrate").run(
        stage_config("calibrate", cfg, resume=bool(cfg.resume)), out_dir
    )
    state = "converged" if calibration.converged else "NOT converged (see convergence.csv)"
    return [f"calibration {state}; {len(calibration.run_ids)} runs"]


def _backtest(cfg: DictConfig, out_dir: Path) -> list[str]:
    backtest = OmegaConf.to_container(cfg.backtest, resolve=True)
    metrics = _module("backtest").run(stage_config("backtest", cfg, **backtest), out_dir)
    return [f"{key}: {value:.3g}" for key, value in metrics.items() if isinstance(value, float)][:4]


def _running_dir(cfg: DictConfig) -> Path | None:
    value = cfg.running_dir
    if value is None:
        return None
    if str(value) == "auto":
        shipped = _data_dir(cfg).resolve() == EXAMPLE_DATA_DIR.resolve()
        return EXAMPLE_RUNNING_DIR if shipped else None
    return resolve_user_path(str(value))


def running_batches(cfg: DictConfig) -> tuple[RunData | None, str]:
    """The batches to forecast: the runs of ``data_dir`` without a harvest and every run of
    ``running_dir``; with a sentence saying where they came from."""
    data = read_run_data(_data_dir(cfg))
    frames = [_running_part(data)]
    sources = [f"{len(frames[0].runs)} running in data_dir"]
    running_dir = _running_dir(cfg)
    if running_dir is not None:
        extra = read_run_data(running_dir)
        finished = [r for r in extra.run_ids if extra.is_finished(r)]
        if finished:
            raise TwinInputError(
                f"running_dir={str(running_dir)!r}: runs {finished} have a harvest event; it "
                "holds the batches still running (put finished runs in data_dir)"
            )
        frames.append(extra)
        sources.append(f"{len(extra.runs)} in running_dir {running_dir}")
    clash = set(frames[0].run_ids) & set(frames[-1].run_ids) if len(frames) > 1 else set()
    if clash:
        raise TwinInputError(
            f"running_dir: run ids {sorted(clash)} are also in data_dir; run ids must be unique"
        )
    merged = RunData(
        **{
            table: pd.concat([getattr(frame, table) for frame in frames], ignore_index=True)
            for table in ("runs", "events", "measurements")
        }
    )
    return (merged if len(merged.runs) else None), " and ".join(sources)


def _running_part(data: RunData) -> RunData:
    return data.select([r for r in data.run_ids if not data.is_finished(r)])


def _forecast(cfg: DictConfig, out_dir: Path) -> list[str]:
    data, source = running_batches(cfg)
    if data is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [f"no batch is running ({source}): nothing to forecast"]
    # forecast.yaml's recipe group is optional (null unless chosen): choose one, which the
    # main job's recipe (a shared key) then replaces.
    stage = stage_config(
        "forecast",
        cfg,
        overrides=["recipe=default"],
        calibration=str(out_dir.parent / "calibrate"),
    )
    runs = _module("forecast").run(stage, out_dir, data=data)
    return [f"forecast {len(runs)} running batch(es): {source}"]


def start_run(cfg: DictConfig) -> str:
    """The recorded batch to optimize from: ``start_run_id``, else the first finished run."""
    data = read_run_data(_data_dir(cfg))
    if cfg.start_run_id is not None:
        return str(cfg.start_run_id)  # optimize.py checks that the record holds it
    finished = [r for r in data.run_ids if data.is_finished(r)]
    if not finished:
        raise TwinInputError(
            f"data_dir={str(cfg.data_dir)!r}: no finished run to optimize from; set "
            "start_run_id or leave optimize out of stages"
        )
    return finished[0]


def _optimize(cfg: DictConfig, out_dir: Path) -> list[str]:
    run_id = start_run(cfg)
    stage = stage_config(
        "optimize",
        cfg,
        # the example generator's process (holdout) says nothing about the user's data
        overrides=["~holdout"],
        calibration=str(out_dir.parent / "calibrate"),
        start_events=str(_data_dir(cfg) / "events.csv"),
        start_run_id=run_id,
        optimize=OmegaConf.to_container(cfg.optimize, resolve=True),
    )
    result = _module("optimize").run(stage, out_dir)
    return [f"optimized from run {run_id}", *result.warnings]


def _facility(cfg: DictConfig, out_dir: Path) -> list[str]:
    summary = _module("facility").run(stage_config("facility", cfg), out_dir)
    return [f"{summary['batches_started']} batches started, bottleneck {summary['bottleneck']}"]


STAGE_RUNNERS: dict[str, Callable[[DictConfig, Path], list[str]]] = {
    "validate": _validate,
    "calibrate": _calibrate,
    "backtest": _backtest,
    "forecast": _forecast,
    "optimize": _optimize,
    "facility": _facility,
}
assert tuple(STAGE_RUNNERS) == STAGES


@hydra.main(config_path="../configs", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validate, calibrate, backtest, forecast, optimize, the factory; one report.html."""
    enable_compilation_cache(cfg.compilation_cache_dir)
    with exit_on_input_error(cfg):
        run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
