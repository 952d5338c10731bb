"""The validity bench: data for each plant (cached), the oracle over held-out runs (resumable,
in parallel), the spreadsheet, and the one table comparing them with the twin."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import atomic_path
from ..data import RunData, read_run_data
from ..forecast._backtest import data_fingerprint
from ..forecast._io import observed_at_harvest
from ._compare import EXAMPLE, MEAN_ROW, ratio_intervals, run_key
from ._generate import generate
from ._oracle import PlantModel, ProcessModel, oracle_forecast_run
from ._registry import get_plant

METHODS: tuple[str, ...] = ("twin", "oracle", "spreadsheet")


def plant_data(
    name: str,
    root: Path,
    *,
    seed: int,
    n_train_donors: int,
    runs_per_donor: int,
    n_test_donors: int,
) -> tuple[Path, Path]:
    """``root/name/{train,test}``, generated unless already there from the same settings and
    the same plant population."""
    folder = root / name
    plant = get_plant(name)
    wanted = {
        "plant": name,
        "population": plant.population(),
        "donor_sd": {k: v.donor_sd for k, v in plant.parameters.items() if v.donor_sd > 0},
        "seed": seed,
        "n_train_donors": n_train_donors,
        "runs_per_donor": runs_per_donor,
        "n_test_donors": n_test_donors,
    }
    meta = folder / "test" / "plant.json"
    if meta.is_file() and (folder / "train" / "plant.json").is_file():
        found = json.loads(meta.read_text())
        if {k: found.get(k) for k in wanted} == wanted:
            return folder / "train", folder / "test"
    paths = generate(
        plant,
        folder,
        seed=seed,
        n_train_donors=n_train_donors,
        runs_per_donor=runs_per_donor,
        n_test_donors=n_test_donors,
    )
    return paths["train"], paths["test"]


def _oracle_job(args) -> tuple[str, dict]:
    plant_name, run_id, events, measurements, horizon_h, max_nfev = args
    model = PlantModel(get_plant(plant_name))
    return run_id, oracle_forecast_run(model, events, measurements, horizon_h, max_nfev=max_nfev)


def oracle_forecasts(
    model: ProcessModel,
    test: RunData,
    horizon_h: float,
    cache_dir: Path,
    *,
    max_nfev: int = 40,
    processes: int = 1,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The oracle's forecast of every finished ``test`` run, one JSON file per run in
    ``cache_dir`` (kept while the test data, horizon and settings are unchanged): an interrupted
    bench resumes. Plants run in ``processes`` worker processes; other models in this one."""
    fingerprint = hashlib.sha256(
        json.dumps(
            [data_fingerprint(test), model.name, float(horizon_h), max_nfev], sort_keys=True
        ).encode()
    ).hexdigest()
    stamp = cache_dir / "fingerprint"
    if not (stamp.is_file() and stamp.read_text().strip() == fingerprint):
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache_dir.mkdir(parents=True)
        stamp.write_text(fingerprint + "\n")
    runs = [r for r in test.run_ids if test.is_finished(r)]
    done = {
        r: json.loads((cache_dir / f"{r}.json").read_text())
        for r in runs
        if (cache_dir / f"{r}.json").is_file()
    }
    todo = [r for r in runs if r not in done]

    def keep(run_id: str, result: dict) -> None:
        with atomic_path(cache_dir / f"{run_id}.json") as tmp:
            tmp.write_text(json.dumps(result))
        done[run_id] = result
        if progress is not None:
            progress(f"oracle {model.name} {run_id}: {len(done)}/{len(runs)}")

    if isinstance(model, PlantModel) and processes > 1 and len(todo) > 1:
        jobs = [
            (model.name, r, test.events_for(r), test.measurements_for(r), horizon_h, max_nfev)
            for r in todo
        ]
        # spawn: the parent has JAX threads running, which fork would copy half-alive
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            for run_id, result in pool.map(_oracle_job, jobs):
                keep(run_id, result)
    else:
        for r in todo:
            result = oracle_forecast_run(
                model, test.events_for(r), test.measurements_for(r), horizon_h, max_nfev=max_nfev
            )
            keep(r, result)
    return pd.DataFrame([{"run_id": r, **done[r]} for r in runs])


def method_rows(
    method: str, forecasts: pd.DataFrame, test: RunData, truth: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Per-run errors of one method's forecasts (``run_id, median, lower_90, upper_90``) of
    viable CAR+ cells at harvest against what was measured there (viable cells x %CAR+), and
    against the noise-free truth when given (``run_id, viable_car_pos_cells``)."""
    observed = observed_at_harvest(test).set_index("run_id")["observed"]
    f = forecasts.set_index("run_id")
    rows = pd.DataFrame(
        {
            "method": method,
            "run_id": f.index,
            "observed": observed.reindex(f.index).to_numpy(),
            "median": f["median"].to_numpy(float),
            "lower_90": f["lower_90"].to_numpy(float),
            "upper_90": f["upper_90"].to_numpy(float),
        }
    )
    rows["relative_error"] = (rows["median"] - rows["observed"]) / rows["observed"]
    rows["covered"] = (rows["lower_90"] <= rows["observed"]) & (
        rows["observed"] <= rows["upper_90"]
    )
    if truth is not None:
        true = truth.set_index("run_id")["viable_car_pos_cells"].reindex(f.index).to_numpy()
        rows["true"] = true
        rows["relative_error_vs_true"] = (rows["median"] - true) / true
    return rows.dropna(subset=["observed"])


def metrics(rows: pd.DataFrame) -> dict:
    """MRE, median relative error, bias (mean signed relative error), mean log error, 90 %
    coverage, the number of runs and of failed ones (no finite forecast: left out of the
    errors, counted as not covered)."""
    rel = rows["relative_error"]
    return {
        "runs": len(rows),
        "failed_runs": int((~np.isfinite(rows["median"].to_numpy(float))).sum()),
        "mre": float(rel.abs().mean()),
        "median_re": float(rel.abs().median()),
        "bias": float(rel.mean()),
        "mean_log_error": float(np.log(rows["median"] / rows["observed"]).mean()),
        "coverage_90": float(rows["covered"].mean()),
    }


def summary_table(results: pd.DataFrame, converged: dict[str, bool | None]) -> pd.DataFrame:
    """One row per bench (plus the mean over plants, the example left out of it): per method
    ``<method>_mre, _median_re, _bias, _coverage_90``, ``twin/oracle`` with its bootstrap
    90 % interval (``twin/oracle_lower_90``, ``twin/oracle_upper_90``) and ``converged``."""
    key = run_key(results)
    rows = []
    for bench, part in results.groupby("bench", sort=False):
        row = {"bench": bench, "runs": len(part[key].drop_duplicates())}
        for method in METHODS:
            mine = part[part["method"] == method]
            if mine.empty:
                continue
            m = metrics(mine)
            keys = ("mre", "median_re", "bias", "coverage_90", "failed_runs")
            row |= {f"{method}_{k}": m[k] for k in keys}
        if "twin_mre" in row and "oracle_mre" in row:
            row["twin/oracle"] = _ratio(row["twin_mre"], row["oracle_mre"])
        row["converged"] = converged.get(bench)
        rows.append(row)
    table = pd.DataFrame(rows)
    plants = table[table["bench"] != EXAMPLE]
    if len(plants) > 1:
        mean = plants.drop(columns=["bench", "converged"]).mean(numeric_only=True)
        mean_row = {"bench": MEAN_ROW, **mean.to_dict()}
        mean_row["runs"] = int(plants["runs"].sum())
        for failed in [c for c in plants if c.endswith("_failed_runs")]:  # counts: summed
            mean_row[failed] = int(plants[failed].sum())
        if "twin_mre" in mean_row and "oracle_mre" in mean_row:
            mean_row["twin/oracle"] = _ratio(mean_row["twin_mre"], mean_row["oracle_mre"])
        conv = plants["converged"]
        mean_row["converged"] = bool(conv.all()) if conv.notna().all() else None
        table = pd.concat([table, pd.DataFrame([mean_row])], ignore_index=True)
    if "twin/oracle" in table:  # how sure the ratio is, from these held-out runs
        intervals = ratio_intervals(results)
        for i, bound in enumerate(("lower", "upper")):
            table[f"twin/oracle_{bound}_90"] = [
                intervals.get(b, (np.nan, np.nan))[i] for b in table["bench"]
            ]
    return table


def by_seed_table(results: pd.DataFrame, converged: dict[int, dict[str, bool | None]]):
    """One row per draw of the bench and bench (plants and their mean, as in
    :func:`summary_table`): ``seed, bench, runs, <method>_mre, <method>_coverage_90,
    twin/oracle, converged``; ``results`` carries a ``seed`` column."""
    tables = []
    for seed, part in results.groupby("seed", sort=True):
        table = summary_table(part.drop(columns="seed"), converged[seed])
        keep = ["bench", "runs"]
        keep += [c for c in table if c.endswith(("_mre", "_coverage_90"))]
        keep += [c for c in ("twin/oracle", "converged") if c in table]
        tables.append(table[keep].assign(seed=int(seed)))
    table = pd.concat(tables, ignore_index=True)
    return table[["seed", *[c for c in table if c != "seed"]]]


def format_by_seed(table: pd.DataFrame) -> str:
    """Twin/oracle per bench and draw as fixed-width text (without an oracle: the first
    method's MRE)."""
    methods = [m for m in METHODS if f"{m}_mre" in table]
    column = "twin/oracle" if "twin/oracle" in table else f"{methods[0]}_mre"
    seeds = sorted(table["seed"].unique())
    head = f"{'bench':<18}" + "".join(f"{'seed ' + str(s):>10}" for s in seeds)
    lines = [f"by draw of the bench: {column}", head, "-" * len(head)]
    cells = table.set_index(["bench", "seed"])[column]
    for bench in dict.fromkeys(table["bench"]):
        line = f"{bench:<18}"
        for s in seeds:
            value = cells.get((bench, s), np.nan)
            if not np.isfinite(value):
                line += f"{'n/a':>10}"
            elif column == "twin/oracle":
                line += f"{value:>10.2f}"
            else:
                line += f"{100 * value:>9.1f}%"
        lines.append(line)
    return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else (np.inf if a > 0 else np.nan)


def format_table(table: pd.DataFrame) -> str:
    """The table as fixed-width text: percentages for errors and coverage."""
    methods = [m for m in METHODS if f"{m}_mre" in table]
    head = f"{'bench':<18}{'runs':>5}"
    for m in methods:
        head += f" | {m + ' MRE':>16}{'med':>6}{'bias':>7}{'cov90':>6}"
    head += f" | {'twin/oracle (90 % interval)':<27} | converged | failed runs"
    lines = [head, "-" * len(head)]
    for row in table.to_dict("records"):
        line = f"{row['bench']:<18}{int(row['runs']):>5}"
        for m in methods:
            line += (
                f" | {100 * row[f'{m}_mre']:>15.1f}%{100 * row[f'{m}_median_re']:>5.1f}%"
                f"{100 * row[f'{m}_bias']:>+6.1f}%{100 * row[f'{m}_coverage_90']:>5.0f}%"
            )
        line += f" | {_ratio_text(row):<27}"
        conv = row.get("converged")
        line += f" | {'n/a' if conv is None or conv != conv else ('yes' if conv else 'NO'):<9}"
        failed = sum(int(row.get(f"{m}_failed_runs", 0)) for m in methods)
        line += f" | {failed}"
        lines.append(line)
    return "\n".join(lines)


def _ratio_text(row: dict) -> str:
    """``1.32 (1.15-1.51)``: the twin/oracle ratio and its bootstrap interval when known."""
    ratio = row.get("twin/oracle")
    if ratio is None or not np.isfinite(ratio):
        return "n/a"
    lower, upper = row.get("twin/oracle_lower_90"), row.get("twin/oracle_upper_90")
    if lower is None or upper is None or not (np.isfinite(lower) and np.isfinite(upper)):
        return f"{ratio:.2f}"
    return f"{ratio:.2f} ({lower:.2f}-{upper:.2f})"


def plot_validity(table: pd.DataFrame, results: pd.DataFrame):
    """Bars of MRE per bench and method; predicted vs measured viable CAR+ cells; with an
    oracle, twin/oracle per bench with its bootstrap 90 % interval against the 1.2x bar."""
    import matplotlib.pyplot as plt

    ratio = "twin/oracle" in table
    fig, axes = plt.subplots(
        1, 3 if ratio else 2, figsize=(17 if ratio else 12, 4.5), layout="constrained"
    )
    ax, ax2 = axes[:2]
    benches = table["bench"].tolist()
    methods = [m for m in METHODS if f"{m}_mre" in table]
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(benches))
    for i, m in enumerate(methods):
        ax.bar(x + i * width, 100 * table[f"{m}_mre"], width, label=m)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, benches, rotation=20, ha="right")
    ax.set_ylabel("MRE of viable CAR+ cells at harvest (%)")
    ax.legend()
    for m, marker in zip(methods, "os^", strict=False):
        part = results[results["method"] == m]
        ax2.scatter(part["observed"], part["median"], s=14, marker=marker, label=m, alpha=0.7)
    lo = float(results[["observed", "median"]].min().min())
    hi = float(results[["observed", "median"]].max().max())
    ax2.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("measured at harvest")
    ax2.set_ylabel("forecast (median)")
    ax2.legend()
    if ratio:
        _plot_ratio(axes[2], table)
    return fig


def _plot_ratio(ax, table: pd.DataFrame) -> None:
    """Twin/oracle per bench with its 90 % interval; the oracle (1x) and the bar (1.2x)."""
    shown = table[np.isfinite(table["twin/oracle"].astype(float))]
    y = np.arange(len(shown))[::-1]
    value = shown["twin/oracle"].to_numpy(float)
    lower = shown["twin/oracle_lower_90"].to_numpy(float)  # summary_table adds both
    upper = shown["twin/oracle_upper_90"].to_numpy(float)
    known = np.isfinite(lower) & np.isfinite(upper)
    bars = np.maximum(np.where(known, [value - lower, upper - value], 0.0), 0.0)
    ax.errorbar(value, y, xerr=bars, fmt="o", color="C0", capsize=3)
    ax.axvline(1.0, color="0.5", lw=0.8, label="the oracle (the floor)")
    ax.axvline(1.2, color="C3", lw=0.8, ls="--", label="1.2x the oracle (issue 13's bar)")
    ax.set_yticks(y, shown["bench"])
    ax.set_xlabel("twin MRE / oracle MRE (90 % bootstrap interval)")
    ax.legend(fontsize=7, loc="lower right")


def read_pair(train_dir: Path, test_dir: Path) -> tuple[RunData, RunData]:
    return read_run_data(train_dir), read_run_data(test_dir)


def finished(test: RunData) -> Sequence[str]:
    return [r for r in test.run_ids if test.is_finished(r)]
