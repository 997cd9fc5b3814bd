"""A migration that rewrites the table (CLUSTER, VACUUM FULL, ALTER COLUMN ... TYPE) holds an
ACCESS EXCLUSIVE lock while PostgreSQL rebuilds every index, the vector index too: pgvkit plan says
so before anything runs. The migration docs/how-to/tune-at-scale.md gives for a small owner's
searches (vectors inline, the table clustered by owner) applies through pgvkit migrate and leaves
every vector inline."""

import json
import shutil

import psycopg
import pytest

from pgvkit.migrator.rewrites import rewritten_tables
from pgvkit.migrator.sqlfile import parse_sql

from .conftest import MIGRATIONS, run_cli
from .teamdata import load_team_rows

OUT_OF_LINE = "SELECT count(*) FILTER (WHERE pg_column_toast_chunk_id(embedding) IS NOT NULL) FROM ip_asset_embeddings"  # vectors in the TOAST table (PostgreSQL 17+)
AUTOCOMMIT = "-- pgvkit:no-transaction\n"  # VACUUM cannot run in a transaction
INLINE = """\
-- the vectors inline, each owner's rows side by side (a maintenance window: the table is locked)
ALTER TABLE ip_asset_embeddings ALTER COLUMN embedding SET STORAGE MAIN;
CLUSTER ip_asset_embeddings USING idx_owner_id;
ANALYZE ip_asset_embeddings;
"""


@pytest.mark.parametrize("text, found", [
    ("CLUSTER ip_asset_embeddings USING idx_owner_id;", [(1, "CLUSTER", (None, "ip_asset_embeddings"))]),
    ("CLUSTER public.ip_asset_embeddings;", [(1, "CLUSTER", ("public", "ip_asset_embeddings"))]),
    (f'{AUTOCOMMIT}SELECT 1;\nVACUUM (FULL) "Asset Embeddings";', [(3, "VACUUM FULL", (None, "Asset Embeddings"))]),
    (f"{AUTOCOMMIT}VACUUM FULL ANALYZE ip_asset_embeddings;", [(2, "VACUUM FULL", (None, "ip_asset_embeddings"))]),
    ("ALTER TABLE ip_asset_embeddings ALTER COLUMN asset_id TYPE text;",
     [(1, "ALTER COLUMN ... TYPE", (None, "ip_asset_embeddings"))]),
    (f"{AUTOCOMMIT}VACUUM ANALYZE ip_asset_embeddings;", []),
    ("CLUSTER;", []),  # every table clustered before: names none
    ("ALTER TABLE ip_asset_embeddings ALTER COLUMN embedding SET STORAGE MAIN;", []),  # a catalog change only
    ("ALTER TABLE ip_asset_embeddings ADD COLUMN note text;", []),
])
def test_statements_that_rewrite_a_table_are_found_by_what_they_are(text, found):
    assert rewritten_tables(parse_sql(text).statements) == found


def test_plan_warns_that_a_rewrite_locks_the_table_and_rebuilds_its_vector_index_and_migrate_applies_it(migrated, tmp_path):
    load_team_rows(migrated, 2_000)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
        conn.execute("CREATE INDEX idx_embedding_cosine ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
        out_before = conn.execute(OUT_OF_LINE).fetchone()[0]
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "004_inline_vectors.sql").write_text(INLINE)
    (migrations / "004_inline_vectors.down.sql").write_text(
        "ALTER TABLE ip_asset_embeddings ALTER COLUMN embedding SET STORAGE EXTERNAL;\n")
    (migrations / "005_note.sql").write_text("COMMENT ON TABLE ip_asset_embeddings IS 'image embeddings';\n")
    common = ("--database-url", migrated, "--migrations", str(migrations))

    planned = run_cli("plan", "--json", *common)
    assert planned.returncode == 0, planned.stderr
    warnings = [w for w in json.loads(planned.stdout)["warnings"] if "rewrites" in w]
    assert len(warnings) == 1, warnings  # the CLUSTER of 004; nothing for 005's comment
    assert warnings[0].startswith("004_inline_vectors:3: CLUSTER rewrites ip_asset_embeddings (")
    assert "2,000 rows" in warnings[0] and "ACCESS EXCLUSIVE" in warnings[0]
    assert "idx_embedding_cosine (hnsw" in warnings[0] and "maintenance window" in warnings[0]
    shown = run_cli("plan", *common)
    assert "warning: 004_inline_vectors:3: CLUSTER rewrites" in shown.stdout

    applied = run_cli("migrate", *common)
    assert applied.returncode == 0, applied.stderr
    with psycopg.connect(migrated) as conn:
        out_after = conn.execute(OUT_OF_LINE).fetchone()[0]
        storage = conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'ip_asset_embeddings'::regclass"
                               " AND attname = 'embedding'").fetchone()[0]
        valid = conn.execute("SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'ip_asset_embeddings'::regclass"
                             ).fetchone()[0]
    assert out_before == 2_000 and out_after == 0 and storage == "m" and valid  # every vector inline, indexes rebuilt
    back = run_cli("rollback", "--to", "3", *common)  # without --yes: the plan of the rollback, no rewrite in it
    assert "rewrites" not in back.stdout
