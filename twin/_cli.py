"""Shared plumbing for the Hydra entry points in ``experiments/``."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from omegaconf import DictConfig, OmegaConf

from ._errors import TwinInputError

# JAX logs at INFO that it found no TPU, and its persistent compilation cache explains at
# WARNING each program it does not keep (host callbacks): chatter for a user of the commands.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
for _name in ("jax._src.compiler", "jax._src.compilation_cache", "jax._src.cache_key"):
    logging.getLogger(_name).setLevel(logging.ERROR)

# The file every run folder holds once a run has written its outputs (see twin.provenance).
RUN_MARKER = "provenance.json"


@contextlib.contextmanager
def exit_on_input_error(cfg: DictConfig | None = None) -> Iterator[None]:
    """Turn a :class:`TwinInputError` into one ``error:`` line per problem and exit code 2.

    With the entry point's ``cfg`` (inside ``@hydra.main``) it also refuses, before any work,
    ``+key=value`` overrides of keys that no schema has (:func:`unknown_added_keys`) and a run
    folder that already holds a run's results (unless ``overwrite=true``), and copies what the
    command prints into the job's ``.log`` file. ``verbose=true`` re-raises the error with its
    traceback. Bugs (any other exception) still raise with their traceback: ours to fix.
    """
    verbose = bool(cfg.get("verbose", False)) if cfg is not None else False
    try:
        with _copy_stdout_to_job_log():
            if cfg is not None:
                check_run_request(cfg)
            yield
    except TwinInputError as error:
        if verbose:
            raise
        log = _job_log_stream()
        for line in error.problems:
            print(f"error: {line}", file=sys.stderr)
            if log is not None:  # the job's .log file only (a log record would echo on stdout)
                log.write(f"error: {line}\n")
        if log is not None:
            log.flush()
        sys.exit(2)


def check_run_request(cfg: DictConfig) -> None:
    """The checks :func:`exit_on_input_error` makes with Hydra's runtime config."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    problems = unknown_added_keys(cfg, list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices)
    if problems:
        raise TwinInputError(problems[0], problems)
    reuse = bool(cfg.get("overwrite")) or bool(cfg.get("resume"))
    check_output_dir(Path(hydra_cfg.runtime.output_dir), overwrite=reuse)


def check_output_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse a run folder that holds an earlier run's results, unless ``overwrite``."""
    if not overwrite and (out_dir / RUN_MARKER).exists():
        raise TwinInputError(
            f"hydra.run.dir={str(out_dir)!r} already holds the results of an earlier run "
            f"({RUN_MARKER}); choose another folder, pass overwrite=true to replace them or "
            "(calibrate, facility) resume=true to continue a killed run"
        )


def unknown_added_keys(cfg: DictConfig, overrides: list[str], groups=()) -> list[str]:
    """One problem per ``+key=value`` (or ``++``) override whose key no schema declares.

    Hydra adds such keys to the config without complaint, where nothing reads them (a typo
    like ``+recipe.mio=3`` would silently change nothing). Keys added to free-form mappings
    (e.g. ``+forecast.run_level_sd.<parameter>=...``) and config groups
    (``+experiment=...``) are allowed.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    problems = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not (override.is_add() or override.is_force_add()) or override.package is not None:
            continue
        key = override.key_or_group
        if key in groups or key.startswith("hydra"):
            continue
        parent_key, _, name = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        if not isinstance(parent, DictConfig):
            continue
        schema = OmegaConf.get_type(parent)
        if parent_key and not dataclasses.is_dataclass(schema):
            continue  # a free-form mapping: any key may be added
        known = [f.name for f in dataclasses.fields(schema)] if parent_key else []
        if name in known:
            continue
        if not parent_key:
            known = [k for k in parent if k != name and k != "hydra"]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        where = f"{parent_key}." if parent_key else ""
        hint = f" (did you mean {where}{close[0]}?)" if close else ""
        problems.append(
            f"{override.input_line}: {key!r} is not a config key{hint}; keys added with '+' "
            "would be ignored"
        )
    return problems


class _Tee:
    """A text stream that writes to two streams (the console and the job log)."""

    def __init__(self, first: TextIO, second: TextIO):
        self._first, self._second = first, second

    def write(self, text: str) -> int:
        self._second.write(text)
        return self._first.write(text)

    def flush(self) -> None:
        self._first.flush()
        self._second.flush()

    def __getattr__(self, name):
        return getattr(self._first, name)


def _job_log_stream() -> TextIO | None:
    """The stream of the ``.log`` file Hydra opened for the job, if any."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return handlers[0].stream if handlers else None


@contextlib.contextmanager
def _copy_stdout_to_job_log() -> Iterator[None]:
    """Copy ``print`` output into the ``.log`` file Hydra opened for the job (if any), which
    otherwise only holds log records and stays empty for commands that print results."""
    log = _job_log_stream()
    if log is None:
        yield
        return
    console = sys.stdout
    sys.stdout = _Tee(console, log)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = console


REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DATA_DIR = REPO_ROOT / "twin" / "data" / "example"
# Relative paths under this folder may be given from anywhere: the shipped example data.
_SHIPPED_DATA = Path("twin") / "data"


def resolve_user_path(path: str | Path) -> Path:
    """A path from a config: absolute as given; relative to the working directory.

    Only the data shipped with the repository (``twin/data/...``) is also found from another
    working directory; any other relative path that is missing in the working directory stays
    there (and is reported missing), rather than silently resolving to a folder of the
    repository with the same name.
    """
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    if candidate.parts[:2] == _SHIPPED_DATA.parts:
        return REPO_ROOT / candidate
    return candidate


# Overrides that change where or how a run is reported, not what is computed.
_NOT_IN_TITLES = ("hydra.", "hydra/", "verbose=", "overwrite=", "progress=", "resume=")


def overrides_label(hydra_config, limit: int = 90) -> str:
    """The run's command-line overrides as one short string for figure titles, so that the
    figures of a multirun (``-m recipe.moi=2,5``) say which run they show: ``recipe.moi=2``.
    ``hydra_config`` is ``HydraConfig.get()``; bookkeeping overrides are left out and a long
    list is cut at ``limit`` characters."""
    task = [o for o in hydra_config.overrides.task if not o.startswith(_NOT_IN_TITLES)]
    label = ", ".join(task)
    return label if len(label) <= limit else label[: limit - 3] + "..."
