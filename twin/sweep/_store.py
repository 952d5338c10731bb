"""The sweep store: a Zarr group read as an xarray Dataset, written chunk by chunk.

Layout (``sweep.zarr``): dimension ``point`` (the store's range of the design's points) with
the coordinate ``point`` (global index) and one coordinate per swept name; the outcomes of
:data:`~twin.sweep._evaluate.OUTCOMES` along ``point`` (or ``point, donor`` with donors, then
also ``p_conforming`` and ``success_fraction`` along ``point``); the donors' kinetic
parameters along ``donor``; ``chunk_done`` along ``chunk``, the commit markers.

Why it is never corrupt, and resumable after SIGKILL at any moment:

- The store is built (metadata, coordinates, donors) in a hidden folder beside it and renamed
  into place in one step; a store that exists is complete in structure.
- Zarr chunks along ``point`` are the sweep's chunks, so writing a chunk's outcomes replaces
  one file per variable, and Zarr's local store writes every file to a temporary name and
  renames it (``zarr.storage.LocalStore``): a file is either old or new, never torn.
- A chunk's ``chunk_done`` marker (its own one-element Zarr chunk, also renamed into place)
  is written only after all its outcome files: a chunk marked done is complete; anything
  else is recomputed on the next run (its outcome values are overwritten as a whole).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .._errors import TwinInputError
from ._evaluate import FAILURES, OUTCOMES
from ._space import DESIGNS, SweepSpace, design_blocks, design_size

STORE_NAME = "sweep.zarr"
_FILL = {"f8": np.nan, "bool": False, "i1": -1}


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """Which points a store holds and how they are chunked.

    ``n_points`` is the requested count (the design may round it, :func:`design_size`);
    ``start``/``stop`` the range of design points this store holds (a shard's range, or all);
    ``chunk_size`` points per chunk (chunks start at multiples of it, globally);
    ``fingerprint`` everything else that determines the results (model, recipe, solver,
    downstream, donors), compared on resume and merge.
    """

    space: SweepSpace
    design: str
    n_points: int
    seed: int
    chunk_size: int
    n_donors: int
    start: int
    stop: int
    fingerprint: Mapping

    @property
    def total(self) -> int:
        return design_size(self.design, self.n_points, self.space.dimension)

    @property
    def n_chunks(self) -> int:
        return -(-(self.stop - self.start) // self.chunk_size)

    def chunk_range(self, k: int) -> tuple[int, int]:
        """Global point range of local chunk ``k``."""
        a = self.start + k * self.chunk_size
        return a, min(a + self.chunk_size, self.stop)

    def identity(self) -> dict:
        """What must match for two stores to hold parts of the same sweep."""
        return {
            "space": self.space.as_dict(),
            "design": self.design,
            "n_points": self.n_points,
            "seed": self.seed,
            "chunk_size": self.chunk_size,
            "n_donors": self.n_donors,
            "fingerprint": json.loads(json.dumps(self.fingerprint, default=str)),
        }


def shard_range(total: int, chunk_size: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Point range of ``shard`` of ``n_shards``: contiguous runs of whole chunks, as even as
    possible (so a merged store is chunked exactly as a single-process one)."""
    n_chunks = -(-total // chunk_size)
    first = shard * n_chunks // n_shards
    last = (shard + 1) * n_chunks // n_shards
    return min(first * chunk_size, total), min(last * chunk_size, total)


def create_store(
    path: Path, plan: SweepPlan, donors: Mapping[str, np.ndarray] | None, block: int | None = None
) -> None:
    """Build the store for ``plan`` (coordinates written, no outcomes) and move it to
    ``path`` in one rename. ``donors``: kinetic parameter name -> per-donor values."""
    path = Path(path)
    # A build killed earlier leaves its hidden folder: never renamed, so never used; remove it.
    for stale in path.parent.glob(f".{path.name}.init-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.init-{os.getpid()}"
    n, cs = plan.stop - plan.start, plan.chunk_size
    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    group.attrs.update(
        {
            "sweep": plan.identity(),
            "start": plan.start,
            "stop": plan.stop,
            "total": plan.total,
            "designs": DESIGNS[plan.design],
        }
    )
    point_dims = ["point", "donor"] if plan.n_donors else ["point"]
    coords = " ".join(["point", *plan.space.names])
    index = group.create_array(
        "point", shape=(n,), chunks=(cs,), dtype="i8", dimension_names=["point"]
    )
    for name in plan.space.names:
        array = group.create_array(
            name, shape=(n,), chunks=(cs,), dtype="f8", dimension_names=["point"]
        )
        array.attrs.update({"units": plan.space.unit(name), "kind": plan.space.kind(name)})
    arrays = [group[name] for name in plan.space.names]
    for a, b, values in design_blocks(
        plan.space, plan.design, plan.n_points, plan.seed, plan.start, plan.stop, block or cs
    ):
        # Block by block (not whole columns), so memory stays one block at any point count.
        index[a - plan.start : b - plan.start] = np.arange(a, b)
        for j, array in enumerate(arrays):
            array[a - plan.start : b - plan.start] = values[:, j]
    shape = (n, plan.n_donors) if plan.n_donors else (n,)
    chunks = (cs, plan.n_donors) if plan.n_donors else (cs,)
    for name, (unit, dtype) in OUTCOMES.items():
        array = group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=_FILL[dtype],
            dimension_names=point_dims,
        )
        array.attrs.update({"units": unit, "coordinates": coords})
    group["failure"].attrs.update(
        {
            "flag_values": list(FAILURES),
            "flag_meanings": " ".join(m.split(":")[0] for m in FAILURES.values()),
            "failure_messages": {str(k): v for k, v in FAILURES.items()},
            "_fill_meaning": "-1: not computed yet",
        }
    )
    if plan.n_donors:
        for name, unit in (("p_conforming", "fraction"), ("success_fraction", "fraction")):
            array = group.create_array(
                name,
                shape=(n,),
                chunks=(cs,),
                dtype="f8",
                fill_value=np.nan,
                dimension_names=["point"],
            )
            array.attrs.update({"units": unit, "coordinates": coords})
        for name, values in (donors or {}).items():
            array = group.create_array(
                f"donor_{name}",
                shape=(plan.n_donors,),
                dtype="f8",
                dimension_names=["donor"],
            )
            array[:] = np.asarray(values, float)
    group.create_array(
        "chunk_done",
        shape=(plan.n_chunks,),
        chunks=(1,),
        dtype="bool",
        fill_value=False,
        dimension_names=["chunk"],
    )
    os.rename(tmp, path)  # atomic; fails if another process made the store meanwhile


def open_for_resume(path: Path, plan: SweepPlan) -> zarr.Group:
    """Open an existing store of the same sweep (else a clear error naming what differs)."""
    group = zarr.open_group(path, mode="r+")
    stored = dict(group.attrs["sweep"])
    wanted = plan.identity()
    different = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if (group.attrs["start"], group.attrs["stop"]) != (plan.start, plan.stop):
        different.append("shard range (sweep.shard / sweep.n_shards)")
    if different:
        raise TwinInputError(
            f"{path} holds a sweep with a different {', '.join(different)}; resume it with "
            "the same settings, or give a new hydra.run.dir"
        )
    return group


def pending_chunks(group: zarr.Group) -> list[int]:
    done = np.asarray(group["chunk_done"][:])
    return [int(k) for k in np.flatnonzero(~done)]


def store_arrays(group: zarr.Group) -> dict[str, zarr.Array]:
    """The store's arrays by name (looked up once: each lookup reads metadata)."""
    return dict(group.arrays())


def chunk_points(arrays: Mapping[str, zarr.Array], plan: SweepPlan, k: int) -> np.ndarray:
    """The swept values of local chunk ``k``, ``(points, d)``."""
    a, b = (i - plan.start for i in plan.chunk_range(k))
    return np.stack([np.asarray(arrays[name][a:b]) for name in plan.space.names], axis=-1)


def write_chunk(
    arrays: Mapping[str, zarr.Array], plan: SweepPlan, k: int, out: Mapping[str, np.ndarray]
) -> None:
    """Write local chunk ``k``'s outcomes (concurrently, one file each), then, only once all
    of them are in place, its done marker."""
    a, b = (i - plan.start for i in plan.chunk_range(k))
    values = {name: np.asarray(out[name]).astype(dtype) for name, (_, dtype) in OUTCOMES.items()}
    if plan.n_donors:
        # A failed simulation counts as a non-conforming batch (it is flagged per donor).
        values["p_conforming"] = np.mean(out["conforming"], axis=1)
        values["success_fraction"] = np.mean(out["success"], axis=1)

    def put(name):
        arrays[name][a:b] = values[name]

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, values))  # list(): re-raises any write's error before the marker
    arrays["chunk_done"][k] = True


def open_sweep(path: str | Path, *, allow_incomplete: bool = False) -> xr.Dataset:
    """The store as an xarray Dataset (lazy; swept names and ``point`` as coordinates).

    **Raises:** :class:`~twin.TwinInputError` if no store is there, or some chunks are not
    done (unless ``allow_incomplete``: then outcomes of unfinished chunks read as their
    fill values, NaN / False / failure -1).
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise TwinInputError(f"no sweep store at {path}")
    ds = xr.open_zarr(path, consolidated=False, chunks=None)
    sweep = ds.attrs["sweep"]
    ds = ds.set_coords(["point", *sweep["space"]])
    done = np.asarray(ds["chunk_done"].values)
    if not allow_incomplete and not done.all():
        raise TwinInputError(
            f"{path}: {int((~done).sum())} of {done.size} chunks not done; rerun the same "
            "command (same hydra.run.dir) to finish the sweep"
        )
    return ds
