"""cart-twin: a digital twin of automated CAR-T manufacturing (one Cell Shuttle cartridge)."""

from ._errors import TwinInputError as TwinInputError
from .kinetics import (
    PARAMETER_TABLE as PARAMETER_TABLE,
)
from .kinetics import (
    CultureState as CultureState,
)
from .kinetics import (
    KineticParameters as KineticParameters,
)
from .kinetics import (
    ModelStructure as ModelStructure,
)
from .kinetics import (
    default_parameters as default_parameters,
)
from .observe import OBSERVABLES as OBSERVABLES
from .observe import observables as observables
from .process import Event as Event
from .process import Recipe as Recipe
from .process import Schedule as Schedule
from .simulate import SolverSettings as SolverSettings
from .simulate import Trajectory as Trajectory
from .simulate import simulate as simulate
