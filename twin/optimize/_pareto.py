"""P(conforming) versus cost of goods: a weighted-sum sweep and its non-dominated points."""

from __future__ import annotations

import numpy as np

from ..kinetics import KineticParameters
from ._problem import RobustProblem
from ._search import SearchResult, gradient_search


def pareto_sweep(
    problem: RobustProblem,
    donors: KineticParameters,
    start: np.ndarray,
    cost_weights: list[float],
    *,
    steps: int,
    learning_rate: float,
    cost_scale: float,
    max_vector_TU: float | None = None,
) -> list[SearchResult]:
    """For each weight ``lam``: maximize ``P(conforming) - lam x cost / cost_scale`` from
    ``start`` (``problem.objective`` must be ``p_conforming``). ``cost_scale`` (USD) is the
    reference cost, e.g. the start recipe's, so ``lam`` is P(conforming) traded per 100 % cost.
    ``max_vector_TU``: the vector-use limit of :func:`gradient_search`, for every point."""
    if problem.objective != "p_conforming":
        raise ValueError("pareto_sweep needs a problem with objective='p_conforming'")
    return [
        gradient_search(
            problem,
            donors,
            start[None],
            steps=steps,
            learning_rate=learning_rate,
            cost_weight=weight,
            cost_scale=cost_scale,
            max_vector_TU=max_vector_TU,
        )
        for weight in cost_weights
    ]


def non_dominated(p_conforming: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats (higher or equal P at lower or equal cost, one
    strictly)."""
    p, c = np.asarray(p_conforming, float), np.asarray(cost, float)
    better_or_equal = (p[None, :] >= p[:, None]) & (c[None, :] <= c[:, None])
    strictly = (p[None, :] > p[:, None]) | (c[None, :] < c[:, None])
    return ~np.any(better_or_equal & strictly, axis=1)
