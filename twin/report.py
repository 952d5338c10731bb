"""One self-contained HTML report of a main-job run folder (``experiments/run.py``).

The report is a function of the folder alone: each stage's sub-folder holds the files its
command writes, ``stages.json`` the stage times, ``resolved_config.yaml`` and
``provenance.json`` the run's reproducibility record. Figures are embedded as base64 PNG, so
the one file can be mailed or archived. Render again with ``python -m twin.report RUN_DIR``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ._atomic import atomic_path
from .forecast import KEY_RUN_COLUMNS

STAGE_TITLES: dict[str, str] = {
    "validate": "check the run data",
    "calibrate": "fit the model to the finished and running batches",
    "backtest": "forecast accuracy on donors held out of the calibration",
    "forecast": "the batches still running: harvest yield, release odds, harvest advice",
    "optimize": "a recipe from a recorded batch, robust over the donor population",
    "facility": "one Shuttle's month: throughput, turnaround, bottleneck, cost of goods",
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:72rem;padding:0 1rem;color:#1d2733;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
.keys{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem}
.key{border:1px solid #d0d7de;border-radius:.4rem;padding:.6rem .8rem;background:#fafbfc}
.key b{display:block;font-size:1.35rem}.bad{color:#b42318}.good{color:#067647}
.note{color:#57606a;font-size:.9rem}.scroll{overflow-x:auto}figure{margin:1rem 0}
figure img{max-width:100%;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.85rem}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.8rem}
"""


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically); return its path."""
    run_dir = Path(run_dir)
    path = run_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(render_report(run_dir), encoding="utf-8")
    return path


def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one HTML document."""
    run_dir = Path(run_dir)
    record = _json(run_dir / "stages.json") or {}
    keys, sections = [], []
    for name, builder in _SECTIONS.items():
        folder = run_dir / name
        if name not in record or not folder.is_dir():
            continue
        stage_keys, body = builder(folder)
        keys += stage_keys
        seconds = record[name].get("seconds")
        took = f" <span class='note'>({seconds:.0f} s)</span>" if seconds is not None else ""
        notes = "".join(f"<p class='note'>{_e(n)}</p>" for n in record[name].get("notes", []))
        sections.append(
            f"<h2 id='{name}'>{_e(name)}: {_e(STAGE_TITLES[name])}{took}</h2>{notes}{body}"
        )
    provenance = _json(run_dir / "provenance.json") or {}
    config = _text(run_dir / "resolved_config.yaml")
    total = sum(stage.get("seconds") or 0.0 for stage in record.values())
    head = (
        f"<h1>cart-twin report</h1><p class='note'>{_e(str(run_dir))}"
        f" · stages {_e(', '.join(record))} · {total:.0f} s of stage time</p>"
    )
    key_html = "".join(
        f"<div class='key'>{_e(label)}<b class='{tone}'>{_e(value)}</b>"
        f"<span class='note'>{_e(detail)}</span></div>"
        for label, value, detail, tone in keys
    )
    tail = (
        "<h2 id='reproduce'>Config, versions, source</h2>"
        f"{_provenance_table(provenance)}<h3>resolved config</h3><pre>{_e(config)}</pre>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>cart-twin report</title><style>{_STYLE}</style></head><body>"
        f"{head}<h2 id='key-numbers'>Key numbers</h2><div class='keys'>{key_html}</div>"
        f"{''.join(sections)}{tail}</body></html>"
    )


Key = tuple[str, str, str, str]  # label, value, detail, tone ('', 'good' or 'bad')


def _validate(folder: Path) -> tuple[list[Key], str]:
    return [], f"<pre>{_e(_text(folder / 'summary.txt'))}</pre>"


def _calibrate(folder: Path) -> tuple[list[Key], str]:
    convergence = _csv(folder / "convergence.csv")
    summary = _csv(folder / "summary.csv")
    keys: list[Key] = []
    if convergence is not None and "selected" in convergence:
        chosen = convergence.loc[convergence["selected"].astype(bool)].iloc[0]
        converged = bool(chosen["converged"])
        keys.append(
            (
                "calibration",
                "converged" if converged else "NOT converged",
                f"{int(chosen['steps'])} steps; objective {chosen['objective']:.4g}",
                "good" if converged else "bad",
            )
        )
    if summary is not None and "identified" in summary:
        identified = summary["identified"].astype(bool)
        keys.append(
            (
                "parameters identified",
                f"{int(identified.sum())} of {len(summary)}",
                "posterior SD well below the prior's (summary.csv)",
                "",
            )
        )
    body = _table(summary, "fitted parameters (summary.csv)")
    body += _figures(folder, ["fit_viable_cells.png", "fit_car_pos_fraction.png"])
    body += _figures(folder, ["parameters.png", "residuals.png"])
    rest = sorted(
        p.name
        for p in folder.glob("fit_*.png")
        if p.name not in ("fit_viable_cells.png", "fit_car_pos_fraction.png")
    )
    body += _figures(folder, rest)
    return keys, body


def _backtest(folder: Path) -> tuple[list[Key], str]:
    metrics = _json(folder / "metrics.json") or {}
    keys: list[Key] = []
    mre = metrics.get("mean_relative_error")
    coverage = metrics.get("coverage_90")
    horizon = metrics.get("horizon_h")
    if mre is not None:
        keys.append(
            (
                "forecast error at harvest",
                f"{100 * mre:.1f} %",
                f"mean relative error, viable CAR+ cells, {horizon:g} h ahead, held-out donors",
                "",
            )
        )
    if coverage is not None:
        keys.append(
            (
                "90 % interval coverage",
                f"{100 * coverage:.0f} %",
                f"of {metrics.get('runs', '?')} held-out runs",
                "good" if coverage >= 0.8 else "bad",
            )
        )
    body = _table(pd.DataFrame([metrics]) if metrics else None, "metrics.json")
    body += _figures(folder, ["backtest.png"])
    return keys, body


def _forecast(folder: Path) -> tuple[list[Key], str]:
    runs = _csv(folder / "runs.csv")
    if runs is None:
        return [], "<p>No batch was running: nothing to forecast.</p>"
    keys: list[Key] = []
    for row in runs.itertuples(index=False):
        keys.append(
            (
                f"{row.run_id}: harvest at",
                f"{_number(row.recommended_harvest_time_h, '.0f')} h",
                f"P(release) {_number(100 * row.p_conforming_at_recommended, '.0f')} % there; "
                f"{_number(100 * row.p_conforming_at_planned, '.0f')} % at the planned "
                f"{_number(row.planned_harvest_time_h, '.0f')} h",
                "",
            )
        )
    columns = [c for c in KEY_RUN_COLUMNS if c in runs]
    body = _table(runs[columns], "per running batch (runs.csv)")
    body += _figures(folder, sorted(p.name for p in folder.glob("fan_*.png")))
    return keys, body


def _optimize(folder: Path) -> tuple[list[Key], str]:
    comparison = _csv(folder / "comparison.csv")
    decisions = _csv(folder / "decisions.csv")
    keys: list[Key] = []
    if comparison is not None and {"recipe", "p_conforming"} <= set(comparison):
        # "start" is the recorded batch's recipe; "gradient" the optimized one (the recipe
        # written to optimized_recipe.yaml); "sobol" a search baseline, left to the table.
        by_recipe = comparison.set_index("recipe")
        for recipe, label in (("start", "current recipe"), ("gradient", "optimized recipe")):
            if recipe not in by_recipe.index:
                continue
            row = by_recipe.loc[recipe]
            detail = (
                f"90 % CI {100 * row['p_conforming_90_low']:.0f}-"
                f"{100 * row['p_conforming_90_high']:.0f} %, "
                f"{int(row['donors'])} fresh donors of the calibrated population"
            )
            if recipe == "gradient":
                detail += (
                    f"; gain {100 * row['p_gain_vs_start']:+.1f} points "
                    f"(90 % CI {100 * row['p_gain_90_low']:+.1f} to "
                    f"{100 * row['p_gain_90_high']:+.1f})"
                )
            keys.append(
                (f"P(conforming), {label}", f"{100 * row['p_conforming']:.0f} %", detail, "")
            )
    body = _table(comparison, "current vs optimized recipe (comparison.csv)")
    body += _table(decisions, "decisions (decisions.csv)")
    recipe = _text(folder / "optimized_recipe.yaml")
    if recipe:
        body += f"<h3>the recipe to run (optimized_recipe.yaml)</h3><pre>{_e(recipe)}</pre>"
    body += _figures(folder, ["convergence.png", "pareto.png"])
    return keys, body


def _facility(folder: Path) -> tuple[list[Key], str]:
    summary = _json(folder / "facility_summary.json") or {}
    keys: list[Key] = []
    if summary:
        get = summary.get
        utilization = get("bay_utilization")
        keys.append(
            (
                f"one Shuttle, {_number(get('horizon_days'), 'g')} days",
                f"{get('batches_started', '?')} batches started",
                f"{get('batches_harvested', '?')} harvested, "
                f"{get('batches_conforming', '?')} conforming; bay utilization "
                f"{_number(None if utilization is None else 100 * utilization, '.0f')} %; "
                f"median turnaround {_number(get('median_turnaround_days'), '.1f')} d; "
                f"bottleneck {get('bottleneck', '?')}",
                "",
            )
        )
    flat = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
    body = _table(
        pd.DataFrame({"value": pd.Series(flat, dtype=object)}).reset_index(names="figure")
        if flat
        else None,
        "facility_summary.json",
    )
    body += _figures(folder, ["gantt.png", "utilization.png", "demand.png"])
    return keys, body


_SECTIONS: dict[str, Callable[[Path], tuple[list[Key], str]]] = {
    "validate": _validate,
    "calibrate": _calibrate,
    "backtest": _backtest,
    "forecast": _forecast,
    "optimize": _optimize,
    "facility": _facility,
}
assert tuple(_SECTIONS) == tuple(STAGE_TITLES)


def _provenance_table(provenance: dict) -> str:
    rows = {
        key: value
        for key, value in provenance.items()
        if isinstance(value, (str, int, float)) and value is not None
    }
    for group in ("versions", "packages"):
        if isinstance(provenance.get(group), dict):
            rows |= {f"{group}: {k}": v for k, v in provenance[group].items()}
    frame = pd.DataFrame({"value": pd.Series(rows, dtype=object)}).reset_index(names="item")
    return _table(frame, "provenance.json")


def _figures(folder: Path, names: list[str]) -> str:
    parts = []
    for name in names:
        path = folder / name
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{_e(folder.name)}/{_e(name)}</figcaption></figure>"
            )
    return "".join(parts)


def _table(frame: pd.DataFrame | None, caption: str) -> str:
    if frame is None or frame.empty:
        return ""
    table = frame.to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0)
    return f"<h3>{_e(caption)}</h3><div class='scroll'>{table}</div>"


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _number(value, spec: str) -> str:
    """``value`` formatted, or ``n/a`` where there is none (e.g. no batch released yet)."""
    try:
        return format(float(value), spec) if math.isfinite(float(value)) else "n/a"
    except (TypeError, ValueError):
        return "n/a"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m twin.report RUN_DIR``: render ``RUN_DIR/report.html`` again."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not Path(args[0]).is_dir():
        print(
            "usage: python -m twin.report RUN_DIR (a folder of experiments/run.py)", file=sys.stderr
        )
        return 2
    print(write_report(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
