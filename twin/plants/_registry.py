"""The bench's plants by name."""

from __future__ import annotations

from .._errors import TwinInputError
from ._base import Plant
from ._cytokine import CytokinePlant
from ._fixed_delay import FixedDelayPlant
from ._lognormal_onset import LognormalOnsetPlant
from ._replicative import ReplicativePlant
from ._signal import SignalPlant

PLANTS: dict[str, type[Plant]] = {
    cls.name: cls
    for cls in (FixedDelayPlant, SignalPlant, LognormalOnsetPlant, CytokinePlant, ReplicativePlant)
}


def get_plant(name: str) -> Plant:
    """The plant called ``name``."""
    if name not in PLANTS:
        raise TwinInputError(f"plant={name!r}: unknown (choose from {sorted(PLANTS)})")
    return PLANTS[name]()
