"""Culture biology: state, parameters and the vector field."""

from ._parameters import (
    PARAMETER_NAMES as PARAMETER_NAMES,
)
from ._parameters import (
    PARAMETER_TABLE as PARAMETER_TABLE,
)
from ._parameters import (
    KineticParameters as KineticParameters,
)
from ._parameters import (
    ParameterSpec as ParameterSpec,
)
from ._parameters import (
    decay_rate_per_h as decay_rate_per_h,
)
from ._parameters import (
    default_parameters as default_parameters,
)
from ._parameters import (
    from_unconstrained as from_unconstrained,
)
from ._parameters import (
    to_unconstrained as to_unconstrained,
)
from ._state import (
    CELLS_PER_UNIT as CELLS_PER_UNIT,
)
from ._state import (
    TU_PER_UNIT as TU_PER_UNIT,
)
from ._state import (
    CultureState as CultureState,
)
from ._state import (
    ModelStructure as ModelStructure,
)
from ._state import (
    empty_state as empty_state,
)
from ._vector_field import (
    culture_vector_field as culture_vector_field,
)
from ._vector_field import (
    death_rate_per_h as death_rate_per_h,
)
from ._vector_field import (
    growth_rate_per_h as growth_rate_per_h,
)
from ._vector_field import (
    hit_rate_per_h as hit_rate_per_h,
)
