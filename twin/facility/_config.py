"""Facility configuration: the Hydra schema (``facility`` group) and its checks.

Every number that crosses into the model carries its unit in its name. Defaults describe one
Cell Shuttle running the default recipe; the scenarios in ``configs/facility/`` override them.
Values marked "approx." in comments are engineering guesses, not published figures.
"""

from __future__ import annotations

import dataclasses
import math

from .._errors import TwinInputError
from .._limits import MAX_FACILITY_BATCHES, MAX_FACILITY_DAYS, over_limit
from ..kinetics import PARAMETER_NAMES
from ..process import Recipe

# Which module each recipe operation needs (module names are free; operations are
# twin.process.RECORDED_OPERATIONS). Fill-finish follows the harvest and is not a recipe event.
DEFAULT_OPERATION_MODULES: dict[str, str] = {
    "seed": "enrichment",
    "activate": "fluidics",
    "transduce": "fluidics",
    "exchange": "fluidics",
    "feed": "fluidics",
    "sample": "sampling",
    "harvest": "harvest",
}
FILL_FINISH = "fill_finish"


@dataclasses.dataclass
class ModuleSpec:
    """One kind of shared module of a Shuttle: ``capacity`` units, each serving one cartridge at
    a time for ``duration_h`` per operation; breakdowns every ``mtbf_h`` (exponential; ``null``:
    never) repaired in ``mttr_h`` (exponential); ``labour_h`` operator hands-on time per
    operation (for the cost of goods)."""

    capacity: int = 1
    duration_h: float = 0.5
    mtbf_h: float | None = None
    mttr_h: float = 4.0
    labour_h: float = 0.0


def _default_modules() -> dict[str, ModuleSpec]:
    # Durations approx. (hands-off automated steps; enrichment ~ a CliniMACS-like selection).
    return {
        "enrichment": ModuleSpec(capacity=1, duration_h=3.0),
        "fluidics": ModuleSpec(capacity=2, duration_h=0.5),
        "sampling": ModuleSpec(capacity=1, duration_h=0.1),
        "harvest": ModuleSpec(capacity=1, duration_h=2.0),
        "fill_finish": ModuleSpec(capacity=1, duration_h=1.5),
    }


@dataclasses.dataclass
class QCSpec:
    """The factory's QC workcell (Cell Q): ``capacity`` parallel assay stations. Each in-process
    sample and each release panel occupies a station for its hands-on time; results come back
    after the turnaround (sterility: USP <71> 14 d incubation, rapid methods 2-5 d)."""

    capacity: int = 1
    in_process_assay_h: float = 0.25  # approx.
    release_assay_h: float = 2.0  # approx.
    sterility_turnaround_d: float = 14.0  # USP <71>
    rapid_sterility: bool = False
    rapid_sterility_turnaround_d: float = 3.0  # rapid microbial methods: 2-5 d
    other_release_turnaround_d: float = 1.0  # identity, potency, VCN, endotoxin (approx.)
    sterility_failure_probability: float = 0.0  # per batch (approx.; 0 = biology decides alone)

    @property
    def release_turnaround_h(self) -> float:
        qc = self
        sterility_d = (
            qc.rapid_sterility_turnaround_d if qc.rapid_sterility else qc.sterility_turnaround_d
        )
        return 24.0 * max(sterility_d, self.other_release_turnaround_d)


@dataclasses.dataclass
class RecipeOption:
    """One process in the recipe mix, with its vector: the MOI actually given is the recipe's,
    capped by ``max_vector_volume_ml`` of vector at ``vector_functional_titer_TU_per_mL``."""

    weight: float = 1.0
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    vector_functional_titer_TU_per_mL: float = 1.0e8  # approx. (concentrated LV)
    max_vector_volume_ml: float = 10.0  # approx.
    vector_price_usd_per_mL: float = 2000.0  # approx.


@dataclasses.dataclass
class DonorGroup:
    """One kind of starting material. ``bank_size`` 0: each batch its own donor (autologous);
    ``n > 0``: batches draw from a bank of ``n`` donors (allogeneic). ``parameter_factors``
    multiply the population's kinetic parameters; ``donor_sd_scale`` scales donor variability.
    ``recipe``: the recipe option this group always uses (``null``: draw from the recipe mix).
    ``weight_end``: the group's weight at the horizon's end (linear in time; ``null``: fixed)."""

    weight: float = 1.0
    weight_end: float | None = None
    bank_size: int = 0
    donor_sd_scale: float = 1.0
    parameter_factors: dict[str, float] = dataclasses.field(default_factory=dict)
    recipe: str | None = None


@dataclasses.dataclass
class CostModel:
    """Cost of goods (USD). Each default is marked with its basis; "approx." = an engineering
    estimate, to be replaced by a site's own figures."""

    # approx.: single-use closed cartridge/kit (tubing sets of closed systems: ~10^4 USD)
    cartridge_usd: float = 12000.0
    medium_usd_per_L: float = 400.0  # approx. (serum-free T-cell medium, list prices 300-600 USD/L)
    il2_usd_per_million_IU: float = 20.0  # approx.
    in_process_assay_usd: float = 150.0  # approx.
    # approx.: sterility, mycoplasma, endotoxin, VCN, identity, potency
    release_panel_usd: float = 15000.0
    labour_usd_per_h: float = 120.0  # approx. (fully loaded GMP operator/QC)
    labour_h_per_batch: float = 10.0  # approx. (intake, QA review, release, shipping)
    facility_capex_usd_per_ft2: float = 1500.0  # approx. (GMP build-out)
    area_ft2_per_shuttle: float = 3100.0  # Bridgewater 118,000 ft2 / 38 Shuttles (company figures)
    equipment_capex_usd_per_shuttle: float = 10.0e6  # approx.
    depreciation_years: float = 10.0  # approx. (straight line)
    overhead_fraction: float = 0.25  # approx. (QA, utilities, management on direct costs)


@dataclasses.dataclass
class FacilityConfig:
    """A factory: ``shuttles`` Cell Shuttles of ``bays_per_shuttle`` bays with shared modules and
    one robot each, a QC workcell, and Poisson patient arrivals over ``horizon_days``."""

    shuttles: int = 1
    bays_per_shuttle: int = 16
    robots_per_shuttle: int = 1
    robot_move_h: float = 0.05  # one pick-and-place of a cartridge (approx.)
    bay_turnaround_h: float = 4.0  # cartridge out, bay checks, next cartridge in (approx.)
    modules: dict[str, ModuleSpec] = dataclasses.field(default_factory=_default_modules)
    operation_modules: dict[str, str] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_OPERATION_MODULES)
    )
    qc: QCSpec = dataclasses.field(default_factory=QCSpec)
    arrivals_per_week: float = 14.0
    arrivals_per_week_end: float | None = None  # linear change over the horizon (null: fixed)
    horizon_days: float = 28.0
    seed: int = 0
    donor_variability: bool = True
    donor_sd: dict[str, float] = dataclasses.field(
        default_factory=lambda: {
            "max_growth_rate_per_h": 0.15,
            "activation_lag_h": 0.15,
            "activation_efficiency": 0.5,
            "susceptible_fraction": 0.4,
            "base_death_rate_per_h": 0.3,
        }
    )
    donors: dict[str, DonorGroup] = dataclasses.field(
        default_factory=lambda: {"autologous": DonorGroup()}
    )
    recipes: dict[str, RecipeOption] = dataclasses.field(
        default_factory=lambda: {"standard": RecipeOption()}
    )
    cost: CostModel = dataclasses.field(default_factory=CostModel)
    cartridge_capacity_ml: float = 1000.0
    biology_chunk: int = 1024  # batches per vmapped solve (one compile per shape)


def check_config(cfg: FacilityConfig) -> None:
    """Raise :class:`TwinInputError` naming ``facility.<key>`` and its value for bad settings."""
    problems: list[str] = []

    def need(ok: bool, key: str, value: object, rule: str) -> None:
        if not ok:
            problems.append(f"facility.{key}={value!r}: {rule}")

    def positive_int(key: str, value: object) -> None:
        need(isinstance(value, int) and value >= 1, key, value, "must be an integer >= 1")

    def nonneg(key: str, value: object) -> None:
        ok = isinstance(value, int | float) and math.isfinite(value) and value >= 0
        need(ok, key, value, "must be a finite number >= 0")

    def positive(key: str, value: object) -> None:
        ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
        need(ok, key, value, "must be a finite number > 0")

    for key in ("shuttles", "bays_per_shuttle", "robots_per_shuttle", "biology_chunk"):
        positive_int(key, getattr(cfg, key))
    for key in ("robot_move_h", "bay_turnaround_h", "arrivals_per_week"):
        nonneg(key, getattr(cfg, key))
    positive("horizon_days", cfg.horizon_days)
    if not problems:  # sizes of a run that would hang (a typo), refused before it starts
        limit = over_limit(
            "facility.horizon_days", cfg.horizon_days, cfg.horizon_days, MAX_FACILITY_DAYS, "days"
        )
        rate = max(cfg.arrivals_per_week, cfg.arrivals_per_week_end or 0.0)
        batches = rate * cfg.horizon_days / 7.0
        limit = limit or over_limit(
            "facility.arrivals_per_week",
            cfg.arrivals_per_week,
            batches,
            MAX_FACILITY_BATCHES,
            f"batches over {cfg.horizon_days:g} days",
        )
        if limit:
            problems.append(limit)
    positive("cartridge_capacity_ml", cfg.cartridge_capacity_ml)
    if cfg.arrivals_per_week_end is not None:
        nonneg("arrivals_per_week_end", cfg.arrivals_per_week_end)
    for name, spec in cfg.modules.items():
        positive_int(f"modules.{name}.capacity", spec.capacity)
        nonneg(f"modules.{name}.duration_h", spec.duration_h)
        positive(f"modules.{name}.mttr_h", spec.mttr_h)
        nonneg(f"modules.{name}.labour_h", spec.labour_h)
        if spec.mtbf_h is not None:
            positive(f"modules.{name}.mtbf_h", spec.mtbf_h)
    for operation, module in cfg.operation_modules.items():
        need(
            operation in DEFAULT_OPERATION_MODULES,
            f"operation_modules.{operation}",
            module,
            f"unknown operation (expected one of {list(DEFAULT_OPERATION_MODULES)})",
        )
        need(
            module in cfg.modules,
            f"operation_modules.{operation}",
            module,
            f"no such module (modules: {list(cfg.modules)})",
        )
    for operation in DEFAULT_OPERATION_MODULES:
        need(
            operation in cfg.operation_modules,
            "operation_modules",
            sorted(cfg.operation_modules),
            f"no module for operation {operation!r}",
        )
    need(FILL_FINISH in cfg.modules, "modules", sorted(cfg.modules), "needs a 'fill_finish' module")
    qc = cfg.qc
    positive_int("qc.capacity", qc.capacity)
    for key in (
        "in_process_assay_h",
        "release_assay_h",
        "sterility_turnaround_d",
        "rapid_sterility_turnaround_d",
        "other_release_turnaround_d",
    ):
        nonneg(f"qc.{key}", getattr(qc, key))
    p = qc.sterility_failure_probability
    need(0 <= p <= 1, "qc.sterility_failure_probability", p, "must be a fraction in [0, 1]")
    for name, sd in cfg.donor_sd.items():
        need(name in PARAMETER_NAMES, f"donor_sd.{name}", sd, "not a kinetic parameter")
        nonneg(f"donor_sd.{name}", sd)
    need(len(cfg.donors) > 0, "donors", {}, "needs at least one donor group")
    need(len(cfg.recipes) > 0, "recipes", {}, "needs at least one recipe option")
    for name, group in cfg.donors.items():
        nonneg(f"donors.{name}.weight", group.weight)
        if group.weight_end is not None:
            nonneg(f"donors.{name}.weight_end", group.weight_end)
        need(
            isinstance(group.bank_size, int) and group.bank_size >= 0,
            f"donors.{name}.bank_size",
            group.bank_size,
            "must be an integer >= 0",
        )
        nonneg(f"donors.{name}.donor_sd_scale", group.donor_sd_scale)
        for parameter, factor in group.parameter_factors.items():
            need(
                parameter in PARAMETER_NAMES,
                f"donors.{name}.parameter_factors.{parameter}",
                factor,
                "not a kinetic parameter",
            )
            positive(f"donors.{name}.parameter_factors.{parameter}", factor)
        if group.recipe is not None:
            need(
                group.recipe in cfg.recipes,
                f"donors.{name}.recipe",
                group.recipe,
                f"no such recipe option (recipes: {list(cfg.recipes)})",
            )
    need(
        sum(g.weight for g in cfg.donors.values()) > 0,
        "donors",
        "weights",
        "the donor weights must not all be 0",
    )
    need(
        sum(r.weight for r in cfg.recipes.values()) > 0,
        "recipes",
        "weights",
        "the recipe weights must not all be 0",
    )
    for name, option in cfg.recipes.items():
        nonneg(f"recipes.{name}.weight", option.weight)
        positive(
            f"recipes.{name}.vector_functional_titer_TU_per_mL",
            option.vector_functional_titer_TU_per_mL,
        )
        positive(f"recipes.{name}.max_vector_volume_ml", option.max_vector_volume_ml)
        nonneg(f"recipes.{name}.vector_price_usd_per_mL", option.vector_price_usd_per_mL)
    for field in dataclasses.fields(CostModel):
        nonneg(f"cost.{field.name}", getattr(cfg.cost, field.name))
    positive("cost.depreciation_years", cfg.cost.depreciation_years)
    if problems:
        raise TwinInputError(problems[0], problems=problems)


def facility_from_config(node) -> FacilityConfig:
    """A checked :class:`FacilityConfig` from the ``facility`` config node."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(node)
    check_config(cfg)
    return cfg
