"""Load an exported PEtab problem in pyPESTO with AMICI: its objective at a point, and a fit.

    # in an environment with amici and pypesto (not the twin's: see docs/benchmarks.md)
    python experiments/pypesto_amici.py DIR/problem.yaml --point point.json --out result.json

``point.json`` (written by ``experiments/benchmark.py`` or by hand) maps PEtab parameter ids to
values on the linear scale. Prints and writes: AMICI's model-compile time, pyPESTO's objective
(negative log-posterior, priors included) at the point, and the wall time and objective of one
pyPESTO fit (``ScipyOptimizer``, L-BFGS-B with AMICI's forward sensitivities) started at the
problem's nominal values. Uses argparse, not Hydra: hydra's antlr4 4.9 cannot share an
environment with petab >= 0.4, which AMICI and pyPESTO need.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", type=Path)
    parser.add_argument("--point", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fit", action="store_true", help="also time one pyPESTO fit")
    args = parser.parse_args()

    import petab.v1 as petab
    import pypesto.optimize
    import pypesto.petab

    result: dict = {}
    start = time.perf_counter()
    petab_problem = petab.Problem.from_yaml(str(args.problem))
    importer = pypesto.petab.PetabImporter(
        petab_problem, output_folder=str(args.out.parent / "amici_model"), model_name="cart_twin"
    )
    problem = importer.create_problem()
    result["import_and_compile_s"] = time.perf_counter() - start
    solver = problem.objective.amici_solver if hasattr(problem.objective, "amici_solver") else None
    if solver is not None:
        solver.setRelativeTolerance(1e-10)
        solver.setAbsoluteTolerance(1e-12)
        solver.setMaxSteps(100_000)
    values = json.loads(args.point.read_text())
    scales = petab_problem.parameter_df["parameterScale"].to_dict()
    x = np.array(
        [
            np.log(values[name]) if scales.get(name) == "log" else values[name]
            for name in problem.x_names
        ]
    )
    start = time.perf_counter()
    result["objective_at_point"] = float(problem.objective(x[problem.x_free_indices]))
    result["objective_call_s"] = time.perf_counter() - start
    if args.fit:
        start = time.perf_counter()
        problem.set_x_guesses([np.asarray(petab_problem.x_nominal_free_scaled)])
        fit = pypesto.optimize.minimize(
            problem,
            optimizer=pypesto.optimize.ScipyOptimizer(method="L-BFGS-B"),
            n_starts=1,
            progress_bar=False,
        )
        result["fit_s"] = time.perf_counter() - start
        result["fit_objective"] = float(fit.optimize_result.list[0]["fval"])
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
