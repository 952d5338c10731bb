"""Searches over the decision space with one simulation budget, and evaluation on fresh donors.

Budget accounting (simulations of one batch): an objective evaluation over ``N`` donors costs
``N``; a forward-mode gradient over ``D`` decisions is counted as ``N (1 + D)`` (the primal
plus one tangent per decision, what finite differences would cost), although it measured close
to one evaluation's wall time. The Sobol screen that picks the gradient search's starts
(:func:`screen_starts`) is charged to it. The derivative-free baseline gets the same count of
simulations, and its first points are the screen's.

Both searches take the same optional limit on the mean vector use over the training donors
(``max_vector_TU``): a quadratic penalty steers the gradient search, infeasible points are
filtered out of the baseline, and each returns the best point that meets the limit.
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

# The vector-use penalty aims this far (relative) inside the limit, so that iterates which
# settle against the limit stay feasible rather than hovering just outside it.
VECTOR_MARGIN = 0.01
# Penalty weight per (relative excess)^2, in units of |smooth loss at the first evaluation|
# (so it is on the objective's scale whatever the objective).
VECTOR_PENALTY = 100.0


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The best point of a search over the training donors.

    **Fields:** ``z`` (unconstrained decisions), ``loss`` (its loss: the smooth surrogate for the
    gradient search, exact for the baseline), ``history`` (per start, the loss of each
    evaluation; NaN where the point broke the vector limit, for the baseline),
    ``simulations`` (the budget used, see the module doc), ``seconds`` (wall time),
    ``vector_TU`` (mean vector use over the training donors at ``z``, TU), ``feasible``
    (whether ``z`` meets the vector limit; a search keeps the best feasible point and returns
    an infeasible one only if it evaluated no feasible point), ``evaluated_feasible`` (how many
    evaluated points met the limit).
    """

    z: np.ndarray
    loss: float
    history: tuple[np.ndarray, ...]
    simulations: int
    seconds: float
    vector_TU: float = math.nan
    feasible: bool = True
    evaluated_feasible: int = 0


def n_donors(donors: KineticParameters) -> int:
    return int(np.shape(donors.activation_lag_h)[0])


def gradient_simulations(problem: RobustProblem, donors: KineticParameters, steps: int) -> int:
    """Simulations charged to ``steps`` gradient evaluations (see the module doc)."""
    return steps * n_donors(donors) * (1 + problem.space.dimension)


def _rank(loss: float, vector: float, limit: float) -> tuple[int, float]:
    """Sort key of an evaluated point: feasible points by loss, then the rest by vector use."""
    if vector <= limit:
        return (0, loss if math.isfinite(loss) else math.inf)
    return (1, vector)


def gradient_search(
    problem: RobustProblem,
    donors: KineticParameters,
    starts: np.ndarray,
    *,
    steps: int,
    learning_rate: float,
    cost_weight: float = 0.0,
    cost_scale: float = 1.0,
    max_vector_TU: float | None = None,
) -> SearchResult:
    """Adam on the unconstrained decisions from each of ``starts`` (``(S, D)``), ``steps``
    gradient evaluations each; keeps the evaluated point with the lowest smooth loss among
    those whose mean vector use over ``donors`` is at most ``max_vector_TU`` (TU; ``None``:
    no limit).

    The limit enters the descent as a quadratic penalty on the relative excess over
    ``(1 - VECTOR_MARGIN) x max_vector_TU``, its gradient exact (the mean vector use is a
    second row of the same forward-mode Jacobian); feasibility of the kept point is then
    checked exactly, not left to the penalty.
    """
    began = time.perf_counter()
    limit = math.inf if max_vector_TU is None else float(max_vector_TU)
    optimizer = optax.adam(learning_rate)
    best_z, best_key, best_loss, best_vector = starts[0], (2, math.inf), math.inf, math.nan
    weight, n_feasible, history = None, 0, []
    for start in starts:
        z = np.asarray(start, float)
        state = optimizer.init(z)
        losses = []
        for _ in range(steps):
            loss, gradient, vector_gradient, out = problem.loss_and_jacobian(
                z, donors, cost_weight, cost_scale
            )
            vector = float(np.mean(out["vector_TU"]))
            losses.append(loss)
            key = _rank(loss, vector, limit)
            n_feasible += key[0] == 0
            if key < best_key:
                best_z, best_key, best_loss, best_vector = z, key, loss, vector
            if weight is None:
                weight = VECTOR_PENALTY * max(abs(loss), 1e-6) if math.isfinite(loss) else 1.0
            excess = max(0.0, vector / limit - (1.0 - VECTOR_MARGIN))
            if excess > 0:
                gradient = gradient + 2.0 * weight * excess * vector_gradient / limit
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
        vector_TU=best_vector,
        feasible=best_key[0] == 0,
        evaluated_feasible=int(n_feasible),
    )


def sobol_search(
    problem: RobustProblem,
    donors: KineticParameters,
    simulations: int,
    *,
    seed: int,
    max_vector_TU: float | None = None,
) -> SearchResult:
    """Scrambled Sobol points over the trust region (the start recipe first), each scored by
    the exact objective on ``donors``; as many points as ``simulations`` allows. Points whose
    mean vector use exceeds ``max_vector_TU`` (TU; ``None``: no limit) are infeasible: they
    use budget but cannot be chosen (unless none is feasible: then the least vector use)."""
    began = time.perf_counter()
    limit = math.inf if max_vector_TU is None else float(max_vector_TU)
    points = sobol_points(problem, max(1, simulations // n_donors(donors)), seed=seed)
    losses, vectors = _score(problem, donors, points, exact=True)
    keys = [_rank(loss, vector, limit) for loss, vector in zip(losses, vectors, strict=True)]
    best = min(range(len(points)), key=keys.__getitem__)
    feasible = np.array([key[0] == 0 for key in keys])
    return SearchResult(
        z=points[best],
        loss=losses[best],
        history=(np.where(feasible, losses, np.nan),),
        simulations=len(points) * n_donors(donors),
        seconds=time.perf_counter() - began,
        vector_TU=vectors[best],
        feasible=bool(feasible[best]),
        evaluated_feasible=int(feasible.sum()),
    )


def sobol_points(problem: RobustProblem, n_points: int, *, seed: int) -> np.ndarray:
    """The start recipe, then ``n_points - 1`` scrambled Sobol points over the trust region
    (``(n_points, D)``, unconstrained). One sequence per seed: a shorter list is a prefix of a
    longer one, so a screen of ``n`` points is the first ``n`` points of the baseline."""
    sampler = qmc.Sobol(problem.space.dimension, scramble=True, seed=seed)
    cube = sampler.random_base2(max(0, math.ceil(math.log2(n_points))))[: n_points - 1]
    return np.concatenate([problem.space.start()[None], problem.space.from_unit_cube(cube)])


def screen_starts(
    problem: RobustProblem,
    donors: KineticParameters,
    n_points: int,
    n_starts: int,
    *,
    seed: int,
    max_vector_TU: float | None = None,
) -> tuple[np.ndarray, int]:
    """Starts for the gradient search: the ``n_starts`` best of the first ``n_points`` Sobol
    points (:func:`sobol_points`, the start recipe itself left out), ranked by the smooth loss
    the gradient search descends, feasible points first (``max_vector_TU``, TU). Returns them
    (``(n_starts, D)``) and the simulations the screen used."""
    points = sobol_points(problem, n_points, seed=seed)[1:]
    losses, vectors = _score(problem, donors, points, exact=False)
    limit = math.inf if max_vector_TU is None else float(max_vector_TU)
    order = sorted(range(len(points)), key=lambda i: _rank(losses[i], vectors[i], limit))
    return points[order[:n_starts]], len(points) * n_donors(donors)


def _score(
    problem: RobustProblem, donors: KineticParameters, points: np.ndarray, *, exact: bool
) -> tuple[list[float], list[float]]:
    """Loss (exact or smooth) and mean vector use over ``donors`` (TU) of each point."""
    losses, vectors = [], []
    for z in points:
        out = problem.outcomes(z, donors)
        losses.append(float(objective_loss(out, problem.objective, exact=exact)))
        vectors.append(float(np.mean(out["vector_TU"])))
    return losses, vectors


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
