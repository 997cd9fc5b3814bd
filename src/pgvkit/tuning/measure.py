"""Step 4: measuring. Each query once, prepared with binary parameters, for ids, distances and
latency; the EXPLAIN guard makes sure a measurement is of the index under test."""

from __future__ import annotations

import time

import numpy as np
from psycopg import sql

from ..errors import PgvkitError
from ..indexes import plan_index
from ..kinds import KINDS, Kind, nearest
from .workload import SCRATCH, Workload

__all__ = ["IndexNotUsed", "query_shape", "require_index", "measure"]


class IndexNotUsed(PgvkitError):
    """The query shape cannot use (or the planner will not choose) the index under test."""


def query_shape(k: int, exclude_self: bool, filtered: bool = False, *, kind: Kind = KINDS["vector"],
                dims: int = 0, depth: int = 0) -> sql.Composable:
    """The search of one shape on the scratch table, as search_assets runs it for an index of
    `kind` (pgvkit.kinds.nearest): id and exact cosine distance, nearest first; a similar-assets
    search asks for k + 1 and leaves its own row out afterwards."""
    limit = sql.Literal(k + 1 if exclude_self else k)
    return nearest(kind, dims, SCRATCH, sql.SQL("%(q)s::vector"), limit,
                   owner=sql.SQL("%(owner)s") if filtered else None, depth=sql.Literal(depth) if depth else None)


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
            filtered: bool = False, *, kind: Kind = KINDS["vector"], depth: int = 0) -> tuple[list, list, np.ndarray]:
    """Run each query once (prepared, binary); ids, distances and latencies in ms."""
    query = query_shape(workload.k, exclude is not None, filtered, kind=kind, dims=workload.dims, depth=depth)
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
