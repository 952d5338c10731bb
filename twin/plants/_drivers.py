"""What the twin's departure from the oracle follows: for each bench, the rank correlation over
its held-out runs between ``log(twin median / oracle median)`` and each run's true traits (the
process's donor parameters from ``true_parameters.csv``, and the harvest time).

The oracle knows the process's equations, so where the twin's forecast departs from it is the
twin's own miss, free of the harvest assay's noise. A trait that this departure follows names
a mechanism the twin represents poorly (e.g. IL-2 need on a process with IL-2-limited growth);
a trait that both methods' errors follow alike (e.g. a late decline no data before the cut can
show) is a limit of the horizon, not of the twin. Traits are compared by rank (Spearman), so
no scale (log, logit) has to be chosen per parameter. About 30 traits are tested per bench,
so the significance mark is Bonferroni's (p below 0.05 / traits).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..data import RunData
from ..forecast._io import harvest_times

COLUMNS = (
    "bench",
    "trait",
    "runs",
    "spearman_twin_over_oracle",
    "p_value",
    "significant",
    "spearman_twin_error",
    "spearman_oracle_error",
)
_ALPHA = 0.05

log = logging.getLogger(__name__)


def run_traits(test: RunData, true_parameters: pd.DataFrame) -> pd.DataFrame:
    """``run_id``, each true parameter and ``harvest_time_h`` (recorded) per held-out run."""
    traits = true_parameters.drop(columns=["donor_id"], errors="ignore").copy()
    traits["harvest_time_h"] = traits["run_id"].map(harvest_times(test))
    return traits


def error_drivers(results: pd.DataFrame, traits: pd.DataFrame) -> pd.DataFrame:
    """One row per bench and trait (:data:`COLUMNS`), benches in the order of ``results``,
    strongest departure first within a bench. ``results``: ``validity_runs.csv`` rows
    (``bench, method, run_id, observed, median``, and ``seed`` with several draws);
    ``traits``: :func:`run_traits` rows with ``bench`` (and ``seed``). Runs where the twin or
    the oracle failed, or no trait is known, are not counted (``runs`` says how many were); a
    trait that does not vary is left out, and one not known for every counted run too (the
    log names it)."""
    keys = ["bench", "run_id"] + (["seed"] if "seed" in results and "seed" in traits else [])
    methods = results[results["method"].isin(("twin", "oracle"))]
    median = methods.pivot_table(index=keys, columns="method", values="median", dropna=False)
    if not {"twin", "oracle"} <= set(median.columns):
        return pd.DataFrame(columns=list(COLUMNS))
    observed = methods.groupby(keys)["observed"].first()
    runs = pd.DataFrame(
        {
            "twin_over_oracle": np.log(median["twin"] / median["oracle"]),
            "twin_error": np.log(median["twin"] / observed),
            "oracle_error": np.log(median["oracle"] / observed),
        }
    ).reset_index()
    runs = runs[np.isfinite(runs["twin_over_oracle"])].merge(traits, on=keys)
    rows = []
    for bench, own in runs.groupby("bench", sort=False):
        numeric = [
            c for c in traits.columns if c not in keys and pd.api.types.is_numeric_dtype(own[c])
        ]
        unknown = [c for c in numeric if own[c].isna().any()]
        if unknown:
            log.warning("drivers: %s: %s not known for every run (left out)", bench, unknown)
        candidates = [c for c in numeric if c not in unknown and own[c].nunique() > 1]
        for trait in candidates:
            rho, p = spearmanr(own[trait], own["twin_over_oracle"])
            rows.append(
                {
                    "bench": bench,
                    "trait": trait,
                    "runs": len(own),
                    "spearman_twin_over_oracle": float(rho),
                    "p_value": float(p),
                    "significant": bool(p < _ALPHA / len(candidates)),
                    "spearman_twin_error": _spearman(own[trait], own["twin_error"]),
                    "spearman_oracle_error": _spearman(own[trait], own["oracle_error"]),
                }
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    if table.empty:
        return table
    benches = {b: i for i, b in enumerate(results["bench"].unique())}  # the table's order
    return (
        table.assign(_b=table["bench"].map(benches), _s=table["spearman_twin_over_oracle"].abs())
        .sort_values(["_b", "_s"], ascending=[True, False], kind="stable")
        .drop(columns=["_b", "_s"])
        .reset_index(drop=True)
    )


def _spearman(x: pd.Series, y: pd.Series) -> float:
    finite = np.isfinite(y.to_numpy(float))
    if finite.sum() < 3 or np.ptp(y[finite]) == 0 or x[finite].nunique() < 2:
        return float("nan")
    return float(spearmanr(x[finite], y[finite])[0])


def _signed(value: float) -> str:
    return f"{value:+.2f}" if np.isfinite(value) else "n/a"


def format_drivers(table: pd.DataFrame, top: int = 3) -> str:
    """Per bench, the ``top`` traits the twin's departure from the oracle follows most."""
    lines = [
        "what the twin's departure from the oracle follows (Spearman correlation over "
        "held-out runs of log(twin / oracle median) with each run's true trait; * "
        "significant after Bonferroni; in brackets the twin's and the oracle's own error's)"
    ]
    for bench, own in table.groupby("bench", sort=False):
        parts = [
            f"{r.trait} {_signed(r.spearman_twin_over_oracle)}{'*' if r.significant else ''} "
            f"({_signed(r.spearman_twin_error)}, {_signed(r.spearman_oracle_error)})"
            for r in own.head(top).itertuples()
        ]
        lines.append(f"  {bench} ({own['runs'].iloc[0]} runs): " + "; ".join(parts))
    return "\n".join(lines)
