"""Re-execute the notebooks in place so their committed outputs are real, current, and what a
newcomer will see.

    .venv/bin/python notebooks/regenerate.py [NOTEBOOK ...]

Runs all of them (or those named), in order, each starting from the state the previous ones
left, as under `pytest --nbval`, against the embedded default layout (a throwaway PGVKIT_HOME,
no DATABASE_URL, database `jarvis`) holding what a team brings on its first day: the database
its old docker setup made (the seed's SQL, no pgvkit history) with 12,000 real embeddings and
owners / asset ids of the team's kind (`pgvkit.notebooks.demo.first_day`; `pytest --nbval` starts from the
same). So 01 shows the baseline, 02 a real search, 04 a sweep of the team's rows. Between
notebooks it does what the team would (`pgvkit.notebooks.demo.before_notebook`, as pytest --nbval does): a
recall audit of the old index before 04, a tuning migration applied before 07, so 07 shows a
history; the migrations live in a copy (PGVKIT_MIGRATIONS), never in the project's. What would date
the outputs to this machine is not saved: progress bars are off (TQDM_DISABLE, as `pgvkit run`
sets it) and a figure is saved as its image, without matplotlib's `<Figure size ...>` text.
tests/test_notebook_outputs.py checks the result.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from pgvkit.notebooks.demo import before_notebook, first_day  # noqa: E402
from pgvkit.server.embedded import EmbeddedServer  # noqa: E402


def clean(nb) -> None:
    """Keep what a reader needs: no execution timestamps, no widget placeholders (a progress
    bar's frozen first frame), a figure's image without its repr."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                continue
            if "image/png" in data:
                data.pop("text/plain", None)
            kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    home = Path(tempfile.mkdtemp(prefix="pgvkit-regen-"))
    os.environ.pop("DATABASE_URL", None)
    os.environ["PGVKIT_HOME"] = str(home)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["PGVKIT_MIGRATIONS"] = str(home / "migrations")  # what is applied between notebooks goes there
    shutil.copytree(HERE.parent / "migrations", home / "migrations")
    try:
        server = EmbeddedServer(home).start()
        first_day(server.url())
        for path in paths:
            done = before_notebook(path.name, server.url(), home / "migrations")
            if done:
                print(f"before {path.name}: {done}", flush=True)
            print(f"executing {path.name}", flush=True)
            nb = nbformat.read(path, as_version=4)
            ExecutePreprocessor(timeout=900, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(HERE)}})
            clean(nb)
            nbformat.write(nb, path)
    finally:
        EmbeddedServer(home).destroy()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
