"""cart-twin: a digital twin of automated CAR-T manufacturing (one Cell Shuttle cartridge)."""

from ._errors import TwinInputError as TwinInputError
from .kinetics import (
    PARAMETER_TABLE as PARAMETER_TABLE,
    CultureState as CultureState,
    KineticParameters as KineticParameters,
    ModelStructure as ModelStructure,
    default_parameters as default_parameters,
)
from .observe import OBSERVABLES as OBSERVABLES, observables as observables
from .process import Event as Event, Recipe as Recipe, Schedule as Schedule
from .simulate import (
    SolverSettings as SolverSettings,
    Trajectory as Trajectory,
    simulate as simulate,
)
