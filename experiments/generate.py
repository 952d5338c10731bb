"""Generate virtual batches in the run-data format, with their true parameters.

    python experiments/generate.py                                  # 10 donors x 3 runs
    python experiments/generate.py out_dir=data/virtual n_donors=4 seed=7
    python experiments/generate.py out_dir=twin/data/example overwrite=true   # the shipped example
    python experiments/generate.py running_at_h=120   # batches still running on day 5

The dataset folder holds runs.csv, events.csv, measurements.csv (RUN_DATA.md), plus
true_parameters.csv (each run's kinetic parameters, natural units) and generate_config.yaml
(the resolved config that made it). With ``running_at_h``, each run is recorded only up to that
hour (no harvest yet: batches still running, for ``forecast.py``); ``true_parameters.csv`` still
holds the parameters their whole course follows.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import twin.config as twin_config
from twin import TwinInputError
from twin._cli import exit_on_input_error, resolve_user_path
from twin._limits import MAX_DRAWS, over_limit
from twin.data import write_run_data
from twin.provenance import write_provenance
from twin.virtual import AssayPlan, generate_dataset

jax.config.update("jax_enable_x64", True)


@twin_config.with_configured_bounds
def run(cfg: DictConfig, out_dir: Path) -> Path:
    """Generate the dataset described by ``cfg``; return the dataset folder."""
    runs = cfg.n_donors * cfg.runs_per_donor
    if limit := over_limit("n_donors", cfg.n_donors, runs, MAX_DRAWS, "runs (x runs_per_donor)"):
        raise TwinInputError(limit)
    params, structure, solver = twin_config.model_from_config(cfg.model)
    dataset_dir = out_dir / "dataset" if cfg.out_dir is None else resolve_user_path(cfg.out_dir)
    if dataset_dir.exists() and not cfg.overwrite:
        raise TwinInputError(f"out_dir={str(dataset_dir)!r} exists (set overwrite=true to replace)")
    plan = AssayPlan(
        variables=tuple(cfg.assays.variables),
        transduction_readout_delay_h=cfg.assays.transduction_readout_delay_h,
    )
    virtual = generate_dataset(
        cfg.seed,
        params,
        OmegaConf.to_container(cfg.population.donor_sd),
        twin_config.recipe_from_config(cfg.recipe),
        n_donors=cfg.n_donors,
        runs_per_donor=cfg.runs_per_donor,
        grid=OmegaConf.to_container(cfg.design.grid),
        uniform=OmegaConf.to_container(cfg.design.uniform),
        noise=twin_config.noise_from_config(cfg.noise),
        plan=plan,
        structure=structure,
        solver=solver,
        capacity_ml=cfg.cartridge_capacity_ml,
        run_id_format=cfg.run_id_format,
        donor_id_format=cfg.donor_id_format,
    )
    run_data = virtual.run_data
    if cfg.running_at_h is not None:
        if not cfg.running_at_h > 0:
            raise TwinInputError(f"running_at_h={cfg.running_at_h!r}: must be > 0 (or null)")
        run_data = run_data.as_of(cfg.running_at_h)
    extra = {
        "true_parameters.csv": virtual.true_parameters.to_csv(index=False),
        "generate_config.yaml": OmegaConf.to_yaml(cfg, resolve=True),
    }
    write_run_data(run_data, dataset_dir, extra_files=extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg, seed=cfg.seed)
    return dataset_dir


@hydra.main(config_path="../configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        dataset_dir = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        print(f"wrote {cfg.n_donors * cfg.runs_per_donor} runs to {dataset_dir}")


if __name__ == "__main__":
    main()
