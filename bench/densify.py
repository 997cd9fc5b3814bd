"""Real embeddings at a size the corpus does not have: the 230,000 real sentence embeddings of
../shared/data, and between them new rows that lie where real ones do.

Each new row is a point on the chord between a real row and one of its ten nearest real rows
(found within its k-means cell), at a uniform position along it, put back on the unit sphere:
the local shape of the corpus (its near-duplicate groups, its dense and sparse regions, its hubs)
is kept and filled in, which no Gaussian model of it does. The rows used as new-vector queries are
taken out first, so no made row sits near a query by construction.

Whether rows made this way are as hard to search as real ones is measured, not assumed:

    .venv/bin/python bench/densify.py            # ~10 min: HNSW recall on real vs densified rows, same size

builds pgvector's default HNSW on N real rows and on N rows of which three quarters are made from
the other quarter, searches both with the same held-out real queries, and prints the two recall
curves and their ratio as JSON. bench/scale.py --data densified uses the densifier for 1,000,000 rows.

Measured (200,000 rows, 500 held-out real queries, HNSW (16, 64)): new vectors find 0.791 / 0.867 /
0.927 of their neighbours at ef_search 20 / 40 / 80 among densified rows, 0.873 / 0.924 / 0.956 among
real ones: the deficit 1.6-1.7x larger, so for new images densified rows are at least as hard. But a
row of a densified table has a made row next to it (its nearest neighbour at a median cosine distance
of 0.013, against 0.28 among real rows): rows taken out of such a table as queries are near-duplicates,
found far more easily than new images (pgvkit tune says so and asks for --query-file).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import ROOT, report, seed_database

__all__ = ["real_rows", "densify"]

NEIGHBOURS = 10


def real_rows(seed: int = 0) -> np.ndarray:
    """Every distinct real embedding of ../shared/data (both files), unit length, 384-d, shuffled."""
    data = ROOT.parent / "shared" / "data"
    x = np.concatenate([np.load(data / "pypi_summaries_200k_minilm384.npy"),
                        np.load(data / "pypi_summaries_minilm384.npy")]).astype(np.float32)
    x = np.unique(x, axis=0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[np.random.default_rng(seed).permutation(len(x))]


def to_768(x: np.ndarray) -> np.ndarray:
    """The fixed orthogonal map the data's README names: every cosine distance kept."""
    q, _ = np.linalg.qr(np.random.default_rng(768).standard_normal((768, x.shape[1])))
    return (x @ q.T.astype(np.float32)).astype(np.float32)


def _cells(x: np.ndarray, cells: int, rng: np.random.Generator, rounds: int = 6) -> np.ndarray:
    """A few rounds of spherical k-means: the cell of each row."""
    centres = x[rng.choice(len(x), cells, replace=False)].copy()
    for _ in range(rounds):
        label = np.concatenate([np.argmax(x[i:i + 20_000] @ centres.T, axis=1) for i in range(0, len(x), 20_000)])
        for c in range(cells):
            members = x[label == c]
            if len(members):
                m = members.sum(axis=0)
                centres[c] = m / np.linalg.norm(m)
    return label


def densify(x: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """`x` and rows - len(x) made rows (see the module's docstring), float32, unit length."""
    extra = rows - len(x)
    if extra <= 0:
        return x[:rows]
    rng = np.random.default_rng(seed)
    label = _cells(x, max(1, len(x) // 250), rng)
    near = np.empty((len(x), NEIGHBOURS), dtype=np.int64)
    for c in np.unique(label):
        members = np.flatnonzero(label == c)
        sims = x[members] @ x[members].T
        np.fill_diagonal(sims, -np.inf)
        take = min(NEIGHBOURS, len(members) - 1)
        if take <= 0:
            near[members] = members[:, None]
            continue
        order = np.argsort(-sims, axis=1)[:, :take]
        picked = members[order]
        near[members] = picked[:, rng.integers(0, take, NEIGHBOURS)] if take < NEIGHBOURS else picked
    base = rng.integers(0, len(x), extra)
    other = near[base, rng.integers(0, NEIGHBOURS, extra)]
    t = rng.random(extra, dtype=np.float32)[:, None]
    made = t * x[base] + (1 - t) * x[other]
    made /= np.linalg.norm(made, axis=1, keepdims=True)
    out = np.concatenate([x, made])
    return out[rng.permutation(len(out))]


def _recall_curve(url: str, table: np.ndarray, queries: np.ndarray, efs: list[int], k: int = 10) -> dict:
    """pgvector HNSW (16, 64) on `table`: recall@k of `queries` at each ef_search, and the build's seconds."""
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg import sql

    from pgvkit.data.bulk import Column, copy_arrays

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS dense_check")
        conn.execute("CREATE TABLE dense_check (id bigint, embedding vector(768))")
    copy_arrays(url, sql.Identifier("dense_check"),
                [Column("id", np.arange(len(table), dtype=np.int64)), Column("embedding", table)])
    truth = np.argsort(-(queries @ table.T), axis=1)[:, :k]
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET maintenance_work_mem = '2GB'")
        t = time.perf_counter()
        conn.execute("CREATE INDEX ON dense_check USING hnsw (embedding vector_cosine_ops)")
        out["build_s"] = round(time.perf_counter() - t, 1)
        conn.execute("SET enable_seqscan = off")
        for ef in efs:
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef)))
            hits = [len(set(r[0] for r in conn.execute(
                "SELECT id FROM dense_check ORDER BY embedding <=> %s LIMIT %s", [q, k]).fetchall()) & set(t_))
                    for q, t_ in zip(queries, truth)]
            out[f"ef_search {ef}"] = round(float(np.mean(hits)) / k, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    x = to_768(real_rows())
    queries, rest = x[:args.queries], x[args.queries:]
    n = min(args.rows, len(rest))
    efs = [20, 40, 80]
    with seed_database() as url:
        real = _recall_curve(url, rest[:n], queries, efs)
        dense = _recall_curve(url, densify(rest[:n // 4], n, seed=1), queries, efs)
    deficit = {key: round((1 - dense[key]) / max(1e-9, 1 - real[key]), 2) for key in real if key.startswith("ef")}
    report({"benchmark": "densified rows as hard as real ones?", "rows": n, "queries": args.queries,
            "index": "hnsw (16, 64), cosine", "real": real, "densified from a quarter": dense,
            "deficit ratio (densified / real; >= 1: at least as hard)": deficit})


if __name__ == "__main__":
    main()
