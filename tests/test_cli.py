"""The pgvkit command as users run it: separate processes, real servers, exit codes."""

import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from pgvkit.server.embedded import EmbeddedServer

from .conftest import MIGRATIONS, PASSWORD, as_role, free_port, psql_file, run_cli


def assert_clean_error(proc, *needles):
    """An expected error: non-zero, one line on stderr, no traceback, no password."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgvkit: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_status_plan_migrate_status_json_on_a_non_superuser_url(app_database):
    with psycopg.connect(app_database["admin"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")  # what a superuser runs once
    env = {"DATABASE_URL": app_database["url"]}
    status = run_cli("status", env=env)
    assert status.returncode == 1 and "3 pending" in status.stdout  # 001, 002 and 003
    plan = run_cli("plan", env=env)
    assert plan.returncode == 0 and "CREATE TABLE ip_asset_embeddings" in plan.stdout  # what 001 changes, in words
    assert "CREATE TABLE IF NOT EXISTS" not in plan.stdout  # the SQL only when asked:
    with_sql = run_cli("plan", "--sql", env=env)
    assert with_sql.returncode == 0 and "-- 001_init_vector_store (transaction)\n" in with_sql.stdout
    assert "CREATE TABLE IF NOT EXISTS ip_asset_embeddings (" in with_sql.stdout
    migrate = run_cli("migrate", env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying 001_init_vector_store (transaction) ... done" in migrate.stdout
    final = run_cli("status", "--json", env=env)
    assert final.returncode == 0
    data = json.loads(final.stdout)
    assert data["exit_code"] == 0 and {m["state"] for m in data["migrations"]} == {"applied"}
    assert ":***@127.0.0.1" in status.stdout
    for proc in (status, plan, migrate, final):
        assert PASSWORD not in proc.stdout + proc.stderr


def test_a_role_that_may_not_create_the_extension_is_told_what_a_superuser_must_run(app_database):
    proc = run_cli("migrate", "--database-url", app_database["url"])
    assert_clean_error(proc, "CREATE EXTENSION IF NOT EXISTS vector", app_database["db"], "superuser")
    with psycopg.connect(app_database["admin"]) as conn:
        assert conn.execute("SELECT to_regclass('ip_asset_embeddings')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pgvkit.schema_migrations").fetchone()[0] == 0


@pytest.fixture(scope="module")
def not_postgres():
    """A port on loopback where something else (a web server) answers."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


URL_MISTAKES = {
    # what is wrong: (how the URL is made from the good one, what the one line must say)
    "wrong password": (lambda u, r, d, p: u.replace(PASSWORD, PASSWORD + "x"), "the server rejected the password of app_"),
    "missing database": (lambda u, r, d, p: u.replace(f"/{d}", "/no_such_db"), "database no_such_db does not exist"),
    # over password logins the server will not say whether the role exists
    "unknown role": (lambda u, r, d, p: u.replace(f"{r}:", "nobody_here:"), "or there is no role nobody_here"),
    "bad port": (lambda u, r, d, p: re.sub(r":\d+/", f":{free_port()}/", u), "nothing is listening where the URL points"),
    "bad host": (lambda u, r, d, p: re.sub(r"@[^/]+/", "@no-such-host.invalid:5432/", u), "no-such-host.invalid does not resolve"),
    "not PostgreSQL": (lambda u, r, d, p: re.sub(r":\d+/", f":{p}/", u), "what answered there is not a PostgreSQL server"),
    "not a postgres URL": (lambda u, r, d, p: u.replace("postgresql://", "mysql://"), "scheme 'mysql' is not PostgreSQL"),
}


@pytest.mark.parametrize("mistake", URL_MISTAKES)
def test_every_common_database_url_mistake_is_one_line_saying_what_and_how_to_fix(app_database, not_postgres, mistake):
    make, says = URL_MISTAKES[mistake]
    bad = make(app_database["url"], app_database["role"], app_database["db"], not_postgres)
    assert bad != app_database["url"]
    proc = run_cli("status", env={"DATABASE_URL": bad})
    assert_clean_error(proc, says)  # one line, exit 2, no traceback, no password
    assert PASSWORD + "x" not in proc.stderr


def test_eight_processes_migrating_one_fresh_database_apply_each_migration_once(db_url):
    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(lambda _: run_cli("migrate", "--database-url", db_url), range(8)))
    assert [p.returncode for p in procs] == [0] * 8, [p.stderr for p in procs if p.returncode]
    assert sum("Applying 001_init_vector_store" in p.stdout and "done" in p.stdout for p in procs) == 1
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version, status FROM pgvkit.schema_migrations ORDER BY version").fetchall() == [
            (1, "applied"), (2, "applied"), (3, "applied")]
        assert conn.execute("SELECT count(*) FROM pgvkit.migration_events WHERE event = 'apply'").fetchone()[0] == 3


def test_status_exit_codes_say_pending_up_to_date_and_drift(db_url, migrations_dir):
    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);"})
    args = ["--database-url", db_url, "--migrations", str(d)]
    assert run_cli("status", *args).returncode == 1
    assert run_cli("migrate", *args).returncode == 0
    assert run_cli("status", *args).returncode == 0
    (d / "001_a.sql").write_text("CREATE TABLE a (id bigint);")
    drift = run_cli("status", *args)
    assert drift.returncode == 2 and "drifted" in drift.stdout
    assert_clean_error(run_cli("migrate", *args), "pgvkit repair 001 --reason")
    (d / "001_a.sql").unlink()
    missing = run_cli("status", *args)
    assert missing.returncode == 2 and "missing" in missing.stdout


def test_bad_files_are_refused_before_anything_is_applied(db_url, migrations_dir):
    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);", "002_b.sql": "CREATE TABLE b (id int;"})
    proc = run_cli("migrate", "--database-url", db_url, "--migrations", str(d))
    assert_clean_error(proc, "002_b.sql:1", "syntax error")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('a')").fetchone()[0] is None


def test_rollback_without_yes_is_refused_and_changes_nothing(db_url):
    assert run_cli("migrate", "--database-url", db_url).returncode == 0
    assert_clean_error(run_cli("rollback", "--to", "0", "--database-url", db_url), "--yes")
    done = run_cli("rollback", "--to", "0", "--yes", "--json", "--database-url", db_url,
                   "--confirm-database", psycopg.conninfo.conninfo_to_dict(db_url)["dbname"])
    assert done.returncode == 0 and json.loads(done.stdout) == {"rolled_back": [
        "003_search_assets_by_owner", "002_search_assets", "001_init_vector_store"]}


def test_backup_then_restore_brings_back_rolled_back_data(db_url, pgvkit_home):
    assert run_cli("migrate", "--backup", "--database-url", db_url, env={"PGVKIT_HOME": str(pgvkit_home)}).returncode == 0
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                     " VALUES ('a-1', 'o-1', array_fill(0.5, ARRAY[768])::vector)")
    env = {"PGVKIT_HOME": str(pgvkit_home)}
    made = run_cli("backup", "--json", "--database-url", db_url, env=env)
    assert made.returncode == 0, made.stderr
    path = json.loads(made.stdout)["backup"]
    assert path.startswith(str(pgvkit_home / "backups")) and len(list((pgvkit_home / "backups").iterdir())) == 2
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    assert run_cli("rollback", "--to", "0", "--yes", "--database-url", db_url,
                   "--confirm-database", name).returncode == 0
    assert_clean_error(run_cli("restore", path, "--database-url", db_url), "--yes")
    restored = run_cli("restore", path, "--yes", "--database-url", db_url, "--confirm-database", name)
    assert restored.returncode == 0, restored.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT asset_id FROM ip_asset_embeddings").fetchall() == [("a-1",)]
    assert run_cli("status", "--database-url", db_url).returncode == 0


def test_baseline_from_the_cli_records_without_running(db_url):
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")
    status = run_cli("status", "--database-url", db_url)
    assert "pgvkit baseline 001" in status.stdout
    assert run_cli("baseline", "001", "--database-url", db_url).returncode == 0
    assert run_cli("status", "--database-url", db_url).returncode == 1  # 002 is newer than the docker init
    assert run_cli("migrate", "--database-url", db_url).returncode == 0
    assert run_cli("status", "--database-url", db_url).returncode == 0


def test_db_start_status_url_stop_manage_the_embedded_server(tmp_path):
    env = {"PGVKIT_HOME": str(tmp_path / "kit")}
    try:
        start = run_cli("db", "start", env=env)
        assert start.returncode == 0, start.stderr
        assert "pgvector 0.8.6" in start.stdout and "running" in start.stdout
        url = run_cli("db", "url", env=env).stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database(), current_user").fetchone() == ("jarvis", "jarvis")
        assert (tmp_path / "kit" / "pgdata").stat().st_mode & 0o077 == 0  # owner only
        migrate = run_cli("migrate", env=env)  # no URL anywhere: the embedded server is used
        assert migrate.returncode == 0 and "(embedded)" in migrate.stdout
    finally:
        stop = run_cli("db", "stop", env=env)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert run_cli("db", "status", env=env).returncode == 3
    assert_clean_error(run_cli("db", "url", env=env), "pgvkit db start")


def test_the_embedded_server_listens_on_its_socket_only(tmp_path):
    server = EmbeddedServer(tmp_path / "kit").start()
    try:
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
            assert conn.execute("SHOW unix_socket_permissions").fetchone() == ("0700",)
        assert (server.pgdata.stat().st_mode & 0o777) == 0o700  # the data directory: its owner only
    finally:
        server.destroy()


def test_an_embedded_server_given_a_port_answers_on_loopback_only(tcp_server):
    with psycopg.connect(tcp_server.socket_url(database="postgres")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        networks = {r[0] for r in conn.execute("SELECT address FROM pg_hba_file_rules WHERE type = 'host'")}
    assert networks <= {"127.0.0.1", "::1"}, networks
    with socket.socket() as probe:  # another address of this machine: nothing listens there
        probe.settimeout(5)
        assert probe.connect_ex(("127.0.0.2", tcp_server.port)) != 0


def test_non_superuser_migrates_once_the_extension_exists(make_database, make_role):
    role = make_role()
    url = make_database(owner=role)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    proc = run_cli("migrate", "--database-url", as_role(url, role))
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'ip_asset_embeddings'"
                            ).fetchone() == (role,)


def test_help_shows_examples_and_version_is_printed():
    assert "pgvkit migrate --backup" in run_cli("--help").stdout
    assert "example:" in run_cli("rollback", "--help").stdout
    assert run_cli("--version").stdout.startswith("pgvkit ")


DEBIAN_PG15 = "/usr/lib/postgresql/15/bin"  # installed by .ci/run; PostgreSQL 15 without pgvector


def test_a_server_without_pgvector_says_so_and_applies_nothing(tmp_path):
    server = EmbeddedServer(tmp_path / "pg15", bindir=DEBIAN_PG15).start()
    try:
        with psycopg.connect(server.url()) as conn:
            assert conn.info.server_version // 10000 == 15
        proc = run_cli("migrate", "--database-url", server.url())
        assert_clean_error(proc, "no pgvector extension installed", "install pgvector")
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT to_regclass('ip_asset_embeddings')").fetchone()[0] is None
            assert conn.execute("SELECT count(*) FROM pgvkit.schema_migrations").fetchone()[0] == 0
    finally:
        server.destroy()


def test_baseline_with_no_version_finds_what_the_docker_init_ran(db_url):
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")
    out = run_cli("baseline", "--database-url", db_url)
    assert out.returncode == 0 and "Baselined 001_init_vector_store" in out.stdout, out.stderr
    again = run_cli("baseline", "--database-url", db_url)
    assert again.returncode == 2 and "nothing to baseline" in again.stderr and "Traceback" not in again.stderr
