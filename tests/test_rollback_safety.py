"""A rollback is as safe as a migrate: a down file whose index build fails (a lock timeout, a
Ctrl-C, a full disk) is recorded as failed, status and migrate say so, the command its error
names resumes it, and an INVALID index is never put in place of the valid one."""

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from pgvkit import Migrator
from pgvkit.data.inserts import load
from pgvkit.errors import EmbeddedServerError
from pgvkit.server.embedded import SERVER_USER_WHEN_ROOT, EmbeddedServer
from pgvkit.tuning import write_migration

from .conftest import MIGRATIONS, ROOT, run_cli, sigint_as_in_a_terminal
from .test_quantized import chosen

INDEX = "idx_embedding_cosine"


def tune_applied(url, tmp_path):
    """The seed schema with 2,000 rows and a tuning migration applied (004: HNSW in place of the
    seed's IVFFlat); its own migrations directory."""
    load(url, 2_000, progress=False)
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, directory)
    write_migration(url, chosen("vector", "hnsw", 40), directory)
    Migrator(url, directory, echo=lambda _: None).migrate()
    return directory


@pytest.fixture
def tuned(migrated, tmp_path):
    return migrated, tune_applied(migrated, tmp_path)


def cli_args(url, directory) -> list[str]:
    return ["--database-url", url, "--migrations", str(directory)]


def typed_back(url) -> list[str]:
    """The database's name typed back, as rollback asks for any database but the embedded one."""
    return ["--confirm-database", psycopg.conninfo.conninfo_to_dict(url)["dbname"]]


def indexes(url) -> dict[str, tuple[str, bool]]:
    """Each index on the table whose name starts with idx_embedding_cosine: (method, valid)."""
    with psycopg.connect(url) as conn:
        return {name: (method, valid) for name, method, valid in conn.execute(
            "SELECT c.relname, am.amname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = 'ip_asset_embeddings'::regclass"
            " AND c.relname LIKE 'idx_embedding_cosine%'")}


def status_of(url, version: int) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status FROM pgvkit.schema_migrations WHERE version = %s", [version]).fetchone()
    return row[0] if row else None


@contextlib.contextmanager
def open_writer(url):
    """A writing transaction left open on the table, as an application's long one: a concurrent
    index build waits for it (after its INVALID catalog entry is made) until it ends."""
    conn = psycopg.connect(url)
    conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                 " VALUES ('in-flight', 'app', array_fill(0.1, ARRAY[768])::vector)")
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


def the_down_build_waits(url, proc) -> None:
    """Until the down file's CREATE INDEX CONCURRENTLY waits for the open writer."""
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute("SELECT EXISTS (SELECT FROM pg_stat_progress_create_index p JOIN pg_class c"
                               " ON c.oid = p.index_relid WHERE c.relname = %s AND p.phase LIKE 'waiting%%')",
                               [INDEX + "_prev"]).fetchone()[0]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)


def resume_command(stderr: str) -> list[str]:
    """The command the error line names, as words."""
    found = re.search(r"run (pgvkit rollback --to \d+ --yes) again|(pgvkit rollback --to \d+ --yes) resumes", stderr)
    assert found, stderr
    return (found.group(1) or found.group(2)).split()[1:]


def assert_rolled_back(url) -> None:
    """004 undone: the seed's IVFFlat index serves under its name, nothing else is left."""
    assert indexes(url) == {INDEX: ("ivfflat", True)}
    assert status_of(url, 4) is None and status_of(url, 3) == "applied"


def assert_tuned_index_serves(url) -> None:
    found = indexes(url)
    assert found[INDEX] == ("hnsw", True), found  # never the INVALID one renamed into service
    assert all(valid for _, valid in found.values()), found  # no half-built index left behind


def test_the_down_file_rebuilds_the_previous_index_sized_and_unbounded_as_the_up_file_builds(tuned):
    _, directory = tuned
    [down] = directory.glob("004_*.down.sql")
    text = down.read_text()
    build = text.index("CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_embedding_cosine_prev")
    for line in ("SET maintenance_work_mem = ", "SET max_parallel_maintenance_workers = ",
                 "SET statement_timeout = '0';"):
        assert -1 < text.index(line) < build, line
    assert text.rstrip().endswith("RESET statement_timeout;")


def test_a_lock_timeout_in_the_down_build_is_recorded_and_the_named_command_resumes_it(tuned):
    url, directory = tuned
    args = cli_args(url, directory)
    with open_writer(url):
        failed = run_cli("rollback", "--to", "3", "--yes", "--lock-timeout", "200ms", "--retry-budget", "1", *args,
                         *typed_back(url))
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert line.startswith("pgvkit: error: ") and "recorded as failed" in line
        assert indexes(url)[INDEX] == ("hnsw", True)  # the tuned index still serves
        assert status_of(url, 4) == "rollback_failed"
        status = run_cli("status", *args)
        assert status.returncode == 2 and "rollback failed" in status.stdout
        assert "pgvkit rollback --to 003 --yes resumes it" in status.stdout
        migrate = run_cli("migrate", *args)  # not "up to date": the schema is between two versions
        assert migrate.returncode == 2 and "pgvkit rollback --to 003 --yes" in migrate.stderr
        doctor = run_cli("doctor", *args)
        assert "stopped part-way" in doctor.stdout and "pgvkit rollback --to 003 --yes" in doctor.stdout
    resumed = run_cli(*resume_command(line), *args, *typed_back(url))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_rolled_back(url)


def test_ctrl_c_in_the_down_build_drops_what_it_left_and_a_rerun_finishes(tuned):
    url, directory = tuned
    args = cli_args(url, directory)
    with open_writer(url):
        proc = subprocess.Popen([sys.executable, "-m", "pgvkit", "rollback", "--to", "3", "--yes", *args,
                                 *typed_back(url)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=sigint_as_in_a_terminal)
        the_down_build_waits(url, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert "pgvkit rollback --to 003 --yes resumes it" in out
        assert "the next run drops it" in out  # the writer's lock keeps the INVALID index from being dropped now
        assert indexes(url)[INDEX] == ("hnsw", True)
        assert status_of(url, 4) == "rollback_failed"
    resumed = run_cli("rollback", "--to", "3", "--yes", *args, *typed_back(url))
    assert resumed.returncode == 0, resumed.stderr
    assert_rolled_back(url)


def test_an_invalid_index_left_from_an_earlier_attempt_is_rebuilt_never_renamed_into_place(tuned):
    """What the first rollback of a pgvkit before this one left (a failed build's INVALID _prev,
    the history still saying applied): the next rollback rebuilds it and swaps only then."""
    url, directory = tuned
    with open_writer(url), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(f"CREATE INDEX CONCURRENTLY {INDEX}_prev ON ip_asset_embeddings"
                         " USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)")
    assert indexes(url)[INDEX + "_prev"] == ("ivfflat", False)
    rolled = run_cli("rollback", "--to", "3", "--yes", *cli_args(url, directory), *typed_back(url))
    assert rolled.returncode == 0, rolled.stderr
    assert "dropping invalid index" in rolled.stdout
    assert_rolled_back(url)


def test_a_hand_written_swap_refuses_to_rename_an_invalid_index_into_service(migrated, migrations_dir):
    """A down file that swaps without building (the index made beforehand, by hand): the
    old index keeps serving while the replacement is INVALID, and the rollback is recorded as failed."""
    directory = migrations_dir({name: (MIGRATIONS / name).read_text() for name in
                                ("001_init_vector_store.sql", "002_search_assets.sql",
                                 "003_search_assets_by_owner.sql")} | {
        "004_swap.sql": "-- pgvkit:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_owner ON ip_asset_embeddings (owner_id);\n",
        "004_swap.down.sql": ("-- pgvkit:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS idx_owner;\n"
                              f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX};\n"
                              f"ALTER INDEX IF EXISTS {INDEX}_old RENAME TO {INDEX};\n")})
    args = cli_args(migrated, directory)
    assert run_cli("migrate", *args).returncode == 0
    load(migrated, 500, progress=False)
    with open_writer(migrated), psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute(f"CREATE INDEX CONCURRENTLY {INDEX}_old ON ip_asset_embeddings USING hnsw"
                         " (embedding vector_cosine_ops)")
    refused = run_cli("rollback", "--to", "3", "--yes", *args, *typed_back(migrated))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert f"refused to put {INDEX}_old in place of {INDEX}: it is INVALID" in line, line
    assert "004_swap.down.sql:3" in line and "pgvkit rollback --to 003 --yes" in line
    assert indexes(migrated) == {INDEX: ("ivfflat", True), INDEX + "_old": ("hnsw", False)}
    assert status_of(migrated, 4) == "rollback_failed"


@contextlib.contextmanager
def mounted(path, size: str):
    """A file system of `size` (tmpfs) at `path`, owned by the server's user: a disk that fills."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    shutil.chown(path, SERVER_USER_WHEN_ROOT, SERVER_USER_WHEN_ROOT)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB disk for a tablespace: a build that needs more meets a full disk."""
    with mounted(tmp_path / "small", "3m") as path:
        yield path


def fill(directory) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 2**20)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_in_the_down_build_is_named_and_the_rollback_resumes_once_space_is_freed(tmp_path, small_disk):
    server = EmbeddedServer(tmp_path / "own").start()  # its own: the tablespace dies with it
    try:
        url = server.url()
        Migrator(url, MIGRATIONS, echo=lambda _: None).migrate()
        directory = tune_applied(url, tmp_path)
        args = cli_args(url, directory)
        with psycopg.connect(url, autocommit=True) as conn:  # new indexes of this database go to the small disk
            conn.execute(f"CREATE TABLESPACE small LOCATION '{small_disk}'")
            conn.execute("ALTER DATABASE jarvis SET default_tablespace = small")
        failed = run_cli("rollback", "--to", "3", "--yes", *args, *typed_back(url))
        assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
        line = failed.stderr.strip().splitlines()[-1]
        assert "No space left on device" in line and "recorded as failed" in line, line
        assert "free space on the server's data disk (or the tablespace's)" in line and "move it away" not in line
        assert_tuned_index_serves(url)
        assert status_of(url, 4) == "rollback_failed"
        with psycopg.connect(url, autocommit=True) as conn:  # space freed: the builds go back to the data directory
            conn.execute("ALTER DATABASE jarvis RESET default_tablespace")
        resumed = run_cli(*resume_command(line), *args, *typed_back(url))
        assert resumed.returncode == 0, resumed.stderr
        assert_rolled_back(url)
    finally:
        server.destroy()


def test_an_embedded_server_on_a_full_disk_says_so_with_the_fix_and_starts_once_space_is_freed(tmp_path):
    with mounted(tmp_path / "disk", "150m") as disk:
        home = disk / "home"
        server = EmbeddedServer(home).start()
        try:
            server.stop()
            filler = fill(disk)
            with pytest.raises(EmbeddedServerError) as refused:
                server.start()
            said = str(refused.value)
            assert "did not start: its disk is full" in said and f"df -h {server.pgdata}" in said, said
            assert "move it away" not in said and "\n" not in said
            doctor = run_cli("doctor", env={"PGVKIT_HOME": str(home)})
            assert "its disk is full" in doctor.stdout and "DATABASE_URL" not in doctor.stdout, doctor.stdout
            filler.unlink()  # space freed: the same server starts, its data as it was
            server.start()
            with psycopg.connect(server.url()) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == ("jarvis",)
        finally:
            server.destroy()
