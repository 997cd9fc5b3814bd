"""A partitioned ip_asset_embeddings (issue 23, case 1), as teams reshape the table when it grows:
hash-partitioned by owner_id, primary key (id, owner_id), the HNSW index created on the parent.
Tune writes a migration PostgreSQL can run on it (each partition's index built concurrently and
attached), the readers keep searching, verify reads the plan across partitions, memory counts
the partitions, and a file PostgreSQL cannot run there is refused before anything runs."""

import json
import shutil
import time

import numpy as np
import psycopg
import pytest

from pgvkit import Migrator
from pgvkit.health.verify import verify
from pgvkit.memory import budget, memory, size_text

from .conftest import MIGRATIONS, Searchers, real_embeddings, run_cli
from .teamdata import partitioned_database

ROWS = 12_000  # 4 partitions of ~3,000: the Done-when at a size CI affords
NEW = slice(29_000, 30_000)  # never in the table


@pytest.fixture
def make_partitioned(make_database, tmp_path):
    """Real embeddings in 4 hash partitions, baselined and migrated to 003."""

    def make(rows: int):
        url = partitioned_database(make_database(), rows)
        migrations = tmp_path / "migrations"
        shutil.copytree(MIGRATIONS, migrations)
        where = ["--database-url", url, "--migrations", str(migrations)]
        assert run_cli("baseline", *where).returncode == 0
        assert run_cli("migrate", *where).returncode == 0
        return url, migrations, where

    return make


@pytest.fixture
def partitioned(make_partitioned):
    return make_partitioned(4_000)


def index_state(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT pg_get_indexdef('idx_embedding_cosine'::regclass), (SELECT count(*) FROM pg_inherits"
            " WHERE inhparent = 'idx_embedding_cosine'::regclass),"
            " (SELECT proconfig FROM pg_proc WHERE proname = 'search_assets')").fetchone()


@pytest.mark.slow
def test_tune_migrate_recall_verify_rollback_on_four_partitions_with_readers_searching_throughout(make_partitioned,
                                                                                                   tmp_path):
    url, migrations, where = make_partitioned(ROWS)
    before = index_state(url)
    tuned = run_cli("tune", "--rows", "5000", "--queries", "100", "--candidates", "vector", "--write-migration", *where,
                    timeout=600)
    assert tuned.returncode == 0, tuned.stderr
    assert "measured on one unpartitioned copy, while the live table has 4 partitions" in tuned.stdout
    print(next(line for line in tuned.stdout.splitlines() if line.startswith("recommended")))
    up = next(p for p in migrations.glob("004_*.sql") if not p.name.endswith(".down.sql")).read_text()
    assert "ON ONLY public.ip_asset_embeddings" in up and up.count("ATTACH PARTITION") == 4
    assert run_cli("plan", *where).returncode == 0

    with Searchers(url, real_embeddings()[NEW][:50], readers=3) as readers:
        started = time.perf_counter()
        migrated = run_cli("migrate", *where, timeout=600)
        took = time.perf_counter() - started
    assert migrated.returncode == 0, migrated.stderr
    print(f"searches during the partitioned swap ({took:.1f} s): {readers.searches}, failed {len(readers.failures)}")
    assert readers.searches > 50 and readers.failures == []
    after = index_state(url)
    assert after[1] == 4 and "m = " in after[0].replace("m='", "m = ") and after != before

    np.save(tmp_path / "new.npy", real_embeddings()[NEW][:300])  # fresh vectors, never in the table
    # partitions of ~3,000 rows: the planner would read them whole, but the tuning migration bound
    # enable_seqscan = off to search_assets with its setting (issue 27), so searches take the index
    assert "enable_seqscan=off" in after[2]
    audited = run_cli("recall", "--query-file", str(tmp_path / "new.npy"), "--sample", "300", "--json",
                      "--database-url", url, timeout=600)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    shapes = json.loads(audited.stdout)["shapes"]
    print({name: (s["recall"], s["plan"]) for name, s in shapes.items()})
    for shape in shapes.values():
        assert shape["recall"] >= 0.95 and shape["plan"].startswith("index ip_asset_embeddings_p0_idx_embedding_cosine")
    report = verify(url, migrations_dir=migrations)
    assert report.exit_code == 0, [(c.name, c.detail) for c in report.checks if c.status == "fail"]
    assert report["query plan"].status in ("pass", "warn") and "idx_embedding_cosine" in report["query plan"].detail
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    back = run_cli("rollback", "--to", "3", "--yes", "--confirm-database", name, *where, timeout=600)
    assert back.returncode == 0, back.stderr
    assert index_state(url) == before


def test_verify_reads_the_plan_across_partitions_and_memory_counts_every_partition(partitioned):
    url, migrations, _ = partitioned
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER DATABASE " + conn.info.dbname + " SET enable_seqscan = off")  # as at a size the index wins
    check = verify(url, migrations_dir=migrations)["query plan"]
    assert check.status == "pass" and "uses idx_embedding_cosine" in check.detail, check.detail
    with psycopg.connect(url) as conn:
        leaves = conn.execute("SELECT sum(pg_table_size(relid)), (SELECT sum(pg_relation_size(relid)) FROM"
                              " pg_partition_tree('idx_embedding_cosine')), sum(pg_relation_size(relid))"
                              " FROM pg_partition_tree('ip_asset_embeddings')").fetchone()
    seen = memory(url)
    assert seen.table_bytes == leaves[0] > 4_000 * 1000 and seen.index_bytes == leaves[1] > 0
    # what searches read besides the index: every partition's rows, without their vectors (in TOAST)
    assert f"the rows without their vectors {size_text(leaves[2])}" in budget(url).how


def test_a_concurrent_index_on_the_partitioned_table_is_refused_before_anything_runs(partitioned):
    url, migrations, where = partitioned
    (migrations / "004_hnsw_by_hand.sql").write_text(
        "-- pgvkit:no-transaction\n"
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET hnsw.ef_search = 100', current_database()); END $$;\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_hnsw ON ip_asset_embeddings\n"
        "    USING hnsw (embedding vector_cosine_ops);\n")
    for command in ("plan", "migrate"):
        refused = run_cli(command, *where)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert "004_hnsw_by_hand.sql:3: CREATE INDEX CONCURRENTLY on ip_asset_embeddings, a partitioned table" in line
        assert "ON ONLY" in line and "ATTACH PARTITION" in line
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT max(version) FROM pgvkit.schema_migrations").fetchone()[0] == 3
        assert conn.execute("SELECT current_setting('hnsw.ef_search', true)").fetchone()[0] in (None, "40")


def test_a_rollback_whose_down_file_cannot_run_on_partitions_is_refused_before_it_starts(partitioned):
    url, migrations, where = partitioned
    (migrations / "004_comment.sql").write_text("COMMENT ON TABLE ip_asset_embeddings IS 'images';\n")
    (migrations / "004_comment.down.sql").write_text(
        "-- pgvkit:no-transaction\nCOMMENT ON TABLE ip_asset_embeddings IS NULL;\n"
        "DROP INDEX CONCURRENTLY IF EXISTS idx_embedding_cosine;\n")
    assert run_cli("migrate", *where).returncode == 0
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    refused = run_cli("rollback", "--to", "3", "--yes", "--confirm-database", name, *where)
    assert refused.returncode == 2 and "004_comment.down.sql:3: DROP INDEX CONCURRENTLY idx_embedding_cosine" in \
        refused.stderr and "without CONCURRENTLY" in refused.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT obj_description('ip_asset_embeddings'::regclass)").fetchone()[0] == "images"


def test_a_no_transaction_file_that_failed_part_way_can_be_fixed_or_forgotten(migrated, migrations_dir):
    """Whatever stopped it, a failed no-transaction file leaves a way out: edit it (even into a
    transactional file) and migrate, or remove it and forget the attempt with repair."""
    broken = ("-- pgvkit:no-transaction\nCREATE TABLE IF NOT EXISTS marker (id int);\n"
              "CREATE INDEX CONCURRENTLY IF NOT EXISTS marker_idx ON missing_table (id);\n")
    directory = migrations_dir({p.name: p.read_text() for p in MIGRATIONS.iterdir()} | {"004_marker.sql": broken})
    where = ["--database-url", migrated, "--migrations", str(directory)]
    assert run_cli("migrate", *where).returncode == 2
    (directory / "004_marker.sql").write_text("CREATE TABLE IF NOT EXISTS marker (id int);\n"
                                              "CREATE INDEX IF NOT EXISTS marker_idx ON marker (id);\n")
    fixed = run_cli("migrate", *where)
    assert fixed.returncode == 0, fixed.stderr
    assert Migrator(migrated, directory, echo=lambda _: None).status().exit_code == 0  # applied, no duplicate row

    (directory / "005_again.sql").write_text(broken.replace("marker", "marker2"))
    assert run_cli("migrate", *where).returncode == 2
    (directory / "005_again.sql").unlink()
    stuck = run_cli("migrate", *where)
    assert stuck.returncode == 2 and "stopped part-way" in stuck.stderr and "pgvkit repair 005" in stuck.stderr
    forgot = run_cli("repair", "005", "--reason", "abandoned: wrong table", *where)
    assert forgot.returncode == 0, forgot.stderr
    assert run_cli("migrate", *where).returncode == 0
    with psycopg.connect(migrated) as conn:
        events = conn.execute("SELECT event, detail FROM pgvkit.migration_events WHERE version = 5 ORDER BY id").fetchall()
    assert events[-1][0] == "repair" and "abandoned: wrong table" in events[-1][1]
