"""Step 1 of 04_index_tuning: the workload. The live table's vectors (a sample) or synthetic ones,
copied into the scratch table pgvkit.tune_workload (never the live table), with held-out
queries and a second, fresh query set; `cleanup()` drops it, also after an interrupted run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pgvector.psycopg import register_vector
from psycopg import sql

from ..bulk import Column, copy_arrays, read_vectors
from ..db import connect
from ..display import Echo, echo_to
from ..errors import PgvkitError
from .truth import GroundTruth, exact_knn

__all__ = ["SCHEMA", "WORKLOAD", "SCRATCH", "Workload", "prepare", "cleanup"]


SCHEMA = "pgvkit"
WORKLOAD = "tune_workload"


@dataclass
class Workload:
    """Vectors as stored in the scratch table, the queries, and what to measure."""

    ids: np.ndarray  # (n,) int64, ascending
    vectors: np.ndarray  # (n, d) float32
    queries: np.ndarray  # (q, d)
    fresh_queries: np.ndarray  # (q2, d): a second set, never used to choose
    source: str  # "table" or "synthetic"
    k: int = 10
    query_ids: np.ndarray | None = None  # table source: each query's own row, excluded from its results
    fresh_query_ids: np.ndarray | None = None
    table: str = "ip_asset_embeddings"
    owners: np.ndarray | None = None  # owner_id of every row (str)
    filter_owner: str | None = None  # also measure queries WHERE owner_id = this

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def dims(self) -> int:
        return self.vectors.shape[1]

    def describe(self) -> str:
        what = f"a sample of {self.table}" if self.source == "table" else "synthetic clustered embeddings"
        text = (f"{self.rows:,} x {self.dims} vectors ({what}), {len(self.queries)} queries"
                f" + {len(self.fresh_queries)} fresh ones, k = {self.k}, cosine distance")
        if self.filter_owner is not None:
            share = float(np.mean(self.owners == self.filter_owner))
            text += f"; filtered on owner_id = {self.filter_owner} ({share:.1%} of rows)"
        return text

    def filtered_truth(self) -> GroundTruth:
        """Exact neighbours among the rows of filter_owner only."""
        mask = self.owners == self.filter_owner
        return exact_knn(self.vectors[mask], self.queries, self.k, ids=self.ids[mask], exclude=self.query_ids)


SCRATCH = sql.Identifier(SCHEMA, WORKLOAD)


def cleanup(url: str) -> None:
    """Drop the scratch table and every candidate index (also what an interrupted run left)."""
    with connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(SCRATCH))


def prepare(url: str, *, source: str = "auto", rows: int | None = None, queries: int = 200, k: int = 10,
            seed: int = 0, table: str = "ip_asset_embeddings", spread: float = 0.6,
            filter_owner: str | None = None, echo: Echo | None = None) -> Workload:
    """The workload in numpy and in the scratch table pgvkit.tune_workload.

    source "auto" uses the live table when it holds >= 1,000 rows, else synthetic vectors."""
    from ..inserts import Synthetic, column_dimension

    echo = echo or echo_to()
    if source not in ("auto", "table", "synthetic"):
        raise PgvkitError(f"source must be auto, table or synthetic, not {source!r}")
    with connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            raise PgvkitError(f"the vector extension is not created in {conn.info.dbname}; run pgvkit migrate first "
                              "(pgvkit doctor says why if that fails)")
        register_vector(conn)
        live = conn.execute("SELECT to_regclass(%s)", [sql.Identifier(table).as_string(conn)]).fetchone()[0]
        live_rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0] \
            if live else 0
        dims = column_dimension(conn, table) if live else 768
        if source == "auto":
            source = "table" if live_rows >= 1000 else "synthetic"
        if source == "table" and live_rows < 2 * queries + k + 1:
            raise PgvkitError(f"{table} holds {live_rows} rows, too few to tune on; use --source synthetic "
                              "(or load data first)")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(SCRATCH))
        # no index on owner_id: filtered queries must go through the vector index under test
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, owner_id text, embedding vector({}) NOT NULL)")
                     .format(SCRATCH, sql.Literal(dims)))
        if source == "table":
            n = min(rows or live_rows, live_rows)
            echo(f"sampling {n:,} of {live_rows:,} rows of {table} into {SCHEMA}.{WORKLOAD}")
            conn.execute(sql.SQL("SELECT setseed(%s)"), [((seed % 1000) / 1000.0)])
            conn.execute(sql.SQL(
                "INSERT INTO {} SELECT id, owner_id, embedding FROM {} WHERE vector_norm(embedding) > 0"
                " ORDER BY random() LIMIT {}").format(SCRATCH, sql.Identifier(table), sql.Literal(n)))
            ids, vectors = read_vectors(conn, sql.SQL("SELECT id, embedding FROM {} ORDER BY id").format(
                SCRATCH), dims)
            rng = np.random.default_rng(seed)
            picked = rng.choice(len(ids), size=2 * queries, replace=False)
            qi, fi = picked[:queries], picked[queries:]
            owners = np.array([r[0] for r in conn.execute(
                sql.SQL("SELECT owner_id FROM {} ORDER BY id").format(SCRATCH))], dtype=object)
            workload = Workload(ids, vectors, vectors[qi], vectors[fi], "table", k, ids[qi], ids[fi], table, owners)
        else:
            n = rows or 20_000
            echo(f"generating {n:,} synthetic {dims}-d embeddings into {SCHEMA}.{WORKLOAD}")
            # many overlapping clusters: neighbours straddle IVFFlat lists as in real data
            synth = Synthetic(dims, clusters=max(20, n // 250), spread=spread, seed=seed)
            vectors = synth.draw(n)
            ids = np.arange(1, n + 1, dtype=np.int64)
            owners = np.char.add(b"owner-", np.char.zfill((ids % 20).astype("S"), 2))  # 20 owners, 5% each
            copy_arrays(url, SCRATCH, [Column("id", ids), Column("owner_id", owners), Column("embedding", vectors)])
            workload = Workload(ids, vectors, synth.draw(queries), synth.draw(queries), "synthetic", k, table=table,
                                owners=owners.astype(str).astype(object))
        conn.execute(sql.SQL("ANALYZE {}").format(SCRATCH))
    if filter_owner is not None:
        if not np.any(workload.owners == filter_owner):
            raise PgvkitError(f"no row of the workload has owner_id = {filter_owner!r}; pick an owner that exists"
                              + (" (synthetic owners are owner-00 .. owner-19)" if workload.source == "synthetic" else ""))
        workload.filter_owner = filter_owner
    return workload
