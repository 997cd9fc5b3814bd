"""The committed notebooks are read before anyone runs them: their outputs must show what a
newcomer will see, not the machine that generated them (notebooks/regenerate.py writes them)."""

import re
from pathlib import Path

import nbformat
import pytest

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# an absolute path: a slash that starts a word (host=/tmp/..., '/root/...'), not one inside a URL
# or a fraction (https://x.io/en/latest, rows/1000)
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.-]+/)+[\w.-]*")
STALE = {
    "a progress bar frozen at 0%": re.compile(r"\b0%\|"),
    "an object repr instead of its content": re.compile(r"<IPython\.core\.display\.\w+ object>"),
    "a figure's repr next to its image": re.compile(r"<Figure size"),
    "an absolute path of the generating machine": ABSOLUTE_PATH,
    "a notebook listed as coming": re.compile(r"\(coming\)"),
}


def output_texts(path: Path):
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            texts = [out.get("text", ""), out.get("evalue", "")]
            texts += [v for k, v in out.get("data", {}).items() if k.startswith("text/") and isinstance(v, str)]
            for text in texts:
                yield index, text


def problems(path: Path) -> list[str]:
    found = []
    for index, text in output_texts(path):
        for what, pattern in STALE.items():
            match = pattern.search(text)
            if match:
                found.append(f"{path.name} cell {index}: {what}: {match.group(0)[:60]!r}")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_committed_notebook_shows_no_machine_paths_frozen_bars_or_reprs(path):
    assert problems(path) == []


def test_the_check_finds_each_kind_of_stale_output(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="   source: env: host=/tmp/pgvkit-regen-x1/server\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": "COPY:   0%|          | 0/2000"}),
        nbformat.v4.new_output("display_data", data={"text/plain": "<IPython.core.display.HTML object>"}),
        nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 800x500 with 1 Axes>",
                                                     "image/png": "iVBOR"}),
        nbformat.v4.new_output("display_data", data={"text/html": "see https://jupysql.ploomber.io/en/latest and "
                                                                  "lists = rows/1000"}),
    ]
    nb.cells.append(cell)
    path = tmp_path / "99_stale.ipynb"
    nbformat.write(nb, path)
    found = problems(path)
    assert [f.split(": ")[1] for f in found] == [
        "an absolute path of the generating machine", "a progress bar frozen at 0%",
        "an object repr instead of its content", "a figure's repr next to its image"]
