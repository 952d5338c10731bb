"""The likelihood of real assays: censored readings, Student-t residuals, their inversion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from twin.assays import (
    Likelihood,
    censored,
    predicted_from_residual,
    scaled_residual,
    to_assay_scale,
)

SD = 0.05


def test_censored_reading_is_the_gaussian_tail_below_the_limit():
    likelihood = Likelihood()  # glucose limit 0.1 mM
    predicted = jnp.array([0.02, 0.1, 0.3, 2.0])
    observed = jnp.zeros(4)  # an analyser's "0": below its range
    r = scaled_residual("glucose_mM", observed, predicted, SD, likelihood)
    u = (
        to_assay_scale("glucose_mM", jnp.asarray(0.1)) - to_assay_scale("glucose_mM", predicted)
    ) / SD
    np.testing.assert_allclose(0.5 * r**2, -stats.norm.logcdf(np.asarray(u)), rtol=1e-9, atol=1e-12)
    # Far above the limit it grows like a Gaussian residual; far below it vanishes.
    assert float(r[-1]) > 20 and float(r[0]) < 1e-3


def test_readings_at_or_below_the_limit_are_censored_and_zero_always_is():
    likelihood = Likelihood()
    assert list(np.asarray(censored("glucose_mM", jnp.array([0.0, 0.1, 0.11]), likelihood))) == [
        True,
        True,
        False,
    ]
    assert bool(censored("il2_IU_per_mL", jnp.asarray(0.0), likelihood))
    assert not bool(censored("viability", jnp.asarray(0.0), likelihood))  # logit scale


def test_student_t_residual_is_its_negative_log_density():
    likelihood = Likelihood(residuals="student_t", student_t_dof=3.0)
    observed = jnp.array([1.0, 2.0, 5.0, 20.0])
    predicted = jnp.full(4, 2.0)
    r = scaled_residual("lactate_mM", observed, predicted, SD, likelihood)
    e = (to_assay_scale("lactate_mM", observed) - to_assay_scale("lactate_mM", predicted)) / SD
    nll = -(stats.t.logpdf(np.asarray(e), 3.0) - stats.t.logpdf(0.0, 3.0))
    np.testing.assert_allclose(0.5 * np.asarray(r) ** 2, nll, rtol=1e-9, atol=1e-12)
    assert np.all(np.sign(r) == np.sign(e))


@pytest.mark.parametrize("residuals", ["gaussian", "student_t"])
def test_prediction_is_recovered_from_the_residual(residuals):
    likelihood = Likelihood(residuals=residuals)
    observed = jnp.array([0.0, 0.05, 0.3, 4.0, 12.0])
    predicted = jnp.array([0.5, 0.2, 0.25, 3.0, 15.0])
    r = scaled_residual("glucose_mM", observed, predicted, SD, likelihood)
    back = predicted_from_residual("glucose_mM", observed, r, SD, likelihood)
    np.testing.assert_allclose(back, predicted, rtol=1e-7)


@pytest.mark.parametrize("residuals", ["gaussian", "student_t"])
def test_gradients_are_finite_and_match_differences(residuals):
    likelihood = Likelihood(residuals=residuals)
    observed = jnp.array([0.0, 0.0, 0.3, 4.0])
    predicted = jnp.array([1e-4, 0.15, 0.3, 3.0])  # deep below the limit, near it, exact, off

    def loss(p):
        return 0.5 * jnp.sum(scaled_residual("glucose_mM", observed, p, SD, likelihood) ** 2)

    gradient = np.asarray(jax.grad(loss)(predicted))
    assert np.all(np.isfinite(gradient))
    step = 1e-6 * np.asarray(predicted)
    for i in range(4):
        bump = np.zeros(4)
        bump[i] = step[i]
        fd = (loss(predicted + bump) - loss(predicted - bump)) / (2 * step[i])
        np.testing.assert_allclose(gradient[i], float(fd), rtol=1e-4, atol=1e-6)


def test_bad_likelihood_settings_are_refused():
    with pytest.raises(ValueError, match="residuals='cauchy'"):
        Likelihood(residuals="cauchy")
    with pytest.raises(ValueError, match=r"detection_limits.glucose_mM=-1"):
        Likelihood(detection_limits={"glucose_mM": -1.0})
