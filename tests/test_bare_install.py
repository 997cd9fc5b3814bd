"""`pip install .` with no extras, as an application's requirements or a CI image installs a
library: every command works, and what needs the lab extra says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from .conftest import ROOT


@pytest.fixture(scope="session")
def bare(tmp_path_factory) -> Path:
    """A virtual environment holding pgvkit and its core dependencies only (built once a session;
    $PGVKIT_BARE_VENV names one made beforehand)."""
    given = os.environ.get("PGVKIT_BARE_VENV")
    if given:
        return Path(given)
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True, timeout=900,
                   capture_output=True)
    return venv


def pgvkit(bare: Path, *args: str, url: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["DATABASE_URL"] = url
    return subprocess.run([str(bare / "bin" / "pgvkit"), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def test_the_bare_environment_has_no_extra(bare):
    probe = subprocess.run([str(bare / "bin" / "python"), "-c",
                            "import importlib.util as u; print([m for m in ('jupyterlab', 'papermill', 'matplotlib',"
                            " 'nbconvert', 'pytest') if u.find_spec(m)])"], capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"


@pytest.mark.slow
def test_every_command_works_after_a_bare_install(bare, db_url):
    name = conninfo_to_dict(db_url)["dbname"]
    steps = [("migrate",), ("load", "--rows", "2000", "--confirm-database", name), ("smoke",),
             ("tune", "--rows", "1500", "--queries", "20"), ("verify",), ("doctor",), ("status",), ("history",)]
    for args in steps:
        proc = pgvkit(bare, *args, url=db_url)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr)


def test_what_needs_the_lab_extra_says_so_in_one_line(bare, db_url):
    for args in (("run", "notebooks/02_verify.ipynb"), ("lab", "--no-browser")):
        proc = pgvkit(bare, *args, url=db_url)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert "lab extra" in line and "pip install 'pgvkit[lab]'" in line
