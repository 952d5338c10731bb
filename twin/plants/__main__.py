"""``python -m twin.plants out_root=DIR [plants=[a,b]] [seed=0] [n_train_donors=12]
[runs_per_donor=3] [n_test_donors=20]``: write each plant's train/ and test/ run data."""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from .._cli import exit_on_input_error
from .._errors import TwinInputError
from . import PLANTS, generate_all

DEFAULTS = {
    "out_root": None,
    "plants": list(PLANTS),
    "seed": 0,
    "n_train_donors": 12,
    "runs_per_donor": 3,
    "n_test_donors": 20,
}


def main(argv: list[str]) -> None:
    with exit_on_input_error():
        cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if unknown:
            raise TwinInputError(f"unknown key(s) {unknown} (choose from {sorted(DEFAULTS)})")
        if cfg.out_root is None:
            raise TwinInputError("out_root=DIR is required")
        written = generate_all(
            cfg.out_root,
            plants=list(cfg.plants),
            seed=int(cfg.seed),
            n_train_donors=int(cfg.n_train_donors),
            runs_per_donor=int(cfg.runs_per_donor),
            n_test_donors=int(cfg.n_test_donors),
        )
        for name, parts in written.items():
            print(f"{name}: {parts['train']} {parts['test']}")


if __name__ == "__main__":
    main(sys.argv[1:])
