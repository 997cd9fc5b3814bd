"""search_assets for one owner (migration 003): an owner with few rows is read whole and sorted
(exact, through the owner_id index), an owner with many walks the vector index with the owner's
filter, whatever the planner would have chosen; the settings bound to the function survive the
migration and its rollback. Real embeddings, the team's owners (a few large, a long tail)."""

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from pgvkit import Migrator, search
from pgvkit.kinds import EXACT_OWNER_ROWS, KINDS, function_sql

from .conftest import MIGRATIONS, real_embeddings
from .teamdata import BIG_OWNERS, load_team_rows

ROWS = 12_000
NEW = real_embeddings()[-200:]  # never in the table


def definition(url: str) -> tuple[str, list[str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pg_get_functiondef(p.oid), p.proconfig FROM pg_proc p"
                            " WHERE p.oid = %s::regprocedure", [search.SIGNATURE]).fetchone()


@pytest.fixture
def team(db_url):
    """12,000 team rows under an HNSW index, migrated to 002, search_assets bound as a tuning
    migration leaves it; owners of more than 1,000 rows count as large here (10,000 by default:
    the boundary at the size of this table)."""
    migrator = Migrator(db_url, MIGRATIONS, echo=lambda _: None)
    migrator.migrate(target=2)
    load_team_rows(db_url, ROWS)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
        conn.execute("CREATE INDEX idx_embedding_cosine ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
        conn.execute(f"ALTER FUNCTION {search.SIGNATURE} SET hnsw.ef_search = 60")
        conn.execute(f"ALTER FUNCTION {search.SIGNATURE} SET enable_seqscan = off")
        conn.execute(f"ALTER FUNCTION {search.SIGNATURE} SET {EXACT_OWNER_ROWS} = 1000")
        conn.execute("VACUUM ANALYZE ip_asset_embeddings")
    return db_url, migrator


def owner_sizes(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT owner_id, count(*) FROM ip_asset_embeddings GROUP BY 1").fetchall())


def recall_for(url: str, owner: str, queries: np.ndarray, k: int = 10) -> tuple[float, int]:
    """Recall@k of search_assets for one owner against exact neighbours among that owner's rows
    (PostgreSQL's own sort, the index kept out); and how many searches came back short of k."""
    hits, short = [], 0
    with psycopg.connect(url) as conn:
        register_vector(conn)
        for q in queries:
            found = conn.execute("SELECT id, distance FROM search_assets(%s, %s, %s)", [q, k, owner]).fetchall()
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL enable_indexscan = off")
                conn.execute("SET LOCAL enable_bitmapscan = off")
                truth = conn.execute("SELECT id, embedding <=> %s FROM ip_asset_embeddings WHERE owner_id = %s"
                                     " ORDER BY 2 LIMIT %s", [q, owner, k]).fetchall()
            kth = truth[-1][1]
            right = {r[0] for r in truth}
            short += len(found) < min(k, len(truth))
            hits.append(sum(1 for r in found if r[0] in right or r[1] <= kth + 1e-6) / len(truth))
    return float(np.mean(hits)), short


def scans(url: str, owner: str) -> list[str]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        plan = search.nested_plan(conn, NEW[0], owner=owner)
    assert plan is not None, "auto_explain could not be loaded by the test's superuser"
    return search._index_scans(plan["Plan"])


def test_a_small_owner_is_read_whole_and_exact_and_a_large_one_walks_the_vector_index(team):
    url, migrator = team
    sizes = owner_sizes(url)
    large = BIG_OWNERS[0]  # 45 % of the rows
    small = max((o for o in sizes if o not in BIG_OWNERS and sizes[o] >= 20), key=sizes.get)
    assert sizes[large] > 5_000 and 20 <= sizes[small] < 1_000
    assert migrator.migrate() == ["003_search_assets_by_owner"]

    assert scans(url, small) == ["idx_owner_id"]
    assert recall_for(url, small, NEW[:40]) == (1.0, 0)  # every row of theirs, sorted: exact
    assert scans(url, large) == ["idx_embedding_cosine"]
    recall, short = recall_for(url, large, NEW[:40])
    assert recall >= 0.95 and short == 0, recall

    # the bound threshold moves the boundary: above it, even the small owner walks the index
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER FUNCTION {search.SIGNATURE} SET {EXACT_OWNER_ROWS} = {sizes[small] - 1}")
    assert scans(url, small) == ["idx_embedding_cosine"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER FUNCTION {search.SIGNATURE} SET {EXACT_OWNER_ROWS} = {sizes[large]}")
    assert scans(url, large) == ["idx_owner_id"]
    assert recall_for(url, large, NEW[:5]) == (1.0, 0)


def test_the_migration_and_its_rollback_keep_every_setting_bound_to_the_function(team):
    url, migrator = team
    before = definition(url)
    assert "hnsw.ef_search=60" in before[1] and "enable_seqscan=off" in before[1]
    migrator.migrate()
    after = definition(url)
    assert after[1] == before[1] and after[0] != before[0] and "owner_id || ''" in after[0]
    assert migrator.rollback(2, yes=True) == ["003_search_assets_by_owner"]
    assert definition(url) == before  # body and settings, byte for byte


def test_the_body_pgvkit_writes_for_a_vector_index_is_the_one_migration_003_installs(migrated):
    """A tuning migration that changes the index kind rewrites search_assets with kinds.function_sql;
    for a vector index that must be 003's function, route and all."""
    with psycopg.connect(migrated, autocommit=True) as conn:
        installed = definition(migrated)
        conn.execute(function_sql(conn, KINDS["vector"], 768, search.settings(conn)))
    assert definition(migrated) == installed
