"""Checkpoints of the optimizer starts, so that a killed calibration resumes where it stopped.

Each start's result is written atomically to ``<folder>/start_<fingerprint>.npz`` as soon as it
is done; the fingerprint hashes everything the result depends on (the start point, every array
of the objective's data, the model spec and the optimizer options), so a checkpoint is only
ever reused for exactly the same fit, and a rerun reads the finished starts back (bit for bit)
and computes only the rest: the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import numpy as np

from .._atomic import atomic_path

_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("checkpoints", default=None)


@contextlib.contextmanager
def checkpoints(folder: str | Path | None) -> Iterator[None]:
    """Within the block, every optimizer start is checkpointed in ``folder`` (``None``: off)."""
    token = _FOLDER.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _FOLDER.reset(token)


def fingerprint(x0, data, spec, options) -> str:
    digest = hashlib.sha256()
    for leaf in (x0, *jax.tree.leaves(data)):
        array = np.asarray(leaf)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr(spec).encode())
    digest.update(repr(options).encode())
    return digest.hexdigest()[:32]


def checkpointed(fit: Callable[[], tuple], key: Callable[[], str], result_type: type):
    """``fit()`` (returning ``(result, wall_s)``), or its checkpoint when one exists."""
    folder = _FOLDER.get()
    if folder is None:
        return fit()
    path = folder / f"start_{key()}.npz"
    if path.is_file():
        with np.load(path) as stored:
            fields = {f.name: stored[f.name] for f in dataclasses.fields(result_type)}
            return result_type(**fields), float(stored["wall_s"])
    result, wall_s = fit()
    arrays = {f.name: np.asarray(getattr(result, f.name)) for f in dataclasses.fields(result_type)}
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        np.savez(stream, wall_s=np.asarray(wall_s), **arrays)
    return result, wall_s
