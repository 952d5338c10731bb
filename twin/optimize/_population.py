"""Donor populations: the input of robust optimization, decoupled from calibration."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import TwinInputError
from ..kinetics import (
    PARAMETER_NAMES,
    KineticParameters,
    from_unconstrained,
    to_unconstrained,
)
from ..virtual import sample_donor_parameters


@dataclasses.dataclass(frozen=True)
class DonorPopulation:
    """A donor population on the estimation scale (log for positive, logit for fractions).

    **Fields:**

    - ``parameters``: the population (typical donor) kinetic parameters, natural units.
    - ``donor_sd``: per parameter name, the SD of the donor effect on the estimation scale;
      parameters not named are shared by all donors.
    - ``covariance``: optional ``(P, P)`` covariance of the population parameters on the
      estimation scale, rows and columns in :data:`~twin.kinetics.PARAMETER_NAMES` order
      (uncertainty of a calibration); ``None`` treats ``parameters`` as known.
    """

    parameters: KineticParameters
    donor_sd: Mapping[str, float]
    covariance: np.ndarray | None = None

    def __post_init__(self):
        n = len(PARAMETER_NAMES)
        if self.covariance is not None and np.shape(self.covariance) != (n, n):
            raise TwinInputError(
                f"population covariance has shape {np.shape(self.covariance)}, expected {(n, n)}"
            )

    def sample(self, key: jax.Array, n: int) -> KineticParameters:
        """``n`` donors (leading axis): each a donor effect around the population, plus (with
        a covariance) a draw of the population parameters themselves, i.e. the predictive
        distribution of a new donor."""
        key_donor, key_population = jax.random.split(key)
        donors = sample_donor_parameters(key_donor, self.parameters, dict(self.donor_sd), n)
        if self.covariance is None:
            return donors
        chol = jnp.linalg.cholesky(jnp.asarray(self.covariance, float))
        shift = jax.random.normal(key_population, (n, len(PARAMETER_NAMES))) @ chol.T
        centre = to_unconstrained(donors)
        return from_unconstrained(
            KineticParameters(
                **{
                    name: getattr(centre, name) + shift[:, i]
                    for i, name in enumerate(PARAMETER_NAMES)
                }
            )
        )
