"""Faults and guards against a real server: killed and cut-off migrations leave nothing behind,
destructive commands need the database's name typed back, hostile names stay names, and the
application role cannot change the schema."""

import os
import signal
import subprocess
import sys
import time
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from pgvkit.data.inserts import load, smoke, unload
from pgvkit.health.doctor import doctor
from pgvkit.health.verify import verify

from .conftest import MIGRATIONS, PASSWORD, ROOT, as_role, run_cli

# Long only while the table slow_gate exists: the test opens the gate for the run it kills
# and closes it for the re-run.
SLEEP = "SELECT pg_sleep(CASE WHEN to_regclass('public.slow_gate') IS NULL THEN 0 ELSE 30 END);"
SLOW_TRANSACTIONAL = f"""
CREATE TABLE slow_made (id int);
{SLEEP}
"""
SLOW_AUTOCOMMIT = f"""
-- pgvkit:no-transaction
CREATE TABLE IF NOT EXISTS slow_made (id int);
{SLEEP}
CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_made_id ON slow_made (id);
"""


def gate(url: str, open_: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.slow_gate ()" if open_ else "DROP TABLE public.slow_gate")


def wait_for_sleep(url: str, proc: subprocess.Popen) -> int:
    """The pid of the backend running the migration's pg_sleep, once it is running."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(CASE%'"
                               " AND state = 'active' AND datname = current_database()").fetchone()
            if row:
                return row[0]
            time.sleep(0.1)
    raise AssertionError("the migration never reached its pg_sleep")


def migrate_in_background(url: str, directory) -> subprocess.Popen:
    gate(url, True)
    return subprocess.Popen([sys.executable, "-m", "pgvkit", "migrate", "--database-url", url,
                             "--migrations", str(directory)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def history(url):
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT version, status FROM pgvkit.schema_migrations").fetchall())


def exists(url, name):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", [name]).fetchone()[0] is not None


@pytest.fixture
def slow(migrations_dir):
    def make(text):
        return migrations_dir({"001_init_vector_store.sql": (MIGRATIONS / "001_init_vector_store.sql").read_text(),
                               "002_slow.sql": text})
    return make


def kill_mid_sleep(url: str, directory) -> None:
    """Start `pgvkit migrate`, SIGKILL it while the migration sleeps."""
    proc = migrate_in_background(url, directory)
    wait_for_sleep(url, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_transactional_migration_leaves_nothing_and_the_rerun_applies_it_once(db_url, slow):
    directory = slow(SLOW_TRANSACTIONAL)
    kill_mid_sleep(db_url, directory)
    assert not exists(db_url, "slow_made") and 2 not in history(db_url)
    gate(db_url, False)
    start = time.monotonic()
    rerun = run_cli("migrate", "--database-url", db_url, "--migrations", str(directory), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    # the killed session's server side rolled back within seconds (client_connection_check_interval),
    # not after its 30 s sleep: until then its uncommitted CREATE TABLE would block the re-run
    assert time.monotonic() - start < 20
    assert history(db_url)[2] == "applied" and exists(db_url, "slow_made")


def test_sigkill_mid_autocommit_migration_shows_running_and_the_rerun_completes_it(db_url, slow):
    directory = slow(SLOW_AUTOCOMMIT)
    kill_mid_sleep(db_url, directory)
    assert history(db_url)[2] == "running"
    gate(db_url, False)
    status = run_cli("status", "--database-url", db_url, "--migrations", str(directory))
    assert status.returncode == 1 and "running" in status.stdout
    rerun = run_cli("migrate", "--database-url", db_url, "--migrations", str(directory), timeout=120)
    assert rerun.returncode == 0 and "resuming" in rerun.stdout
    with psycopg.connect(db_url) as conn:
        indexes = conn.execute("SELECT indexrelid::regclass::text, indisvalid FROM pg_index"
                               " WHERE indrelid = 'slow_made'::regclass").fetchall()
    assert indexes == [("slow_made_id", True)] and history(db_url)[2] == "applied"


def test_a_terminated_backend_is_one_clear_line_no_partial_state_and_a_rerun_completes(db_url, slow):
    directory = slow(SLOW_TRANSACTIONAL)
    proc = migrate_in_background(db_url, directory)
    pid = wait_for_sleep(db_url, proc)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("pgvkit: error: ") and "Traceback" not in err, err
    assert "terminat" in lines[-1]
    assert not exists(db_url, "slow_made") and 2 not in history(db_url)
    gate(db_url, False)
    assert run_cli("migrate", "--database-url", db_url, "--migrations", str(directory),
                   timeout=120).returncode == 0
    assert history(db_url)[2] == "applied"


@pytest.mark.parametrize("text, left", [(SLOW_TRANSACTIONAL, None), (SLOW_AUTOCOMMIT, "running")],
                         ids=["transactional", "no-transaction"])
def test_a_server_restarted_mid_migration_is_one_clear_line_and_a_rerun_completes(tmp_path, slow, text, left):
    from pgvkit.server.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path / "own").start()  # its own server: this test restarts it
    try:
        url, directory = server.url(), slow(text)
        proc = migrate_in_background(url, directory)
        wait_for_sleep(url, proc)
        server.stop()  # pg_ctl stop -m fast: every session is cut off mid-statement
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith("pgvkit: error: ")
        assert "002_slow" in err and server.url() not in err
        server.start()
        assert history(url).get(2) == left  # nothing of a transactional file; a no-transaction one says running
        assert exists(url, "slow_made") == (left is not None)
        gate(url, False)
        rerun = run_cli("migrate", "--database-url", url, "--migrations", str(directory), timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        with psycopg.connect(url) as conn:
            indexes = conn.execute("SELECT count(*) FILTER (WHERE NOT indisvalid), count(*) FROM pg_index"
                                   " WHERE indrelid = 'slow_made'::regclass").fetchone()
        assert history(url)[2] == "applied" and indexes == (0, 0 if left is None else 1)
    finally:
        server.destroy()


def test_destructive_commands_need_yes_and_the_database_name_typed_back(migrated):
    load(migrated, 20, progress=False)
    name = psycopg.conninfo.conninfo_to_dict(migrated)["dbname"]
    for args in (["unload", "--yes"], ["rollback", "--to", "0", "--yes"],
                 ["unload", "--yes", "--confirm-database", "jarvis"]):
        proc = run_cli(*args, "--database-url", migrated)
        assert proc.returncode == 2 and f"--confirm-database {name}" in proc.stderr, proc.stderr
    assert run_cli("unload", "--database-url", migrated, "--confirm-database", name).returncode == 2  # no --yes
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 20  # nothing happened
    assert history(migrated)[1] == "applied"
    ok = run_cli("unload", "--yes", "--confirm-database", name, "--database-url", migrated)
    assert ok.returncode == 0 and "deleted 20" in ok.stdout


HOSTILE = ['x"; DROP TABLE canary; --', "canary; DROP TABLE canary", "Robert'); DROP TABLE canary;--"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_table_names_are_names_not_sql(migrated, name):
    with psycopg.connect(migrated) as conn:
        conn.execute("CREATE TABLE canary (id int)")
    assert verify(migrated, table=name)["table"].status == "fail"
    assert smoke(migrated, table=name, raise_on_failure=False).ok is False
    with pytest.raises(psycopg.Error):
        unload(migrated, table=name)
    assert "does not exist" in doctor(migrated, table=name, migrations_dir=MIGRATIONS)["migrations"].what \
        or doctor(migrated, table=name, migrations_dir=MIGRATIONS)["migrations"].status == "pass"
    assert exists(migrated, "canary")
    with psycopg.connect(migrated) as conn:  # a table really named so is found, and only it
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(name)))
    assert verify(migrated, table=name)["table"].status == "pass" and exists(migrated, "canary")


def test_migrations_run_by_the_owner_give_the_application_role_exactly_what_the_app_needs(tmp_path):
    """A server laid out like production: a superuser who is not jarvis, an owner role that runs
    the migrations, and jarvis as the application's login."""
    from pgvkit import Migrator
    from pgvkit.server.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path / "prod-like", user="postgres", database="postgres").start()
    try:
        with psycopg.connect(server.socket_url(database="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE jarvis LOGIN PASSWORD {}").format(sql.Literal(PASSWORD)))
            conn.execute("CREATE ROLE store_owner LOGIN")
            conn.execute("CREATE DATABASE store OWNER store_owner")
        with psycopg.connect(server.socket_url(database="store"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")  # once, by the superuser: vector is not a trusted extension
        owner = as_role(server.socket_url(database="store"), "store_owner")
        Migrator(owner, MIGRATIONS, echo=lambda _: None).migrate()
        app = as_role(server.socket_url(database="store"), "jarvis", PASSWORD)
        with psycopg.connect(app) as conn:
            grants = set(conn.execute(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
                " WHERE grantee = 'jarvis'").fetchall())
            sequence = conn.execute("SELECT has_sequence_privilege('ip_asset_embeddings_id_seq', 'USAGE'),"
                                    " has_sequence_privilege('ip_asset_embeddings_id_seq', 'UPDATE')").fetchone()
            conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                         " VALUES ('a', 'o', array_fill(0.1, ARRAY[768])::vector)")
            conn.execute("UPDATE ip_asset_embeddings SET metadata = '{}' WHERE asset_id = 'a'")
            assert conn.execute("SELECT count(*) FROM similar_assets").fetchone()[0] == 0
            conn.execute("DELETE FROM ip_asset_embeddings WHERE asset_id = 'a'")
        assert grants == {("ip_asset_embeddings", p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")} | {
            ("similar_assets", "SELECT")}
        assert sequence == (True, False)
        for statement in ("DROP TABLE ip_asset_embeddings", "ALTER TABLE ip_asset_embeddings ADD COLUMN x int",
                          "CREATE INDEX ON ip_asset_embeddings (asset_id)", "TRUNCATE ip_asset_embeddings",
                          "DROP INDEX idx_embedding_cosine", "DROP VIEW similar_assets",
                          "CREATE TABLE public.mine (id int)", "SELECT * FROM pgvkit.schema_migrations"):
            with psycopg.connect(app) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        with psycopg.connect(owner) as conn:
            assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'ip_asset_embeddings'"
                                ).fetchone() == ("store_owner",)
    finally:
        server.destroy()


CONCURRENT_FILES = {
    "002_owner_index.sql": "-- pgvkit:no-transaction\n"
                           "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_created ON ip_asset_embeddings (created_at);\n",
    "003_note.sql": "COMMENT ON TABLE ip_asset_embeddings IS 'image embeddings';\n",
}


@pytest.mark.slow
def test_sixteen_concurrent_migrators_ten_rounds_record_each_migration_exactly_once(make_database,
                                                                                       migrations_dir):
    from concurrent.futures import ThreadPoolExecutor

    directory = migrations_dir({"001_init_vector_store.sql": (MIGRATIONS / "001_init_vector_store.sql").read_text(),
                                **CONCURRENT_FILES})
    rounds = int(os.environ.get("PGVKIT_CONCURRENCY_ROUNDS", "10"))  # 160 migrate processes
    outcomes = {"applied": 0, "lock timeout": 0}
    for _ in range(rounds):
        url = make_database()
        with ThreadPoolExecutor(16) as pool:
            procs = list(pool.map(lambda _: run_cli("migrate", "--database-url", url, "--migrations", str(directory),
                                                    "--lock-wait", "120"), range(16)))
        for p in procs:
            assert p.returncode == 0 or (p.returncode == 2 and "pgvkit migration lock" in p.stderr), p.stderr
            outcomes["applied" if p.returncode == 0 else "lock timeout"] += 1
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version, status FROM pgvkit.schema_migrations ORDER BY 1").fetchall() == [
                (1, "applied"), (2, "applied"), (3, "applied")]
            applies = conn.execute("SELECT version, count(*) FROM pgvkit.migration_events WHERE event = 'apply'"
                                   " GROUP BY 1 ORDER BY 1").fetchall()
            assert applies == [(1, 1), (2, 1), (3, 1)]
            assert conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0] == 0
    assert outcomes["applied"] + outcomes["lock timeout"] == 16 * rounds


# the notebooks that handle the URL each in their own way: described (00), given to SQLAlchemy for
# %sql (02), a scratch database made from it and pg_dump / pg_restore (06; 03 and 08 make theirs the
# same way, pgvkit.migrator.scratch); 04 is `tune` above, and pytest --nbval runs every notebook
RUN = [f"notebooks/{n}.ipynb" for n in ("00_start_here", "02_verify", "06_rollback")]


def test_no_command_writes_or_prints_the_password(app_database, pgvkit_home, tmp_path):
    """Every command, with a DATABASE_URL that holds a password: no output, file, backup name,
    run report or history row contains it."""
    with psycopg.connect(app_database["admin"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    env = {"DATABASE_URL": app_database["url"], "PGVKIT_HOME": str(pgvkit_home)}
    name = app_database["db"]
    commands = [["status"], ["plan"], ["migrate", "--backup"], ["history"], ["verify"], ["smoke"], ["doctor"],
                ["load", "--rows", "50", "--confirm-database", name], ["unload", "--yes", "--confirm-database", name], ["backup"],
                ["tune", "--rows", "1200", "--queries", "10", "--candidates", "vector", "--json"], ["status", "--json"],
                ["rollback", "--to", "0"],
                ["status", "--database-url", app_database["url"].replace(PASSWORD, PASSWORD + "-wrong")],
                ["run", *RUN]]  # as a superuser: 03, 06 and 08 make scratch databases
    seen = []
    for args in commands:
        if args[0] == "run":
            with psycopg.connect(app_database["admin"], autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(app_database["role"])))
        proc = run_cli(*args, env=env, timeout=600)
        seen.append(proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
    assert proc.returncode == 0 and proc.stdout.count(" passed  ") == len(RUN), proc.stdout + proc.stderr
    files = [p for p in pgvkit_home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".dump" for p in files) and any(p.name == "report.html" for p in files)
    seen += [p.read_bytes().decode("utf-8", "replace") for p in files]
    seen += [p.read_text() for p in (ROOT / "notebooks").glob("*.ipynb")]
    with psycopg.connect(app_database["admin"]) as conn:
        seen += [str(r) for r in conn.execute("SELECT * FROM pgvkit.migration_events").fetchall()]
        seen += [str(r) for r in conn.execute("SELECT * FROM pgvkit.schema_migrations").fetchall()]
    leaks = [text for text in seen if PASSWORD in text or quote(PASSWORD, safe="") in text]
    assert leaks == [] and len(seen) > len(commands)


SWAP_INDEX = """-- pgvkit:no-transaction
SET {setting};
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_embedding_cosine_next ON ip_asset_embeddings
    USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100);
DROP INDEX CONCURRENTLY IF EXISTS idx_embedding_cosine;
ALTER INDEX IF EXISTS idx_embedding_cosine_next RENAME TO idx_embedding_cosine;
RESET maintenance_work_mem;
RESET statement_timeout;
"""


@pytest.mark.parametrize("pressure, message", [
    ("maintenance_work_mem = '1MB'", "memory required is"),
    ("statement_timeout = '50ms'", "statement timeout"),
])
def test_an_index_build_under_pressure_keeps_the_old_index_and_resumes_once_fixed(db_url, migrations_dir,
                                                                                  pressure, message):
    directory = migrations_dir({"001_init_vector_store.sql": (MIGRATIONS / "001_init_vector_store.sql").read_text(),
                                "002_swap.sql": SWAP_INDEX.format(setting=pressure)})
    args = ["--database-url", db_url, "--migrations", str(directory)]
    assert run_cli("migrate", "--target", "1", *args).returncode == 0
    load(db_url, 3000, progress=False)
    failed = run_cli("migrate", *args)
    assert failed.returncode == 2 and message in failed.stderr and "Traceback" not in failed.stderr
    with psycopg.connect(db_url) as conn:
        indexes = dict(conn.execute("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c"
                                    " ON c.oid = i.indexrelid WHERE c.relname LIKE 'idx_embedding_cosine%'"))
    assert indexes["idx_embedding_cosine"] is True  # the old index still serves queries
    assert history(db_url)[2] == "failed"
    (directory / "002_swap.sql").write_text(SWAP_INDEX.format(setting="maintenance_work_mem = '256MB'"))  # the fix
    assert run_cli("migrate", *args).returncode == 0
    with psycopg.connect(db_url) as conn:
        after = conn.execute("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                             " WHERE c.relname LIKE 'idx_embedding_cosine%'").fetchall()
    assert after == [("idx_embedding_cosine", True)] and history(db_url)[2] == "applied"


def wait_until_streamed(url: str, proc: subprocess.Popen, rows: int) -> None:
    """Until `rows` rows of a running load have reached the server, whether still in its COPY
    or already committed (so a loader that commits as it goes is caught committing)."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT (SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy"
                           " WHERE datname = current_database()) + (SELECT count(*) FROM ip_asset_embeddings)"
                           ).fetchone()[0] < rows:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)


def test_a_server_stopped_mid_load_commits_nothing_and_a_rerun_loads_everything(tmp_path):
    from pgvkit import Migrator
    from pgvkit.server.embedded import EmbeddedServer

    server = EmbeddedServer(tmp_path / "own").start()  # its own server: this test stops it
    try:
        url = server.url()
        Migrator(url, MIGRATIONS, echo=lambda _: None).migrate()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP INDEX idx_embedding_cosine")  # plain table: the load runs long enough to interrupt
        # the server as pgvkit sizes it streams a load fast: enough rows that the stop lands mid-COPY
        proc = subprocess.Popen([sys.executable, "-m", "pgvkit", "load", "--rows", "200000", "--database-url", url,
                                 "--confirm-database", "jarvis"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until_streamed(url, proc, 20000)
        server.stop()  # mid-COPY, with 10% of the rows sent
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and err.strip().splitlines()[-1].startswith("pgvkit: error: ")
        assert "Traceback" not in err
        server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 0  # all or nothing
        assert run_cli("load", "--rows", "2000", "--database-url", url, "--confirm-database", "jarvis").returncode == 0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 2000
    finally:
        server.destroy()


def test_a_killed_load_leaves_only_tagged_rows_and_unload_restores_the_table(migrated):
    """SIGKILL of `pgvkit load` while its COPY streams: whatever it left is tagged, and unload
    brings the table back to exactly what it was."""
    from pgvkit.data.inserts import LOAD_TAG

    with psycopg.connect(migrated) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                     " VALUES ('real', 'team', array_fill(0.1, ARRAY[768])::vector)")
    name = psycopg.conninfo.conninfo_to_dict(migrated)["dbname"]
    proc = subprocess.Popen([sys.executable, "-m", "pgvkit", "load", "--rows", "100000", "--database-url", migrated,
                             "--confirm-database", name],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_streamed(migrated, proc, 30000)
    proc.send_signal(signal.SIGKILL)  # mid-COPY, with 30% of the rows sent
    proc.wait()
    with psycopg.connect(migrated) as conn:
        untagged = conn.execute("SELECT asset_id FROM ip_asset_embeddings WHERE owner_id NOT LIKE %s",
                                [LOAD_TAG + "%"]).fetchall()
        tagged = conn.execute("SELECT count(*) FROM ip_asset_embeddings WHERE owner_id LIKE %s",
                              [LOAD_TAG + "%"]).fetchone()[0]
    assert untagged == [("real",)]  # nothing of the load but tagged rows, whatever the moment of the kill
    assert tagged == 0  # and killed before its commit, not even those: the connections commit together
    unload(migrated)
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT asset_id, owner_id FROM ip_asset_embeddings").fetchall() == [("real", "team")]
