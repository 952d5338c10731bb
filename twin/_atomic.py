"""Atomic file output: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def respect_umask(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give ``path`` the mode an ordinary ``open``/``mkdir`` would have given it.

    ``mkstemp`` creates files 0600 and ``mkdtemp`` folders 0700 (private temporaries); once
    such a temporary becomes an output it should be as readable as any other file the user
    writes (0666 or 0777 less the umask).
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            respect_umask(tmp_path, directory=tmp_path.is_dir())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
