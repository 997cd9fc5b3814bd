"""Real-database fixtures: an embedded PostgreSQL started for the session (or the server in
PGVKIT_TEST_DATABASE_URL), and a fresh database per test."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgvkit.migrator.scratch import fresh_database
from pgvkit.server.embedded import EmbeddedServer


ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
_counter = itertools.count()
# every test password; outputs are scanned for it. It holds what libpq takes as written in a URL's
# credentials but a URL parser does not (# starts a fragment, ? a query, & and : separate)
PASSWORD = "Pw#d0nt?l3ak&9f:2c"
SHARED_DATA = ROOT.parent / "shared" / "data"  # CI lays shared/ beside the clone, as here


@pytest.fixture(scope="session")
def admin_url() -> str:
    """The session's superuser URL (see the root conftest.py)."""
    from conftest import session_admin_url

    return session_admin_url()


@pytest.fixture
def make_database(admin_url, make_role):
    """Factory for fresh databases (owner optional); all are dropped after the test, before
    the roles that may own them."""
    created = []

    def make(owner: str | None = None) -> str:
        name = f"pgvkit_t{os.getpid()}_{next(_counter)}"
        created.append(name)
        return fresh_database(admin_url, name, owner=owner)

    yield make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(make_database) -> str:
    """A fresh, empty database as the superuser."""
    return make_database()


@pytest.fixture
def make_role(admin_url):
    """Factory for non-superuser login roles; dropped after the test."""
    roles = []

    def make(password: str | None = None) -> str:
        name = f"pgvkit_role{os.getpid()}_{next(_counter)}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        roles.append(name)
        return name

    yield make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def as_role(url: str, role: str, password: str | None = None) -> str:
    params = {"user": role}
    if password is not None:
        params["password"] = password
    return psycopg.conninfo.make_conninfo(url, **params)


@pytest.fixture
def migrations_dir(tmp_path):
    """Write migration files into a temporary directory: migrations_dir({"001_a.sql": "..."})."""

    def write(files: dict[str, str | bytes]) -> Path:
        directory = tmp_path / "migrations"
        directory.mkdir(exist_ok=True)
        for name, text in files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)  # "deploy/x.sql": another tool's layout
            if isinstance(text, bytes):
                path.write_bytes(text)
            else:
                path.write_text(textwrap.dedent(text))
        return directory

    return write


@pytest.fixture
def pgvkit_home(tmp_path, monkeypatch) -> Path:
    """An isolated PGVKIT_HOME so backups and state never touch the working tree."""
    home = tmp_path / "home"
    monkeypatch.setenv("PGVKIT_HOME", str(home))
    return home


def sigint_as_in_a_terminal() -> None:
    """preexec_fn for a child a test stops with SIGINT (Ctrl-C): the default handler back, since a
    shell starts background jobs (pytest run with `&`, nohup) with SIGINT ignored, and Python then
    never turns it into KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli_env(env: dict | None) -> dict:
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    full_env.update(env or {})
    return full_env


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120):
    """Run the pgvkit CLI in a separate process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "pgvkit", *args],
        capture_output=True, text=True, env=_cli_env(env), cwd=cwd or ROOT, timeout=timeout,
    )


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The pgvkit CLI started in a separate process, left running (communicate() collects it)."""
    return subprocess.Popen([sys.executable, "-m", "pgvkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_cli_env(env), cwd=ROOT)


def wait_until(condition, what: str, timeout: float = 120) -> None:
    """Poll an observable state of the server (not a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def psql_file(url, path):
    """Run a SQL file the way the old docker init (and people with psql) did."""
    from pgvkit.server.embedded import bin_path

    subprocess.run([str(bin_path() / "psql"), url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(path)],
                   check=True, capture_output=True)


@pytest.fixture
def migrated(db_url):
    """A fresh database with the migrations applied."""
    from pgvkit import Migrator

    Migrator(db_url, MIGRATIONS, echo=lambda _: None).migrate()
    return db_url


def leave_invalid_index(url: str, name: str) -> None:
    """What a failed CREATE UNIQUE INDEX CONCURRENTLY leaves: an INVALID index named `name`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                     " SELECT 'dup-' || g, 'same owner', array_fill(0.1, ARRAY[768])::vector FROM generate_series(1, 2) g")
        try:
            conn.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON ip_asset_embeddings (owner_id)").format(
                sql.Identifier(name)))
        except psycopg.errors.UniqueViolation:
            return
    raise AssertionError("the concurrent build was expected to fail")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tcp_server():
    """A second embedded server, its own postgres process, on loopback with password logins (in
    a directory of its own: pytest prunes old basetemp directories when other sessions run)."""
    home = Path(tempfile.mkdtemp(prefix="pgvkit-tcp-"))
    server = EmbeddedServer(home, port=free_port())
    server.start()
    yield server
    server.destroy()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def app_database(tcp_server):
    """A database on the TCP server owned by a non-superuser role with a password."""
    role, db = f"app_{free_port()}", f"appdb_{free_port()}"
    admin = tcp_server.socket_url(database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(role)))
    # the password as written, the way a team's DATABASE_URL holds it (libpq reads it so)
    yield {"url": f"postgresql://{role}:{PASSWORD}@127.0.0.1:{tcp_server.port}/{db}",
           "admin": tcp_server.socket_url(database=db), "role": role, "db": db}
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@functools.lru_cache(maxsize=1)
def real_embeddings():
    """30,000 real sentence embeddings (../shared/data/README.md) in the seed's 768 dimensions: a
    fixed orthogonal map (Q of a seeded QR) keeps every cosine distance, so neighbours are the
    real ones. Row i embeds line i of pypi_summaries.tsv."""
    from pgvkit.notebooks.demo import real_embeddings as lifted

    return lifted()


class Searchers:
    """Readers calling search_assets without pause on their own connections, as the application
    does, until stopped: how many searches ran, which failed, the longest (seconds)."""

    def __init__(self, url: str, queries, readers: int = 4, full: bool = True):
        import threading

        self.url, self.queries, self.full = url, queries, full  # full: every search must return 10 rows
        self.stop, self.failures, self.searches, self.longest = threading.Event(), [], 0, 0.0
        self.threads = [threading.Thread(target=self._read) for _ in range(readers)]

    def _read(self) -> None:
        import time

        from pgvector.psycopg import register_vector

        with psycopg.connect(self.url, autocommit=True) as conn:
            register_vector(conn)
            i = 0
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    rows = conn.execute("SELECT id FROM search_assets(%s, 10)",
                                        [self.queries[i % len(self.queries)]]).fetchall()
                    if self.full and len(rows) != 10:
                        self.failures.append(f"{len(rows)} rows, not 10")
                except psycopg.Error as exc:  # a lock or recovery conflict that cancels the search
                    detail = exc.diag.message_detail
                    self.failures.append(str(exc).splitlines()[0] + (f" ({detail})" if detail else ""))
                self.longest = max(self.longest, time.perf_counter() - start)
                self.searches += 1
                i += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()
