"""A migration that rewrites the table (CLUSTER, VACUUM FULL, ALTER COLUMN ... TYPE) holds an
ACCESS EXCLUSIVE lock while PostgreSQL rebuilds every index, the vector index too: pgvkit plan says
so before anything runs (said through the CLI for the migration pgvkit storage writes: test_storage)."""

import pytest

from pgvkit.migrator.rewrites import rewritten_tables
from pgvkit.migrator.sqlfile import parse_sql

AUTOCOMMIT = "-- pgvkit:no-transaction\n"  # VACUUM cannot run in a transaction


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
