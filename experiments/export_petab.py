"""Write a run-data folder's calibration problem as PEtab v1 (checked with petablint's checks).

    python experiments/export_petab.py data_dir=twin/data/example
    python experiments/export_petab.py data_dir=DIR fit.donor_sd=0.5

Writes ``model.xml`` (SBML, from the simulator's own functions), ``parameters.tsv``,
``conditions.tsv``, ``observables.tsv``, ``measurements.tsv`` and ``problem.yaml`` into the run
directory, with ``resolved_config.yaml`` and ``provenance.json``; ``twin.interop._petab`` says
how the twin's hierarchical MAP objective maps onto PEtab. Exits non-zero if PEtab's own lint
finds a problem.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin import TwinInputError
from twin._cli import exit_on_input_error, resolve_user_path
from twin.calibrate import calibration_from_config
from twin.data import read_run_data
from twin.interop import export_petab, lint_petab
from twin.provenance import write_provenance

jax.config.update("jax_enable_x64", True)


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path) -> Path:
    """Export and lint; returns the path of ``problem.yaml``."""
    params, structure, _ = twin_config.model_from_config(cfg.model)
    noise = twin_config.noise_from_config(cfg.noise)
    config = calibration_from_config(cfg.fit)
    data = read_run_data(resolve_user_path(str(cfg.data_dir)))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg)
    exported = export_petab(
        data,
        out_dir,
        config,
        model_parameters=params,
        structure=structure,
        noise=noise,
        bound_sds=cfg.bound_sds,
    )
    problems = lint_petab(exported.yaml_path)
    if problems:
        raise TwinInputError(f"petablint: {problems[0]}", problems=problems)
    return exported.yaml_path


@hydra.main(config_path="../configs", config_name="export_petab", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        path = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        print(f"PEtab problem: {path}")


if __name__ == "__main__":
    main()
