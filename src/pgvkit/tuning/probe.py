"""The probe: search_assets as it stands (body and bound settings) copied into this session's
pg_temp with the settings under test over its own, so pgvkit confirm measures what the
application would get with them while the live function is never touched and nobody else sees
the copy; searches and plans through it."""

from __future__ import annotations

import re
import time

import numpy as np
from psycopg import sql

from .. import search
from ..kinds import OWNER_SETTING

__all__ = ["PROBE", "probe_function", "search_probe", "probe_plan"]

PROBE = "pg_temp.pgvkit_confirm_search"


def probe_function(conn, settings: dict[str, str]) -> None:
    """search_assets as it stands (body and bound settings), copied into this session's pg_temp
    with `settings` over its own: what the application would get with them, and nobody else
    sees it."""
    text = conn.execute("SELECT pg_get_functiondef(to_regprocedure(%s))", [search.SIGNATURE]).fetchone()[0]
    head, body = text.split("\nAS ", 1)
    lines = head.splitlines()
    lines[0] = re.sub(r"FUNCTION\s+.+?\(", f"FUNCTION {PROBE}(", lines[0], count=1)
    bound = {**search.settings(conn), **dict.fromkeys(OWNER_SETTING.values(), ""), **settings}  # owners' off
    kept = [line for line in lines if not line.lstrip().startswith("SET ")]
    sets = [sql.SQL(" SET {} = {}").format(sql.SQL(name), sql.Literal(str(value))).as_string(conn)
            for name, value in bound.items()]
    conn.execute("\n".join(kept + sets) + "\nAS " + body)


def search_probe(conn, queries: np.ndarray, exclude: np.ndarray | None, k: int, owner: str | None):
    """Each query through the probe copy of search_assets (prepared, binary): ids, distances,
    latency in ms; a similar-assets query asks for k + 1 and drops its own row."""
    ask = k + 1 if exclude is not None else k
    query = sql.SQL(f"SELECT id, distance, true AS {search.KIT_MARK} FROM {PROBE}(%(q)s, {ask}, %(owner)s)")
    ids, distances, latency = [], [], []
    with conn.cursor(binary=True) as cur:
        for i, q in enumerate(queries):
            start = time.perf_counter()
            rows = cur.execute(query, {"q": q, "owner": owner}, prepare=True).fetchall()
            latency.append((time.perf_counter() - start) * 1000)
            if exclude is not None:
                rows = [r for r in rows if r[0] != int(exclude[i])][:k]
            ids.append([r[0] for r in rows])
            distances.append([r[1] for r in rows])
    return ids, distances, np.array(latency)


def probe_plan(conn, query: np.ndarray, k: int, owner: str | None) -> str:
    """What the probe's statement scans, read with auto_explain (as verify does)."""
    plan = search.nested_plan(conn, query, k, owner, function=PROBE)
    if plan is None:
        return "not read (auto_explain needs a superuser)"
    scans = search._index_scans(plan["Plan"])
    return f"index {', '.join(scans)}" if scans else "SEQUENTIAL SCAN"
