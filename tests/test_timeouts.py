"""Timeouts as teams set them (on the application's role, on the database, in PGOPTIONS): the
steps long by design run through them, and a timeout that still fires says where it was set."""

import shutil

import psycopg
import pytest
from psycopg import sql

from pgvkit import Migrator
from pgvkit.tuning import tune, write_migration

from .conftest import MIGRATIONS, as_role, run_cli
from .test_quantized import chosen
from .test_tuning import SMALL_GRID

TIMEOUT = "300ms"  # an application's: every index build and load here takes longer


@pytest.fixture
def team_role(admin_url, make_role, make_database):
    """A database owned by a login role whose statement_timeout is the application's; the
    extension made by a superuser beforehand, as on a managed server."""
    role = make_role()
    admin = make_database(owner=role)  # the superuser's URL of the new database
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(sql.Identifier(role),
                                                                                 sql.Literal(TIMEOUT)))
    return as_role(admin, role), role


def invalid_indexes(url) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")]


@pytest.mark.slow
def test_a_role_statement_timeout_stops_no_index_build_load_tune_or_rollback(team_role, tmp_path):
    url, role = team_role
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    args = ["--database-url", url, "--migrations", str(directory)]
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url) as conn:  # the role's timeout is in force for its sessions
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == TIMEOUT
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(1)")
    assert run_cli("migrate", *args).returncode == 0
    loaded = run_cli("load", "--rows", "20000", *args, "--confirm-database", database, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    _, _, rec = tune(url, target=0.5, rows=3000, queries=20, grid=SMALL_GRID, progress=False, echo=lambda _: None)
    assert rec.point is not None
    write_migration(url, chosen("vector", "hnsw", 40), directory)
    migrated = run_cli("migrate", *args, timeout=300)  # an HNSW build of 20,000 rows
    assert migrated.returncode == 0, migrated.stderr
    rolled = run_cli("rollback", "--to", "3", "--yes", "--confirm-database", database, *args,
                  env={"PGOPTIONS": f"-c statement_timeout={TIMEOUT}"}, timeout=300)
    assert rolled.returncode == 0, rolled.stderr
    assert invalid_indexes(url) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 20000
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == TIMEOUT  # the role's, untouched


@pytest.mark.parametrize("where, env, said", [
    ("role", {}, "set on role"),
    ("database", {}, "set on database"),
    ("PGOPTIONS", {"PGOPTIONS": f"-c statement_timeout={TIMEOUT}"}, "set by the connection (PGOPTIONS"),
])
def test_a_timeout_that_still_fires_names_where_it_was_set_and_how_to_change_it(team_role, admin_url, migrations_dir,
                                                                               where, env, said):
    url, role = team_role
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if where != "role":
            conn.execute(sql.SQL("ALTER ROLE {} RESET statement_timeout").format(sql.Identifier(role)))
        if where == "database":
            conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = {}").format(sql.Identifier(database),
                                                                                          sql.Literal(TIMEOUT)))
    directory = migrations_dir({"001_slow.sql": "CREATE TABLE t (x int);\nSELECT pg_sleep(2);\n"})
    failed = run_cli("migrate", "--database-url", url, "--migrations", str(directory), env=env)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert f"statement_timeout = {TIMEOUT}, {said}" in line, line
    fix = {"role": f'ALTER ROLE "{role}" RESET statement_timeout',
           "database": f'ALTER DATABASE "{database}" RESET statement_timeout',
           "PGOPTIONS": "raise or remove it there"}[where]
    assert fix in line, line
    assert where == "PGOPTIONS" or "for pgvkit alone: PGOPTIONS='-c statement_timeout=0'" in line
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] is None  # nothing kept of the failed file


def test_a_file_that_sets_its_own_timeout_keeps_it_and_is_named(db_url, migrations_dir):
    """A team's own SET statement_timeout before an index build is theirs: kept, and named."""
    directory = migrations_dir({
        "001_t.sql": "CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 300000) g;\n",
        "002_idx.sql": "-- pgvkit:no-transaction\nSET statement_timeout = '1ms';\n"
                       "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_x ON t (x);\n"})
    lines = []
    with pytest.raises(Exception, match="statement_timeout is set by the file itself at line 2; raise it there"):
        Migrator(db_url, directory, echo=lines.append).migrate()
    assert invalid_indexes(db_url) == []  # the build's leftover dropped
