"""A read-only role (default_transaction_read_only on it, as teams give reporting roles): every
writing command refuses it in one line naming the setting and the fix, doctor says so, the
read-only commands work, and watch prints its figures "not recorded"."""

import psycopg
import pytest
from psycopg import sql

from pgvkit.data.inserts import load

from .conftest import MIGRATIONS, as_role, run_cli


@pytest.fixture
def read_only_role(make_role, make_database):
    """The seed schema with 2,000 rows, migrated by its owner; then the owner's role is made
    read-only by default (ALTER ROLE ... SET default_transaction_read_only = on)."""
    role = make_role()
    admin = make_database(owner=role)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    url = as_role(admin, role)
    assert run_cli("migrate", "--database-url", url, "--migrations", str(MIGRATIONS)).returncode == 0
    load(url, 2_000, progress=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(sql.Identifier(role)))
    return url, role


@pytest.mark.parametrize("command", [
    ["migrate"], ["rollback", "--to", "0", "--yes"], ["tune", "--rows", "1000"], ["confirm"],
    ["load", "--rows", "10"], ["unload", "--yes"], ["smoke"], ["model", "backfill", "m", "--from", "x.jsonl"],
    ["baseline", "001"],
])
def test_every_writing_command_refuses_a_read_only_role_in_one_line_with_the_setting_and_the_fix(read_only_role,
                                                                                               command):
    url, role = read_only_role
    database = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    refused = run_cli(*command, "--database-url", url, "--migrations", str(MIGRATIONS),
                      *(["--confirm-database", database] if command[0] in ("rollback", "load", "unload") else []))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"pgvkit: error: pgvkit {command[0]} writes, and {database} on the local socket opens "
                           f"read-only transactions (default_transaction_read_only = on, set on role \"{role}\")"), line
    assert f'ALTER ROLE "{role}" RESET default_transaction_read_only' in line
    assert "PGOPTIONS='-c default_transaction_read_only=off'" in line
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 2_000


def test_doctor_names_the_read_only_session_and_knows_its_error_message(read_only_role):
    url, role = read_only_role
    doctor = run_cli("doctor", "--database-url", url, "--migrations", str(MIGRATIONS))
    assert "FAIL  writes: " in doctor.stdout and "default_transaction_read_only = on" in doctor.stdout, doctor.stdout
    pasted = run_cli("doctor", "--error", "ERROR:  cannot execute INSERT in a read-only transaction")
    assert "this session is read-only: INSERT is refused" in pasted.stdout
    assert "hot standby, or default_transaction_read_only" in pasted.stdout


def test_the_read_only_commands_work_and_watch_prints_its_figures_not_recorded(read_only_role):
    url, _ = read_only_role
    args = ["--database-url", url, "--migrations", str(MIGRATIONS)]
    status = run_cli("status", *args)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    verify = run_cli("verify", *args)
    assert "Traceback" not in verify.stderr and "read-only transaction" not in verify.stdout + verify.stderr
    watched = run_cli("watch", "--sample", "20", *args)
    assert "Traceback" not in watched.stderr and "read-only transaction" not in watched.stderr, watched.stderr
    assert "not recorded: " in watched.stdout and "opens read-only transactions" in watched.stdout, watched.stdout
