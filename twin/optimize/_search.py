"""Searches over the decision space with one simulation budget, and evaluation on fresh donors.

Budget accounting (simulations of one batch): an objective evaluation over ``N`` donors costs
``N``; a forward-mode gradient over ``D`` decisions is counted as ``N (1 + D)`` (the primal
plus one tangent per decision, what finite differences would cost), although it measured close
to one evaluation's wall time. The derivative-free baseline gets the same count of simulations.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import optax
from scipy.stats import qmc

from ..kinetics import KineticParameters
from ._objective import objective_loss
from ._problem import RobustProblem


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The best point of a search over the training donors.

    **Fields:** ``z`` (unconstrained decisions), ``loss`` (its loss: the smooth surrogate for the
    gradient search, exact for the baseline), ``history`` (per start, the loss of each
    evaluation), ``simulations`` (the budget used, see the module doc), ``seconds`` (wall time).
    """

    z: np.ndarray
    loss: float
    history: tuple[np.ndarray, ...]
    simulations: int
    seconds: float


def n_donors(donors: KineticParameters) -> int:
    return int(np.shape(donors.activation_lag_h)[0])


def gradient_simulations(problem: RobustProblem, donors: KineticParameters, steps: int) -> int:
    """Simulations charged to ``steps`` gradient evaluations (see the module doc)."""
    return steps * n_donors(donors) * (1 + problem.space.dimension)


def gradient_search(
    problem: RobustProblem,
    donors: KineticParameters,
    starts: np.ndarray,
    *,
    steps: int,
    learning_rate: float,
    cost_weight: float = 0.0,
    cost_scale: float = 1.0,
) -> SearchResult:
    """Adam on the unconstrained decisions from each of ``starts`` (``(S, D)``), ``steps``
    gradient evaluations each; keeps the evaluated point with the lowest smooth loss."""
    began = time.perf_counter()
    optimizer = optax.adam(learning_rate)
    best_z, best_loss, history = starts[0], math.inf, []
    for start in starts:
        z = np.asarray(start, float)
        state = optimizer.init(z)
        losses = []
        for _ in range(steps):
            loss, gradient, _ = problem.loss_and_gradient(z, donors, cost_weight, cost_scale)
            losses.append(loss)
            if loss < best_loss:
                best_z, best_loss = z, loss
            # A donor whose solve fails contributes no gradient rather than NaN.
            gradient = np.where(np.isfinite(gradient), gradient, 0.0)
            updates, state = optimizer.update(gradient, state, z)
            z = np.asarray(optax.apply_updates(z, updates))
        history.append(np.asarray(losses))
    return SearchResult(
        z=np.asarray(best_z),
        loss=best_loss,
        history=tuple(history),
        simulations=len(starts) * gradient_simulations(problem, donors, steps),
        seconds=time.perf_counter() - began,
    )


def sobol_search(
    problem: RobustProblem,
    donors: KineticParameters,
    simulations: int,
    *,
    seed: int,
) -> SearchResult:
    """Scrambled Sobol points over the trust region (the start recipe first), each scored by
    the exact objective on ``donors``; as many points as ``simulations`` allows."""
    began = time.perf_counter()
    n_points = max(1, simulations // n_donors(donors))
    dimension = problem.space.dimension
    sampler = qmc.Sobol(dimension, scramble=True, seed=seed)
    cube = sampler.random_base2(max(0, math.ceil(math.log2(n_points))))[: n_points - 1]
    points = np.concatenate([problem.space.start()[None], problem.space.from_unit_cube(cube)])
    losses = np.array(
        [
            float(objective_loss(problem.outcomes(z, donors), problem.objective, exact=True))
            for z in points
        ]
    )
    best = int(np.nanargmin(np.where(np.isnan(losses), np.inf, losses)))
    return SearchResult(
        z=points[best],
        loss=float(losses[best]),
        history=(losses,),
        simulations=len(points) * n_donors(donors),
        seconds=time.perf_counter() - began,
    )


def evaluate(
    problem: RobustProblem, z: np.ndarray, donor_chunks: list[KineticParameters]
) -> dict[str, np.ndarray]:
    """Per-donor outcomes at ``z`` over all chunks (each chunk the size the problem was
    compiled for), concatenated."""
    outs = [problem.outcomes(z, chunk) for chunk in donor_chunks]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, *, n_boot: int, level: float = 0.9
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` over donors."""
    index = rng.integers(0, len(values), size=(n_boot, len(values)))
    means = values[index].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
