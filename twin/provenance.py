"""Reproducibility: every output folder records its resolved config, seed and package versions."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ._atomic import atomic_path

_PACKAGES = (
    "cart-twin",
    "jax",
    "jaxlib",
    "diffrax",
    "equinox",
    "optax",
    "optimistix",
    "numpy",
    "scipy",
    "xarray",
    "pandas",
    "netCDF4",
    "hydra-core",
    "matplotlib",
    "zarr",
    "SALib",
)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def write_provenance(out_dir: str | Path, cfg: DictConfig, *, seed: int | None = None) -> None:
    """Write ``resolved_config.yaml`` and ``provenance.json`` (seed, versions, command line)."""
    out = Path(out_dir)
    with atomic_path(out / "resolved_config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    record = {"seed": seed, "argv": sys.argv, "versions": package_versions()}
    with atomic_path(out / "provenance.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
