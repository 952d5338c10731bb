"""Culture biology: state, parameters and the vector field."""

from ._parameters import (
    PARAMETER_NAMES as PARAMETER_NAMES,
    PARAMETER_TABLE as PARAMETER_TABLE,
    KineticParameters as KineticParameters,
    ParameterSpec as ParameterSpec,
    decay_rate_per_h as decay_rate_per_h,
    default_parameters as default_parameters,
    from_unconstrained as from_unconstrained,
    to_unconstrained as to_unconstrained,
)
from ._state import (
    CELLS_PER_UNIT as CELLS_PER_UNIT,
    TU_PER_UNIT as TU_PER_UNIT,
    CultureState as CultureState,
    ModelStructure as ModelStructure,
    empty_state as empty_state,
    non_negative as non_negative,
    smallest_normal as smallest_normal,
)
from ._vector_field import (
    culture_vector_field as culture_vector_field,
    death_rate_per_h as death_rate_per_h,
    growth_rate_per_h as growth_rate_per_h,
    hit_rate_per_h as hit_rate_per_h,
)
