"""Reproducibility: every output folder records its resolved config, seed, package versions,
source revision, a hash of its input files, the XLA device count and the environment variables
that change results."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
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

# Environment variables that change numbers: precision, device split (the sum order of a
# sharded reduction, ~1e-7 relative), XLA's compiler flags, equinox's runtime-error mode.
RESULT_ENV_VARS = (
    "JAX_ENABLE_X64",
    "JAX_NUM_CPU_DEVICES",
    "JAX_PLATFORMS",
    "JAX_DEFAULT_MATMUL_PRECISION",
    "JAX_DEFAULT_DTYPE_BITS",
    "XLA_FLAGS",
    "EQX_ON_ERROR",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)

# Config keys (at the top level or one level down) that name input files or folders.
INPUT_KEYS = ("data_dir", "test_dir", "calibration")

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def source_revision(root: Path = _SOURCE_ROOT) -> dict[str, object]:
    """``{"commit": ..., "dirty": ...}`` of the git checkout holding ``twin`` (``None`` values
    when it is not a git checkout, e.g. an installed wheel). ``dirty``: tracked files differ
    from the commit."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def hash_path(path: str | os.PathLike) -> str:
    """SHA-256 over a file, or over a folder's files (relative names and contents, sorted;
    hidden files skipped). Independent of modification times and the folder's location."""
    root = Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(root.rglob("*"))
    for file in files:
        relative = file.relative_to(root) if file != root else Path(file.name)
        if not file.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(str(relative.as_posix()).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def input_hashes(cfg: DictConfig) -> dict[str, str]:
    """``{config key: sha256}`` of every existing input named by an :data:`INPUT_KEYS` key."""
    from ._cli import resolve_user_path

    found = {}
    nodes = [("", cfg)] + [(f"{k}.", v) for k, v in cfg.items() if isinstance(v, DictConfig)]
    for prefix, node in nodes:
        for key in INPUT_KEYS:
            value = node.get(key) if key in node else None
            if isinstance(value, str) and value:
                path = resolve_user_path(value)
                if path.exists():
                    found[f"{prefix}{key}"] = hash_path(path)
    return found


def device_record() -> dict[str, object]:
    """The JAX backend and its device count (results depend on how work is split)."""
    import jax

    return {
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
    }


def write_provenance(out_dir: str | Path, cfg: DictConfig, *, seed: int | None = None) -> None:
    """Write ``resolved_config.yaml`` and ``provenance.json`` (seed, versions, command line,
    source revision, input hashes, devices, environment)."""
    out = Path(out_dir)
    with atomic_path(out / "resolved_config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    record = {
        "seed": seed,
        "seed_note": "seeds every random draw" if seed is not None else "no random draws",
        "argv": sys.argv,
        "source": source_revision(),
        "input_sha256": input_hashes(cfg),
        "devices": device_record(),
        "environment": {name: os.environ.get(name) for name in RESULT_ENV_VARS},
        "versions": package_versions(),
    }
    with atomic_path(out / "provenance.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2))
