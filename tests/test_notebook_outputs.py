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
    # Migration('001_init', down=yes), <pgvkit.x.Y object at 0x7f...>: Python's repr, not a table
    "a Python repr instead of a table": re.compile(r"\b[A-Z]\w+\('[^']*'(?:, \w+=)|<[\w.]+ object at 0x[0-9a-f]+>"),
    # ['hnsw.ef_search=40', 'enable_seqscan=off']: a Python list of settings
    "a Python list printed as is": re.compile(r"\['[\w.]+=[^']*'(?:, '[\w.]+=[^']*')*\]"),
    "a None printed for a reader": re.compile(r"(?<![\w'\"])None$", re.M),
    # a pandas DataFrame shown as it is: NaN for "nothing", a Python list in a cell, microseconds
    "a NaN in a table": re.compile(r"<td>NaN</td>|(?<![\w'\"])NaN(?![\w'\"])"),
    "a Python list in a table cell": re.compile(r"<td>\[[^<]*\]</td>"),
    "a timestamp to the microsecond": re.compile(r"\d\d:\d\d:\d\d\.\d{6}"),
}
BARE = re.compile(r"-?[\d.,]+|None|True|False")  # an execute_result that is only this says nothing


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
    nb = nbformat.read(path, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "NBVAL_" in cell.source:  # nbval reads cell tags: the reader never sees them
            found.append(f"{path.name} cell {index}: a visible nbval comment: use the cell tag (nbval-ignore-output)")
        for out in cell.get("outputs", []):
            text = out.get("data", {}).get("text/plain", "") if out.get("output_type") == "execute_result" else ""
            if text and "text/html" not in out.get("data", {}) and BARE.fullmatch(text.strip()):
                found.append(f"{path.name} cell {index}: a bare value as the cell's result: {text.strip()[:20]!r}")
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
    noisy = nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\nmigrations")
    noisy.outputs = [
        nbformat.v4.new_output("execute_result", data={"text/plain": "[Migration('001_init_vector_store', down=yes)]"},
                               execution_count=1),
        nbformat.v4.new_output("stream", name="stdout", text="bound: ['hnsw.ef_search=40', 'enable_seqscan=off']\n"),
        nbformat.v4.new_output("stream", name="stdout", text="rows in ip_asset_embeddings: None\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "12000"}, execution_count=2),
        nbformat.v4.new_output("execute_result", data={
            "text/html": '<table class="dataframe"><tr><td>NaN</td><td>[\'dead rows\']</td></tr></table>',
            "text/plain": "0 2026-12-07 03:59:33.515253+00:00  primary  NaN"}, execution_count=3),
    ]
    nb.cells.append(noisy)
    path = tmp_path / "99_stale.ipynb"
    nbformat.write(nb, path)
    found = problems(path)
    assert [f.split(": ")[1] for f in found] == [
        "an absolute path of the generating machine", "a progress bar frozen at 0%",
        "an object repr instead of its content", "a figure's repr next to its image",
        "a Python repr instead of a table", "a Python list printed as is", "a None printed for a reader",
        "a NaN in a table", "a Python list in a table cell", "a NaN in a table", "a timestamp to the microsecond",
        "a visible nbval comment", "a bare value as the cell's result"]


def test_what_a_reader_should_see_passes_the_check(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plan")
    cell.metadata["tags"] = ["nbval-ignore-output"]
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="rows in ip_asset_embeddings: none, the table is gone\n"
                               "bound: hnsw.ef_search=40, enable_seqscan=off\nNone of the owners came back short\n"),
        nbformat.v4.new_output("execute_result", data={"text/plain": "Plan for jarvis: 2 migration(s) to apply",
                                                       "text/html": "<table></table>"}, execution_count=1),
    ]
    nb.cells.append(cell)
    path = tmp_path / "98_clean.ipynb"
    nbformat.write(nb, path)
    assert problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_says_on_its_first_screen_what_it_changes_and_where(path):
    first = nbformat.read(path, as_version=4).cells[0].source
    title, box = first.split("\n\n", 2)[:2]
    assert title.startswith("# ") and box.startswith("> **What this notebook changes")
    assert "DATABASE_URL" in box or "scratch" in box  # which database
    assert "seed" not in first.lower()  # the old docker setup, said as what it is


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_connection_cell_is_followed_by_what_to_do_if_it_fails(path):
    cells = nbformat.read(path, as_version=4).cells
    [i] = [i for i, c in enumerate(cells) if c.cell_type == "code" and "open_target(database_url)" in c.source]
    assert cells[i + 1].cell_type == "markdown" and cells[i + 1].source.startswith("> **If this fails:**")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_is_valid_nbformat_so_nbconvert_and_jupyter_open_it(path):
    """A duplicated cell tag (two edits each adding nbval-ignore-output) made nbconvert refuse a
    notebook that nbval and papermill still ran."""
    nbformat.validate(nbformat.read(path, as_version=4))
