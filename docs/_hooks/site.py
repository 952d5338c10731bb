"""MkDocs hook: the home page from the README, the notebooks section, tidy cross-references.

- ``index.md`` is generated from the README's introduction (everything before "## Commands"),
  its ``docs/`` links made relative to the site, so the two never drift apart.
- Notebooks: each notebook of ``notebooks/``, shown from its executed copy written by
  ``tests/test_notebooks.py`` into ``$CARTWIN_EXECUTED_NOTEBOOKS`` (default
  ``build/executed_notebooks``) when there is one, else as stored (no outputs) with a note
  saying it was not executed.
  They are listed under "Notebooks" in the navigation in name order.
- Docstrings use Sphinx roles (``:func:`x```); the rendered pages show just the code name.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
EXECUTED_DEFAULT = "build/executed_notebooks"
_NOT_EXECUTED = (
    "> **Not executed in this build.** This page shows the notebook as stored (without "
    "outputs). CI builds the site from the executed copies: run "
    "`CARTWIN_EXECUTED_NOTEBOOKS=build/executed_notebooks python -m pytest -q -m slow "
    "tests/test_notebooks.py` before `mkdocs build` to see the outputs here."
)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):(?=<code>)")
_scratch = tempfile.TemporaryDirectory(prefix="cartwin-docs-")


def _notebooks() -> list[tuple[Path, bool]]:
    """Each stored notebook as (file to show, whether it is an executed copy): the executed
    copy of the same name when there is one, else the stored notebook."""
    executed = Path(os.environ.get("CARTWIN_EXECUTED_NOTEBOOKS", EXECUTED_DEFAULT))
    executed = executed if executed.is_absolute() else ROOT / executed
    shown = []
    for stored in sorted((ROOT / "notebooks").glob("*.ipynb")):
        copy = executed / stored.name
        shown.append((copy, True) if copy.is_file() else (stored, False))
    return shown


def _title(path: Path) -> str:
    """The notebook's first Markdown heading, else its file name."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            match = re.search(r"^#+\s*(.+)$", text, re.M)
            if match:
                return match.group(1).strip()
    return path.stem.replace("_", " ")


def _page_copy(path: Path, executed: bool) -> Path:
    """A copy of ``path`` under the scratch folder's ``notebooks/``, opening with the
    not-executed note unless ``executed`` (the plugin converts any ``*.ipynb`` file)."""
    notebook = json.loads(path.read_text())
    if not executed:
        note = {
            "cell_type": "markdown",
            "id": "not-executed",
            "metadata": {},
            "source": _NOT_EXECUTED,
        }
        notebook["cells"].insert(0, note)
    copy = Path(_scratch.name) / "notebooks" / path.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(json.dumps(notebook))
    return copy


def _home_page() -> str:
    readme = (ROOT / "README.md").read_text()
    intro = readme.split("\n## Commands", 1)[0]
    intro = re.sub(r"\]\(docs/", "](", intro)
    return intro + (
        "\n\nThe full command list, the measured results and the layout are in `README.md` at "
        "the repository root. Next: the notebooks (left) or the [API reference](api/index.md).\n"
    )


def on_config(config):
    notebooks = _notebooks()
    if notebooks:
        pages = [{_title(path): f"notebooks/{path.name}"} for path, _ in notebooks]
        config.nav.append({"Notebooks": pages})
    return config


@event_priority(100)  # before mkdocs-jupyter turns .ipynb files into pages
def on_files(files, config):
    files.append(File.generated(config, "index.md", content=_home_page()))
    for path, executed in _notebooks():
        _page_copy(path, executed)
        files.append(
            File(
                f"notebooks/{path.name}",
                src_dir=_scratch.name,
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


def on_page_content(html, page, config, files):
    return _ROLE.sub("", html)
