"""Robust, constrained recipe optimization through the differentiable twin.

Decisions (bounded process values) map to an unconstrained vector (:class:`DecisionSpace`);
a :class:`DonorPopulation` supplies common random donors; a :class:`RobustProblem` simulates
all donors at once and gives exact outcomes and forward-mode gradients of a smooth surrogate;
:func:`gradient_search` (Adam, multi-start from the best points of a Sobol screen,
:func:`screen_starts`) and :func:`sobol_search` (the derivative-free baseline) search on one
simulation budget and one vector-use limit; :func:`pareto_sweep` trades P(conforming) for
cost; :func:`covered_ranges` says what the calibration data covered, :func:`outside_ranges`
where a recipe leaves it.

The stage in one call: :func:`optimize_recipe` (from a recipe, or a recorded batch read by
:func:`read_start_events`) returns an :class:`Optimization`; :func:`write_optimization`
writes its files. Recipes are also scored on other processes: :class:`TwinVariantProcess`
(:func:`holdout_process`) or any :class:`EventsProcess` (a callable running a batch record).
"""

from ._config import (
    DATA_GUARDS as DATA_GUARDS,
    DecisionBounds as DecisionBounds,
    HoldoutConfig as HoldoutConfig,
    OptimizeConfig as OptimizeConfig,
)
from ._coverage import (
    covered_ranges as covered_ranges,
    outside_ranges as outside_ranges,
    restrict_to_ranges as restrict_to_ranges,
)
from ._io import (
    RESOLUTION as RESOLUTION,
    recipe_events as recipe_events,
    recipe_yaml as recipe_yaml,
    rounded_recipe as rounded_recipe,
    write_optimization as write_optimization,
)
from ._objective import (
    OBJECTIVES as OBJECTIVES,
    Prices as Prices,
    donor_outcomes as donor_outcomes,
    medium_use as medium_use,
    objective_loss as objective_loss,
    objective_score as objective_score,
    release_margins as release_margins,
    smooth_conformance as smooth_conformance,
)
from ._optimize import Optimization as Optimization, optimize_recipe as optimize_recipe
from ._pareto import non_dominated as non_dominated, pareto_sweep as pareto_sweep
from ._population import (
    DonorPopulation as DonorPopulation,
    population_from_calibration as population_from_calibration,
)
from ._problem import RobustProblem as RobustProblem
from ._processes import (
    HARVEST_OBSERVABLES as HARVEST_OBSERVABLES,
    EventsProcess as EventsProcess,
    TwinVariantProcess as TwinVariantProcess,
    holdout_process as holdout_process,
    plant_evaluator as plant_evaluator,
    twin_events_evaluator as twin_events_evaluator,
)
from ._search import (
    SearchResult as SearchResult,
    bootstrap_interval as bootstrap_interval,
    evaluate as evaluate,
    gradient_search as gradient_search,
    screen_starts as screen_starts,
    sobol_points as sobol_points,
    sobol_search as sobol_search,
)
from ._space import DecisionSpace as DecisionSpace, decision_space as decision_space
from ._start import (
    StartRecord as StartRecord,
    read_start_events as read_start_events,
    recipe_from_record as recipe_from_record,
)
