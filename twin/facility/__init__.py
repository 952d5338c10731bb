"""The Cell Shuttle and the factory around the cartridge twin (SimPy), with cost of goods.

``run_facility`` runs demand -> discrete-event model -> each batch's biology on its realized
and planned schedule -> costs -> summary; see docs/facility.md.
"""

from ._config import (
    CostModel as CostModel,
    DonorGroup as DonorGroup,
    FacilityConfig as FacilityConfig,
    ModuleSpec as ModuleSpec,
    QCSpec as QCSpec,
    RecipeOption as RecipeOption,
    check_config as check_config,
)
from ._plan import RecipePlan as RecipePlan, compile_plans as compile_plans
from ._run import (
    BATCH_COLUMNS as BATCH_COLUMNS,
    MODULE_LOG_COLUMNS as MODULE_LOG_COLUMNS,
    SUMMARY_KEYS as SUMMARY_KEYS,
    FacilityResult as FacilityResult,
    module_utilization as module_utilization,
    run_des_only as run_des_only,
    run_facility as run_facility,
)
