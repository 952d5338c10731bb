"""The on-disk JAX compilation cache, for the entry points that compile the calibration."""

from __future__ import annotations

from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache


def enable_compilation_cache(cache_dir: str | Path | None) -> None:
    """Keep compiled programs that took over a second to compile in ``cache_dir`` (``None`` or
    empty: leave the cache off), so that a later process calibrating data of the same padded
    shape reads them back instead of compiling again. Takes effect even if something was
    compiled before (the cache's state is reset)."""
    if not cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    compilation_cache.reset_cache()
