"""The mismatch bench: virtual CAR-T processes ("plants") written independently of the twin.

Each plant has its own rate laws (NumPy, SciPy's LSODA; the plant modules import nothing from
``twin.kinetics`` or ``twin.simulate``: only ``_twin_model``, the shipped example's oracle, is
the twin itself), a donor population and noisy assays; it reads and writes the run-data
contract, so the twin can be calibrated on a plant's batches and an optimized recipe can be
scored on it.

    python -m twin.plants out_root=bench seed=0            # every plant: bench/<plant>/{train,test}
    python -m twin.plants plants=[signal] out_root=bench   # one plant
"""

from ._assays import VARIABLES as VARIABLES, Assays as Assays
from ._base import Context as Context, Param as Param, Plant as Plant
from ._design import (
    DesignRanges as DesignRanges,
    base_recipe as base_recipe,
    design_recipes as design_recipes,
)
from ._engine import PlantRun as PlantRun, simulate_events as simulate_events
from ._generate import (
    evaluate_events as evaluate_events,
    events_from_table as events_from_table,
    generate as generate,
    simulate_dataset as simulate_dataset,
)
from ._registry import PLANTS as PLANTS, get_plant as get_plant


def generate_all(out_root, plants=None, seed: int = 0, **kwargs) -> dict:
    """:func:`generate` for each plant (default: all) into ``out_root/<plant>``."""
    from pathlib import Path

    names = list(PLANTS) if plants is None else list(plants)
    return {name: generate(name, Path(out_root) / name, seed=seed, **kwargs) for name in names}
