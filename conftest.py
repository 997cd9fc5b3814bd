"""Loaded for every pytest run, tests and notebooks alike: one PostgreSQL for the session
(embedded, or PGVKIT_TEST_DATABASE_URL), and the notebooks' database handed to their kernels."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgvkit.db import mask_url
from pgvkit.embedded import EmbeddedServer

NOTEBOOK_DB = "pgvkit_notebooks"
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
        server.start()
        _session["server"] = server
        url = server.url(database="postgres")
    _session["url"] = url
    return url


def pytest_configure(config):
    """Notebooks (pytest --nbval) run in kernels that inherit this process's environment:
    give them a fresh database through DATABASE_URL, as a user's shell would."""
    if getattr(config.option, "nbval", False) and not hasattr(config, "workerinput"):
        admin = session_admin_url()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NOTEBOOK_DB)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NOTEBOOK_DB)))
        os.environ["DATABASE_URL"] = psycopg.conninfo.make_conninfo(admin, dbname=NOTEBOOK_DB)
        os.environ.setdefault("PGVKIT_HOME", tempfile.mkdtemp(prefix="pgvkit-nb-home-"))


def pytest_unconfigure(config):
    server = _session.pop("server", None)
    if server is not None:
        server.destroy()
        shutil.rmtree(server.home, ignore_errors=True)


