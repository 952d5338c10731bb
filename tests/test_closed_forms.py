"""The simulator against closed-form solutions of special cases of the culture model.

Every case switches parts of the biology off with parameter overrides (natural units) so that
what remains has an exact solution: Erlang-delayed exponential growth, the Erlang lag itself,
first-order vector decay through the unit operations, and Poisson transduction of a static
susceptible pool. All runs share one compiled ``simulate`` (24 event slots, 17 save times,
tight tolerances).
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from twin import ModelStructure, SolverSettings, default_parameters, observables, simulate
from twin.kinetics import CELLS_PER_UNIT
from twin.process import Event, build_schedule

N_SLOTS = 24  # every schedule is padded to this many slots (one compile for all)
N_SAVE = 17  # every run saves this many times
TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)
STRUCTURE = ModelStructure()
MEDIUM_GLUCOSE_mM = 11.1
MEDIUM_IL2 = 100.0
SEED_CELLS = 1.0e8
SEED_VIABILITY = 0.95
SEED_VOLUME_ML = 100.0

# Growth without any limitation, and no death: the only dynamics left are the lag and division.
NO_LIMITS = dict(
    growth_decline_time_h=1e30,
    glucose_monod_mM=1e-30,
    lactate_inhibition_mM=1e30,
    il2_independent_growth_fraction=1.0,
    density_half_cells_per_mL=1e30,
    base_death_rate_per_h=0.0,
    lactate_death_rate_per_h=0.0,
    starvation_death_rate_per_h=0.0,
    glucose_per_new_cell_pmol=0.0,  # no uptake: glucose and lactate stay constant
    glucose_maintenance_pmol_per_cell_h=0.0,
    il2_uptake_IU_per_cell_h=0.0,
    il2_half_life_h=1e30,  # IL-2 stays at the medium's level
)


def seed_event(**values) -> Event:
    return Event(
        0.0,
        "seed",
        cells=SEED_CELLS,
        viability=SEED_VIABILITY,
        volume_ml=SEED_VOLUME_ML,
        **values,
    )


def schedule_of(events):
    return build_schedule(
        events,
        medium_glucose_mM=MEDIUM_GLUCOSE_mM,
        medium_il2_IU_per_mL=MEDIUM_IL2,
        n_events=N_SLOTS,
    )


def save_times(*required: float, end: float) -> np.ndarray:
    """N_SAVE increasing save times from 0 to ``end`` that include ``required``."""
    fill = np.linspace(0.0, end, N_SAVE - len(required))
    spacing = fill[1] - fill[0]
    fill = [t + 0.25 * spacing if any(abs(t - r) < 1e-3 for r in required) else t for t in fill]
    times = sorted(set(required) | set(fill))
    assert len(times) == N_SAVE
    return np.asarray(times)


def run(params, events, times):
    trajectory = simulate(params, schedule_of(events), jnp.asarray(times), STRUCTURE, TIGHT)
    assert bool(trajectory.success)
    return trajectory


def erlang_cdf(t, stages: int, rate: float):
    return stats.gamma.cdf(t, a=stages, scale=1.0 / rate)


# ------------------------------------------------------------------ growth


def lagged_activated(t, *, n0, efficiency, lag_h, stages, mu):
    """Activated cells after activation at t = 0 with constant division rate ``mu``, no death.

    Responders pass an Erlang(stages, rate r = stages/lag) delay, then grow as exp(mu (t - s)):
    eff n0 int_0^t erlang_pdf(s) exp(mu (t - s)) ds = eff n0 exp(mu t) (r/(r+mu))^k G_{r+mu}(t).
    """
    r = stages / lag_h
    return (
        efficiency * n0 * np.exp(mu * t) * (r / (r + mu)) ** stages * erlang_cdf(t, stages, r + mu)
    )


def lagged_exponential(t, *, n0, efficiency, lag_h, stages, mu):
    """Viable cells: the unresponsive, those still in the lag and the activated pool."""
    not_responding = (1 - efficiency) * n0
    in_lag = efficiency * n0 * (1 - erlang_cdf(t, stages, stages / lag_h))
    activated = lagged_activated(t, n0=n0, efficiency=efficiency, lag_h=lag_h, stages=stages, mu=mu)
    return not_responding + in_lag + activated


@pytest.mark.parametrize(
    ("overrides", "rate_factor"),
    [
        pytest.param({}, 1.0, id="no-limits"),
        # glucose held at its Monod constant (factor 1/2) and IL-2 at 100 IU/mL with an IL-2
        # Monod constant of 25 (factor 0.3 + 0.7 * 100/125)
        pytest.param(
            dict(
                glucose_monod_mM=MEDIUM_GLUCOSE_mM,
                il2_monod_IU_per_mL=25.0,
                il2_independent_growth_fraction=0.3,
            ),
            0.5 * (0.3 + 0.7 * 100.0 / 125.0),
            id="constant-monod-factors",
        ),
    ],
)
def test_growth_is_erlang_lagged_exponential(overrides, rate_factor):
    mu_max, efficiency, lag_h = 0.04, 0.8, 30.0
    params = default_parameters(
        **{
            **NO_LIMITS,
            **overrides,
            "max_growth_rate_per_h": mu_max,
            "activation_efficiency": efficiency,
            "activation_lag_h": lag_h,
        }
    )
    end = 240.0
    times = save_times(end=end)
    trajectory = run(params, [seed_event(), Event(0.0, "activate"), Event(end, "harvest")], times)
    viable = np.asarray(observables(trajectory.states)["viable_cells"])
    n0 = SEED_CELLS
    closed_form = dict(
        n0=n0,
        efficiency=efficiency,
        lag_h=lag_h,
        stages=STRUCTURE.lag_stages,
        mu=rate_factor * mu_max,
    )
    expected = lagged_exponential(times, **closed_form)
    np.testing.assert_allclose(viable, expected, rtol=1e-8)
    # the end state is the culture at the harvest time
    end_viable = float(observables(trajectory.end_state)["viable_cells"])
    assert end_viable == pytest.approx(expected[-1], rel=1e-8)
    # no death: every new cell is a division
    born = CELLS_PER_UNIT * np.asarray(trajectory.states.born)
    np.testing.assert_allclose(born, viable - n0, rtol=1e-8, atol=1e-6 * n0)
    # late on, the activated pool grows at mu plus what the Erlang tail still feeds it (a share
    # of order exp(-stages t / lag): 1e-6 at 200 h with 2 stages), as its closed form does
    late = times >= 200.0
    activated = np.asarray(trajectory.states.activated_cells)[late]
    growth = np.log(activated[1:] / activated[:-1]) / np.diff(times[late])
    exact = lagged_activated(times[late], **closed_form)
    exact_growth = np.log(exact[1:] / exact[:-1]) / np.diff(times[late])
    np.testing.assert_allclose(growth, exact_growth, rtol=1e-7)
    np.testing.assert_allclose(exact_growth, rate_factor * mu_max, rtol=1e-5)


def test_growth_decline_with_time_since_activation():
    """mu(t) = mu0 (f + (1 - f) exp(-t/tau)) after activation at t = 0 (the default structure:
    exponential-shaped Weibull decline over a floor f): a quadrature of the Erlang delay."""
    mu0, tau, efficiency, lag_h, floor = 0.06, 80.0, 0.9, 20.0, 0.2
    assert STRUCTURE.decline_floor
    stages = STRUCTURE.lag_stages
    params = default_parameters(
        **{
            **NO_LIMITS,
            "growth_decline_time_h": tau,
            "max_growth_rate_per_h": mu0,
            "activation_efficiency": efficiency,
            "activation_lag_h": lag_h,
            "growth_decline_floor": floor,
        }
    )
    end = 200.0
    times = save_times(end=end)
    trajectory = run(params, [seed_event(), Event(0.0, "activate"), Event(end, "harvest")], times)
    activated = CELLS_PER_UNIT * np.asarray(trajectory.states.activated_cells)
    rate = stages / lag_h
    pdf = stats.gamma(a=stages, scale=1.0 / rate).pdf

    def expected_activated(t):
        if t == 0.0:
            return 0.0

        def integrand(s):  # entered the activated pool at s, grew until t
            decayed = tau * (math.exp(-s / tau) - math.exp(-t / tau))
            return pdf(s) * math.exp(mu0 * (floor * (t - s) + (1.0 - floor) * decayed))

        value, _ = integrate.quad(integrand, 0.0, t, epsabs=0.0, epsrel=1e-13, limit=200)
        return efficiency * SEED_CELLS * value

    expected = np.array([expected_activated(t) for t in times])
    np.testing.assert_allclose(activated, expected, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(trajectory.states.time_since_activation_h), times, rtol=1e-12, atol=1e-9
    )


# ------------------------------------------------------------------ activation lag


def test_erlang_activation_lag():
    efficiency, lag_h, t_activate = 0.85, 30.0, 6.0
    stages = STRUCTURE.lag_stages
    params = default_parameters(
        **{
            **NO_LIMITS,
            "max_growth_rate_per_h": 0.0,
            "activation_efficiency": efficiency,
            "activation_lag_h": lag_h,
        }
    )
    end = 150.0
    times = save_times(t_activate, 7.0, end=end)
    trajectory = run(
        params, [seed_event(), Event(t_activate, "activate"), Event(end, "harvest")], times
    )
    states = trajectory.states
    seeded = SEED_CELLS / CELLS_PER_UNIT
    elapsed = np.clip(times - t_activate, 0.0, None)
    rate = stages / lag_h
    share = np.asarray(states.activated_cells) / seeded
    np.testing.assert_allclose(
        share, efficiency * erlang_cdf(elapsed, stages, rate), rtol=1e-8, atol=1e-14
    )
    # stage j of the chain holds the responders that have made exactly j transitions so far
    for j in range(stages):
        occupancy = np.asarray(states.lag[:, j]) / seeded
        expected = np.where(
            times > t_activate, efficiency * stats.poisson.pmf(j, rate * elapsed), 0.0
        )
        np.testing.assert_allclose(occupancy, expected, rtol=1e-8, atol=1e-14)
    # non-responders and resting cells
    after = times > t_activate
    np.testing.assert_allclose(
        np.asarray(states.unresponsive)[after] / seeded, 1 - efficiency, rtol=1e-12
    )
    np.testing.assert_allclose(np.asarray(states.resting)[~after] / seeded, 1.0, rtol=1e-12)
    # the activated cells split into susceptible and refractory by susceptible_fraction
    susceptible = np.asarray(states.susceptible.sum(-1))
    np.testing.assert_allclose(
        susceptible,
        float(params.susceptible_fraction) * np.asarray(states.activated_cells),
        rtol=1e-10,
        atol=1e-14,
    )
    # the activation clock runs from the activate event
    np.testing.assert_allclose(
        np.asarray(states.time_since_activation_h), elapsed, rtol=1e-12, atol=1e-9
    )
    # viable cells are conserved (no growth, no death)
    np.testing.assert_allclose(np.asarray(states.viable), seeded, rtol=1e-12)


# ------------------------------------------------------------------ vector decay


@pytest.mark.parametrize("half_life_h", [35.0, 12.5])
def test_vector_decays_with_its_half_life(half_life_h):
    """No activated (susceptible) cells: vector only decays, with the configured half-life."""
    moi, t_transduce = 5.0, 10.0
    params = default_parameters(vector_half_life_h=half_life_h)
    start = t_transduce + 0.5
    probes = [start + k * half_life_h for k in range(4)]
    end = probes[-1] + 1.0
    times = save_times(t_transduce, *probes, end=end)
    events = [seed_event(), Event(t_transduce, "transduce", moi=moi), Event(end, "harvest")]
    trajectory = run(params, events, times)
    obs = {k: np.asarray(v) for k, v in observables(trajectory.states).items()}
    vector = obs["vector_TU_per_mL"]
    index = {float(t): i for i, t in enumerate(times)}
    # saved at the transduction time: the culture just before the vector was added
    assert vector[index[t_transduce]] == 0.0
    # one half-life later the concentration has halved
    at_probes = np.array([vector[index[p]] for p in probes])
    np.testing.assert_allclose(at_probes[1:] / at_probes[:-1], 0.5, rtol=1e-7)
    # and it started from moi TU per viable cell present at the transduction
    viable_at_transduction = obs["viable_cells"][index[t_transduce]]
    c0 = moi * viable_at_transduction / SEED_VOLUME_ML
    after = times > t_transduce
    expected = c0 * 2.0 ** (-(times[after] - t_transduce) / half_life_h)
    np.testing.assert_allclose(vector[after], expected, rtol=1e-7)


def test_vector_through_exchange_feed_and_sample():
    """Exchange removes a share of the vector, a feed dilutes it, a sample leaves it alone."""
    half_life_h, moi, t_transduce = 35.0, 4.0, 10.0
    t_exchange, fraction = 30.0, 0.4
    t_feed, feed_ml = 50.0, 60.0
    t_sample, sample_ml = 70.0, 20.0
    end = 100.0
    params = default_parameters(vector_half_life_h=half_life_h)
    events = [
        seed_event(),
        Event(t_transduce, "transduce", moi=moi),
        Event(t_exchange, "exchange", fraction=fraction),
        Event(t_feed, "feed", volume_ml=feed_ml),
        Event(t_sample, "sample", volume_ml=sample_ml),
        Event(end, "harvest"),
    ]
    times = save_times(t_transduce, t_exchange, t_feed, t_sample, end=end)
    trajectory = run(params, events, times)
    obs = {k: np.asarray(v) for k, v in observables(trajectory.states).items()}
    c0 = moi * obs["viable_cells"][list(times).index(t_transduce)] / SEED_VOLUME_ML

    def expected_concentration(t):
        if t <= t_transduce:
            return 0.0
        c = c0 * 2.0 ** (-(t - t_transduce) / half_life_h)
        if t > t_exchange:
            c *= 1 - fraction
        if t > t_feed:
            c *= SEED_VOLUME_ML / (SEED_VOLUME_ML + feed_ml)
        return c

    expected = np.array([expected_concentration(t) for t in times])
    np.testing.assert_allclose(obs["vector_TU_per_mL"], expected, rtol=1e-8, atol=0.0)
    volume = np.where(times > t_feed, SEED_VOLUME_ML + feed_ml, SEED_VOLUME_ML)
    volume = np.where(times > t_sample, volume - sample_ml, volume)
    np.testing.assert_array_equal(obs["volume_ml"], volume)
    end_obs = observables(trajectory.end_state)
    assert float(end_obs["vector_TU_per_mL"]) == pytest.approx(expected[-1], rel=1e-8)


# ------------------------------------------------------------------ Poisson transduction


@pytest.mark.parametrize("moi", [1.0, 5.0, 12.0])
def test_transduction_is_poisson_within_the_susceptible_pool(moi):
    """A static, fully activated pool exposed to decaying vector: copies ~ Poisson(m).

    Hits per susceptible cell: k c(t), with c' = -(kd + k S/V) c, so over t -> inf every cell
    collects a Poisson number of hits with mean m = k c0 / (kd + k S / V).
    """
    t_transduce, end = 50.0, 2000.0
    params = default_parameters(
        **{
            **NO_LIMITS,
            "max_growth_rate_per_h": 0.0,
            "activation_lag_h": 1.0,  # the Erlang chain is empty long before transduction
        }
    )
    times = save_times(t_transduce, end=end)
    events = [
        seed_event(),
        Event(0.0, "activate"),
        Event(t_transduce, "transduce", moi=moi),
        Event(end, "harvest"),
    ]
    trajectory = run(params, events, times)
    i_transduce = list(times).index(t_transduce)
    before = trajectory.states
    assert float(before.lag[i_transduce].sum()) < 1e-12  # all responders are activated
    viable = CELLS_PER_UNIT * float(before.viable[i_transduce])
    pool = CELLS_PER_UNIT * float(before.susceptible[i_transduce].sum())
    assert float(before.susceptible[i_transduce, 1:].sum()) == 0.0
    k = float(params.transduction_rate_mL_per_TU_h)
    kd = math.log(2.0) / float(params.vector_half_life_h)
    c0 = moi * viable / SEED_VOLUME_ML
    m = k * c0 / (kd + k * pool / SEED_VOLUME_ML)

    classes = np.asarray(trajectory.end_state.susceptible) * CELLS_PER_UNIT
    assert classes.sum() == pytest.approx(pool, rel=1e-12)
    distribution = classes / pool
    K = STRUCTURE.max_copies
    expected = np.append(stats.poisson.pmf(np.arange(K), m), stats.poisson.sf(K - 1, m))
    np.testing.assert_allclose(distribution, expected, rtol=1e-7)
    assert 1.0 - distribution[0] == pytest.approx(-math.expm1(-m), rel=1e-7)
    # vector is used up / decayed
    assert float(observables(trajectory.end_state)["vector_TU_per_mL"]) < 1e-6
