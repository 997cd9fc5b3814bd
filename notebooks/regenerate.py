"""Re-execute the notebooks in place so their committed outputs are real and current.

    .venv/bin/python notebooks/regenerate.py

Runs all of them, in order (each starts from the state the previous ones left, as under
`pytest --nbval`), against a fresh database on a throwaway embedded server, named and reached
exactly as the tests do (see the root conftest.py), so the outputs compare.
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
sys.path.insert(0, str(HERE.parent))

from conftest import NOTEBOOK_DB  # noqa: E402  (the same database name as the tests)
from pgvkit.embedded import EmbeddedServer  # noqa: E402
from pgvkit.scratch import fresh_database  # noqa: E402


def main() -> int:
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    home = Path(tempfile.mkdtemp(prefix="pgvkit-regen-"))
    server = EmbeddedServer(home / "server").start()
    try:
        os.environ["DATABASE_URL"] = fresh_database(server.url(database="postgres"), NOTEBOOK_DB)
        os.environ["PGVKIT_HOME"] = str(home / "kit")
        for path in paths:
            print(f"executing {path.name}", flush=True)
            nb = nbformat.read(path, as_version=4)
            ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(HERE)}})
            for cell in nb.cells:
                cell.metadata.pop("execution", None)  # timestamps: noise in diffs
            nbformat.write(nb, path)
    finally:
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
