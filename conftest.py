"""Loaded for every pytest run, tests and notebooks alike: one PostgreSQL for the session
(embedded, or PGVKIT_TEST_DATABASE_URL), and the notebooks' database handed to their kernels."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from pgvkit.migrator.scratch import fresh_database
from pgvkit.notebooks.demo import before_notebook, first_day
from pgvkit.server.db import mask_url
from pgvkit.server.embedded import EmbeddedServer

NOTEBOOK_DB = "pgvkit_notebooks"  # notebooks/regenerate.py uses the same name and URL shape
_session = {}


def pytest_report_header(config):
    url = os.environ.get("PGVKIT_TEST_DATABASE_URL")
    return f"pgvkit test database: {mask_url(url) if url else 'embedded PostgreSQL (started for this session)'}"


def session_admin_url() -> str:
    """A superuser URL: PGVKIT_TEST_DATABASE_URL, or an embedded server made for this session."""
    if "url" in _session:
        return _session["url"]
    url = os.environ.get("PGVKIT_TEST_DATABASE_URL")
    if url:
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            pytest.exit(f"PGVKIT_TEST_DATABASE_URL ({mask_url(url)}) is unreachable: {exc}", returncode=2)
    else:
        server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="pgvkit-test-")))
        server.settings = ()  # no pg_stat_statements: it costs every statement (tests/test_watch.py starts its own)
        server.start()
        _session["server"] = server
        url = server.url(database="postgres")
    _session["url"] = url
    return url


def pytest_configure(config):
    """Notebooks (pytest --nbval) run in kernels that inherit this process's environment:
    give them, through DATABASE_URL as a user's shell would, the database notebooks/regenerate.py
    made their committed outputs from: a team's first day (the old docker setup's schema, no
    pgvkit history, 12,000 real embeddings of the team's kind)."""
    if getattr(config.option, "nbval", False) and not hasattr(config, "workerinput"):
        os.environ["DATABASE_URL"] = first_day(fresh_database(session_admin_url(), NOTEBOOK_DB))
        os.environ.setdefault("PGVKIT_HOME", tempfile.mkdtemp(prefix="pgvkit-nb-home-"))
        os.environ["TQDM_DISABLE"] = "1"  # as notebooks/regenerate.py: no progress bars in outputs
        # a copy of the project's migrations: what the team applies between notebooks is written there
        copy = Path(tempfile.mkdtemp(prefix="pgvkit-nb-migrations-")) / "migrations"
        shutil.copytree(Path(__file__).parent / "migrations", copy)
        _session["migrations"], _session["notebooks"] = str(copy), set()


def pytest_runtest_setup(item):
    """Under --nbval: a notebook's kernel (started before its first cell) gets PGVKIT_MIGRATIONS,
    the copy of the migrations the notebooks work with; the tests do not (they run the CLI in the
    project, on its own migrations/). Before a notebook's first cell: what the team does between
    notebooks, as notebooks/regenerate.py does it (pgvkit.notebooks.demo.before_notebook)."""
    seen = _session.get("notebooks")
    if seen is None:
        return
    name = Path(str(getattr(item, "fspath", ""))).name
    if not name.endswith(".ipynb"):
        os.environ.pop("PGVKIT_MIGRATIONS", None)
        return
    os.environ["PGVKIT_MIGRATIONS"] = _session["migrations"]
    if name not in seen:
        seen.add(name)
        before_notebook(name, os.environ["DATABASE_URL"], _session["migrations"])


def pytest_unconfigure(config):
    server = _session.pop("server", None)
    if server is not None:
        server.destroy()
        shutil.rmtree(server.home, ignore_errors=True)


