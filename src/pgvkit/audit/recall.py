"""What the deployed index returns: recall@k of the live table's vector index, measured with the
settings the application's sessions get, for the two ways the store is searched.

- similar assets: an existing row's neighbours, itself excluded, as the `similar_assets` view
  asks (`--sample N` rows of the table);
- new vectors: embeddings that are not in the table (a new image), from a query file.

Exact neighbours come from the whole table streamed with binary COPY into numpy a chunk at a
time (memory bounded), never one SQL scan per query. The measurement is one READ ONLY
transaction under a statement timeout; the result is recorded in `pgvkit.recall_audits`
(when the role may write there), which `pgvkit verify` reads.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from .. import search
from ..data.bulk import read_vectors, stream_vectors
from ..display import Echo, Table, echo_to, progress_bar
from ..errors import PgvkitError
from ..indexes import plan_index, searched_index
from ..memory import rewarm
from ..schema import locate
from ..server.db import connect
from ..vectors import as_vectors
from .plots import index_method
from .truth import GroundTruth, recall_at_k

__all__ = ["ShapeResult", "Audit", "audit", "latest_audits", "worst_queries", "audit_history", "plot_recall",
           "plot_history", "short_filtered", "Shortfall", "SHAPES", "SETTINGS", "sample_size", "table_facts", "exact_truths"]

SHAPES = {"similar_assets": "similar assets (rows of the table, each left out of its own answer)",
          "new_vectors": "new vectors (not in the table)"}
SETTINGS = ("ivfflat.probes", "hnsw.ef_search", "ivfflat.iterative_scan", "hnsw.iterative_scan")


@dataclass
class ShapeResult:
    queries: int
    recall: float  # ties with the k-th true neighbour count as right (pgvkit.tuning.truth.recall_at_k)
    recall_p5: float
    p50_ms: float
    p95_ms: float
    per_query: np.ndarray = field(repr=False)  # recall of each query
    query_ids: np.ndarray | None = field(default=None, repr=False)  # similar assets: each query's row
    plan: str = ""  # what EXPLAIN shows the search scanning: the index, or a sequential scan

    def to_dict(self) -> dict:
        return {"queries": self.queries, "recall": round(self.recall, 4), "recall_p5": round(self.recall_p5, 4),
                "p50_ms": round(self.p50_ms, 3),
                "p95_ms": round(self.p95_ms, 3), "plan": self.plan}


@dataclass(repr=False)
class Audit(Table):
    """One audit: per shape, recall@k against the target; renders as a table."""

    database: str
    table: str
    rows_in_table: int
    k: int
    target: float
    index: str | None  # the live vector index's definition
    settings: dict
    shapes: dict[str, ShapeResult] = field(default_factory=dict)
    recorded: bool = False
    schema: str | None = None  # where the search_path found the table: the title names it
    columns = ("shape", "queries", "recall", "p5", "p50 ms", "p95 ms", "plan", "target", "status")
    colour_by = "status"

    @property
    def met(self) -> bool:
        return all(s.recall >= self.target for s in self.shapes.values())

    @property
    def exit_code(self) -> int:
        return 0 if self.met else 2

    @property
    def title(self) -> str:
        on = "no vector index (every search is a sequential scan)"
        method = None
        if self.index:
            name = re.search(r"INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?(\S+) ON", self.index)
            on = f"{name.group(1) if name else 'the vector index'}: {index_method(self.index)}"
            method = re.search(r"USING (\w+)", self.index)
            method = method.group(1) if method else None
        shown = ", ".join(f"{k} = {v}" for k, v in self.settings.items()  # the index's own settings only
                          if v is not None and (method is None or k.startswith(method + ".")))
        named = f"{self.schema}.{self.table}" if self.schema else self.table
        return (f"Recall@{self.k} of {named} on {self.database} ({self.rows_in_table:,} rows): "
                f"{'meets' if self.met else 'MISSES'} the target {self.target}; {on}; {shown}")

    def rows(self) -> list[dict]:
        return [{"shape": name, "queries": s.queries, "recall": round(s.recall, 3), "p5": round(s.recall_p5, 3),
                 "p50 ms": round(s.p50_ms, 2), "p95 ms": round(s.p95_ms, 2), "plan": s.plan, "target": self.target,
                 "status": "pass" if s.recall >= self.target else "fail"} for name, s in self.shapes.items()]

    def to_dict(self) -> dict:
        return {"k": self.k, "target": self.target, "met": self.met, "index": self.index, "settings": self.settings,
                "shapes": {name: s.to_dict() for name, s in self.shapes.items()}, "table": self.table,
                "rows": self.rows_in_table, "recorded": self.recorded}


SAMPLE = 1000  # rows measured as similar-assets queries, when the table has them


def sample_size(sample: int | None, rows: int, k: int, table: str) -> int:
    """The similar-assets sample: as asked, or SAMPLE (every row of a smaller table) when not;
    one message for a table too small to measure recall@k on, whatever the command."""
    if rows < 2:  # a table smaller than k is measured against all its other rows (an exact search finds them)
        raise PgvkitError(f"{table} has {rows:,} row(s) with an embedding: recall needs at least 2 (a sampled row and "
                          "a neighbour besides itself); load data first (pgvkit load --from FILE)")
    if sample is None:
        return min(SAMPLE, rows)
    if sample > rows:
        raise PgvkitError(f"--sample {sample} is larger than {table} ({rows:,} rows with an embedding); "
                          f"use --sample {rows} or fewer, or leave it out to sample min({SAMPLE}, rows)")
    return sample


def audit(url: str, *, table: str = "ip_asset_embeddings", k: int = 10, sample: int | None = None, queries=None,
          target: float = 0.95, seed: int = 0, statement_timeout: str = "30min", record: bool = True,
          progress: bool = True, echo: Echo | None = None, column: str = "embedding") -> Audit:
    """Measure the live index: the similar-assets shape on `sample` rows, the new-vector shape on
    `queries` (vectors not in the table) when given; exact truth streamed from the table.
    `column`: a second model's column during a model change (pgvkit model add): its rows that have
    an embedding, searched through search_assets by their dimension, recorded as table.column."""
    echo = echo or echo_to()
    if k < 1 or (sample is not None and sample < 2) or not 0 < target <= 1:
        raise PgvkitError("--k must be positive, --sample at least 2 and --target between 0 and 1, e.g. --k 10 "
                          "--sample 1000")
    from ..server.pooler import session_survives

    # a fresh session: the application's settings; its searches prepared unless a pooler is in the way
    with connect(url, application_name="pgvkit recall", prepared=session_survives(url)[0]) as conn:
        register_vector(conn)
        dims, rows, nonzero = table_facts(conn, table, column)
        col = sql.Identifier(column)
        sample = sample_size(sample, rows, k, table)
        new = as_vectors(queries, dims) if queries is not None else None
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(statement_timeout)))
            live = searched_index(conn, table, column=column)
            settings = search.effective_settings(conn, SETTINGS, table)
            conn.execute("SELECT setseed(%s)", [(seed % 1000) / 1000.0])
            own_ids, own = read_vectors(conn, sql.SQL(
                "SELECT id, {col}::vector FROM {} WHERE {nonzero} ORDER BY random() LIMIT {}").format(
                sql.Identifier(table), sql.Literal(sample), col=col, nonzero=nonzero), dims)
            named = table if column == "embedding" else f"{table}.{column}"
            result = Audit(conn.info.dbname, named, rows, k, target, live.definition if live else None, settings,
                           schema=locate(conn, table).schema)
            shapes = {"similar_assets": (own, own_ids)} | ({"new_vectors": (new, None)} if new is not None else {})
            found = {}
            for name, (q, exclude) in shapes.items():
                echo(f"searching {len(q):,} {SHAPES[name]} through the index ...")
                found[name] = _search(conn, table, q, exclude, k, column)
            echo(f"exact neighbours: streaming {rows:,} rows of {named} ...")
            truth = exact_truths(conn, table, dims, shapes, k, rows, progress, column=column, nonzero=nonzero)
        said = rewarm(conn, table, column)
        if said:
            echo(said)
        for name, (ids, distances, latency, plan) in found.items():
            per_query = recall_at_k(truth[name], ids, distances)
            result.shapes[name] = ShapeResult(len(per_query), float(per_query.mean()),
                                              float(np.percentile(per_query, 5)), float(np.percentile(latency, 50)),
                                              float(np.percentile(latency, 95)), per_query, shapes[name][1], plan)
    if record:
        result.recorded = _record(url, result)
    return result


def table_facts(conn, table: str, column: str = "embedding") -> tuple[int, int, sql.Composable]:
    """The column's dimension, its rows with a non-zero vector, and the condition that says so."""
    from ..data.inserts import column_dimension

    from ..schema import require_visible

    require_visible(conn, table)
    dims = column_dimension(conn, table, column)
    typed = conn.execute("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                         " AND attname = %s", [sql.Identifier(table).as_string(conn), column]).fetchone()[0]
    norm = "vector_norm" if typed == "vector" else "l2_norm"
    nonzero = sql.SQL("{}({}) > 0").format(sql.SQL(norm), sql.Identifier(column))
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table), nonzero)).fetchone()[0]
    conn.commit()
    return dims, rows, nonzero


def _search(conn, table: str, queries: np.ndarray, exclude: np.ndarray | None, k: int, column: str = "embedding"):
    """Each query as the application sends it (prepared, binary): through search_assets when the
    migrations made it (its bound settings apply; similar assets ask for k + 1 and drop the row
    itself), else as a direct ORDER BY. Returns ids, distances, latency in ms and the plan."""
    through = table == "ip_asset_embeddings" and search.exists(conn)
    if through:
        query = sql.SQL(search.call_sql(k + 1 if exclude is not None else k))
        found = search.nested_plan(conn, queries[0], k + 1 if exclude is not None else k)
        scans = search._index_scans(found["Plan"]) if found else []
        plan = (f"index {', '.join(scans)} (through {search.FUNCTION})" if scans else
                f"sequential scan (through {search.FUNCTION}): every search reads the table" if found else
                f"through {search.FUNCTION} (its plan needs auto_explain, which this role cannot load)")
    else:
        where = sql.SQL("WHERE id <> %(self)s ") if exclude is not None else sql.SQL("")
        query = sql.SQL("SELECT id, {col} <=> %(q)s FROM {} {}ORDER BY {col} <=> %(q)s LIMIT {}").format(
            sql.Identifier(table), where, sql.Literal(k), col=sql.Identifier(column))
        first = {"q": queries[0], "self": int(exclude[0])} if exclude is not None else {"q": queries[0]}
        index, _ = plan_index(conn, query, first)
        plan = f"index {index}" if index else "sequential scan: the planner uses no index, every search reads the table"
    ids, distances, latency = [], [], []
    with conn.cursor(binary=True) as cur:
        for i, q in enumerate(queries):
            params = {"q": q, "self": int(exclude[i])} if exclude is not None else {"q": q}
            start = time.perf_counter()
            rows = cur.execute(query, params, prepare=True).fetchall()
            latency.append((time.perf_counter() - start) * 1000)
            if through and exclude is not None:
                rows = [r for r in rows if r[0] != int(exclude[i])][:k]
            ids.append([r[0] for r in rows])
            distances.append([r[1] for r in rows])
    return ids, distances, np.array(latency), plan


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def exact_truths(conn, table: str, dims: int, shapes: dict, k: int, rows: int, progress: bool,
           where: sql.Composable | None = None, column: str = "embedding",
           nonzero: sql.Composable | None = None) -> dict[str, GroundTruth]:
    """The true k nearest rows of every query, over the table (the rows matching `where`)
    streamed a chunk at a time: each chunk's best candidates are merged into the running best k
    (memory ~ queries x chunk). Where fewer than k rows exist the missing places hold id -1 and
    distance inf."""
    best = {n: (np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64))
            for n, (q, _) in shapes.items()}
    units = {n: _unit(q.astype(np.float32)) for n, (q, _) in shapes.items()}
    nonzero = nonzero or sql.SQL("vector_norm({}) > 0").format(sql.Identifier(column))
    query = sql.SQL("SELECT id, {}::vector FROM {} WHERE {}{}").format(
        sql.Identifier(column), sql.Identifier(table), nonzero,
        sql.SQL(" AND ") + where if where is not None else sql.SQL(""))
    with progress_bar(total=rows, unit="rows", desc="exact neighbours", enabled=progress, leave=False) as bar:
        for ids, vectors in stream_vectors(conn, query, dims):
            base = _unit(vectors)
            for name, (_, exclude) in shapes.items():
                sims = units[name] @ base.T
                if exclude is not None:  # each similar-assets query's own row is not an answer
                    hit = exclude[:, None] == ids[None, :]
                    sims[hit] = -np.inf
                top_sims, top_ids = best[name]
                merged_sims = np.concatenate([top_sims, sims], axis=1)
                merged_ids = np.concatenate([top_ids, np.broadcast_to(ids, sims.shape)], axis=1)
                keep = np.argpartition(-merged_sims, k - 1, axis=1)[:, :k]
                best[name] = (np.take_along_axis(merged_sims, keep, 1), np.take_along_axis(merged_ids, keep, 1))
            bar.update(len(ids))
    truth = {}
    for name, (sims, ids) in best.items():
        order = np.argsort(-sims, axis=1, kind="stable")
        truth[name] = GroundTruth(np.take_along_axis(ids, order, 1),
                                  1.0 - np.take_along_axis(sims, order, 1).astype(np.float64))
    return truth


def _record(url: str, result: Audit) -> bool:
    """Append the audit to pgvkit.recall_audits; False when that table is missing or not writable."""
    try:
        with connect(url) as conn, conn.transaction():
            for name, s in result.shapes.items():
                conn.execute(
                    "INSERT INTO pgvkit.recall_audits (table_name, index_definition, settings, shape, queries, k,"
                    " recall, recall_p5, p50_ms, p95_ms, target) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [result.table, result.index, json.dumps(result.settings), name, s.queries, result.k,
                     s.recall, s.recall_p5, _finite(s.p50_ms), _finite(s.p95_ms), result.target])
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName,
            psycopg.errors.ReadOnlySqlTransaction):  # a hot standby: its searches measured, nothing stored there
        return False
    return True


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def latest_audits(conn, table: str) -> list[dict] | None:
    """The newest audit of each shape of a table (empty when there is none, or no audit table);
    None when this role may not read pgvkit's schema (an application role, usually)."""
    if conn.execute("SELECT to_regnamespace('pgvkit')").fetchone()[0] is None:
        return []
    if not conn.execute("SELECT has_schema_privilege('pgvkit', 'USAGE')").fetchone()[0]:
        return None
    if conn.execute("SELECT to_regclass('pgvkit.recall_audits')").fetchone()[0] is None:
        return []
    if not conn.execute("SELECT has_table_privilege('pgvkit.recall_audits', 'SELECT')").fetchone()[0]:
        return None
    cur = conn.execute(
        "SELECT DISTINCT ON (shape) shape, at, index_definition, settings, queries, k, recall, recall_p5, target"
        " FROM pgvkit.recall_audits WHERE table_name = %s ORDER BY shape, id DESC", [table])
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def worst_queries(url: str, result: Audit, n: int = 10):
    """The similar-assets queries with the lowest recall, with their rows (a pandas DataFrame
    indexed by the row's id)."""
    import pandas as pd

    shape = result.shapes.get("similar_assets")
    if shape is None:
        return pd.DataFrame(columns=["id", "asset_id", "owner_id", "recall"]).set_index("id")
    order = np.argsort(shape.per_query, kind="stable")[:n]
    ids = [int(i) for i in shape.query_ids[order]]
    with connect(url) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(sql.SQL("SELECT id, asset_id, owner_id FROM {} WHERE id = ANY(%s)")
                                                  .format(sql.Identifier(result.table)), [ids])}
    return pd.DataFrame([{"id": i, "asset_id": rows.get(i, (None, None))[0], "owner_id": rows.get(i, (None, None))[1],
                          "recall": float(r)} for i, r in zip(ids, shape.per_query[order])]).set_index("id")


@dataclass
class Shortfall:
    owner: str
    owned: int  # rows of that owner
    want: int  # min(k, owned)
    returned: list[int]  # rows each search returned

    @property
    def short(self) -> int:
        return sum(g < self.want for g in self.returned)

    def __str__(self) -> str:
        return (f"{self.short} of {len(self.returned)} searches filtered on owner_id = {self.owner!r} ({self.owned} "
                f"rows) returned fewer than {self.want} rows (median {int(np.median(self.returned))})")


def short_filtered(url: str, owner: str | None = None, queries=None, *, k: int = 10, sample: int = 50,
                   table: str = "ip_asset_embeddings") -> Shortfall | None:
    """Filtered searches as the application runs them (a fresh session: database and role
    defaults), `WHERE owner_id = owner ORDER BY embedding <=> q LIMIT k`: how many return fewer
    than k rows although the owner has k. An approximate index hands back its usual candidates
    and the filter drops the other owners' rows; pgvector 0.8's iterative scans keep going.
    Defaults: the most frequent owner (the one the planner sends to the vector index rather than
    the btree on owner_id), and `sample` rows of the table as queries; None on an empty table."""
    with connect(url) as conn:
        register_vector(conn)
        dims = table_facts(conn, table)[0]
        name = sql.Identifier(table)
        if owner is None:
            top = conn.execute(sql.SQL("SELECT owner_id FROM {} GROUP BY owner_id ORDER BY count(*) DESC, owner_id"
                                       " LIMIT 1").format(name)).fetchone()
            if top is None:
                return None
            owner = top[0]
        if queries is None:
            queries = read_vectors(conn, sql.SQL("SELECT id, embedding FROM {} ORDER BY id LIMIT {}").format(
                name, sql.Literal(sample)), dims)[1]
        queries = as_vectors(queries, dims, what="queries")
        owned = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE owner_id = %s").format(sql.Identifier(table)),
                             [owner]).fetchone()[0]
        want = min(k, owned)
        search = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} WHERE owner_id = %s ORDER BY embedding <=> %s"
                         " LIMIT %s) AS found").format(sql.Identifier(table))
        got = [conn.execute(search, [owner, q, k]).fetchone()[0] for q in queries]
    return Shortfall(owner, owned, want, got)


def audit_history(url: str, table: str = "ip_asset_embeddings"):
    """Every recorded audit of a table, oldest first (a pandas DataFrame; empty without any)."""
    import pandas as pd

    columns = ["at", "shape", "recall", "recall_p5", "target", "queries", "k", "index_definition"]
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass('pgvkit.recall_audits')").fetchone()[0] is None:
            return pd.DataFrame(columns=columns)
        rows = conn.execute(sql.SQL("SELECT {} FROM pgvkit.recall_audits WHERE table_name = %s ORDER BY id").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))), [table]).fetchall()
    return pd.DataFrame(rows, columns=columns)


from .plots import plot_history, plot_recall  # noqa: E402  (the figures live beside)
