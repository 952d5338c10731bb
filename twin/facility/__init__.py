"""The Cell Shuttle and the factory around the cartridge twin (SimPy), with cost of goods.

``run_facility`` runs demand -> discrete-event model -> each batch's biology on its realized
and planned schedule -> costs -> summary; see docs/facility.md.
"""

from ._capacity import demand_sweep as demand_sweep, shuttles_needed as shuttles_needed
from ._config import (
    CostModel as CostModel,
    DonorGroup as DonorGroup,
    FacilityConfig as FacilityConfig,
    ModuleSpec as ModuleSpec,
    QCSpec as QCSpec,
    RecipeOption as RecipeOption,
    check_config as check_config,
    facility_from_config as facility_from_config,
)
from ._cost import COST_COLUMNS as COST_COLUMNS
from ._plan import RecipePlan as RecipePlan, compile_plans as compile_plans
from ._plots import (
    plot_demand as plot_demand,
    plot_gantt as plot_gantt,
    plot_utilization as plot_utilization,
)
from ._run import (
    BATCH_COLUMNS as BATCH_COLUMNS,
    MODULE_LOG_COLUMNS as MODULE_LOG_COLUMNS,
    SUMMARY_KEYS as SUMMARY_KEYS,
    FacilityResult as FacilityResult,
    module_utilization as module_utilization,
    run_des_only as run_des_only,
    run_facility as run_facility,
)
