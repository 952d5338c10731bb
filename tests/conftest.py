"""Strict numerics for every test: float64, no implicit rank promotion."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


def tree_allclose(x, y, *, rtol: float, atol: float) -> bool:
    """Leaf-wise ``np.allclose`` over two pytrees of the same structure."""
    leaves_x, tree_x = jax.tree.flatten(x)
    leaves_y, tree_y = jax.tree.flatten(y)
    if tree_x != tree_y:
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(leaves_x, leaves_y, strict=True)
    )


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]
