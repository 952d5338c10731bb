"""Interoperability: the twin's model as SBML and its calibration problem as PEtab."""

from ._sbml import (
    ExtraParameter as ExtraParameter,
    SBMLExport as SBMLExport,
    SBMLExportError as SBMLExportError,
    export_sbml as export_sbml,
    state_ids as state_ids,
)
from ._symbolic import UnsupportedPrimitive as UnsupportedPrimitive, symbolic_call as symbolic_call
from ._roadrunner import (
    load_roadrunner as load_roadrunner,
    roadrunner_observables as roadrunner_observables,
)
