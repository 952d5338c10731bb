"""Every command the README and the scripts' docstrings show parses as Hydra overrides and
composes against its script's config: a documented command a user copies must at least start."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

import twin.config  # noqa: F401  (registers the config schemas)

ROOT = Path(__file__).resolve().parents[1]
_COMMAND = re.compile(r"python (experiments/(\w+)\.py)((?:[^#`\n]|\\\n)*)")


def _documented() -> list[tuple[str, str, str]]:
    """(where, script, arguments) of every ``python experiments/X.py ...`` line shown."""
    found = []
    for path in [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "experiments").glob("*.py")),
    ]:
        text = path.read_text()
        for match in _COMMAND.finditer(text):
            arguments = match.group(3).replace("\\\n", " ")
            found.append(
                (f"{path.name}: {match.group(0).splitlines()[0]}", match.group(2), arguments)
            )
    return found


def _overrides(arguments: str) -> list[str] | None:
    """The override tokens; ``None`` for a line that is not a plain run (flags, prose)."""
    try:
        tokens = shlex.split(arguments)
    except ValueError:
        return None
    if any(t.startswith("-") or "=" not in t or "<" in t for t in tokens):
        return None  # flags, prose, or a placeholder such as data_dir=<signal train/>
    return tokens


COMMANDS = [
    pytest.param(script, tokens, id=where)
    for where, script, arguments in _documented()
    if (ROOT / "configs" / f"{script}.yaml").exists()  # a Hydra script, not a plain one
    and (tokens := _overrides(arguments)) is not None
]


def test_the_commands_are_found():
    assert len(COMMANDS) > 20
    assert any(
        script == "calibrate" and any("fit.select" in t for t in tokens)
        for script, tokens in (c.values for c in COMMANDS)
    )


@pytest.mark.parametrize(("script", "tokens"), COMMANDS)
def test_a_documented_command_composes(script, tokens):
    OverridesParser.create().parse_overrides(tokens)  # the grammar (quotes, lists)
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        compose(config_name=script, overrides=tokens)
