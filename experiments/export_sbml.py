"""Write the twin's model as SBML Level 3: a recipe, or a recorded batch (data_dir + run_id).

    python experiments/export_sbml.py                       # default recipe
    python experiments/export_sbml.py recipe.moi=3
    python experiments/export_sbml.py data_dir=twin/data/example run_id=R001

Writes ``model.xml`` (generated from the simulator's own vector field, jump maps and observables:
``twin.interop.export_sbml``) into the run directory, with ``resolved_config.yaml`` and
``provenance.json``. Exits non-zero if libsbml's consistency check reports an error.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import twin.config as twin_config
from twin import TwinInputError
from twin._atomic import atomic_path
from twin._cli import exit_on_input_error, resolve_user_path
from twin.interop import export_sbml
from twin.process import build_schedule
from twin.provenance import write_provenance

jax.config.update("jax_enable_x64", True)


def schedule_from_config(cfg: DictConfig):
    """The recipe's schedule, or a recorded run's (``data_dir`` + ``run_id``); and its label."""
    recipe = twin_config.recipe_from_config(cfg.recipe)
    if cfg.data_dir is None:
        if cfg.run_id is not None:
            raise TwinInputError(f"run_id={cfg.run_id!r} needs data_dir (the run-data folder)")
        return recipe.schedule(capacity_ml=cfg.cartridge_capacity_ml), "recipe"
    from twin.data import read_run_data

    data = read_run_data(resolve_user_path(cfg.data_dir))
    if cfg.run_id is None:
        raise TwinInputError(f"data_dir={cfg.data_dir!r} needs run_id (one of {data.run_ids})")
    run_id = str(cfg.run_id)
    if run_id not in data.run_ids:
        raise TwinInputError(f"run_id={run_id!r} is not in {cfg.data_dir} (runs: {data.run_ids})")
    schedule = build_schedule(
        data.events_for(run_id),
        medium_glucose_mM=recipe.medium_glucose_mM,
        medium_il2_IU_per_mL=recipe.medium_il2_IU_per_mL,
    )
    return schedule, run_id


def run(cfg: DictConfig, out_dir: Path) -> Path:
    """Export the configured model and schedule to ``out_dir/model.xml``; returns its path."""
    params, structure, _ = twin_config.model_from_config(cfg.model)
    schedule, label = schedule_from_config(cfg)
    exported = export_sbml(params, schedule, structure, model_id=f"cart_twin_{label}")
    errors = exported.errors()
    if errors:
        raise TwinInputError(
            f"the exported SBML fails libsbml's check: {errors[0]}", problems=errors
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_provenance(out_dir, cfg)
    path = out_dir / "model.xml"
    with atomic_path(path) as tmp:
        tmp.write_text(exported.to_string())
    return path


@hydra.main(config_path="../configs", config_name="export_sbml", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_input_error(cfg):
        path = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        print(f"SBML model: {path}")


if __name__ == "__main__":
    main()
