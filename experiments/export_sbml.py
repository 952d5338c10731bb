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
from twin._cli import exit_on_input_error
from twin.interop import export_sbml
from twin.provenance import write_provenance

jax.config.update("jax_enable_x64", True)


def schedule_from_config(cfg: DictConfig):
    """The recipe's schedule, or a recorded run's (``data_dir`` + ``run_id``); and its label."""
    recipe = twin_config.recipe_from_config(cfg.recipe)
    schedule, _, run_id = twin_config.batch_from_config(cfg, recipe)
    return schedule, run_id or "recipe"


@twin_config.with_configured_bounds
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
