"""Interoperability: the twin's model as SBML and its calibration problem as PEtab."""

from ._petab import (
    PetabExport as PetabExport,
    export_petab as export_petab,
    lint_petab as lint_petab,
    objective_constant as objective_constant,
    petab_parameter_values as petab_parameter_values,
)
from ._roadrunner import (
    load_roadrunner as load_roadrunner,
    roadrunner_batch as roadrunner_batch,
    roadrunner_observables as roadrunner_observables,
)
from ._sbml import (
    ExtraParameter as ExtraParameter,
    SBMLExport as SBMLExport,
    SBMLExportError as SBMLExportError,
    export_sbml as export_sbml,
    state_ids as state_ids,
)
from ._symbolic import UnsupportedPrimitive as UnsupportedPrimitive, symbolic_call as symbolic_call
