"""Shared plumbing for the Hydra entry points in ``experiments/``."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from ._errors import TwinInputError

# JAX logs at INFO that it found no TPU; Hydra's INFO logging would print that on every run.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@contextlib.contextmanager
def exit_on_input_error() -> Iterator[None]:
    """Turn a :class:`TwinInputError` into one ``error:`` line per problem and exit code 2.

    Bugs (any other exception) still raise with their traceback: those are ours to fix.
    """
    try:
        yield
    except TwinInputError as error:
        for line in error.problems:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)


REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DATA_DIR = REPO_ROOT / "twin" / "data" / "example"


def resolve_user_path(path: str | Path) -> Path:
    """A path from a config: absolute as given; relative to the working directory when it
    exists there, else to the repository root (so ``twin/data/example`` works from anywhere)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return REPO_ROOT / candidate
