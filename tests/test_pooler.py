"""PgBouncer in front, as teams run it (Debian's package, pool_mode = transaction): the commands
that need a session refuse it in one line naming the direct URL, the read-only ones work
through it, and nothing (a lock, a setting) is left behind on a pooled backend."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from pgvkit.server.embedded import SERVER_USER_WHEN_ROOT
from pgvkit.server.pooler import session_survives

from .conftest import MIGRATIONS, PASSWORD, free_port, run_cli

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture
def pgbouncer(app_database, tcp_server):
    """Debian's pgbouncer on loopback in front of the test server: the application's database in
    transaction mode, and the same database in session mode under the name <db>_session."""
    assert os.path.exists(PGBOUNCER), "pgbouncer is not installed (.ci/run installs Debian's package)"
    home = Path(tempfile.mkdtemp(prefix="pgvkit-bouncer-"))
    port = free_port()
    db, role = app_database["db"], app_database["role"]
    (home / "userlist.txt").write_text(f'"{role}" "{PASSWORD}"\n')
    (home / "pgbouncer.ini").write_text(f"""
[databases]
{db} = host=127.0.0.1 port={tcp_server.port} dbname={db}
{db}_session = host=127.0.0.1 port={tcp_server.port} dbname={db} pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {home}/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = {home}/pgbouncer.log
pidfile = {home}/pgbouncer.pid
""" + (f"user = {SERVER_USER_WHEN_ROOT}\n" if os.geteuid() == 0 else ""))
    if os.geteuid() == 0:  # pgbouncer will not run as root
        for path in (home, *home.iterdir()):
            shutil.chown(path, SERVER_USER_WHEN_ROOT)
    proc = subprocess.Popen([PGBOUNCER, str(home / "pgbouncer.ini")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"postgresql://{role}:{PASSWORD}@127.0.0.1:{port}/{db}"
    deadline = time.monotonic() + 30
    while True:  # until it accepts a login
        try:
            psycopg.connect(url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            assert proc.poll() is None and time.monotonic() < deadline, (home / "pgbouncer.log").read_text()
            time.sleep(0.05)
    yield {"url": url, "session_url": f"postgresql://{role}:{PASSWORD}@127.0.0.1:{port}/{db}_session",
           "direct": app_database["url"], "admin": app_database["admin"], "db": db}
    proc.terminate()
    proc.wait(timeout=30)
    shutil.rmtree(home, ignore_errors=True)


def test_the_probe_tells_a_transaction_pooler_from_a_session_and_a_direct_connection(pgbouncer):
    assert session_survives(pgbouncer["url"])[0] is False
    assert session_survives(pgbouncer["session_url"])[0] is True
    assert session_survives(pgbouncer["direct"])[0] is True


@pytest.mark.parametrize("command", [
    ["migrate"], ["rollback", "--to", "0", "--yes"], ["baseline", "001"], ["tune", "--rows", "2000"],
    ["confirm"], ["watch"], ["model", "backfill", "m", "--from", "x.jsonl"],
])
def test_commands_that_need_a_session_refuse_the_pooler_in_one_line_naming_the_direct_url(pgbouncer, command):
    refused = run_cli(*command, env={"DATABASE_URL": pgbouncer["url"]})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"pgvkit: error: pgvkit {command[0]} needs a session of its own") and "PgBouncer" in line
    assert "PGVKIT_DIRECT_URL=postgresql://" in line and PASSWORD not in refused.stderr + refused.stdout
    with psycopg.connect(pgbouncer["direct"]) as conn:  # nothing was done
        assert conn.execute("SELECT to_regclass('pgvkit.schema_migrations')").fetchone()[0] is None


def test_with_the_direct_url_beside_it_the_pooler_serves_the_read_only_commands_and_keeps_nothing(pgbouncer):
    env = {"DATABASE_URL": pgbouncer["url"], "PGVKIT_DIRECT_URL": pgbouncer["direct"]}
    with psycopg.connect(pgbouncer["admin"], autocommit=True) as conn:  # as a managed server's superuser did
        conn.execute("CREATE EXTENSION vector")
    migrated = run_cli("migrate", "--migrations", str(MIGRATIONS), env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "(PGVKIT_DIRECT_URL)" in migrated.stdout and PASSWORD not in migrated.stdout
    loaded = run_cli("load", "--rows", "3000", "--confirm-database", pgbouncer["db"], env=env)  # one transaction
    assert loaded.returncode == 0, loaded.stderr
    for _ in range(3):  # psycopg would prepare a statement used five times: each one a new backend's
        status = run_cli("status", "--migrations", str(MIGRATIONS), env=env)
        assert status.returncode == 0 and "up to date" in status.stdout, status.stderr
    verify = run_cli("verify", env=env)
    assert "Traceback" not in verify.stderr and "prepared statement" not in verify.stdout + verify.stderr
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for _ in range(2):  # 50 searches a run: the second run's sessions meet the backends the first one used
        recall = run_cli("recall", "--sample", "50", "--target", "0.01", env=env)  # ran, whatever it measured
        assert recall.returncode == 0, recall.stdout + recall.stderr
    with psycopg.connect(pgbouncer["admin"]) as conn:  # no lock left behind on any backend
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 0
    # every pooled backend, held at once: each has what a fresh session of the role has, no setting of pgvkit's
    settings = ("SELECT pg_backend_pid(), current_setting('lock_timeout'), current_setting('statement_timeout'),"
                " current_setting('maintenance_work_mem'), current_setting('idle_in_transaction_session_timeout')")
    with psycopg.connect(pgbouncer["direct"]) as conn:
        fresh = conn.execute(settings).fetchone()[1:]
    pooled = [psycopg.connect(pgbouncer["url"]) for _ in range(4)]
    try:
        seen = {c.execute(settings).fetchone() for c in pooled}
    finally:
        for c in pooled:
            c.close()
    assert len(seen) == 4 and {row[1:] for row in seen} == {fresh} and fresh[0] == fresh[1] == "0"


def test_the_library_refuses_the_pooler_too_as_notebooks_call_it(pgbouncer):
    """A notebook calls tune, confirm, watch and the migrator with DATABASE_URL: the same refusal."""
    from pgvkit import Migrator
    from pgvkit.server.pooler import PoolerInTheWay
    from pgvkit.tuning import confirm_settings, tune
    from pgvkit.watch.look import watch

    url = pgbouncer["url"]
    for call in (lambda: tune(url, progress=False, echo=lambda _: None), lambda: confirm_settings(url, progress=False),
                 lambda: watch(url, echo=lambda _: None), lambda: Migrator(url, MIGRATIONS).migrate()):
        with pytest.raises(PoolerInTheWay, match="PGVKIT_DIRECT_URL=postgresql://"):
            call()
