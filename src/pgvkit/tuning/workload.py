"""Step 1 of 04_index_tuning: the workload. The live table's vectors (a sample) or synthetic ones,
copied into the scratch table pgvkit.tune_workload (never the live table), with held-out
queries and a second, fresh query set; `cleanup()` drops it, also after an interrupted run."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pgvector.psycopg import register_vector
from psycopg import sql

from ..audit.truth import GroundTruth, exact_knn
from ..data.bulk import Column, copy_arrays, read_vectors
from ..display import Echo, echo_to
from ..errors import PgvkitError
from ..server.db import connect
from ..vectors import as_vectors
from . import scratch_copy
from .lock import hold
from .scratch_copy import SCHEMA, SCRATCH, WORKLOAD

__all__ = ["SCHEMA", "WORKLOAD", "SCRATCH", "SHAPES", "Workload", "prepare", "cleanup"]


SHAPES = {"new": "new vectors (not in the index)", "similar": "similar assets (rows of the index, each left out "
                                                                 "of its own answer)"}


@dataclass
class Workload:
    """Vectors as stored in the scratch table, the queries of each shape, and what to measure.

    `queries` / `fresh_queries` are the new-vector shape: never in the index (rows removed from the
    scratch table, synthetic draws, or a query file). `similar_*` are rows of the index, each left
    out of its own answer, as the similar_assets view asks."""

    ids: np.ndarray  # (n,) int64, ascending
    vectors: np.ndarray  # (n, d) float32
    queries: np.ndarray  # (q, d)
    fresh_queries: np.ndarray  # (q2, d): a second set, never used to choose
    source: str  # "table" or "synthetic"
    k: int = 10
    query_ids: np.ndarray | None = None  # a query's own row to leave out of its answer (None: not in the index)
    fresh_query_ids: np.ndarray | None = None
    table: str = "ip_asset_embeddings"
    owners: np.ndarray | None = None  # owner_id of every row (str)
    filter_owner: str | None = None  # also measure queries WHERE owner_id = this
    similar_queries: np.ndarray | None = None
    similar_ids: np.ndarray | None = None
    similar_fresh: np.ndarray | None = None
    similar_fresh_ids: np.ndarray | None = None
    shapes: tuple[str, ...] = ("new", "similar")
    live_rows: int = 0  # rows of the live table (a sample of it when larger than rows)
    query_source: str = ""  # where the new-vector queries came from
    partitions: int = 0  # the live table's partitions (0: not partitioned); the scratch copy is one table

    def shape_sets(self, shape: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
        """(queries, their own ids, fresh queries, their own ids) of one shape."""
        if shape == "new":
            return self.queries, self.query_ids, self.fresh_queries, self.fresh_query_ids
        return self.similar_queries, self.similar_ids, self.similar_fresh, self.similar_fresh_ids

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def dims(self) -> int:
        return self.vectors.shape[1]

    def describe(self) -> str:
        what = f"a sample of {self.table}" if self.source == "table" else "synthetic topic embeddings"
        sets = "; ".join(f"{SHAPES[s].split(' (')[0]}: {len(self.shape_sets(s)[0])} queries + "
                         f"{len(self.shape_sets(s)[2])} fresh" for s in self.shapes)
        text = (f"{self.rows:,} x {self.dims} vectors ({what}), k = {self.k}, cosine distance; {sets}"
                + (f" ({self.query_source})" if self.query_source else ""))
        if self.source == "table" and self.live_rows > self.rows:
            text += (f"; a sample of {self.rows:,} of {self.live_rows:,} rows: recall at fixed settings falls as a "
                     "table grows, so the search settings are confirmed at full size after migrating (pgvkit confirm)")
        if self.partitions:
            text += (f"; measured on one unpartitioned copy, while the live table has {self.partitions} partitions, each "
                     "with its own index that every search scans and merges: latency there is higher and recall "
                     "usually higher than here; confirm both with pgvkit recall after migrating")
        if self.filter_owner is not None:
            share = float(np.mean(self.owners == self.filter_owner))
            text += f"; filtered on owner_id = {_quoted(self.filter_owner)} ({share:.1%} of rows)"
        return text

    def shrink(self, url: str, rows: int, seed: int = 0) -> Workload:
        """The workload on a nested sample of `rows` of its rows: the rest deleted from the scratch
        table, every similar-assets query row kept (so each shape asks the same questions at
        every size); new-vector queries are never in the table anyway."""
        keep = np.zeros(self.rows, dtype=bool)
        asked = [a for a in (self.similar_ids, self.similar_fresh_ids, self.query_ids, self.fresh_query_ids)
                 if a is not None]
        if asked:
            keep[np.searchsorted(self.ids, np.concatenate(asked))] = True
        others = np.flatnonzero(~keep)
        need = max(0, rows - int(keep.sum()))
        keep[np.random.default_rng(seed).choice(others, size=min(need, len(others)), replace=False)] = True
        with hold(url), connect(url, autocommit=True, long_steps=True) as conn:
            conn.execute(sql.SQL("DELETE FROM {} WHERE NOT (id = ANY(%s))").format(SCRATCH), [self.ids[keep].tolist()])
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(SCRATCH))
        return replace(self, ids=self.ids[keep], vectors=self.vectors[keep],
                       owners=self.owners[keep] if self.owners is not None else None)

    def filtered_truth(self) -> GroundTruth:
        """Exact neighbours among the rows of filter_owner only."""
        mask = self.owners == self.filter_owner
        return exact_knn(self.vectors[mask], self.queries, self.k, ids=self.ids[mask], exclude=self.query_ids)


def _quoted(owner: str) -> str:
    """An owner id on one line, however it is written: as is, or with newlines and tabs escaped
    inside quotes (a workload's text heads a migration file, where a newline would end a comment)."""
    if owner.isprintable():
        return owner
    return "'" + owner.replace("'", "''").encode("unicode_escape").decode("ascii") + "'"


MOST_FREQUENT = "auto"  # filter_owner: the workload's most frequent owner, whatever the team calls it


def cleanup(url: str) -> None:
    """Drop the scratch table and every candidate index (also what an interrupted run left); never
    another run's (TuneRunning while one holds the tune lock)."""
    with hold(url), connect(url, autocommit=True, long_steps=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(SCRATCH))


def prepare(url: str, *, source: str = "auto", rows: int | None = None, queries: int = 200, k: int = 10,
            seed: int = 0, table: str = "ip_asset_embeddings",
            filter_owner: str | None = None, shapes: tuple[str, ...] = ("new", "similar"),
            query_vectors: np.ndarray | None = None, echo: Echo | None = None,
            column: str = "embedding") -> Workload:
    """The workload in numpy and in the scratch table pgvkit.tune_workload.

    source "auto" uses the live table when it holds >= 1,000 rows, else synthetic vectors.
    filter_owner "auto" filters on the workload's most frequent owner.
    `query_vectors` (e.g. the application's logged query embeddings) are the new-vector queries,
    split into held-out and fresh halves; otherwise table rows are taken out of the scratch table
    for that shape, or synthetic ones drawn. `column`: a second model's column during a model
    change (pgvkit model add), sampled from the rows that have its embedding."""
    from ..data.inserts import column_dimension
    from ..data.synthetic import Topics

    echo = echo or echo_to()
    if source not in ("auto", "table", "synthetic"):
        raise PgvkitError(f"source must be auto, table or synthetic, not {source!r}")
    with hold(url), connect(url, autocommit=True, long_steps=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
            raise PgvkitError(f"the vector extension is not created in {conn.info.dbname}; run pgvkit migrate first "
                              "(pgvkit doctor says why if that fails)")
        register_vector(conn)
        live = conn.execute("SELECT to_regclass(%s)", [sql.Identifier(table).as_string(conn)]).fetchone()[0]
        scratch_copy.require_privileges(conn, table if live else None)
        partitions = conn.execute("SELECT count(*) FROM pg_partition_tree(%s::regclass) WHERE isleaf AND level > 0",
                                  [live]).fetchone()[0] if live else 0
        live_rows = conn.execute(sql.SQL("SELECT count({}) FROM {}").format(
            sql.Identifier(column) if column != "embedding" else sql.SQL("*"), sql.Identifier(table))).fetchone()[0] \
            if live else 0
        dims = column_dimension(conn, table, column) if live else 768
        if source == "auto":
            source = "table" if live_rows >= 1000 else "synthetic"
        if not shapes or set(shapes) - set(SHAPES):
            raise PgvkitError(f"shape must be one of {', '.join(SHAPES)} (or both), not {shapes!r}")
        if query_vectors is not None:
            query_vectors = as_vectors(query_vectors, dims, what="query vectors")
            if len(query_vectors) < 4:
                raise PgvkitError(f"the query file holds {len(query_vectors)} vectors; give at least 4 (two halves, "
                                  "held-out and fresh; a few hundred measure recall well)")
        if column != "embedding":  # a second model's index is tuned on its own vectors, never synthetic ones
            source = "table"
        if source == "table" and live_rows < 4 * queries + k + 1:
            if column != "embedding":
                raise PgvkitError(f"{live_rows:,} rows of {table} have a {column}, too few to tune on; fill it first "
                                  f"(pgvkit model backfill --from FILE), then tune")
            raise PgvkitError(f"{table} holds {live_rows} rows, too few to tune on; use --source synthetic "
                              "(or load data first)")
        # no index on owner_id: filtered queries must go through the vector index under test
        if source == "table":
            scratch_copy.create(conn, table, column)
            n = min(rows or live_rows, live_rows)
            echo(f"sampling {n:,} of {live_rows:,} rows of {table} into {SCHEMA}.{WORKLOAD} (id, owner_id, {column})")
            conn.execute(sql.SQL("SELECT setseed(%s)"), [((seed % 1000) / 1000.0)])
            conn.execute(scratch_copy.fill(conn, table, n, column))
            ids, vectors = read_vectors(conn, sql.SQL("SELECT id, embedding FROM {} ORDER BY id").format(
                SCRATCH), dims)
            rng = np.random.default_rng(seed)
            picked = rng.choice(len(ids), size=4 * queries, replace=False)
            similar_ids = ids[picked[2 * queries:]]
            if query_vectors is None:  # new vectors: rows taken out of the index they are measured on
                held = picked[: 2 * queries]
                new_queries = vectors[held]
                conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(SCRATCH), [ids[held].tolist()])
                keep = np.ones(len(ids), dtype=bool)
                keep[held] = False
                ids, vectors = ids[keep], vectors[keep]
                query_source = f"new vectors: {2 * queries} rows of {table} taken out of the workload"
            else:
                new_queries, query_source = query_vectors[rng.permutation(len(query_vectors))], "new vectors: the query file"
            similar = vectors[np.searchsorted(ids, similar_ids)]
            owners = np.array([r[0] for r in conn.execute(
                sql.SQL("SELECT owner_id FROM {} ORDER BY id").format(SCRATCH))], dtype=object)
            half = len(new_queries) // 2
            workload = Workload(ids, vectors, new_queries[:half], new_queries[half:], "table", k, table=table,
                                owners=owners, similar_queries=similar[:queries], similar_ids=similar_ids[:queries],
                                similar_fresh=similar[queries:], similar_fresh_ids=similar_ids[queries:],
                                live_rows=live_rows, query_source=query_source)
        else:
            scratch_copy.create_synthetic(conn, dims)
            n = rows or 20_000
            echo(f"generating {n:,} synthetic {dims}-d embeddings (topics) into {SCHEMA}.{WORKLOAD}")
            # many small topics of uneven size and spread: a new vector is as much harder to find
            # than a row of the index as on real embeddings (pgvkit.synthetic)
            synth = Topics(dims, rows=n, seed=seed)
            vectors = synth.draw(n)
            ids = np.arange(1, n + 1, dtype=np.int64)
            owners = np.char.add(b"owner-", np.char.zfill((ids % 20).astype("S"), 2))  # 20 owners, 5% each
            copy_arrays(url, SCRATCH, [Column("id", ids), Column("owner_id", owners), Column("embedding", vectors)])
            held, fresh = synth.draw(queries), synth.draw(queries)  # drawn, so never in the index
            query_source = ""
            if query_vectors is not None:
                shuffled = query_vectors[np.random.default_rng(seed).permutation(len(query_vectors))]
                held, fresh = shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2:]
                query_source = "new vectors: the query file"
            picked = np.random.default_rng(seed).choice(n, size=2 * queries, replace=False)
            workload = Workload(ids, vectors, held, fresh, "synthetic", k, table=table,
                                owners=owners.astype(str).astype(object), similar_queries=vectors[picked[:queries]],
                                similar_ids=ids[picked[:queries]], similar_fresh=vectors[picked[queries:]],
                                similar_fresh_ids=ids[picked[queries:]], query_source=query_source)
        conn.execute(sql.SQL("ANALYZE {}").format(SCRATCH))
    workload.shapes = tuple(shape for shape in SHAPES if shape in shapes)
    workload.partitions = partitions if workload.source == "table" else 0
    if filter_owner == MOST_FREQUENT:
        names, counts = np.unique(workload.owners.astype(str), return_counts=True)
        filter_owner = str(names[np.argmax(counts)])
    if filter_owner is not None:
        if not np.any(workload.owners == filter_owner):
            raise PgvkitError(f"no row of the workload has owner_id = {filter_owner!r}; pick an owner that exists"
                              + (" (synthetic owners are owner-00 .. owner-19)" if workload.source == "synthetic" else ""))
        workload.filter_owner = filter_owner
    return workload
