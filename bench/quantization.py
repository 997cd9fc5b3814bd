"""vector vs halfvec vs binary quantization + re-rank: what a smaller HNSW index costs in recall.

200k x 768 topic embeddings (pgvkit.data.synthetic.Topics: as hard for a graph as real embeddings;
`--rows` scales), the same HNSW graph parameters for each kind (m 16, ef_construction 64), each
searched with the query pgvkit's search_assets runs for it (pgvkit.kinds.nearest):

- vector:  hnsw (embedding vector_cosine_ops), ORDER BY embedding <=> q
- halfvec: hnsw ((embedding::halfvec(768)) halfvec_cosine_ops), ORDER BY embedding::halfvec(768) <=> q
- binary:  hnsw ((binary_quantize(embedding)::bit(768)) bit_hamming_ops): the nearest N by Hamming
           distance, re-ordered by exact cosine distance (pgvector's README query)

vector and halfvec are swept over hnsw.ef_search (40 to 640), binary over the re-rank depth N
(40 to 2,000, ef_search = N), each until both shapes meet --target: the figures compare each
kind at the cheapest setting that meets it, and halfvec's recall loss is taken at the ef_search
vector needed.

Both query shapes: new vectors (drawn after the table, never in it) and similar assets (rows of
the table, each left out of its own answer), against exact neighbours from numpy. Reports index
size, build time, p50 latency and recall@10 per kind, and the ratios to vector.
Targets: halfvec <= 0.55x the vector index at a recall loss <= 0.005; binary + re-rank <= 0.1x
the size at recall >= 0.95.

    .venv/bin/python bench/quantization.py [--rows 200000] [--queries 500] [--target 0.95]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from _common import execute, report, seed_database
from pgvkit import kinds
from pgvkit.data.bulk import Column, copy_arrays
from pgvkit.data.synthetic import Topics
from pgvkit.tuning import Config, build_settings, exact_knn, recall_at_k

DIMS, K = 768, 10
KINDS = kinds.KINDS
TABLE = sql.Identifier("ip_asset_embeddings")
EF_SEARCH = (40, 80, 160, 320, 640)  # vector and halfvec: swept until both shapes meet the target
DEPTHS = (40, 80, 160, 320, 640, 1000, 2000)  # binary: the re-rank depth, hnsw.ef_search = the depth


def search_sql(kind: str, similar: bool, depth: int = 0) -> sql.Composable:
    """The query search_assets runs for a kind (pgvkit.kinds.nearest); similar assets ask for
    k + 1 and leave their own row out."""
    return kinds.nearest(KINDS[kind], DIMS, TABLE, sql.SQL("%(q)s::vector"), sql.Literal(K + 1 if similar else K),
                         depth=sql.Literal(depth) if depth else None)


def measure(conn, kind: str, sets: dict, ef_search: int, depth: int = 0) -> dict:
    """recall@10 of each shape and the p50 latency (ms) over all of its searches."""
    # ef_search tops out at 1,000: a deeper re-rank keeps the graph search going (iterative scan),
    # as search_assets does
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(min(max(ef_search, depth), 1000))))
    conn.execute(sql.SQL("SET hnsw.iterative_scan = {}").format(sql.Literal("relaxed_order" if depth > 1000 else "off")))
    out, latency = {}, []
    with conn.cursor(binary=True) as cur:
        for shape, (queries, own, truth) in sets.items():
            query = search_sql(kind, own is not None, depth)
            plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + query, {"q": queries[0]}))
            if "Index Scan" not in plan:  # PostgreSQL's costs favour a parallel seq scan at some settings
                conn.execute("SET enable_seqscan = off")
                out.setdefault("seq_scan_preferred_by_planner", []).append(shape)
                plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + query, {"q": queries[0]}))
            assert "Index Scan" in plan, f"{kind} {shape}: the index is not used:\n{plan}"
            found_ids, found_d = [], []
            for i in range(len(queries)):
                start = time.perf_counter()
                rows = cur.execute(query, {"q": queries[i]}, prepare=True).fetchall()
                latency.append((time.perf_counter() - start) * 1000)
                if own is not None:
                    rows = [r for r in rows if r[0] != own[i]][:K]
                found_ids.append([r[0] for r in rows])
                found_d.append([r[1] for r in rows])
            out[shape] = round(float(recall_at_k(truth, found_ids, found_d).mean()), 4)
    conn.execute("RESET enable_seqscan")
    out["p50_ms"] = round(float(np.median(latency)), 3)
    return out


def sweep(conn, kind: str, sets: dict, target: float) -> dict:
    """Every setting of the kind's grid, and the shallowest one that meets the target for both
    shapes (else the deepest)."""
    grid = DEPTHS if kind == "binary" else EF_SEARCH
    points = []
    for value in grid:
        got = measure(conn, kind, sets, value, value if kind == "binary" else 0)
        points.append({("rerank_depth" if kind == "binary" else "ef_search"): value, **got})
        print(kind, points[-1], file=sys.stderr, flush=True)  # a long run shows where it is
        if min(got["new_vectors"], got["similar_assets"]) >= target:
            break
    return {"sweep": points, "chosen": points[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=500, help="per shape")
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
            for kind in KINDS:
                for name, value in settings.items():
                    conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(str(value))))
                start = time.perf_counter()
                conn.execute(sql.SQL("CREATE INDEX {} ON ip_asset_embeddings USING hnsw ({})").format(
                    sql.Identifier(f"bench_{kind}"), KINDS[kind].index_key(DIMS)))
                build = time.perf_counter() - start
                conn.execute("ANALYZE ip_asset_embeddings")
                size = conn.execute(f"SELECT pg_relation_size('bench_{kind}')").fetchone()[0]
                row = {"build_s": round(build, 1), "size_mb": round(size / 2**20, 1), **sweep(conn, kind, sets,
                                                                                                args.target)}
                if kind == "halfvec":  # the loss: halfvec at the ef_search vector needed
                    row["at_vector_ef_search"] = measure(conn, kind, sets, results["vector"]["chosen"]["ef_search"])
                results[kind] = row
                conn.execute(f"DROP INDEX bench_{kind}")
    vec, half, binary = results["vector"]["chosen"], results["halfvec"]["at_vector_ef_search"], results["binary"]["chosen"]
    loss = max(vec[s] - half[s] for s in ("new_vectors", "similar_assets"))
    size = {kind: results[kind]["size_mb"] for kind in KINDS}
    ratios = {"halfvec_size": round(size["halfvec"] / size["vector"], 3),
              "binary_size": round(size["binary"] / size["vector"], 3),
              "halfvec_recall_loss": round(loss, 4),
              "binary_p50_vs_vector": round(binary["p50_ms"] / vec["p50_ms"], 2)}
    report({
        "benchmark": "quantization", "rows": args.rows, "dims": DIMS, "queries_per_shape": args.queries,
        "hnsw": "m=16, ef_construction=64", "cores": os.cpu_count(),
        "data": "pgvkit.data.synthetic.Topics", "results": results, "ratio": ratios,
        "targets": {"halfvec": "<= 0.55x size, recall loss <= 0.005",
                    "binary": f"<= 0.1x size, recall >= {args.target} for both shapes"},
        "target_met": {"halfvec": ratios["halfvec_size"] <= 0.55 and loss <= 0.005,
                       "binary": ratios["binary_size"] <= 0.1 and min(binary["new_vectors"],
                                                                      binary["similar_assets"]) >= args.target},
    })


if __name__ == "__main__":
    main()
