"""What a tuning run leaves and needs (issue 23, cases 6 and 7): a killed run's scratch copy is a
finding of doctor and verify until `pgvkit tune --cleanup` drops it; the copy holds only what the
sweep reads; a role without CREATE is told the least grant, never to take over the team's table."""

import os
import signal
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from pgvkit import tuning
from pgvkit.data.inserts import load
from pgvkit.health.doctor import doctor, explain
from pgvkit.health.verify import verify

from .conftest import MIGRATIONS, ROOT, as_role, real_embeddings, run_cli
from .test_tune_lock import scratch_indexed, wait_until


def scratch_table(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('pgvkit.tune_workload')").fetchone()[0]


@pytest.fixture
def team_table(migrated):
    load(migrated, vectors=real_embeddings()[:6000], progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:  # what a team's rows carry beside the vector
        conn.execute("UPDATE ip_asset_embeddings SET asset_id = 's3://acme-private/' || id || '.jpg',"
                     " metadata = jsonb_build_object('photographer', 'Jane Doe', 'gps', '51.5,-0.12')")
        conn.execute("VACUUM FULL ANALYZE ip_asset_embeddings")
    return migrated


def test_a_killed_tune_leaves_a_finding_with_its_size_and_the_command_that_drops_it(team_table):
    url = team_table
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "pgvkit", "tune", "--rows", "5000", "--candidates", "vector",
                             "--database-url", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=ROOT)
    try:
        wait_until(lambda: scratch_indexed(url) or proc.poll() is not None, "the run's first build")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert scratch_table(url) is not None
    with psycopg.connect(url) as conn:  # the server notices the dead client; its lock goes with the session
        wait_until(lambda: not conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                            " AND objid = 2").fetchone()[0], "the killed run's lock to go")
    left = doctor(url, migrations_dir=MIGRATIONS)["tune leftovers"]
    assert left.status == "warn" and "pgvkit.tune_workload (" in left.detail and " MB" in left.detail
    assert f"by process {proc.pid} on" in left.detail and left.fix.startswith("pgvkit tune --cleanup")
    assert verify(url, migrations_dir=MIGRATIONS)["tune leftovers"].status == "warn"

    cleaned = run_cli("tune", "--cleanup", "--database-url", url)
    assert cleaned.returncode == 0 and "dropped pgvkit.tune_workload" in cleaned.stdout, cleaned.stderr
    assert scratch_table(url) is None
    assert doctor(url, migrations_dir=MIGRATIONS)["tune leftovers"].status == "pass"


def test_the_scratch_copy_holds_the_searched_columns_and_padding_not_the_teams_other_data(team_table):
    url = team_table
    with tuning.lock(url):
        tuning.prepare(url, rows=2000, queries=20, echo=lambda _: None)
        with psycopg.connect(url) as conn:
            columns = [r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'pgvkit.tune_workload'::regclass AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum")]
            pads, live = conn.execute(
                "SELECT (SELECT avg(octet_length(pad)) FROM pgvkit.tune_workload),"
                " (SELECT avg(pg_column_size(asset_id) + pg_column_size(metadata) + pg_column_size(created_at)"
                "  + pg_column_size(updated_at)) FROM ip_asset_embeddings)").fetchone()
            copied = conn.execute("SELECT count(*) FROM pgvkit.tune_workload WHERE pad LIKE '%acme%'").fetchone()[0]
            # the planner sees rows as wide as the live table's: heap pages within 10 %
            pages = conn.execute("SELECT pg_relation_size('pgvkit.tune_workload')::float"
                                 " / pg_relation_size('ip_asset_embeddings')").fetchone()[0]
        tuning.cleanup(url)
    assert columns == ["id", "owner_id", "embedding", "pad"] and copied == 0
    assert abs(float(pads) - float(live)) < 8
    assert 2000 / 6000 * 0.9 < pages < 2000 / 6000 * 1.1


def test_a_reader_role_is_told_the_least_grant_for_tune_and_never_to_take_the_table(team_table, make_role):
    url = team_table
    reader = make_role("reader-pw")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON ip_asset_embeddings TO {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pgvkit TO {}").format(sql.Identifier(reader)))
        conn.execute(sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(conn.info.dbname)))
    as_reader = as_role(url, reader, "reader-pw")
    proc = run_cli("tune", "--rows", "2000", "--database-url", as_reader)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "may not create tables in schema pgvkit" in line and f'GRANT USAGE, CREATE ON SCHEMA pgvkit TO "{reader}"' in line
    assert scratch_table(url) is None
    privileges = [c for c in doctor(as_reader, migrations_dir=MIGRATIONS).checks if c.name == "privileges"]
    assert privileges and not any("OWNER TO" in c.fix for c in privileges)
    assert any("GRANT USAGE, CREATE ON SCHEMA pgvkit" in c.fix for c in privileges)

    with psycopg.connect(url, autocommit=True) as conn:  # the grant the message named is enough
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA pgvkit TO {}").format(sql.Identifier(reader)))
    tuned = run_cli("tune", "--rows", "2000", "--queries", "30", "--candidates", "vector", "--target-recall", "0.9",
                    "--database-url", as_reader, timeout=300)
    assert tuned.returncode == 0, tuned.stderr
    assert scratch_table(url) is None


def test_doctor_explains_permission_denied_for_database_with_the_grant():
    found = explain("permission denied for database jarvis").checks
    assert found[0].name == "privileges" and "GRANT CREATE ON DATABASE jarvis TO <role>" in found[0].fix
    owner = explain("must be owner of table ip_asset_embeddings").checks[0]
    assert "OWNER TO" not in owner.fix and "as the owner of ip_asset_embeddings" in owner.fix
