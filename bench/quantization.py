"""vector vs halfvec vs binary quantization + re-rank: what a smaller HNSW index costs in recall.

200k x 768 topic embeddings (pgvkit.synthetic.Topics: as hard for a graph as real embeddings;
`--rows` scales), the same HNSW graph parameters for each kind (m 16, ef_construction 64):

- vector:  hnsw (embedding vector_cosine_ops), ORDER BY embedding <=> q
- halfvec: hnsw ((embedding::halfvec(768)) halfvec_cosine_ops), ORDER BY embedding::halfvec(768) <=> q
- binary:  hnsw ((binary_quantize(embedding)::bit(768)) bit_hamming_ops): the nearest N by Hamming
           distance, re-ordered by exact cosine distance (pgvector's README query), N from a grid
           until both shapes meet --target

Both query shapes: new vectors (drawn after the table, never in it) and similar assets (rows of
the table, each left out of its own answer), against exact neighbours from numpy. Reports index
size, build time, p50 latency and recall@10 per kind, and the ratios to vector.
Targets: halfvec <= 0.55x the vector index at a recall loss <= 0.005; binary + re-rank <= 0.1x
the size at recall >= 0.95.

    .venv/bin/python bench/quantization.py [--rows 200000] [--queries 500] [--ef-search 40]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from _common import execute, report, seed_database
from pgvkit.bulk import Column, copy_arrays
from pgvkit.synthetic import Topics
from pgvkit.tuning import Config, build_settings, exact_knn

DIMS, K = 768, 10
KINDS = {
    "vector": ("(embedding vector_cosine_ops)", "embedding <=> %(q)s::vector"),
    "halfvec": ("((embedding::halfvec(768)) halfvec_cosine_ops)", "embedding::halfvec(768) <=> %(q)s::halfvec(768)"),
    "binary": ("((binary_quantize(embedding)::bit(768)) bit_hamming_ops)",
               "binary_quantize(embedding)::bit(768) <~> binary_quantize(%(q)s::vector)"),
}


def search_sql(kind: str, similar: bool, depth: int = 0) -> sql.Composable:
    """One search of a kind; similar assets leave their own row out."""
    own = "WHERE id <> %(self)s " if similar else ""
    if kind != "binary":
        return sql.SQL(f"SELECT id FROM ip_asset_embeddings {own}ORDER BY {KINDS[kind][1]} LIMIT {K}")
    return sql.SQL(f"SELECT id FROM (SELECT id, embedding FROM ip_asset_embeddings {own}ORDER BY {KINDS['binary'][1]}"
                   f" LIMIT {int(depth)}) AS candidates ORDER BY embedding <=> %(q)s::vector LIMIT {K}")


def measure(conn, kind: str, sets: dict, ef_search: int, depth: int = 0) -> dict:
    """recall@10 of each shape and the p50 latency (ms) over all of its searches."""
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(max(ef_search, depth))))
    out, latency = {}, []
    with conn.cursor(binary=True) as cur:
        for shape, (queries, own, truth) in sets.items():
            query = search_sql(kind, own is not None, depth)
            plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + query, params(queries, own, 0)))
            assert "Index Scan" in plan, f"{kind} {shape}: the index is not used:\n{plan}"
            hits = []
            for i in range(len(queries)):
                start = time.perf_counter()
                found = [r[0] for r in cur.execute(query, params(queries, own, i), prepare=True).fetchall()]
                latency.append((time.perf_counter() - start) * 1000)
                hits.append(len(set(found) & set(truth.ids[i].tolist())) / K)
            out[shape] = round(float(np.mean(hits)), 4)
    out["p50_ms"] = round(float(np.median(latency)), 3)
    return out


def params(queries, own, i) -> dict:
    return {"q": queries[i], "self": int(own[i])} if own is not None else {"q": queries[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500, help="per shape")
    parser.add_argument("--ef-search", type=int, default=40)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()

    topics = Topics(DIMS, rows=args.rows)
    vectors = topics.draw(args.rows)
    new = topics.draw(args.queries)  # drawn after the table: never in it
    ids = np.arange(1, args.rows + 1, dtype=np.int64)
    picked = np.random.default_rng(3).choice(args.rows, args.queries, replace=False)
    sets = {"new_vectors": (new, None, exact_knn(vectors, new, K, ids=ids)),
            "similar_assets": (vectors[picked], ids[picked],
                               exact_knn(vectors, vectors[picked], K, ids=ids, exclude=ids[picked]))}
    results = {}
    with seed_database() as url:
        execute(url, "DROP INDEX idx_embedding_cosine")
        copy_arrays(url, sql.Identifier("ip_asset_embeddings"), [
            Column("id", ids), Column("asset_id", np.char.add(b"a-", np.char.zfill(ids.astype("S"), 8))),
            Column("owner_id", np.char.add(b"o-", np.char.zfill((ids % 100).astype("S"), 2))),
            Column("embedding", vectors)])
        execute(url, "VACUUM ANALYZE ip_asset_embeddings")
        settings = build_settings(url, Config("hnsw", (("m", 16), ("ef_construction", 64))), args.rows, DIMS)
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            for kind, (expression, _) in KINDS.items():
                for name, value in settings.items():
                    conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(str(value))))
                start = time.perf_counter()
                conn.execute(f"CREATE INDEX bench_{kind} ON ip_asset_embeddings USING hnsw {expression}")
                build = time.perf_counter() - start
                conn.execute("ANALYZE ip_asset_embeddings")
                size = conn.execute(f"SELECT pg_relation_size('bench_{kind}')").fetchone()[0]
                row = {"build_s": round(build, 1), "size_mb": round(size / 2**20, 1)}
                if kind == "binary":  # the shallowest re-rank depth that meets the target for both shapes
                    for depth in (20, 40, 80, 160, 320, 640, 1000):
                        got = measure(conn, kind, sets, args.ef_search, depth)
                        if min(got["new_vectors"], got["similar_assets"]) >= args.target or depth == 1000:
                            break
                    row.update(got, rerank_depth=depth)
                else:
                    row.update(measure(conn, kind, sets, args.ef_search))
                results[kind] = row
                conn.execute(f"DROP INDEX bench_{kind}")
    vec, half, binary = results["vector"], results["halfvec"], results["binary"]
    loss = max(vec[s] - half[s] for s in ("new_vectors", "similar_assets"))
    ratios = {"halfvec_size": round(half["size_mb"] / vec["size_mb"], 3),
              "binary_size": round(binary["size_mb"] / vec["size_mb"], 3),
              "halfvec_recall_loss": round(loss, 4)}
    report({
        "benchmark": "quantization", "rows": args.rows, "dims": DIMS, "queries_per_shape": args.queries,
        "hnsw": "m=16, ef_construction=64", "hnsw.ef_search": args.ef_search, "cores": os.cpu_count(),
        "data": "pgvkit.synthetic.Topics", "results": results, "ratio": ratios,
        "targets": {"halfvec": "<= 0.55x size, recall loss <= 0.005",
                    "binary": f"<= 0.1x size, recall >= {args.target} for both shapes"},
        "target_met": {"halfvec": ratios["halfvec_size"] <= 0.55 and loss <= 0.005,
                       "binary": ratios["binary_size"] <= 0.1 and min(binary["new_vectors"],
                                                                      binary["similar_assets"]) >= args.target},
    })


if __name__ == "__main__":
    main()
