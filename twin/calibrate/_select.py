"""Model-structure selection: candidate rate-law forms ranked on the training data alone.

Each candidate (``fit.select``, e.g. ``"decline=hill,lag_stages=8"``) is the configured
structure with those fields changed. Every candidate is calibrated on the same data and scored
by the error of its own donor-held-out forecasts of viable CAR+ cells at harvest (the
pseudo-backtest of :mod:`twin.forecast._discrepancy`, after its corrections), with the
objective, AIC and BIC beside it. The lowest forecast score wins (ties within 1 % go to the lower
BIC): forecasting held-out batches is what the twin is used for, and an information criterion
from a misspecified likelihood overstates small structural gains.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from .._errors import TwinInputError
from ..kinetics import ModelStructure
from ._result import Calibration

SELECTION_COLUMNS = (
    "candidate",
    "structure",
    "forecast_error",
    "objective",
    "aic",
    "bic",
    "converged",
    "selected",
)
SCORED_VARIABLE = "viable_car_pos_cells"


def parse_candidate(text: str, base: ModelStructure, key: str) -> ModelStructure:
    """``"field=value,field=value"`` (or ``"default"``) applied to ``base``.

    **Raises:** :class:`~twin.TwinInputError` naming ``key`` and the value.
    """
    if text.strip() in ("", "default"):
        return base
    changes = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not hasattr(base, name):
            fields = ", ".join(f.name for f in dataclasses.fields(ModelStructure))
            raise TwinInputError(
                f"{key}={text!r}: {part.strip()!r} is not field=value with a field of "
                f"model.structure ({fields})"
            )
        kind = type(getattr(base, name))
        try:
            changes[name] = _parse_value(value.strip(), kind)
        except ValueError:
            raise TwinInputError(
                f"{key}={text!r}: {name}={value.strip()!r} is not a {kind.__name__}"
            ) from None
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as error:
        raise TwinInputError(f"{key}={text!r}: {error}") from None


def _parse_value(text: str, kind: type):
    """``text`` as a value of a structure field of type ``kind`` (``bool("false")`` is true,
    hence the booleans by name, as Hydra writes them)."""
    if issubclass(kind, bool):
        booleans = {"true": True, "false": False}
        if text.lower() not in booleans:
            raise ValueError(text)
        return booleans[text.lower()]
    return text if issubclass(kind, str) else kind(text)


def forecast_score(discrepancy: pd.DataFrame) -> float:
    """Mean (over the learnt horizons) of the mean absolute log error of the
    pseudo-backtest forecasts of viable CAR+ cells after the learnt corrections (anchoring and
    bias); NaN if none was learnt."""
    rows = discrepancy[discrepancy["variable"] == SCORED_VARIABLE]
    if rows.empty or "mean_abs_error" not in rows:
        return math.nan
    return float(rows["mean_abs_error"].mean())


def best_forecast(errors, tiebreak) -> int:
    """The index of the lowest forecast error, a tie (within 1 % of it) going to the lowest
    ``tiebreak`` (a BIC, an objective); without any finite error, the lowest ``tiebreak``."""
    errors, tiebreak = np.asarray(errors, float), np.asarray(tiebreak, float)
    if not np.isfinite(errors).any():
        return int(np.argmin(tiebreak))
    close = np.flatnonzero(np.isfinite(errors) & (errors <= np.nanmin(errors) * 1.01))
    return int(close[np.argmin(tiebreak[close])])


def information_criteria(calibration: Calibration) -> tuple[float, float]:
    """``(AIC, BIC)`` at the MAP: ``2 objective + 2 k`` and ``2 objective + k log n``, with
    ``k`` the fitted population parameters (donor effects are shrunk by their prior and equal
    in number across candidates)."""
    k, n = len(calibration.fitted), max(calibration.n_observations, 1)
    return 2 * calibration.objective + 2 * k, 2 * calibration.objective + k * math.log(n)


def rank_candidates(labels: list[str], calibrations: list[Calibration]) -> tuple[int, pd.DataFrame]:
    """The index of the chosen candidate and the ranking table (:data:`SELECTION_COLUMNS`)."""
    rows = []
    for label, calibration in zip(labels, calibrations, strict=True):
        aic, bic = information_criteria(calibration)
        rows.append(
            {
                "candidate": label,
                "structure": calibration.structure.describe(),
                "forecast_error": forecast_score(calibration.discrepancy),
                "objective": calibration.objective,
                "aic": aic,
                "bic": bic,
                "converged": calibration.converged,
            }
        )
    table = pd.DataFrame(rows)
    error = table["forecast_error"].to_numpy(float)
    chosen = best_forecast(error, table["bic"].to_numpy(float))
    table["selected"] = np.arange(len(table)) == chosen
    order = np.lexsort((table["bic"].to_numpy(), np.nan_to_num(error, nan=np.inf)))
    return chosen, table.iloc[order].reset_index(drop=True).loc[:, list(SELECTION_COLUMNS)]
