"""Cost of goods: direct costs per batch plus its share of the facility, and per conforming dose.

Direct: cartridge, vector (mL used), medium (L) and IL-2 (IU), QC (in-process assays and the
release panel), labour (per batch plus each module operation's hands-on time). Fixed: building
(capex per ft2 x area per Shuttle) and equipment, straight-line depreciation, spread over the
batches the factory finished in the horizon, so an underused factory pays more per batch.
Overhead: a fraction of direct plus fixed.
"""

from __future__ import annotations

import numpy as np

from ._config import FacilityConfig
from ._plan import RecipePlan

COST_COLUMNS: tuple[str, ...] = (
    "cartridge_usd",
    "vector_usd",
    "medium_usd",
    "qc_usd",
    "labour_usd",
    "facility_usd",
    "overhead_usd",
    "cost_usd",
)


def annual_fixed_cost_usd(cfg: FacilityConfig) -> float:
    """Depreciation of building and equipment per year (USD/yr)."""
    c = cfg.cost
    capex = cfg.shuttles * (
        c.area_ft2_per_shuttle * c.facility_capex_usd_per_ft2 + c.equipment_capex_usd_per_shuttle
    )
    return capex / c.depreciation_years


def batch_costs(
    cfg: FacilityConfig, plans: list[RecipePlan], recipe: np.ndarray, finished: np.ndarray
) -> dict[str, np.ndarray]:
    """Cost lines (USD) per batch; batches not finished in the horizon carry no fixed share."""
    c = cfg.cost
    n = len(recipe)
    options = list(cfg.recipes.values())
    per_recipe = []
    for plan, option in zip(plans, options, strict=True):
        n_samples = sum(op == "sample" for op in plan.operations)
        labour_h = c.labour_h_per_batch + sum(cfg.modules[m].labour_h for m in plan.modules)
        per_recipe.append(
            {
                "cartridge_usd": c.cartridge_usd,
                "vector_usd": plan.vector_ml * option.vector_price_usd_per_mL,
                "medium_usd": plan.medium_L * c.medium_usd_per_L
                + plan.il2_million_IU * c.il2_usd_per_million_IU,
                "qc_usd": n_samples * c.in_process_assay_usd + c.release_panel_usd,
                "labour_usd": labour_h * c.labour_usd_per_h,
            }
        )
    lines = {k: np.array([per_recipe[r][k] for r in recipe], float) for k in per_recipe[0]}
    fixed_total = annual_fixed_cost_usd(cfg) * cfg.horizon_days / 365.0
    n_finished = int(finished.sum())
    lines["facility_usd"] = np.where(finished, fixed_total / max(n_finished, 1), 0.0)
    direct = sum(lines[k] for k in ("cartridge_usd", "vector_usd", "medium_usd", "qc_usd"))
    direct = direct + lines["labour_usd"] + lines["facility_usd"]
    lines["overhead_usd"] = c.overhead_fraction * direct
    lines["cost_usd"] = direct + lines["overhead_usd"]
    assert set(lines) == set(COST_COLUMNS) and all(len(v) == n for v in lines.values())
    return lines
