"""How sure a bench figure is: a bootstrap interval of the twin/oracle ratio, and the paired
change of every method's error against another bench run on the same held-out runs.

Both exist because the bench is noisy: 20 held-out runs per plant and draw give per-plant
standard errors of about a point of MRE, so a ratio or a gain read off one table can flip sign
on the next draw (docs/validity.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from twin._errors import TwinInputError

MEAN_ROW = "mean over plants"  # as in the bench's summary table
EXAMPLE = "example"  # the shipped example: not a plant, left out of the mean over plants


def run_key(results: pd.DataFrame) -> list[str]:
    # Pooled over draws of the bench (a ``seed`` column), run ids repeat from draw to draw.
    return [c for c in ("seed", "run_id") if c in results]


def ratio_intervals(
    results: pd.DataFrame,
    *,
    numerator: str = "twin",
    denominator: str = "oracle",
    level: float = 0.9,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """A percentile-bootstrap ``level`` interval of ``MRE(numerator) / MRE(denominator)`` per
    bench, and for the mean over plants (the ratio of the plants' mean MREs), resampling the
    held-out runs with replacement within each draw (``seed`` column) and keeping each run's
    two forecasts together (the ratio is paired). Failed forecasts (no finite median) are left
    out of the MRE, as in the table. Benches without both methods are absent from the result."""
    rng = np.random.default_rng(seed)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    key = run_key(results)
    per_bench: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for bench, part in results.groupby("bench", sort=False):
        errors = (
            part[part["method"].isin([numerator, denominator])]
            .assign(abs_error=lambda d: d["relative_error"].abs())
            .set_index([*key, "method"])["abs_error"]
            .unstack("method")
        )
        if not {numerator, denominator} <= set(errors.columns) or errors.empty:
            continue
        strata = errors.index.get_level_values("seed") if "seed" in key else np.zeros(len(errors))
        picks = np.concatenate(
            [
                rng.choice(np.flatnonzero(strata == s), size=(n_resamples, (strata == s).sum()))
                for s in np.unique(strata)
            ],
            axis=1,
        )
        with np.errstate(invalid="ignore"):  # a resample of failed runs only: NaN, dropped
            num = np.nanmean(errors[numerator].to_numpy(float)[picks], axis=1)
            den = np.nanmean(errors[denominator].to_numpy(float)[picks], axis=1)
        per_bench[str(bench)] = (num, den)
    out = {b: _interval(num, den, quantiles) for b, (num, den) in per_bench.items()}
    plants = [b for b in per_bench if b != EXAMPLE]
    if len(plants) > 1:
        num = np.mean([per_bench[b][0] for b in plants], axis=0)
        den = np.mean([per_bench[b][1] for b in plants], axis=0)
        out[MEAN_ROW] = _interval(num, den, quantiles)
    return out


def _interval(num: np.ndarray, den: np.ndarray, quantiles) -> tuple[float, float]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den
    ratio = ratio[~np.isnan(ratio)]
    if ratio.size == 0:
        return (np.nan, np.nan)
    # no interpolation between resamples: a perfect denominator gives inf, not inf - inf
    lower, upper = np.quantile(ratio, quantiles, method="inverted_cdf")
    return (float(lower), float(upper))


def paired_changes(results: pd.DataFrame, reference: pd.DataFrame, source: str) -> pd.DataFrame:
    """Every bench and method of ``results`` against the same held-out runs in ``reference``
    (another bench run's ``validity_runs.csv``, read from ``source``): one row per bench and
    method, then the mean over plants per method, with ``runs_paired``, ``runs_not_compared``
    (missing from the reference, or a failed forecast in either), ``mre``, ``mre_reference``,
    ``mre_change`` and its standard error ``mre_change_se`` (of the mean paired change of the
    absolute relative error), ``coverage_90`` and ``coverage_90_reference``, all over the
    paired runs. Raises :class:`TwinInputError` when the two runs were not made on the same
    data (a run measured differently at harvest) or do not share a draw layout."""
    if ("seed" in results) != ("seed" in reference):
        mine = "several draws" if "seed" in results else "one draw"
        theirs = "several draws" if "seed" in reference else "one draw"
        raise TwinInputError(
            f"compare_to={source}: that bench run is over {theirs}, this one over {mine}; "
            "compare runs made with the same seed setting"
        )
    key = ["bench", "method", *run_key(results)]
    compared = ["observed", "relative_error", "covered"]
    missing = [c for c in (*key, *compared) if c not in reference]
    if missing:
        raise TwinInputError(
            f"compare_to={source}: no column(s) {missing}; is it a validity_runs.csv?"
        )
    merged = results.merge(
        reference[[*key, *compared]],
        on=key,
        how="left",
        suffixes=("", "_reference"),
        indicator=True,
    )
    matched = merged[merged["_merge"] == "both"]
    differs = ~np.isclose(matched["observed"], matched["observed_reference"], rtol=1e-9)
    if differs.any():
        row = matched[differs].iloc[0]
        where = ", ".join(f"{k}={row[k]}" for k in key if k != "method")
        raise TwinInputError(
            f"compare_to={source}: the held-out run {where} was measured at harvest as "
            f"{row['observed']:.6g} here and {row['observed_reference']:.6g} there: the two "
            "bench runs were not made on the same data"
        )
    both_finite = np.isfinite(merged["relative_error"]) & np.isfinite(
        merged["relative_error_reference"]
    )
    merged["paired"] = (merged["_merge"] == "both") & both_finite
    rows = []
    for (bench, method), part in merged.groupby(["bench", "method"], sort=False):
        pair = part[part["paired"]]
        change = pair["relative_error"].abs() - pair["relative_error_reference"].abs()
        n = len(pair)
        rows.append(
            {
                "bench": bench,
                "method": method,
                "runs_paired": n,
                "runs_not_compared": len(part) - n,
                "mre": pair["relative_error"].abs().mean(),
                "mre_reference": pair["relative_error_reference"].abs().mean(),
                "mre_change": change.mean(),
                "mre_change_se": change.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                "coverage_90": pair["covered"].astype(float).mean(),
                "coverage_90_reference": pair["covered_reference"].astype(float).mean(),
            }
        )
    table = pd.DataFrame(rows)
    means = []
    for method, part in table[table["bench"] != EXAMPLE].groupby("method", sort=False):
        if len(part) < 2:
            continue
        mean = part.drop(columns=["bench", "method"]).mean().to_dict()
        mean |= {
            "bench": MEAN_ROW,
            "method": method,
            "runs_paired": int(part["runs_paired"].sum()),
            "runs_not_compared": int(part["runs_not_compared"].sum()),
            # independent plants: the mean's variance is the mean of the variances over k
            "mre_change_se": float(np.sqrt((part["mre_change_se"] ** 2).sum()) / len(part)),
        }
        means.append(mean)
    return pd.concat([table, pd.DataFrame(means)], ignore_index=True)[list(table.columns)]


def format_changes(table: pd.DataFrame, source: str) -> str:
    """The paired changes as fixed-width text (points of MRE, mean ± standard error)."""
    head = (
        f"{'bench':<18}{'method':<13}{'runs':>5}{'MRE':>8}{'was':>8}"
        f"{'change (points)':>19}{'cov90':>7}{'was':>6}"
    )
    lines = [
        f"against {source}, paired over the same held-out runs:",
        head,
        "-" * len(head),
    ]
    for row in table.to_dict("records"):
        change = f"{100 * row['mre_change']:+.2f} ± {100 * row['mre_change_se']:.2f}"
        line = (
            f"{row['bench']:<18}{row['method']:<13}{int(row['runs_paired']):>5}"
            f"{100 * row['mre']:>7.1f}%{100 * row['mre_reference']:>7.1f}%{change:>19}"
            f"{100 * row['coverage_90']:>6.0f}%{100 * row['coverage_90_reference']:>5.0f}%"
        )
        if row["runs_not_compared"]:
            line += f"  ({int(row['runs_not_compared'])} runs not compared)"
        lines.append(line)
    return "\n".join(lines)
