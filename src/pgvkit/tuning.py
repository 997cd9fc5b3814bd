"""Index tuning that proves its answer.

1. `prepare()` makes the workload: the live table's vectors (a sample of `rows`) or synthetic
   ones, copied into a scratch table `pgvkit.tune_workload`, plus held-out queries and a second,
   fresh query set.
2. `exact_knn()` computes the true neighbours in numpy (BLAS matrix products, chunked).
3. `sweep()` builds each candidate index on the scratch table (never on the live one), with
   `maintenance_work_mem` sized so the build fits and parallel workers on, and measures every
   query-time setting: recall@k against the truth (only once EXPLAIN shows the index in use),
   latency percentiles with a prepared statement and binary parameters, build time and size.
4. `recommend()` picks the cheapest configuration meeting the recall target;
   `write_migration()` turns it into a numbered migration (and its down file).
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from .bulk import Column, copy_arrays, read_vectors
from .db import connect, is_local
from .display import Echo, Table, echo_to
from .doctor import hnsw_build_bytes, ivfflat_build_bytes
from .errors import PgvkitError
from .migrator import LOCK_KEY

__all__ = [
    "Workload",
    "GroundTruth",
    "Config",
    "Point",
    "SweepResult",
    "Recommendation",
    "IndexNotUsed",
    "prepare",
    "exact_knn",
    "recall_at_k",
    "sweep",
    "recommend",
    "write_migration",
    "cleanup",
    "tune",
    "plot_tradeoff",
    "plot_builds",
]

SCHEMA = "pgvkit"
WORKLOAD = "tune_workload"
TUNE_LOCK = (LOCK_KEY[0], 2)  # one tuning run per database at a time
SEARCH_PARAM = {"ivfflat": "ivfflat.probes", "hnsw": "hnsw.ef_search"}
# A recommendation must clear the target by this many standard errors of its mean recall: queries
# near the same cluster succeed or fail together, so a few hundred of them are a smaller sample
# than they look (with 1.96 a 20k-row sweep picked ef_search = 10 at 0.977 that scored 0.947 on
# fresh queries).
MARGIN_SE = 3.0


class IndexNotUsed(PgvkitError):
    """The query shape cannot use (or the planner will not choose) the index under test."""


# -- workload -------------------------------------------------------------------------------

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
    from .inserts import Synthetic, column_dimension

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


# -- ground truth -----------------------------------------------------------------------------

@dataclass
class GroundTruth:
    ids: np.ndarray  # (q, k)
    distances: np.ndarray  # (q, k), cosine distance, ascending


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int, *, ids: np.ndarray | None = None,
              exclude: np.ndarray | None = None, chunk: int = 256) -> GroundTruth:
    """The exact k nearest neighbours by cosine distance: chunked matrix products (BLAS), each
    query's own id (`exclude`) left out of its results."""
    ids = np.arange(len(vectors)) if ids is None else np.asarray(ids)
    base = _normalise(vectors)
    q = _normalise(queries)
    if exclude is not None:
        order = np.argsort(ids)
        slots = np.clip(np.searchsorted(ids, exclude, sorter=order), 0, len(ids) - 1)
        positions = order[slots]
        present = ids[positions] == exclude  # a query's own row may be outside a filtered base
    out_ids = np.empty((len(q), k), dtype=ids.dtype)
    out_d = np.empty((len(q), k), dtype=np.float64)
    for lo in range(0, len(q), chunk):
        sims = q[lo:lo + chunk] @ base.T
        if exclude is not None:
            rows_ = np.flatnonzero(present[lo:lo + chunk])
            sims[rows_, positions[lo:lo + chunk][rows_]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order_k = np.argsort(-top_sims, axis=1, kind="stable")
        top = np.take_along_axis(top, order_k, axis=1)
        out_ids[lo:lo + chunk] = ids[top]
        out_d[lo:lo + chunk] = 1.0 - np.take_along_axis(top_sims, order_k, axis=1)
    return GroundTruth(out_ids, out_d)


def recall_at_k(truth: GroundTruth, found_ids: Sequence[Sequence[int]],
                found_distances: Sequence[Sequence[float]] | None = None,
                tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per query: plain recall (|found ∩ true| / k), and recall counting a found neighbour as
    right when its distance ties the k-th true distance within `tolerance` (equidistant points
    are equally correct answers)."""
    k = truth.ids.shape[1]
    plain = np.array([len(set(map(int, f[:k])) & set(map(int, t))) / k for f, t in zip(found_ids, truth.ids)])
    if found_distances is None:
        return plain, plain
    tolerant = np.array([
        min(k, sum(1 for d in fd[:k] if d <= kth + tolerance)) / k
        for fd, kth in zip(found_distances, truth.distances[:, -1])])
    return plain, np.maximum(plain, tolerant)


# -- configurations and measurements --------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    method: str  # ivfflat / hnsw
    params: tuple[tuple[str, int], ...]  # (("lists", 100),) or (("m", 16), ("ef_construction", 64))

    @property
    def label(self) -> str:
        return f"{self.method}(" + ", ".join(f"{k}={v}" for k, v in self.params) + ")"

    @property
    def index_name(self) -> str:
        return "tune_" + self.method + "_" + "_".join(f"{k}{v}" for k, v in self.params)

    def with_clause(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(v)) for k, v in self.params)

    def build_bytes(self, rows: int, dims: int) -> int:
        p = dict(self.params)
        if self.method == "ivfflat":
            return ivfflat_build_bytes(p["lists"], dims, rows)
        return hnsw_build_bytes(rows, dims, p.get("m", 16))


@dataclass
class Point:
    config: Config
    search_param: str
    search_value: int
    index_used: bool
    recall: float = float("nan")  # mean plain recall@k
    recall_p5: float = float("nan")
    recall_tolerant: float = float("nan")
    fresh_recall: float = float("nan")  # the second query set
    recall_low: float = float("nan")  # mean recall less MARGIN_SE standard errors
    iterative: str | None = None  # set for filtered points: the iterative_scan mode measured
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    qps: float = float("nan")
    build_s: float = float("nan")
    size_bytes: int = 0
    note: str = ""

    def row(self) -> dict:
        def r(x: float, digits: int = 2):
            return None if math.isnan(x) else round(x, digits)

        setting = f"{self.search_param}={self.search_value}"
        if self.iterative is not None:
            setting += f", filtered, iterative_scan={self.iterative}"
        return {"index": self.config.label, "setting": setting,
                "recall": r(self.recall, 4), "p5": r(self.recall_p5, 3), "fresh": r(self.fresh_recall, 4),
                "p50 ms": r(self.p50_ms), "p95 ms": r(self.p95_ms), "p99 ms": r(self.p99_ms), "qps": r(self.qps, 0),
                "build s": r(self.build_s), "size MB": round(self.size_bytes / 2**20, 1),
                "index used": self.index_used, "note": self.note}


@dataclass(repr=False)
class SweepResult(Table):
    workload: str
    k: int
    points: list[Point] = field(default_factory=list)
    builds: list[dict] = field(default_factory=list)
    columns = ("index", "setting", "recall", "p5", "fresh", "p50 ms", "p95 ms", "qps", "build s", "size MB",
               "index used", "note")

    @property
    def title(self) -> str:
        return f"Sweep over {self.workload}: recall@{self.k} per index and setting"

    def rows(self) -> list[dict]:
        return [p.row() for p in self.points]

    def to_dict(self) -> dict:
        return {"workload": self.workload, "k": self.k, "points": self.rows(), "builds": self.builds}

    def __add__(self, other: SweepResult) -> SweepResult:
        """Two sweeps of the same workload (e.g. the IVFFlat one and the HNSW one) as one."""
        return SweepResult(self.workload, self.k, self.points + other.points, self.builds + other.builds)


def default_grid(rows: int, k: int) -> dict:
    """IVFFlat lists at rows/1000 and sqrt(rows) (pgvector's guidance below and above 1M rows)
    with probes from 1 to 64; HNSW at pgvector's defaults and a denser graph, each swept over
    ef_search from 2k upwards."""
    lists = sorted({max(1, round(rows / 1000)), max(1, round(math.sqrt(rows)))})
    return {
        "ivfflat_lists": lists,
        "probes": [1, 2, 4, 8, 16, 32, 64],
        "hnsw": [(16, 64), (24, 100)],
        # from 2k up: at ef_search = k the search has no slack, and its recall swings between
        # query sets (0.988 held-out, 0.948 fresh in one 20k-row run)
        "ef_search": [2 * k, 4 * k, 8 * k, 16 * k],
    }


def spare_memory(url: str) -> int:
    """Bytes a build may take: half the available memory of a server on this machine, else 1 GB."""
    if is_local(url):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
        except OSError:
            pass
    return 1 << 30


def build_settings(url: str, config: Config, rows: int, dims: int) -> dict:
    """maintenance_work_mem sized so the build fits (estimate x 1.3, within what the server can
    spare, at least 64 MB) and parallel maintenance workers on every core of a local server.

    768-d vectors are stored out of line (TOAST), so the table's main heap looks tiny and the
    planner grants a CREATE INDEX no parallel worker at all (its heap is under
    min_parallel_table_scan_size); lowering that for the build's session is what lets the
    workers run (measured: 32 s -> 16 s for HNSW on 50k x 768, 2 cores)."""
    need = int(config.build_bytes(rows, dims) * 1.3)
    mem_mb = max(64, min(need, spare_memory(url)) // 2**20 + 1)
    workers = max(1, (os.cpu_count() or 1) - 1) if is_local(url) else 2
    return {"maintenance_work_mem": f"{mem_mb}MB", "max_parallel_maintenance_workers": workers,
            "min_parallel_table_scan_size": "0"}


def _progress_watcher(url: str, pid: int, label: str, progress: bool):
    """Poll pg_stat_progress_create_index for the building backend into a progress bar."""
    from tqdm.auto import tqdm

    done = threading.Event()

    def watch():
        bar = tqdm(total=100, desc=f"build {label}", unit="%", disable=not progress, leave=False)
        try:
            with connect(url, autocommit=True, application_name="pgvkit progress") as conn:
                while not done.wait(0.5):
                    row = conn.execute(
                        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total"
                        " FROM pg_stat_progress_create_index WHERE pid = %s", [pid]).fetchone()
                    if row:
                        phase, bd, bt, td, tt = row
                        pct = 100 * td / tt if tt else (100 * bd / bt if bt else 0)
                        bar.n = int(pct)
                        bar.set_postfix_str(phase, refresh=True)
        except psycopg.Error:
            pass
        finally:
            bar.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()

    return stop


def build(url: str, conn, config: Config, rows: int, dims: int, *, progress: bool = True) -> dict:
    """Build one candidate index on the scratch table; returns seconds, size, settings, notices."""
    settings = build_settings(url, config, rows, dims)
    notices: list[str] = []
    handler = lambda d: notices.append(d.message_primary)  # noqa: E731
    conn.add_notice_handler(handler)
    for name, value in settings.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(str(value))))
    stop = _progress_watcher(url, conn.info.backend_pid, config.label, progress)
    start = time.perf_counter()
    try:
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING {} (embedding vector_cosine_ops) WITH ({})").format(
            sql.Identifier(config.index_name), SCRATCH, sql.SQL(config.method), config.with_clause()))
    finally:
        stop()
        conn.remove_notice_handler(handler)
    seconds = time.perf_counter() - start
    size = conn.execute("SELECT pg_relation_size(to_regclass(%s))",
                        [sql.Identifier(SCHEMA, config.index_name).as_string(conn)]).fetchone()[0]
    return {"index": config.label, "build_s": seconds, "size_bytes": size, "notices": notices, **settings}


def _query(k: int, exclude_self: bool, filtered: bool = False) -> sql.Composable:
    limit = k + 1 if exclude_self else k
    where = sql.SQL(" WHERE owner_id = %(owner)s") if filtered else sql.SQL("")
    return sql.SQL("SELECT id, embedding <=> %(q)s AS distance FROM {}{} ORDER BY embedding <=> %(q)s LIMIT {}").format(
        SCRATCH, where, sql.Literal(limit))


def plan_index(conn, query: sql.Composable, params: dict) -> tuple[str | None, str]:
    """(index scanned or None, the plan's top node type) of a query."""
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()[0][0]["Plan"]

    def walk(node):
        if node.get("Index Name"):
            return node["Index Name"]
        for child in node.get("Plans", []):
            found = walk(child)
            if found:
                return found
        return None

    return walk(plan), plan["Node Type"]


def require_index(conn, query: sql.Composable, params: dict, index: str) -> None:
    """The EXPLAIN guard: raise IndexNotUsed unless the plan scans `index`."""
    used, top = plan_index(conn, query, params)
    if used != index:
        text = query.as_string(conn)
        raise IndexNotUsed(
            f"the query does not use {index} (plan: {top}{' on ' + used if used else ''}): {text}; "
            "a vector index serves only ORDER BY <column> <op> <vector> LIMIT k with the operator of its "
            "operator class (<=> for vector_cosine_ops)")


def measure(conn, workload: Workload, queries: np.ndarray, exclude: np.ndarray | None,
            filtered: bool = False) -> tuple[list, list, np.ndarray]:
    """Run each query once (prepared, binary); ids, distances and latencies in ms."""
    query = _query(workload.k, exclude is not None, filtered)
    extra = {"owner": workload.filter_owner} if filtered else {}
    found_ids, found_d, lat = [], [], []
    with conn.cursor(binary=True) as cur:
        cur.execute(query, {"q": queries[0], **extra}, prepare=True)  # warm the prepared statement and cache
        cur.fetchall()
        for i, q in enumerate(queries):
            t = time.perf_counter()
            cur.execute(query, {"q": q, **extra}, prepare=True)
            rows = cur.fetchall()
            lat.append((time.perf_counter() - t) * 1000)
            if exclude is not None:
                rows = [r for r in rows if r[0] != exclude[i]][:workload.k]
            found_ids.append([r[0] for r in rows])
            found_d.append([r[1] for r in rows])
    return found_ids, found_d, np.array(lat)


def sweep(url: str, workload: Workload, *, grid: dict | None = None, truth: GroundTruth | None = None,
          fresh_truth: GroundTruth | None = None, progress: bool = True, echo: Echo | None = None) -> SweepResult:
    """Build each candidate on the scratch table and measure every query-time setting."""
    echo = echo or echo_to()
    grid = {**default_grid(workload.rows, workload.k), **(grid or {})}
    truth = truth or exact_knn(workload.vectors, workload.queries, workload.k, ids=workload.ids,
                               exclude=workload.query_ids)
    fresh_truth = fresh_truth or exact_knn(workload.vectors, workload.fresh_queries, workload.k, ids=workload.ids,
                                           exclude=workload.fresh_query_ids)
    filtered_truth = workload.filtered_truth() if workload.filter_owner is not None else None
    configs = [Config("ivfflat", (("lists", lists),)) for lists in grid["ivfflat_lists"]]
    configs += [Config("hnsw", (("m", m), ("ef_construction", efc))) for m, efc in grid["hnsw"]]
    result = SweepResult(workload.describe(), workload.k)
    with _tune_lock(url), connect(url, autocommit=True, application_name="pgvkit tune") as conn:
        register_vector(conn)
        for config in configs:
            echo(f"building {config.label} on {workload.rows:,} rows ...")
            built = build(url, conn, config, workload.rows, workload.dims, progress=progress)
            result.builds.append(built)
            echo(f"  {built['build_s']:.1f} s, {built['size_bytes'] / 2**20:.1f} MB"
                 f" (maintenance_work_mem {built['maintenance_work_mem']},"
                 f" {built['max_parallel_maintenance_workers']} parallel workers)"
                 + "".join(f"\n  NOTICE: {n}" for n in built["notices"]))
            param = SEARCH_PARAM[config.method]
            values = [p for p in grid["probes"] if p <= dict(config.params)["lists"]] \
                if config.method == "ivfflat" else grid["ef_search"]
            for value in values:
                conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(param), sql.Literal(value)))
                point = Point(config, param, value, False, build_s=built["build_s"], size_bytes=built["size_bytes"])
                used, top = plan_index(conn, _query(workload.k, workload.query_ids is not None),
                                       {"q": workload.queries[0]})
                if used != config.index_name:
                    point.note = f"EXPLAIN shows {top}, not the index: the planner costs it higher; not counted"
                    result.points.append(point)
                    continue
                point.index_used = True
                ids, dists, lat = measure(conn, workload, workload.queries, workload.query_ids)
                plain, tolerant = recall_at_k(truth, ids, dists)
                fresh_ids, fresh_d, _ = measure(conn, workload, workload.fresh_queries, workload.fresh_query_ids)
                point.recall, point.recall_p5 = float(plain.mean()), float(np.percentile(plain, 5))
                point.recall_low = point.recall - MARGIN_SE * float(plain.std(ddof=1)) / math.sqrt(len(plain))
                point.recall_tolerant = float(tolerant.mean())
                point.fresh_recall = float(recall_at_k(fresh_truth, fresh_ids, fresh_d)[0].mean())
                point.p50_ms, point.p95_ms, point.p99_ms = (float(np.percentile(lat, p)) for p in (50, 95, 99))
                point.qps = 1000.0 / float(lat.mean())
                result.points.append(point)
            if workload.filter_owner is not None and values:
                result.points += _filtered_points(conn, workload, config, param, values[len(values) // 2],
                                                  filtered_truth, built)
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(SCHEMA, config.index_name)))
            conn.execute(sql.SQL("RESET {}").format(sql.SQL(param)))
    return result


def _filtered_points(conn, workload: Workload, config: Config, param: str, value: int, truth: GroundTruth,
                     built: dict) -> list[Point]:
    """Filtered queries (WHERE owner_id = ...) through the index, with pgvector 0.8's iterative
    scans off and on: off, the index hands back its usual candidates and the filter leaves
    fewer than k; relaxed_order keeps scanning until k rows pass the filter."""
    points = []
    scan = f"{config.method}.iterative_scan"
    conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(param), sql.Literal(value)))
    for mode in ("off", "relaxed_order"):
        conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(scan), sql.Literal(mode)))
        point = Point(config, param, value, False, build_s=built["build_s"], size_bytes=built["size_bytes"],
                      iterative=mode)
        shape = _query(workload.k, workload.query_ids is not None, True)
        params = {"q": workload.queries[0], "owner": workload.filter_owner}
        used, top = plan_index(conn, shape, params)
        forced = used != config.index_name
        if forced:  # a selective filter on a small table: the planner scans and sorts instead
            conn.execute("SET enable_seqscan = off")
            used, top = plan_index(conn, shape, params)
        if used != config.index_name:
            point.note = f"EXPLAIN shows {top}, not the index; not counted"
        else:
            point.index_used = True
            ids, dists, lat = measure(conn, workload, workload.queries, workload.query_ids, filtered=True)
            plain, _ = recall_at_k(truth, ids, dists)
            point.recall, point.recall_p5 = float(plain.mean()), float(np.percentile(plain, 5))
            point.p50_ms, point.p95_ms, point.p99_ms = (float(np.percentile(lat, p)) for p in (50, 95, 99))
            point.qps = 1000.0 / float(lat.mean())
            short = sum(len(r) < workload.k for r in ids)
            notes = [f"{short} of {len(ids)} queries got fewer than {workload.k} rows"] if short else []
            if forced:
                notes.append("the planner prefers a scan for this filter here: measured with enable_seqscan = off")
            point.note = "; ".join(notes)
        conn.execute("RESET enable_seqscan")
        points.append(point)
    conn.execute(sql.SQL("RESET {}").format(sql.SQL(scan)))
    return points


class _tune_lock:
    """An advisory lock so two tuning runs never share the scratch table."""

    def __init__(self, url: str):
        self.url = url

    def __enter__(self):
        self.conn = connect(self.url, autocommit=True, application_name="pgvkit tune lock")
        if not self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", TUNE_LOCK).fetchone()[0]:
            self.conn.close()
            raise PgvkitError("another pgvkit tune is running on this database; wait for it to finish")
        return self

    def __exit__(self, *exc):
        self.conn.close()  # releases the session lock


# -- recommendation ------------------------------------------------------------------------------

@dataclass(repr=False)
class Recommendation(Table):
    target: float
    k: int
    point: Point | None
    met: bool
    message: str
    runner_up: list[Point] = field(default_factory=list)
    workload: str = ""
    columns = ("index", "setting", "recall", "p5", "fresh", "p95 ms", "qps", "build s", "size MB")

    @property
    def title(self) -> str:
        return self.message

    def rows(self) -> list[dict]:
        return [p.row() for p in ([self.point] if self.point else []) + self.runner_up]

    def to_dict(self) -> dict:
        return {"target_recall": self.target, "k": self.k, "met": self.met, "message": self.message,
                "choice": self.point.row() if self.point else None,
                "index_definition": self.index_clause if self.point else None}

    @property
    def index_clause(self) -> str:
        c = self.point.config
        return f"USING {c.method} (embedding vector_cosine_ops) WITH (" + ", ".join(f"{k} = {v}" for k, v in c.params) + ")"


def recommend(result: SweepResult, target: float = 0.95) -> Recommendation:
    """The cheapest measured configuration (lowest p95 latency, then build time, then size)
    whose mean recall@k on the held-out queries meets the target with a margin of MARGIN_SE
    standard errors (not just the mean: a few hundred queries are a sample, and the choice
    must hold on queries nobody measured)."""
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    meets = sorted((p for p in counted if p.recall_low >= target), key=lambda p: (p.p95_ms, p.build_s, p.size_bytes))
    if meets:
        best = meets[0]
        return Recommendation(
            target, result.k, best, True,
            f"{best.config.label} with {best.search_param} = {best.search_value}: recall@{result.k} "
            f"{best.recall:.3f} (fresh queries {best.fresh_recall:.3f}) >= {target}, p95 {best.p95_ms:.2f} ms",
            meets[1:4], result.workload)
    if not counted:
        return Recommendation(target, result.k, None, False,
                              "no configuration could be measured: the planner never used a candidate index "
                              "(is the workload too small? try --rows 10000 or more)", workload=result.workload)
    closest = max(counted, key=lambda p: (p.recall, -p.p95_ms))
    return Recommendation(
        target, result.k, None, False,
        f"nothing reached recall@{result.k} >= {target}: closest is {closest.config.label} with "
        f"{closest.search_param} = {closest.search_value} at {closest.recall:.3f}; try larger ef_search or "
        "probes values, HNSW with m = 32 / ef_construction = 200, or a lower target",
        [closest], result.workload)


# -- the migration -------------------------------------------------------------------------------

def _current_setting(conn, name: str) -> str | None:
    row = conn.execute(
        "SELECT s.opt FROM pg_db_role_setting r, unnest(r.setconfig) AS s(opt)"
        " WHERE r.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND r.setrole = 0 AND s.opt LIKE %s", [name + "=%"]).fetchone()
    return row[0].split("=", 1)[1] if row else None


def _set_database(name: str, value: str | None) -> str:
    action = f"SET {name} = {value}" if value is not None else f"RESET {name}"
    # current_database(): the file stays valid in every environment it is deployed to;
    # touching a vector first loads pgvector, so its settings are known to the server
    return (f"DO $$\nBEGIN\n    PERFORM '[1]'::vector;\n"
            f"    EXECUTE format('ALTER DATABASE %I {action}', current_database());\nEND\n$$;\n")


def _swap(create_definition: str, table: str, index: str, temp: str) -> str:
    return (f"{create_definition.replace(f'INDEX {temp} ON', f'INDEX CONCURRENTLY IF NOT EXISTS {temp} ON')};\n"
            f"-- the old index goes only once the new one is built and valid\n"
            f"DROP INDEX CONCURRENTLY IF EXISTS {index};\n"
            f"ALTER INDEX IF EXISTS {temp} RENAME TO {index};\n")


def write_migration(url: str, recommendation: Recommendation, migrations_dir: str | Path | None = None, *,
                    table: str = "ip_asset_embeddings", index: str = "idx_embedding_cosine") -> tuple[Path, Path]:
    """Write NNN_tune_<index>.sql (replace the index concurrently and set the query-time
    parameter for the database) and its .down.sql (the previous index and settings)."""
    from .migrations import default_migrations_dir, read_migrations

    if recommendation.point is None:
        raise PgvkitError("no configuration met the target, so there is no migration to write; "
                          "lower --target-recall or widen the sweep")
    from . import history

    directory = Path(migrations_dir or default_migrations_dir())
    existing = read_migrations(directory)
    with connect(url) as conn:
        recorded = history.applied(conn)  # a version applied here whose file is gone is still taken
    version = max([m.version for m in existing] + list(recorded), default=0) + 1
    name = f"{version:03d}_tune_{index}"
    p = recommendation.point
    with connect(url) as conn:
        old_def = conn.execute(
            "SELECT pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE c.relname = %s AND i.indrelid = to_regclass(%s)",
            [index, sql.Identifier(table).as_string(conn)]).fetchone()
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        dims = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                            " AND attname = 'embedding'", [sql.Identifier(table).as_string(conn)]).fetchone()[0]
        old = {param: _current_setting(conn, param) for param in SEARCH_PARAM.values()}
    settings = build_settings(url, p.config, max(rows, 1), dims)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    new_def = (f"CREATE INDEX {index}_next ON {table} USING {p.config.method} (embedding vector_cosine_ops)"
               f" WITH ({', '.join(f'{k} = {v}' for k, v in p.config.params)})")
    up = (f"-- pgvkit:no-transaction\n"
          f"-- Written by pgvkit tune on {stamp}. Measured on {recommendation.workload}:\n"
          f"--   {p.config.label}, {p.search_param} = {p.search_value}: recall@{recommendation.k} {p.recall:.3f}"
          f" (p5 {p.recall_p5:.2f}, fresh queries {p.fresh_recall:.3f}), p95 {p.p95_ms:.2f} ms,"
          f" build {p.build_s:.1f} s, {p.size_bytes / 2**20:.1f} MB\n"
          f"-- Target was recall@{recommendation.k} >= {recommendation.target}.\n\n"
          f"-- queries read the setting when they connect\n"
          + _set_database(p.search_param, str(p.search_value)) +
          f"\n-- sized for {rows:,} rows so the build fits in memory\n"
          + "".join(f"SET {k} = '{v}';\n" for k, v in settings.items())
          + _swap(new_def, table, index, f"{index}_next")
          + "".join(f"RESET {k};\n" for k in settings))
    down = "-- pgvkit:no-transaction\n-- Undo " + name + ": the previous index and query-time settings.\n\n"
    for param, value in old.items():
        down += _set_database(param, value)
    if old_def:
        previous = re.sub(r"^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+", lambda m: f"CREATE {m.group(1) or ''}INDEX "
                          f"{index}_prev ON {table}", old_def[0])
        down += "\n" + _swap(previous, table, index, f"{index}_prev")
    else:
        down += f"\nDROP INDEX CONCURRENTLY IF EXISTS {index};\n"
    up_path = directory / f"{name}.sql"
    down_path = directory / f"{name}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path


# -- all of it ------------------------------------------------------------------------------------

def tune(url: str, *, target: float = 0.95, k: int = 10, rows: int | None = None, queries: int = 200,
         source: str = "auto", grid: dict | None = None, seed: int = 0, filter_owner: str | None = None,
         progress: bool = True, echo: Echo | None = None) -> tuple[Workload, SweepResult, Recommendation]:
    """prepare, ground truth, sweep, recommend; the scratch table is dropped at the end, also on
    errors and interrupts (and by the next run if the process was killed)."""
    echo = echo or echo_to()
    cleanup(url)
    try:
        workload = prepare(url, source=source, rows=rows, queries=queries, k=k, seed=seed, filter_owner=filter_owner,
                           echo=echo)
        echo(f"workload: {workload.describe()}")
        start = time.perf_counter()
        truth = exact_knn(workload.vectors, workload.queries, k, ids=workload.ids, exclude=workload.query_ids)
        echo(f"exact neighbours of {len(workload.queries)} queries in {time.perf_counter() - start:.2f} s (numpy)")
        result = sweep(url, workload, grid=grid, truth=truth, progress=progress, echo=echo)
    finally:
        cleanup(url)
    return workload, result, recommend(result, target)


# -- pictures ----------------------------------------------------------------------------------------

def _pareto(points: Sequence[Point]) -> list[Point]:
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p.p95_ms, -p.recall)):
        if p.recall > best:
            front.append(p)
            best = p.recall
    return front


def plot_tradeoff(result: SweepResult, target: float = 0.95, recommendation: Recommendation | None = None):
    """Recall@k against p95 latency for every measured point, the Pareto front and the target."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    for label in dict.fromkeys(p.config.label for p in counted):
        pts = [p for p in counted if p.config.label == label]
        ax.plot([p.p95_ms for p in pts], [p.recall for p in pts], "o-", label=label, alpha=0.8)
    front = _pareto(counted)
    ax.plot([p.p95_ms for p in front], [p.recall for p in front], "k--", lw=1, label="Pareto front")
    ax.axhline(target, color="red", lw=1, ls=":", label=f"target {target}")
    if recommendation and recommendation.point:
        p = recommendation.point
        ax.plot([p.p95_ms], [p.recall], "r*", ms=16, label="recommended")
    ax.set_xscale("log")
    ax.set_xlabel("p95 latency (ms, log scale)")
    ax.set_ylabel(f"recall@{result.k}")
    ax.set_title(result.workload, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_builds(result: SweepResult):
    """Build time and index size per configuration."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [b_["index"] for b_ in result.builds]
    a.barh(labels, [b_["build_s"] for b_ in result.builds])
    a.set_xlabel("build time (s)")
    b.barh(labels, [b_["size_bytes"] / 2**20 for b_ in result.builds], color="tab:orange")
    b.set_xlabel("index size (MB)")
    b.set_yticks([])
    fig.tight_layout()
    return fig

