"""Run a sweep into its store chunk by chunk (resuming), and merge the stores of shards."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
import zarr
from tqdm.auto import tqdm

from .._errors import TwinInputError
from ._evaluate import chunk_function
from ._store import (
    SweepPlan,
    chunk_points,
    create_store,
    open_for_resume,
    open_sweep,
    pending_chunks,
    store_arrays,
    write_chunk,
)

DEFAULT_MEMORY_BUDGET_MB = 1024


def local_devices(requested: int, *, key: str = "sweep.devices") -> int:
    """How many local devices to split chunks over (0: all of them)."""
    available = jax.local_device_count()
    if requested < 0 or requested > available:
        raise TwinInputError(
            f"{key}={requested}: choose 0 (all) to {available} local device(s); on CPU set "
            f"JAX_NUM_CPU_DEVICES before JAX starts for one device per core"
        )
    return requested or available


def chunk_size_for(memory_budget_mb: float, bytes_per_point: int, n_points: int) -> int:
    """Points per chunk: as many as the memory budget holds, not more than the sweep has.
    (Independent of the device count, so shards on different machines chunk alike.)"""
    if not memory_budget_mb > 0:
        raise TwinInputError(f"sweep.memory_budget_mb={memory_budget_mb!r}: must be > 0")
    fits = int(memory_budget_mb * 2**20 // bytes_per_point)
    return max(1, min(fits, n_points))


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """What one call of :func:`run_sweep` did."""

    path: Path
    n_points: int
    n_chunks: int
    chunks_computed: int
    chunks_resumed: int
    compile_s: float
    evaluate_s: float
    failed_simulations: int


def run_sweep(
    path: str | Path,
    plan: SweepPlan,
    evaluate: Callable | None,
    params,
    *,
    donors: dict[str, np.ndarray] | None = None,
    progress: bool = True,
    make_evaluate: Callable[[], Callable] | None = None,
) -> SweepReport:
    """Compute every chunk of ``plan`` not yet done in the store at ``path``.

    ``evaluate(x[points, d], params) -> outcomes`` (see :func:`chunk_function`); or
    ``make_evaluate()`` builds it only if some chunk is left (no compile on a finished
    sweep). A store already at ``path`` must hold the same sweep (else
    :class:`~twin.TwinInputError`); its done chunks are kept as they are.
    """
    path = Path(path)
    if path.exists():
        group = open_for_resume(path, plan)
    else:
        create_store(path, plan, donors)
        group = zarr.open_group(path, mode="r+")
    pending = pending_chunks(group)
    arrays = store_arrays(group)
    resumed = plan.n_chunks - len(pending)
    compile_s = evaluate_s = 0.0
    if pending and evaluate is None:
        evaluate = make_evaluate()  # type: ignore[misc]
    left = sum(b - a for a, b in map(plan.chunk_range, pending))
    bar = tqdm(
        total=plan.stop - plan.start,
        initial=plan.stop - plan.start - left,
        unit="pt",
        desc="sweep",
        disable=not progress,
        smoothing=0.1,
    )
    with bar:
        for i, k in enumerate(pending):
            x = chunk_points(arrays, plan, k)
            t0 = time.perf_counter()
            out = evaluate(x, params)
            elapsed = time.perf_counter() - t0
            # The first call includes the compile (one per chunk shape).
            if i == 0:
                compile_s = elapsed
            else:
                evaluate_s += elapsed
            write_chunk(arrays, plan, k, out)
            bar.update(x.shape[0])
    # Counted chunk by chunk: memory stays one chunk at any point count.
    failed = 0
    for k in range(plan.n_chunks):
        a, b = (i - plan.start for i in plan.chunk_range(k))
        failed += int((~np.asarray(arrays["success"][a:b])).sum())
    return SweepReport(
        path,
        plan.stop - plan.start,
        plan.n_chunks,
        len(pending),
        resumed,
        compile_s,
        evaluate_s,
        failed,
    )


def make_chunk_evaluator(
    model, devices: int, donors: bool, chunk_size: int
) -> Callable[[], Callable]:
    """A deferred :func:`chunk_function` (built on first use)."""
    return lambda: chunk_function(model, devices, donors, chunk_size)


def merge_stores(shards: Sequence[str | Path], path: str | Path) -> Path:
    """Join the stores of the shards of one sweep into one store at ``path``, chunk by chunk,
    equal to the store of a single-process run (same points, chunks, values and attributes
    apart from the shard range). The merged store appears in one rename.

    **Raises:** :class:`~twin.TwinInputError` if the shards are of different sweeps, leave
    gaps or overlap, or are unfinished.
    """
    path = Path(path)
    if path.exists():
        raise TwinInputError(f"sweep.merge: {path} exists already; remove it or merge elsewhere")
    if not shards:
        raise TwinInputError("sweep.merge: no shard stores found")
    groups = []
    for shard in shards:
        open_sweep(shard)  # raises when a shard is unfinished
        groups.append((Path(shard), zarr.open_group(shard, mode="r")))
    groups.sort(key=lambda item: (item[1].attrs["start"], item[1].attrs["stop"]))
    first = groups[0][1].attrs
    for shard, group in groups:
        if dict(group.attrs["sweep"]) != dict(first["sweep"]):
            raise TwinInputError(f"sweep.merge: {shard} is a shard of a different sweep")
    position = 0
    for shard, group in groups:
        if group.attrs["start"] != position:
            raise TwinInputError(
                f"sweep.merge: {shard} starts at point {group.attrs['start']}, expected "
                f"{position} (a shard is missing or overlaps)"
            )
        position = group.attrs["stop"]
    if position != first["total"]:
        raise TwinInputError(
            f"sweep.merge: the shards cover points 0-{position} of {first['total']} "
            "(a shard is missing)"
        )
    tmp = path.parent / f".{path.name}.merge-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out = zarr.open_group(tmp, mode="w", zarr_format=3)
    out.attrs.update({**dict(first), "start": 0, "stop": first["total"]})
    _, template = groups[0]
    chunk = int(first["sweep"]["chunk_size"])
    for name, array in template.arrays():
        along_point = array.metadata.dimension_names[0] == "point"
        along_chunk = array.metadata.dimension_names[0] == "chunk"
        shape = array.shape
        if along_point:
            shape = (first["total"], *array.shape[1:])
        elif along_chunk:
            shape = (-(-first["total"] // chunk),)
        target = out.create_array(
            name,
            shape=shape,
            chunks=array.chunks,
            dtype=array.dtype,
            fill_value=array.fill_value,
            dimension_names=array.metadata.dimension_names,
        )
        target.attrs.update(dict(array.attrs))
        if not (along_point or along_chunk):
            target[...] = array[...]
            continue
        for _, group in groups:
            source = group[name]
            offset = group.attrs["start"] // (1 if along_point else chunk)
            step = chunk if along_point else 1
            for a in range(0, source.shape[0], step):
                b = min(a + step, source.shape[0])
                target[offset + a : offset + b] = source[a:b]
    os.rename(tmp, path)
    return path
