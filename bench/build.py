"""HNSW build on 50k x 768 by default: pgvkit's build settings (maintenance_work_mem sized so
the graph fits, parallel workers on every core) against a plain CREATE INDEX with the server's
defaults. Target: >= 3x faster.

    .venv/bin/python bench/build.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import psycopg
from psycopg import sql

from _common import execute, report, seed_database, timed
from pgvkit.data.bulk import Column, copy_arrays
from pgvkit.data.inserts import synthetic
from pgvkit.tuning import Config, build_settings

CREATE = "CREATE INDEX bench_hnsw ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    vectors, _ = synthetic(args.rows, 768)
    n = np.arange(args.rows)
    with seed_database() as url:
        copy_arrays(url, sql.Identifier("ip_asset_embeddings"), [
            Column("asset_id", np.char.add(b"a-", np.char.zfill(n.astype("S"), 7))),
            Column("owner_id", np.char.add(b"o-", np.char.zfill((n % 100).astype("S"), 2))),
            Column("embedding", vectors)])
        execute(url, "DROP INDEX idx_embedding_cosine", "VACUUM ANALYZE ip_asset_embeddings")
        settings = build_settings(url, Config("hnsw", (("m", 16), ("ef_construction", 64))), args.rows, 768)
        with psycopg.connect(url, autocommit=True) as conn:
            defaults = dict(conn.execute("SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN"
                                         " ('maintenance_work_mem', 'max_parallel_maintenance_workers')").fetchall())
        drop = lambda: execute(url, "DROP INDEX IF EXISTS bench_hnsw")  # noqa: E731
        plain = timed(lambda: execute(url, CREATE), 1, drop)
        tuned = timed(lambda: execute(url, *(f"SET {k} = '{v}'" for k, v in settings.items()), CREATE), 1, drop)
    report({
        "benchmark": "hnsw build", "rows": args.rows, "dims": 768, "index": "hnsw (m=16, ef_construction=64)",
        "cores": os.cpu_count(),
        "seconds": {"server_defaults": round(plain, 1), "pgvkit_settings": round(tuned, 1)},
        "server_defaults": defaults, "pgvkit_settings": settings,
        "ratio": round(plain / tuned, 2), "target": ">= 3x faster", "target_met": plain / tuned >= 3,
    })


if __name__ == "__main__":
    main()
