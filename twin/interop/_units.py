"""The twin's unit strings as SBML unit definitions.

Counts (cells, transducing units, copies) are SBML ``item``; IL-2 international units have no SI
dimension and are written as ``dimensionless`` (each such unit says so in its notes). A unit
string not listed here is exported without SBML units and with the string in the element's notes.
"""

from __future__ import annotations

import libsbml

# unit string -> (SBML id, [(kind, exponent, scale, multiplier)])
_H = (libsbml.UNIT_KIND_SECOND, 1, 0, 3600.0)
_ML = (libsbml.UNIT_KIND_LITRE, 1, -3, 1.0)


def _inv(unit):
    kind, exponent, scale, multiplier = unit
    return (kind, -exponent, scale, multiplier)


_ITEM = (libsbml.UNIT_KIND_ITEM, 1, 0, 1.0)
_MILLION = (libsbml.UNIT_KIND_ITEM, 1, 0, 1.0e6)
_DIMLESS = (libsbml.UNIT_KIND_DIMENSIONLESS, 1, 0, 1.0)

UNITS: dict[str, tuple[str, list]] = {
    "h": ("hour", [_H]),
    "1/h": ("per_hour", [_inv(_H)]),
    "fraction": ("dimensionless", []),
    "mol/mol": ("dimensionless", []),
    "1/division": ("dimensionless", []),
    "copies/cell": ("dimensionless", []),
    "": ("dimensionless", []),
    "mM": ("mM", [(libsbml.UNIT_KIND_MOLE, 1, -3, 1.0), (libsbml.UNIT_KIND_LITRE, -1, 0, 1.0)]),
    "mL": ("mL", [_ML]),
    "IU/mL": ("IU_per_mL", [_DIMLESS, _inv(_ML)]),
    "cells": ("cells", [_ITEM]),
    "cells/mL": ("cells_per_mL", [_ITEM, _inv(_ML)]),
    "TU/mL": ("TU_per_mL", [_ITEM, _inv(_ML)]),
    "Mcells": ("Mcells", [_MILLION]),
    "MTU": ("MTU", [_MILLION]),
    "pmol/cell": ("pmol_per_cell", [(libsbml.UNIT_KIND_MOLE, 1, -12, 1.0), _inv(_ITEM)]),
    "pmol/(cell h)": (
        "pmol_per_cell_h",
        [(libsbml.UNIT_KIND_MOLE, 1, -12, 1.0), _inv(_ITEM), _inv(_H)],
    ),
    "IU/(cell h)": ("IU_per_cell_h", [_DIMLESS, _inv(_ITEM), _inv(_H)]),
    "mL/(TU h)": ("mL_per_TU_h", [_ML, _inv(_ITEM), _inv(_H)]),
}


def sbml_unit(model: libsbml.Model, unit: str) -> str | None:
    """The id of the SBML unit definition for ``unit`` (added to ``model`` once), or None."""
    if unit not in UNITS:
        return None
    unit_id, parts = UNITS[unit]
    if unit_id == "dimensionless":
        return unit_id
    if model.getUnitDefinition(unit_id) is None:
        definition = model.createUnitDefinition()
        definition.setId(unit_id)
        definition.setName(unit)
        for kind, exponent, scale, multiplier in parts:
            u = definition.createUnit()
            u.setKind(kind)
            u.setExponent(exponent)
            u.setScale(scale)
            u.setMultiplier(multiplier)
    return unit_id
