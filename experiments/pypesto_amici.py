"""Load an exported PEtab problem in pyPESTO with AMICI: its objective at a point, and a fit.

    # in an environment with amici and pypesto (not the twin's: see docs/benchmarks.md)
    python experiments/pypesto_amici.py DIR/problem.yaml --point point.json --out result.json

``point.json`` (written by ``experiments/benchmark_amici.py`` or by hand) maps PEtab parameter ids
to values on the linear scale. Prints and writes: AMICI's model-compile time, pyPESTO's objective
(negative log-posterior, priors included) at the point (solver tolerances 1e-10 / 1e-12), and
the wall and CPU time and the objective of one pyPESTO fit (``--optimizer``: scipy's L-BFGS-B,
the default, or Fides; AMICI's forward sensitivities, solver tolerances ``--rtol`` /
``--atol``) started at the problem's nominal values. ``experiments/benchmark_amici.py`` runs
it and compares with the twin. Uses argparse, not Hydra: hydra's antlr4 4.9 cannot share an
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
    parser.add_argument("--rtol", type=float, default=1e-6, help="AMICI's rtol in the fit")
    parser.add_argument("--atol", type=float, default=1e-8, help="AMICI's atol in the fit")
    parser.add_argument(
        "--optimizer",
        choices=["L-BFGS-B", "fides"],
        default="L-BFGS-B",
        help="scipy's L-BFGS-B, or Fides (trust region; shrinks its region where a "
        "simulation fails instead of stopping; needs the fides package)",
    )
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
    # Without sympy's simplification of the generated derivatives: on this model (events
    # times runs) it ran for many minutes per expression; the code it compiles is the same maths.
    model = importer.create_objective_creator().create_model(verbose=False, simplify=None)
    problem = importer.create_problem(model=model)
    result["import_and_compile_s"] = time.perf_counter() - start
    # With priors the objective aggregates the AMICI likelihood and the prior terms.
    parts = getattr(problem.objective, "_objectives", [problem.objective])
    solver = next(part.amici_solver for part in parts if hasattr(part, "amici_solver"))

    def tolerances(rtol: float, atol: float) -> None:
        solver.set_relative_tolerance(rtol)
        solver.set_absolute_tolerance(atol)
        solver.set_max_steps(100_000)

    tolerances(1e-10, 1e-12)
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
        tolerances(args.rtol, args.atol)
        result["fit_tolerances"] = {"rtol": args.rtol, "atol": args.atol}
        problem.set_x_guesses([np.asarray(petab_problem.x_nominal_free_scaled)])
        start, cpu = time.perf_counter(), time.process_time()
        if args.optimizer == "fides":
            optimizer = pypesto.optimize.FidesOptimizer(verbose=0)
        else:
            optimizer = pypesto.optimize.ScipyOptimizer(method="L-BFGS-B")
        result["fit_optimizer"] = args.optimizer
        fit = pypesto.optimize.minimize(
            problem,
            optimizer=optimizer,
            n_starts=1,
            progress_bar=False,
        )
        result["fit_s"] = time.perf_counter() - start
        result["fit_cpu_s"] = time.process_time() - cpu
        best = fit.optimize_result.list[0]
        result["fit_objective"] = float(best["fval"])
        result["fit_evaluations"] = int(best["n_fval"] or 0)
        result["fit_message"] = str(best["message"])
        tolerances(1e-10, 1e-12)
        result["fit_objective_tight"] = float(
            problem.objective(np.asarray(best["x"])[problem.x_free_indices])
        )
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
