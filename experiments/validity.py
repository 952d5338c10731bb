"""Validity bench: the twin's forecasts on processes it was not built from (issue 13).

    python experiments/validity.py                          # 4 plants + the shipped example
    python experiments/validity.py plants=[signal] example=false fit.n_starts=2

For each plant (``twin.plants``) and the shipped example: calibrate the twin on the training
runs, forecast each held-out donor's run from its data cut ``horizon_h`` before harvest, and
compare viable CAR+ cells at harvest with what was measured, beside the oracle (the process's
own equations and donor population, fitting only the held-out run's donor parameters: the
error floor) and the spreadsheet forecast. Prints one table; writes ``validity.csv`` (the
table), ``validity_runs.csv`` (every forecast), ``validity.json``, ``validity.png`` and the
resolved config and provenance into the run directory. Data, calibrations and oracle fits are
cached there: running again into the same directory (``hydra.run.dir=...``) resumes.

The bench is noisy (about a point of MRE per plant and draw), so the table gives twin/oracle
with a bootstrap 90 % interval, and ``compare_to=<earlier run folder>`` prints and writes
(``validity_paired.csv``) each MRE's change against that run, paired over the same held-out
runs (mean ± standard error): the way to judge a setting against the defaults.
``time_ahead=true`` also scores the twin's forecast of the viable count against each plant's
true count from the last sample before the cut to harvest (``validity_time_ahead.csv``): is
the miss in the state the forecast starts from, or in what comes after? Where the twin and
the oracle both ran, ``validity_drivers.csv`` says which true traits of the held-out runs
(donor parameters, harvest time) the twin's departure from the oracle follows.
"""

from __future__ import annotations

import os

# As in experiments/calibrate.py: one XLA CPU device per core for the calibrations.
if __name__ == "__main__":
    os.environ.setdefault("JAX_NUM_CPU_DEVICES", str(os.cpu_count() or 1))

import hashlib
import json
import logging
from pathlib import Path

import hydra
import jax
import matplotlib
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.calibrate import calibration_from_config
from twin.data import read_run_data, write_run_data
from twin.forecast import forecast
from twin.forecast._backtest import calibrate_and_forecast, calibrate_cached, data_fingerprint
from twin.forecast._io import truncate
from twin.plants import PLANTS, get_plant
from twin.plants._bench import (
    METHODS,
    by_seed_table,
    format_by_seed,
    format_table,
    method_rows,
    oracle_forecasts,
    plant_data,
    plot_validity,
    summary_table,
)
from twin.plants._compare import format_changes, paired_changes
from twin.plants._drivers import error_drivers, format_drivers, run_traits
from twin.plants._oracle import PlantModel
from twin.plants._spreadsheet import spreadsheet_forecast
from twin.plants._time_ahead import (
    format_time_ahead,
    time_ahead_errors,
    time_ahead_table,
    true_viable_cells,
)
from twin.plants._twin_model import TwinModel
from twin.plots import save_figure
from twin.provenance import write_provenance
from twin.virtual import AssayPlan, generate_dataset

matplotlib.use("Agg")  # figures go to files (the library leaves the backend to its caller)
jax.config.update("jax_enable_x64", True)
log = logging.getLogger(__name__)


def _check(cfg: DictConfig) -> None:
    unknown = sorted(set(cfg.plants) - set(PLANTS))
    if unknown:
        raise TwinInputError(f"plants: unknown {unknown} (choose from {sorted(PLANTS)})")
    bad = sorted(set(cfg.methods) - set(METHODS))
    if bad:
        raise TwinInputError(f"methods: unknown {bad} (choose from {list(METHODS)})")
    if not cfg.horizon_h > 0:
        raise TwinInputError(f"horizon_h={cfg.horizon_h!r}: must be > 0")
    if not cfg.plants and not cfg.example:
        raise TwinInputError("nothing to do: plants=[] and example=false")
    if cfg.time_ahead not in (True, False):
        raise TwinInputError(f"time_ahead={cfg.time_ahead!r}: true or false")
    if cfg.time_ahead and "twin" not in cfg.methods:
        raise TwinInputError(
            f"time_ahead=true scores the twin's forecasts, but methods={list(cfg.methods)} "
            "leaves the twin out"
        )
    seeds(cfg)
    reference_runs(cfg)


def reference_runs(cfg: DictConfig) -> Path | None:
    """The ``validity_runs.csv`` that ``compare_to`` names (a bench run's folder or the file
    itself); ``None`` when it is not set."""
    if cfg.compare_to is None:
        return None
    path = resolve_user_path(str(cfg.compare_to))
    if path.is_dir():
        path = path / "validity_runs.csv"
    if not path.is_file():
        raise TwinInputError(
            f"compare_to={cfg.compare_to}: no {path.name} there (give an earlier bench run's "
            "folder, e.g. outputs/validity/<date>, or its validity_runs.csv)"
        )
    return path


def example_data(cfg: DictConfig, root: Path):
    """The shipped example as a bench: train = its runs; test = one run each of
    ``n_test_donors`` new donors from its own generator config (another seed), with truth.
    **Returns** ``(train_dir, test_dir, oracle model)``."""
    train_dir = resolve_user_path(str(cfg.example_dir))
    gen = OmegaConf.load(train_dir / "generate_config.yaml")

    def typed(schema, node):  # the generator's YAML read against the twin's schemas
        return OmegaConf.merge(twin_config._writable(schema), node)

    params, structure, solver = twin_config.model_from_config(
        typed(twin_config.ModelConfig, gen.model)
    )
    noise = twin_config.noise_from_config(typed(twin_config.AssayNoise, gen.noise))
    recipe = twin_config.recipe_from_config(typed(twin_config.Recipe, gen.recipe))
    donor_sd = OmegaConf.to_container(gen.population.donor_sd)
    test_dir = root / "example" / "test"
    seed = int(gen.seed) + 1000 + int(cfg.seed)
    stamp = {  # the twin's source too: its generator draws donors by parameter-table position
        "seed": seed,
        "n_test_donors": int(cfg.n_test_donors),
        "structure": structure.as_dict(),
        "twin_source": _twin_source_digest(),
    }
    meta = test_dir / "bench.json"
    if not (meta.is_file() and json.loads(meta.read_text()) == stamp):
        virtual = generate_dataset(
            seed,
            params,
            donor_sd,
            recipe,
            n_donors=int(cfg.n_test_donors),
            runs_per_donor=1,
            grid=OmegaConf.to_container(gen.design.grid),
            uniform=OmegaConf.to_container(gen.design.uniform),
            noise=noise,
            plan=AssayPlan(
                variables=tuple(gen.assays.variables),
                transduction_readout_delay_h=gen.assays.transduction_readout_delay_h,
            ),
            structure=structure,
            solver=solver,
            capacity_ml=gen.cartridge_capacity_ml,
            run_id_format="H{run:03d}",
            donor_id_format="N{donor:02d}",
        )
        write_run_data(
            virtual.run_data,
            test_dir,
            extra_files={
                "true_parameters.csv": virtual.true_parameters.to_csv(index=False),
                "bench.json": json.dumps(stamp),
            },
        )
    return train_dir, test_dir, TwinModel(params, donor_sd, structure, solver, noise)


def _twin_source_digest() -> str:
    """A digest of the twin's Python source (the bench's own package left out)."""
    package = Path(twin_config.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if "plants" not in path.relative_to(package).parts:
            digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
    return digest.hexdigest()


def calibration_settings(cfg: DictConfig) -> dict:
    """What a calibration and the twin's forecasts depend on besides the data: the settings
    and the twin's own source (a changed model, fit or forecast code never reuses a stale
    cache). The forecast settings too: calibration learns its discrepancy from forecasts."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True)
        for key in ("model", "noise", "fit", "forecast")
    } | {"seed": cfg.seed, "twin_source": _twin_source_digest()}


def _true_parameters(test_dir: Path) -> pd.DataFrame | None:
    path = test_dir / "true_parameters.csv"
    return pd.read_csv(path) if path.is_file() else None


def _true_harvest(test_dir: Path) -> pd.DataFrame | None:
    path = test_dir / "true_harvest.csv"
    return pd.read_csv(path) if path.is_file() else None


def seeds(cfg: DictConfig) -> list[int] | None:
    """The draws of the bench ``seed`` asks for: ``None`` for one seed (``seed=0``), the list
    for several (``seed=[0,1,2]``)."""
    if isinstance(cfg.seed, int):
        return None
    values = list(cfg.seed) if OmegaConf.is_list(cfg.seed) else [cfg.seed]
    if not values or not all(isinstance(v, int) for v in values):
        raise TwinInputError(f"seed={cfg.seed!r}: an integer, or a list of integers")
    if len(set(values)) != len(values):
        raise TwinInputError(f"seed={values}: a seed is listed twice")
    return values


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Run the bench; write the outputs into ``out_dir``; return the table as records.
    With several seeds (``seed=[0,1,2]``): one bench per draw in ``out_dir/seed_<N>`` (data
    in ``<data_root>/seed_<N>``), then the table pooled over the draws' held-out runs in
    ``out_dir`` and the per-draw ratios in ``validity_by_seed.csv``."""
    _check(cfg)
    # Build every config object first: a bad override fails before any work.
    twin_config.model_from_config(cfg.model)
    twin_config.noise_from_config(cfg.noise)
    calibration_from_config(cfg.fit)
    twin_config.downstream_from_config(cfg.downstream)
    twin_config.forecast_settings_from_config(cfg.forecast)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = out_dir / "data" if cfg.data_root is None else resolve_user_path(str(cfg.data_root))
    draws = seeds(cfg)
    if draws is None:
        write_provenance(out_dir, cfg, seed=cfg.seed)
        return _compare(cfg, out_dir, _run_draw(cfg, out_dir, root))
    write_provenance(out_dir, cfg, seed=None)  # each draw's folder records its own seed
    frames, converged, ahead, traits = [], {}, [], []
    for seed in draws:
        if cfg.progress:
            log.info("draw seed=%d of %s", seed, draws)
        one = cfg.copy()
        with open_dict(one):
            one.seed = seed
        draw_dir = out_dir / f"seed_{seed}"
        draw_dir.mkdir(parents=True, exist_ok=True)
        write_provenance(draw_dir, one, seed=seed)
        result = _run_draw(one, draw_dir, root / f"seed_{seed}")
        frames.append(result["results"].assign(seed=seed))
        converged[seed] = result["converged"]
        if "time_ahead" in result:
            ahead.append(result["time_ahead"].assign(seed=seed))
        traits += [t.assign(seed=seed) for t in result["traits"]]
    results = pd.concat(frames, ignore_index=True)
    by_seed = by_seed_table(results, converged)
    with atomic_path(out_dir / "validity_by_seed.csv") as tmp:
        by_seed.to_csv(tmp, index=False)
    pooled = {}  # a bench converged when it did on every draw; unknown if on any it is
    for bench in results["bench"].unique():
        flags = [draw.get(bench) for draw in converged.values()]
        pooled[bench] = None if None in flags else all(flags)
    out = _write(out_dir, [results], pooled, cfg.horizon_h, figure=True)
    out |= {"by_seed": by_seed, "by_seed_text": format_by_seed(by_seed)}
    out |= _write_time_ahead(out_dir, ahead)
    out |= _write_drivers(out_dir, results, traits)
    return _compare(cfg, out_dir, out)


def _compare(cfg: DictConfig, out_dir: Path, out: dict) -> dict:
    """With ``compare_to``: every bench and method against the same held-out runs of that
    earlier run, into ``validity_paired.csv`` (and ``out["paired"]``, ``out["paired_text"]``)."""
    path = reference_runs(cfg)
    if path is None:
        return out
    try:
        reference = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TwinInputError(f"compare_to: {path} is not a readable CSV ({err})") from None
    paired = paired_changes(out["results"], reference, source=str(path))
    with atomic_path(out_dir / "validity_paired.csv") as tmp:
        paired.to_csv(tmp, index=False)
    return out | {"paired": paired, "paired_text": format_changes(paired, str(path))}


def _run_draw(cfg: DictConfig, out_dir: Path, root: Path) -> dict:
    """One draw of the bench (``cfg.seed`` an integer) into ``out_dir``, data under ``root``."""
    fit_settings = calibration_settings(cfg)

    benches = []
    for name in cfg.plants:
        train_dir, test_dir = plant_data(
            name,
            root,
            seed=int(cfg.seed),
            n_train_donors=int(cfg.n_train_donors),
            runs_per_donor=int(cfg.runs_per_donor),
            n_test_donors=int(cfg.n_test_donors),
        )
        benches.append((name, train_dir, test_dir, PlantModel(get_plant(name))))
    if cfg.example:
        benches.append(("example", *example_data(cfg, root)))

    frames, converged, ahead, traits = [], {}, [], []
    for name, train_dir, test_dir, model in benches:
        train, test = read_run_data(train_dir), read_run_data(test_dir)
        truth = _true_harvest(test_dir)
        true_parameters = _true_parameters(test_dir)
        if true_parameters is not None:
            traits.append(run_traits(test, true_parameters).assign(bench=name))
        if "spreadsheet" in cfg.methods:
            sheet = spreadsheet_forecast(train, test, cfg.horizon_h)
            frames.append(method_rows("spreadsheet", sheet, test, truth).assign(bench=name))
        if "oracle" in cfg.methods:
            oracle = oracle_forecasts(
                model,
                test,
                cfg.horizon_h,
                out_dir / "oracle" / name,
                max_nfev=int(cfg.oracle.max_nfev),
                processes=int(cfg.oracle.processes),
                progress=log.info if cfg.progress else None,
            )
            rows = method_rows("oracle", oracle, test, truth).assign(bench=name)
            rows["oracle_converged"] = (
                oracle.set_index("run_id")["converged"].reindex(rows["run_id"]).to_numpy()
            )
            frames.append(rows)
        if "twin" in cfg.methods:
            if cfg.progress:
                log.info("the twin on %s (%d training runs)", name, len(train.run_ids))
            forecasts, converged[name] = _twin(cfg, name, train, test, out_dir, fit_settings)
            frames.append(method_rows("twin", forecasts, test, truth).assign(bench=name))
            if cfg.time_ahead:
                ahead.append(
                    _time_ahead(
                        cfg, name, train, test, true_parameters, model, out_dir, fit_settings
                    )
                )
        _write(out_dir, frames, converged, cfg.horizon_h)  # the table so far, after each bench

    out = _write(out_dir, frames, converged, cfg.horizon_h, figure=True)
    out |= _write_time_ahead(out_dir, ahead) | _write_drivers(out_dir, out.get("results"), traits)
    return out | {"converged": converged, "traits": traits}


def _write_drivers(out_dir: Path, results: pd.DataFrame | None, traits: list) -> dict:
    """``validity_drivers.csv``: which true traits of the held-out runs the twin's departure
    from the oracle follows (:mod:`twin.plants._drivers`), when both ran on a bench with
    known truth."""
    if not traits or results is None:
        return {}
    drivers = error_drivers(results, pd.concat(traits, ignore_index=True))
    if drivers.empty:
        return {}
    with atomic_path(out_dir / "validity_drivers.csv") as tmp:
        drivers.to_csv(tmp, index=False)
    return {"drivers": drivers, "drivers_text": format_drivers(drivers)}


def _fit_arguments(cfg, name: str, out_dir: Path, fit_settings: dict) -> dict:
    """How the twin is calibrated on a bench's training runs (and where that is cached)."""
    params, structure, solver = twin_config.model_from_config(cfg.model)
    return {
        "fit": calibration_from_config(cfg.fit),
        "model_parameters": params,
        "structure": structure,
        "solver": solver,
        "noise": twin_config.noise_from_config(cfg.noise),
        "settings": twin_config.forecast_settings_from_config(cfg.forecast),
        "seed": int(cfg.seed),
        "cache_dir": out_dir / "calibrations" / name,
        "fit_settings": fit_settings,
    }


def _time_ahead(
    cfg, name, train, test, true_parameters, model, out_dir, fit_settings
) -> pd.DataFrame | None:
    """The twin's forecast of the viable count against the true one at every sample from the
    last visible one to harvest (:mod:`twin.plants._time_ahead`), from the bench's cached
    calibration; ``None`` (said once) for a bench without its runs' true parameters
    (``true_parameters.csv``)."""
    if true_parameters is None:
        log.info("time_ahead: %s has no true_parameters.csv: left out", name)
        return None
    arguments = _fit_arguments(cfg, name, out_dir, fit_settings)
    calibration = calibrate_cached(train, **arguments)
    truncated = truncate(test, list(test.run_ids), cfg.horizon_h)
    downstream = twin_config.downstream_from_config(cfg.downstream)
    result = forecast(calibration, truncated, downstream, arguments["settings"])
    truth = true_viable_cells(model, test, true_parameters)
    return time_ahead_errors(result, test, truth, cfg.horizon_h).assign(bench=name)


def _write_time_ahead(out_dir: Path, frames) -> dict:
    """``validity_time_ahead.csv`` (every run and sample) and its table, when there are any."""
    frames = [f for f in frames if f is not None]
    if not frames:
        return {}
    errors = pd.concat(frames, ignore_index=True)
    with atomic_path(out_dir / "validity_time_ahead.csv") as tmp:
        errors.to_csv(tmp, index=False)
    table = time_ahead_table(errors)
    return {"time_ahead": errors, "time_ahead_text": format_time_ahead(table)}


def _twin(cfg, name, train, test, out_dir, fit_settings) -> tuple[pd.DataFrame, bool]:
    """The twin's forecasts of ``test`` after calibrating on ``train``, and whether the
    calibration converged; kept in ``twin/<name>.csv`` while the data and settings match."""
    key = json.dumps(
        {
            "train": data_fingerprint(train),
            "test": data_fingerprint(test),
            "horizon_h": float(cfg.horizon_h),
            **fit_settings,
            **{k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("forecast", "downstream")},
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = out_dir / "twin" / f"{name}.csv"
    stamp = out_dir / "twin" / f"{name}.fingerprint"
    if path.is_file() and stamp.is_file():
        converged, _, found = stamp.read_text().strip().partition(" ")
        if found == digest:
            return pd.read_csv(path), converged == "1"
    calibration, twin_rows = calibrate_and_forecast(
        train,
        test,
        cfg.horizon_h,
        downstream=twin_config.downstream_from_config(cfg.downstream),
        **_fit_arguments(cfg, name, out_dir, fit_settings),
    )
    forecasts = pd.DataFrame(twin_rows)[["run_id", "median", "lower_90", "upper_90"]]
    converged = bool(calibration.converged)
    with atomic_path(path) as tmp:
        forecasts.to_csv(tmp, index=False)
    stamp.write_text(f"{int(converged)} {digest}\n")
    return forecasts, converged


def _write(out_dir: Path, frames, converged, horizon_h: float, figure: bool = False) -> dict:
    """Write the table and every forecast so far (atomically); the figure when asked."""
    if not frames:
        return {}
    results = pd.concat(frames, ignore_index=True)
    table = summary_table(results, converged)
    with atomic_path(out_dir / "validity_runs.csv") as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(out_dir / "validity.csv") as tmp:
        table.to_csv(tmp, index=False)
    records = json.loads(table.to_json(orient="records"))
    with atomic_path(out_dir / "validity.json") as tmp:
        tmp.write_text(json.dumps({"horizon_h": float(horizon_h), "table": records}, indent=2))
    if figure:
        save_figure(plot_validity(table, results), out_dir / "validity.png")
    return {"table": table, "results": results, "text": format_table(table)}


@hydra.main(config_path="../configs", config_name="validity", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        result = run(cfg, out_dir)
        print(f"viable CAR+ cells at harvest, forecast {cfg.horizon_h:g} h ahead")
        print(result["text"])
        for extra in ("by_seed_text", "time_ahead_text", "drivers_text", "paired_text"):
            if extra in result:
                print(result[extra])
        print(f"outputs: {out_dir}")


if __name__ == "__main__":
    main()
