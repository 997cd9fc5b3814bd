"""Ingest into the seed's table, 100k x 768 by default: pgvkit's loader against the per-row
binary COPY of pgvector-python's example, executemany, and the server's own COPY FROM a file
(its ingest limit). Target: pgvkit >= 1.0 x the server-side COPY rate.

    .venv/bin/python bench/ingest.py [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from _common import execute, report, seed_database, timed
from pgvkit.data.bulk import Column, copy_arrays, default_jobs, encode
from pgvkit.data.inserts import synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executemany-rows", type=int, default=10_000, help="executemany is slow: a smaller batch")
    args = parser.parse_args()

    vectors, _ = synthetic(args.rows, 768)
    n = np.arange(args.rows)
    columns = [Column("asset_id", np.char.add(b"a-", np.char.zfill(n.astype("S"), 7))),
               Column("owner_id", np.char.add(b"o-", np.char.zfill((n % 100).astype("S"), 2))),
               Column("embedding", vectors)]
    table = sql.Identifier("ip_asset_embeddings")
    with seed_database() as url:
        truncate = lambda: execute(url, "TRUNCATE ip_asset_embeddings", "CHECKPOINT")  # noqa: E731

        def per_row():  # pgvector-python's loading example
            with psycopg.connect(url) as conn:
                register_vector(conn)
                with conn.cursor().copy("COPY ip_asset_embeddings (asset_id, owner_id, embedding)"
                                        " FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "vector"])
                    for i in range(args.rows):
                        copy.write_row([columns[0].values[i].decode(), columns[1].values[i].decode(), vectors[i]])

        def executemany():
            with psycopg.connect(url) as conn:
                register_vector(conn)
                conn.cursor().executemany(
                    "INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) VALUES (%s, %s, %s)",
                    [(columns[0].values[i].decode(), columns[1].values[i].decode(), vectors[i])
                     for i in range(args.executemany_rows)])

        with tempfile.TemporaryDirectory(prefix="pgvkit-ingest-") as tmp:
            os.chmod(tmp, 0o755)
            path = os.path.join(tmp, "rows.copy")
            with open(path, "wb") as f:
                f.write(encode(columns))
            os.chmod(path, 0o644)
            server_copy = timed(lambda: execute(url, f"COPY ip_asset_embeddings (asset_id, owner_id, embedding)"
                                                     f" FROM '{path}' WITH (FORMAT BINARY)"), args.repeat, truncate)
        jobs = default_jobs(url)
        pgvkit = timed(lambda: copy_arrays(url, table, columns, jobs=jobs), args.repeat, truncate)
        row_by_row = timed(per_row, args.repeat, truncate)
        many = timed(executemany, 1, truncate)
    rate = lambda rows, seconds: round(rows / seconds)  # noqa: E731
    result = {
        "benchmark": "ingest", "rows": args.rows, "dims": 768, "table": "ip_asset_embeddings (seed schema)",
        "repeat": args.repeat, "cores": os.cpu_count(), "pgvkit_connections": jobs,
        "rows_per_s": {"pgvkit": rate(args.rows, pgvkit), "server_copy_from_file": rate(args.rows, server_copy),
                       "per_row_binary_copy": rate(args.rows, row_by_row),
                       "executemany": rate(args.executemany_rows, many)},
        "ratio_pgvkit_vs_server_copy": round(server_copy / pgvkit, 2),
        "ratio_pgvkit_vs_per_row_copy": round(row_by_row / pgvkit, 2),
        "target": "pgvkit >= 1.0 x server_copy_from_file",
    }
    result["target_met"] = result["ratio_pgvkit_vs_server_copy"] >= 1.0
    report(result)


if __name__ == "__main__":
    main()
