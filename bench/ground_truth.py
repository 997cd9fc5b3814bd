"""Exact k-NN for 1,000 queries over 100k x 768 by default: pgvkit's numpy ground truth against
exact search in SQL (index scans off, the server's sequential scan). Target: >= 20x faster, with
identical neighbours.

    .venv/bin/python bench/ground_truth.py [--rows 100000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from _common import report, seed_database
from pgvkit.data.bulk import Column, copy_arrays
from pgvkit.data.inserts import Synthetic
from pgvkit.tuning import exact_knn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    source = Synthetic(768, clusters=max(20, args.rows // 250), spread=0.6)
    vectors, queries = source.draw(args.rows), source.draw(args.queries)
    ids = np.arange(1, args.rows + 1, dtype=np.int64)
    with seed_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_items (id bigint PRIMARY KEY, embedding vector(768))")
        copy_arrays(url, sql.Identifier("bench_items"), [Column("id", ids), Column("embedding", vectors)])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE bench_items")
        start = time.perf_counter()
        truth = exact_knn(vectors, queries, args.k, ids=ids)
        numpy_s = time.perf_counter() - start
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            conn.execute("SET enable_indexscan = off")
            found = []
            start = time.perf_counter()
            with conn.cursor(binary=True) as cur:
                for q in queries:
                    cur.execute("SELECT id FROM bench_items ORDER BY embedding <=> %s LIMIT %s", [q, args.k],
                                prepare=True)
                    found.append([r[0] for r in cur.fetchall()])
            sql_s = time.perf_counter() - start
    same = sum(set(f) == set(t) for f, t in zip(found, truth.ids.tolist()))
    report({
        "benchmark": "exact ground truth", "rows": args.rows, "dims": 768, "queries": args.queries, "k": args.k,
        "cores": os.cpu_count(),
        "seconds": {"pgvkit_numpy": round(numpy_s, 2), "sql_exact_scan": round(sql_s, 1)},
        "identical_neighbour_sets": f"{same}/{args.queries}",
        "ratio": round(sql_s / numpy_s, 1), "target": ">= 20x faster, identical neighbours",
        "target_met": sql_s / numpy_s >= 20 and same == args.queries,
    })


if __name__ == "__main__":
    main()
