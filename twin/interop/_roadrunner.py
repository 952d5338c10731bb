"""Run an exported SBML model in libroadrunner (an independent simulator: LLVM + CVODE)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def load_roadrunner(sbml: str, *, rtol: float, atol: float, max_steps: int = 100_000):
    """A libroadrunner instance of ``sbml`` with CVODE at the given tolerances."""
    try:
        import roadrunner
    except ImportError as error:  # a dev dependency
        raise ImportError("libroadrunner is not installed: pip install libroadrunner") from error
    rr = roadrunner.RoadRunner(sbml)
    rr.integrator.relative_tolerance = rtol
    rr.integrator.absolute_tolerance = atol
    rr.integrator.setValue("maximum_num_steps", max_steps)
    return rr


def roadrunner_observables(
    rr, times_h: Sequence[float], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Simulate from the model's initial state (reset first) and read ``names`` at ``times_h``."""
    rr.resetAll()
    result = rr.simulate(times=list(map(float, times_h)), selections=["time", *names])
    return {name: np.asarray(result[:, i + 1]) for i, name in enumerate(names)}


def roadrunner_batch(
    sbml: str,
    parameter: str,
    values: Sequence[float],
    end_time_h: float,
    rtol: float,
    atol: float,
    observable: str = "viable_cells",
) -> dict:
    """Solve ``sbml`` once per value of ``parameter``, one after another in this process (a
    benchmark worker: one per core). **Returns** the model's load time, the loop's wall and CPU
    seconds, and ``observable`` at ``end_time_h`` for each value."""
    import time

    start = time.perf_counter()
    rr = load_roadrunner(sbml, rtol=rtol, atol=atol)
    load_s = time.perf_counter() - start
    finals = []
    wall, cpu = time.perf_counter(), time.process_time()
    for value in values:
        rr.resetAll()
        rr[parameter] = float(value)
        result = rr.simulate(0.0, float(end_time_h), 2, selections=["time", observable])
        finals.append(float(result[-1, 1]))
    return {
        "load_s": load_s,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "final": finals,
    }
