"""pgvkit recall's exact ground truth (the live table streamed by binary COPY into numpy, a chunk
at a time) against exact search in SQL (index scans off) on the same table and queries, and the
whole audit (1,000 similar-assets + 1,000 new-vector queries). 1M x 768 topic embeddings by
default. Targets: >= 20x faster with identical neighbour sets; the whole audit under 3 minutes.

The SQL side runs `--sql-queries` of the queries (one sequential scan each costs seconds at 1M
rows) and is scaled to all of them by its median per query; the JSON says so.

    .venv/bin/python bench/recall_audit.py [--rows 1000000] [--queries 1000] [--sql-queries 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psycopg
from pgvector.psycopg import register_vector

from _common import report, seed_database
from pgvkit.audit.recall import exact_truths, audit
from pgvkit.data.inserts import load
from pgvkit.data.synthetic import Topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--sql-queries", type=int, default=50)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    topics = Topics(768, rows=args.rows)
    vectors, queries = topics.draw(args.rows), topics.draw(args.queries)
    with seed_database() as url:
        load(url, vectors=vectors, progress=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE ip_asset_embeddings")
        with psycopg.connect(url) as conn:
            start = time.perf_counter()
            truth = exact_truths(conn, "ip_asset_embeddings", 768, {"new_vectors": (queries, None)}, args.k, args.rows,
                           progress=False)["new_vectors"]
            numpy_s = time.perf_counter() - start
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("SET enable_indexscan = off")
            per_query, same = [], 0
            with conn.cursor(binary=True) as cur:
                for q, true in zip(queries[: args.sql_queries], truth.ids[: args.sql_queries]):
                    start = time.perf_counter()
                    cur.execute("SELECT id FROM ip_asset_embeddings ORDER BY embedding <=> %s LIMIT %s", [q, args.k],
                                prepare=True)
                    found = {r[0] for r in cur.fetchall()}
                    per_query.append(time.perf_counter() - start)
                    same += found == set(true.tolist())
        sql_s = statistics.median(per_query) * args.queries
        start = time.perf_counter()
        audited = audit(url, k=args.k, sample=args.queries, queries=queries, record=False, progress=False,
                        echo=lambda _: None)
        audit_s = time.perf_counter() - start
    report({
        "benchmark": "recall audit ground truth", "rows": args.rows, "dims": 768, "queries": args.queries,
        "k": args.k, "cores": os.cpu_count(),
        "seconds": {"pgvkit_streamed_numpy": round(numpy_s, 2),
                    "sql_exact_scan": round(sql_s, 1),
                    "sql_exact_scan_per_query_median": round(statistics.median(per_query), 3),
                    "whole_audit_both_shapes": round(audit_s, 1)},
        "sql_queries_timed": args.sql_queries,
        "identical_neighbour_sets": f"{same}/{args.sql_queries}",
        "ratio": round(sql_s / numpy_s, 1),
        "audit_recall": {name: round(s.recall, 3) for name, s in audited.shapes.items()},
        "target": ">= 20x faster, identical neighbours; whole audit of 1,000 queries at 1M rows under 180 s",
        "target_met": sql_s / numpy_s >= 20 and same == args.sql_queries and audit_s < 180,
    })


if __name__ == "__main__":
    main()
