"""A small owner read whole: vectors stored out of line (pgvector's default, TOAST) against inline
(`ALTER COLUMN embedding SET STORAGE MAIN` and the table rewritten), through search_assets on the
seed's table, on the embedded server as pgvkit starts it.

    .venv/bin/python bench/owner_storage.py                  # 1,000,000 x 768, an owner of 1 %
    .venv/bin/python bench/owner_storage.py --rows 200000

search_assets reads an owner of up to pgvkit.exact_owner_rows rows whole (003_search_assets_by_owner):
each of its rows is fetched from the heap and, out of line, its vector from the TOAST table (an index
lookup and two chunks per row). Both sides run in one run on the same rows and queries: loaded with
the default storage, measured; rewritten inline (VACUUM FULL: what a maintenance window does), measured
again; then clustered by owner (CLUSTER ... USING idx_owner_id: each owner's rows side by side, until
new rows arrive), measured a third time. Prints JSON with the ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from _common import report, seed_database
from scale import ONE_PERCENT, load, owners
from pgvkit.data.synthetic import Topics


def read_whole(url: str, queries: np.ndarray, k: int = 10) -> dict:
    """p50/p95 of search_assets for the 1 % owner (after one untimed pass: its pages cached)."""
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        rows = conn.execute("SELECT count(*) FROM ip_asset_embeddings WHERE owner_id = %s", [ONE_PERCENT]).fetchone()[0]
        few = conn.execute("SELECT coalesce(nullif(current_setting('pgvkit.exact_owner_rows', true), ''), '10000')"
                           ).fetchone()[0]
        statement = "SELECT id FROM search_assets(%s, %s, %s)"
        for q in queries:  # warm: the owner's heap (and TOAST) pages in shared_buffers
            conn.execute(statement, [q, k, ONE_PERCENT], prepare=True).fetchall()
        latency = []
        for q in queries:
            start = time.perf_counter()
            found = conn.execute(statement, [q, k, ONE_PERCENT], prepare=True).fetchall()
            latency.append((time.perf_counter() - start) * 1000)
            assert len(found) == k
        sizes = conn.execute(
            "SELECT pg_relation_size(c.oid), coalesce(pg_relation_size(c.reltoastrelid), 0) FROM pg_class c"
            " WHERE c.oid = 'ip_asset_embeddings'::regclass").fetchone()
    return {"owner_rows": rows, "read_whole_up_to": int(few), "heap_mb": sizes[0] >> 20, "toast_mb": sizes[1] >> 20,
            "p50_ms": round(float(np.percentile(latency, 50)), 2), "p95_ms": round(float(np.percentile(latency, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    topics = Topics(768, rows=args.rows, per_topic=200, seed=0)
    data, queries = topics.draw(args.rows), topics.draw(args.queries)
    owned = owners(args.rows, rng)
    with seed_database() as url:
        load(url, data, owned)
        out_of_line = read_whole(url, queries)
        start = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE ip_asset_embeddings ALTER COLUMN embedding SET STORAGE MAIN")
            conn.execute("VACUUM (FULL, ANALYZE) ip_asset_embeddings")
        rewrite = time.perf_counter() - start
        inline = read_whole(url, queries)
        start = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:  # and each owner's rows side by side
            conn.execute("CLUSTER ip_asset_embeddings USING idx_owner_id")
            conn.execute("ANALYZE ip_asset_embeddings")
        cluster = time.perf_counter() - start
        clustered = read_whole(url, queries)
    report({"bench": "owner_storage", "rows": args.rows, "queries": args.queries, "data": "topics",
            "out_of_line": out_of_line, "inline": inline, "inline_clustered_by_owner": clustered,
            "rewrite_s": round(rewrite, 1), "cluster_s": round(cluster, 1),
            "p95_ratio_out_of_line_over_inline": round(out_of_line["p95_ms"] / inline["p95_ms"], 2),
            "p95_ratio_out_of_line_over_clustered": round(out_of_line["p95_ms"] / clustered["p95_ms"], 2),
            "inline_p95_within_20ms": inline["p95_ms"] <= 20, "clustered_p95_within_20ms": clustered["p95_ms"] <= 20},
           name=f"owner_storage-{args.rows}")


if __name__ == "__main__":
    main()
