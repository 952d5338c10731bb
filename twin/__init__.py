"""cart-twin: a digital twin of automated CAR-T manufacturing (one Cell Shuttle cartridge)."""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError, version as _version

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

try:
    __version__ = _version("cart-twin")
except _PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"
