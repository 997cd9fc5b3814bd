"""The migration engine against a real PostgreSQL."""

import threading

import psycopg
import pytest

from pgvkit import Migrator
from pgvkit.migrator import history
from pgvkit.errors import (
    ConfigError,
    ConfirmationRequired,
    LockTimeout,
    MigrationDriftError,
    MigrationFailed,
    PgvkitError,
    RollbackError,
)
from pgvkit.migrator import LOCK_KEY
from pgvkit.migrator.files import read_migrations

from .conftest import MIGRATIONS, psql_file

SEED_OBJECTS = [
    "ip_asset_embeddings", "idx_asset_id", "idx_owner_id", "idx_embedding_cosine", "similar_assets",
]


def quiet(url, directory=MIGRATIONS, **kwargs):
    lines = []
    migrator = Migrator(url, directory, echo=lines.append, **kwargs)
    migrator.lines = lines
    return migrator


def history_rows(url):
    with psycopg.connect(url) as conn:
        if not conn.execute("SELECT to_regclass('pgvkit.schema_migrations')").fetchone()[0]:
            return []
        return conn.execute("SELECT version, status FROM pgvkit.schema_migrations ORDER BY version").fetchall()


def events(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, event FROM pgvkit.migration_events ORDER BY id").fetchall()


def exists(url, name):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()[0]


def test_migrate_creates_every_object_of_the_seed_schema(db_url):
    migrator = quiet(db_url)
    assert migrator.status().exit_code == 1
    assert migrator.migrate() == ["001_init_vector_store", "002_search_assets", "003_search_assets_by_owner"]
    for name in SEED_OBJECTS:
        assert exists(db_url, name), name
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                            " WHERE attrelid = 'ip_asset_embeddings'::regclass AND attname = 'embedding'"
                            ).fetchone()[0] == "vector(768)"
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'update_ip_asset_embeddings_updated_at'"
                            ).fetchone()[0] == 1
    report = migrator.status()
    assert report.exit_code == 0 and report.summary == "up to date"
    assert history_rows(db_url) == [(1, "applied"), (2, "applied"), (3, "applied")]
    assert any("ivfflat index created with little data" in line for line in migrator.lines)


def test_a_second_migrate_applies_nothing(db_url):
    quiet(db_url).migrate()
    again = quiet(db_url)
    assert again.migrate() == []
    assert events(db_url) == [(1, "apply"), (2, "apply"), (3, "apply")]
    assert not [line for line in again.lines if "NOTICE" in line], again.lines  # nothing to say, nothing said


def test_the_seed_file_is_idempotent_under_psql(db_url):
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")
    assert all(exists(db_url, n) for n in SEED_OBJECTS)


def test_a_failing_transactional_migration_leaves_no_object_and_no_history_row(db_url, migrations_dir):
    d = migrations_dir({
        "001_ok.sql": "CREATE TABLE kept (id int);",
        "002_breaks.sql": "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\n\nSELECT 1 / 0;\n",
    })
    migrator = quiet(db_url, d)
    with pytest.raises(MigrationFailed) as info:
        migrator.migrate()
    assert info.value.line == 4 and "002_breaks.sql:4" in str(info.value)
    assert "division by zero" in str(info.value)
    assert exists(db_url, "kept") and not exists(db_url, "half")
    assert history_rows(db_url) == [(1, "applied")]
    assert events(db_url)[-1] == (2, "fail")


def test_the_error_line_points_inside_a_multi_line_statement(db_url, migrations_dir):
    d = migrations_dir({"001_x.sql": "SELECT 1;\nSELECT\n  1,\n  no_such_column\nFROM pg_class;\n"})
    with pytest.raises(MigrationFailed) as info:
        quiet(db_url, d).migrate()
    assert info.value.line == 4


def test_a_failing_non_transactional_migration_stays_visible_and_resumes(db_url, migrations_dir):
    d = migrations_dir({
        "001_idx.sql": "-- pgvkit:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_t ON t (x);\n",
    })
    migrator = quiet(db_url, d)
    with pytest.raises(MigrationFailed, match="recorded as failed"):
        migrator.migrate()
    assert history_rows(db_url) == [(1, "failed")]
    report = migrator.status()
    assert report.entries[0]["state"] == "failed" and "resumes" in report.entries[0]["detail"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    assert migrator.migrate() == ["001_idx"]
    assert history_rows(db_url) == [(1, "applied")] and exists(db_url, "idx_t")


def test_a_failed_concurrent_build_drops_its_invalid_index_and_a_rerun_drops_one_left_by_hand(db_url, migrations_dir):
    d = migrations_dir({
        "001_t.sql": "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (1);",
        "002_idx.sql": "-- pgvkit:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_u ON t (x);\n",
    })
    migrator = quiet(db_url, d)
    with pytest.raises(MigrationFailed, match="could not create unique index"):
        migrator.migrate()
    assert any("dropping invalid index" in line for line in migrator.lines)  # a ready one costs every write
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('idx_u')").fetchone() == (None,)
        with pytest.raises(psycopg.errors.UniqueViolation):  # the same build by hand, left INVALID
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_u ON t (x)")
        conn.execute("DELETE FROM t WHERE ctid = (SELECT max(ctid) FROM t)")
    migrator.lines.clear()
    migrator.migrate()  # IF NOT EXISTS would skip the INVALID one: it is dropped and built
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_u'::regclass").fetchone() == (True,)
    assert any("dropping invalid index" in line for line in migrator.lines)


def test_a_changed_applied_file_is_drift_and_migrate_refuses(db_url, migrations_dir):
    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);\n"})
    quiet(db_url, d).migrate()
    migrations_dir({"001_a.sql": "CREATE TABLE a (id bigint);\n", "002_b.sql": "CREATE TABLE b (id int);"})
    migrator = quiet(db_url, d)
    assert migrator.status().exit_code == 2
    assert migrator.status().entries[0]["state"] == "drifted"
    with pytest.raises(MigrationDriftError, match="pgvkit repair 001"):
        migrator.migrate()
    assert not exists(db_url, "b")


def test_a_line_ending_only_change_is_not_drift(db_url, migrations_dir):
    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);\nSELECT 1;\n"})
    quiet(db_url, d).migrate()
    (d / "001_a.sql").write_bytes(b"\xef\xbb\xbfCREATE TABLE a (id int);\r\nSELECT 1;\r\n")
    assert quiet(db_url, d).status().exit_code == 0


def test_repair_accepts_the_new_checksum_and_logs_why(db_url, migrations_dir):
    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);\n"})
    quiet(db_url, d).migrate()
    migrations_dir({"001_a.sql": "-- documented\nCREATE TABLE a (id int);\n"})
    migrator = quiet(db_url, d)
    migrator.repair("001", "added a comment")
    assert migrator.status().exit_code == 0
    with psycopg.connect(db_url) as conn:
        detail = conn.execute("SELECT detail FROM pgvkit.migration_events WHERE event = 'repair'").fetchone()[0]
    assert "added a comment" in detail


def test_the_event_log_is_append_only(db_url):
    quiet(db_url).migrate()
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM pgvkit.migration_events")


def test_a_database_made_by_the_old_docker_init_is_baselined_not_rerun(db_url):
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")  # what docker-entrypoint-initdb.d did
    migrator = quiet(db_url)
    report = migrator.status()
    assert "pgvkit baseline 001" in report.summary
    with pytest.raises(PgvkitError, match="pgvkit baseline 001"):
        migrator.migrate()
    assert migrator.baseline("001") == ["001_init_vector_store"]
    assert migrator.status().exit_code == 1  # 002 and 003 are newer than what the docker init ran
    assert migrator.migrate() == ["002_search_assets", "003_search_assets_by_owner"]
    assert history_rows(db_url) == [(1, "baselined"), (2, "applied"), (3, "applied")]
    assert events(db_url) == [(1, "baseline"), (2, "apply"), (3, "apply")]


def test_baseline_without_a_version_records_what_the_docker_init_ran_and_only_that(db_url, migrations_dir):
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")
    files = migrations_dir({"001_init_vector_store.sql": (MIGRATIONS / "001_init_vector_store.sql").read_text(),
                            "20240101120000_probe_table.sql": "CREATE TABLE probe (id int);"})
    migrator = Migrator(db_url, files, echo=lambda _: None)
    assert [m.id for m in migrator.detect_baseline()] == ["001_init_vector_store"]  # not the newer file
    assert migrator.baseline() == ["001_init_vector_store"]
    assert migrator.detect_baseline() == []  # history now exists
    with pytest.raises(ConfigError, match="history already has entries"):
        migrator.baseline()
    assert migrator.migrate() == ["20240101120000_probe_table"]
    assert history_rows(db_url) == [(1, "baselined"), (20240101120000, "applied")]


def test_baseline_without_a_version_refuses_a_database_without_the_schema(db_url):
    with pytest.raises(ConfigError, match="nothing to baseline: the first migration's objects do not all exist"):
        quiet(db_url).baseline()
    assert history_rows(db_url) == []


def test_rollback_needs_yes_then_undoes_newest_first_and_reapplies(db_url):
    migrator = quiet(db_url)
    migrator.migrate()
    with pytest.raises(ConfirmationRequired, match="--yes"):
        migrator.rollback(0)
    assert exists(db_url, "ip_asset_embeddings")
    assert migrator.rollback(0, yes=True) == ["003_search_assets_by_owner", "002_search_assets", "001_init_vector_store"]
    assert not any(exists(db_url, n) for n in SEED_OBJECTS)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 0
    assert history_rows(db_url) == []
    assert migrator.migrate() == ["001_init_vector_store", "002_search_assets", "003_search_assets_by_owner"]
    assert [e for _, e in events(db_url)] == ["apply"] * 3 + ["rollback"] * 3 + ["apply"] * 3


def test_rollback_runs_down_files_in_reverse_order(db_url, migrations_dir):
    d = migrations_dir({
        "001_a.sql": "CREATE TABLE a (id int PRIMARY KEY);",
        "001_a.down.sql": "DROP TABLE a;",
        "002_b.sql": "CREATE TABLE b (a_id int REFERENCES a);",
        "002_b.down.sql": "DROP TABLE b;",  # must run before a's, or DROP TABLE a fails
        "003_c.sql": "CREATE TABLE c (id int);",
        "003_c.down.sql": "DROP TABLE c;",
    })
    migrator = quiet(db_url, d)
    migrator.migrate()
    assert migrator.rollback(1, yes=True) == ["003_c", "002_b"]
    assert exists(db_url, "a") and not exists(db_url, "b")
    assert migrator.rollback("0", yes=True) == ["001_a"]


def test_rollback_refuses_when_a_down_file_is_missing(db_url, migrations_dir):
    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);", "001_a.down.sql": "DROP TABLE a;",
                        "002_b.sql": "CREATE TABLE b (id int);"})
    migrator = quiet(db_url, d)
    migrator.migrate()
    with pytest.raises(RollbackError, match="no down file for 002_b"):
        migrator.rollback(0, yes=True)
    assert exists(db_url, "a") and exists(db_url, "b")


def test_a_held_migration_lock_times_out_naming_the_holder(db_url):
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)
        with pytest.raises(LockTimeout) as info:
            quiet(db_url, lock_wait=0.3).migrate()
        assert info.value.pid == holder.info.backend_pid
        assert f"process {holder.info.backend_pid}" in str(info.value)
    assert history_rows(db_url) == []


def test_ddl_blocked_by_a_table_lock_gives_up_naming_the_blocker(db_url, migrations_dir):
    d = migrations_dir({"001_t.sql": "CREATE TABLE t (id int);", "002_alter.sql": "ALTER TABLE t ADD COLUMN x int;"})
    quiet(db_url, d).migrate(target=1)
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        migrator = quiet(db_url, d, lock_timeout="100ms", retry_budget=0.5)
        with pytest.raises(LockTimeout) as info:
            migrator.migrate()
        assert info.value.pid == blocker.info.backend_pid
        assert "LOCK TABLE t" in str(info.value)
    assert history_rows(db_url) == [(1, "applied")]


def test_ddl_retries_and_succeeds_once_the_table_lock_is_released(db_url, migrations_dir):
    d = migrations_dir({"001_t.sql": "CREATE TABLE t (id int);", "002_alter.sql": "ALTER TABLE t ADD COLUMN x int;"})
    quiet(db_url, d).migrate(target=1)
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    busy = threading.Event()

    def echo(line):
        if "lock busy" in line:
            busy.set()

    migrator = Migrator(db_url, d, echo=echo, lock_timeout="100ms", retry_budget=30)
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("applied", migrator.migrate()))
    worker.start()
    assert busy.wait(30), "the migration never reported the busy lock"
    blocker.commit()  # release the lock: the retry must now succeed
    blocker.close()
    worker.join(60)
    assert result["applied"] == ["002_alter"]
    assert history_rows(db_url) == [(1, "applied"), (2, "applied")]


def test_timestamp_versions_apply_and_order_numerically_among_short_ones(db_url, migrations_dir):
    directory = migrations_dir({"002_b.sql": "CREATE TABLE b (id int);",
                                "20240101120000_probe.sql": "CREATE TABLE probe (id int);",
                                "001_a.sql": "CREATE TABLE a (id int);"})
    migrator = quiet(db_url, directory)
    assert [s["version"] for s in migrator.plan().steps] == ["001", "002", "20240101120000"]
    assert migrator.migrate() == ["001_a", "002_b", "20240101120000_probe"]
    assert history_rows(db_url)[-1] == (20240101120000, "applied") and exists(db_url, "probe")
    assert migrator.status().exit_code == 0


HISTORY_0_1 = history._DDL  # what pgvkit 0.1 created: versions as integer, and no pgvkit.kit_schema


def test_a_history_made_by_an_older_release_is_upgraded_in_place(db_url, migrations_dir):
    directory = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);"})
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(HISTORY_0_1)
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
                            " 'pgvkit.schema_migrations'::regclass AND attname = 'version'").fetchone()[0] == "integer"
        conn.execute("CREATE TABLE a (id int)")  # 001 applied by pgvkit 0.1
        conn.execute("INSERT INTO pgvkit.schema_migrations (version, name, checksum, status, transactional)"
                     " VALUES (1, 'a', %s, 'applied', true)", [read_migrations(directory)[0].checksum])
        conn.execute("INSERT INTO pgvkit.migration_events (version, event) VALUES (1, 'apply')")
    (directory / "20240101120000_probe.sql").write_text("CREATE TABLE probe (id int);")
    migrator = quiet(db_url, directory)
    assert migrator.migrate() == ["20240101120000_probe"]
    assert any("Upgraded pgvkit's history: migration versions of any length" in line for line in migrator.lines)
    with psycopg.connect(db_url) as conn:
        types = conn.execute("SELECT attrelid::regclass::text, format_type(atttypid, atttypmod) FROM pg_attribute"
                             " WHERE attrelid IN ('pgvkit.schema_migrations'::regclass, 'pgvkit.migration_events'::regclass)"
                             " AND attname = 'version' ORDER BY 1").fetchall()
        assert types == [("pgvkit.migration_events", "bigint"), ("pgvkit.schema_migrations", "bigint")]
        assert history.kit_schema_version(conn) == history.KIT_SCHEMA[-1][0]
    assert history_rows(db_url) == [(1, "applied"), (20240101120000, "applied")]  # nothing lost
    assert [e for e in events(db_url) if e[1] == "apply"] == [(1, "apply"), (20240101120000, "apply")]


def test_a_version_too_large_for_the_history_is_refused_naming_the_file(db_url, migrations_dir):
    from pgvkit.errors import MigrationFileError

    directory = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);",
                                "99999999999999999999_huge.sql": "CREATE TABLE huge (id int);"})
    with pytest.raises(MigrationFileError, match=r"99999999999999999999_huge\.sql: version .* too large"):
        quiet(db_url, directory).plan()
    assert history_rows(db_url) == []


@pytest.mark.parametrize("extension, advice", [("pgcrypto", "gen_random_uuid()"), ('"uuid-ossp"', "gen_random_uuid()"),
                                               ("postgis", "install it on the server")])
def test_an_extension_the_server_lacks_is_refused_before_anything_runs(db_url, migrations_dir, extension, advice):
    from pgvkit.errors import ExtensionNotOnServer

    directory = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);",
                                "002_ext.sql": f"-- needs {extension}\nCREATE EXTENSION IF NOT EXISTS {extension};\n"})
    migrator = quiet(db_url, directory)
    for step in (migrator.plan, migrator.migrate):
        with pytest.raises(ExtensionNotOnServer) as refused:
            step()
        message = str(refused.value)
        assert "002_ext.sql:2: CREATE EXTENSION" in message and advice in message and "\n" not in message
    assert history_rows(db_url) == [] and not exists(db_url, "a")  # nothing ran, not even 001
