"""Which way search_assets answers one owner's search (003_search_assets_by_owner): read the
owner's rows whole and sort them (exact), or walk the vector index with the owner's filter until k
of theirs pass (iterative scan). Up to pgvkit.exact_owner_rows rows the first, above it the second.

The right threshold depends on the machine, the storage and the table's size, so pgvkit confirm
measures both routes at the live size for the owners nearest it and moves it to where they cost
the same. Reading an owner whole costs about the same per row whatever the table's size (measured
on 198,000 real rows: ~4.7 us a row, the vectors read from TOAST); walking the index costs about
the rows it must pass over to find k of the owner's, the table's rows over the owner's (a 1 % owner:
p95 52 ms, 5 %: 14 ms). So exact p95 ~ e x rows and index p95 ~ i x table / rows cross at
sqrt(i x table / e). Raising the threshold is always safe for recall (more owners exact); it is
lowered only as far as an owner whose index route was measured meeting the target, since the
index's recall falls for smaller owners (0.2 %: 0.86 at the default scan).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from psycopg import sql

from .. import search
from ..errors import PgvkitError
from ..kinds import EXACT_OWNER_ROWS

__all__ = ["Route", "RouteChoice", "choose_threshold", "measure_routes", "pick_owners", "NEAR"]

NEAR = 4  # owners within this factor of the threshold are measured both ways
QUICKER = 0.9  # a route is the quicker one when its p95 is below this share of the other's: closer is noise


@dataclass
class Route:
    owner: str
    rows: int
    exact_p95: float | None = None  # ms; None: not measured (too large to read whole)
    index_p95: float | None = None
    index_meets: bool = False  # the index route met the target, at the deepest filter setting tried
    index_step: dict[str, str] = field(default_factory=dict)  # the filter setting it met the target at


@dataclass
class RouteChoice:
    threshold: int
    said: str  # one line: what was measured and what it chose

    def setting(self) -> dict[str, str]:
        return {EXACT_OWNER_ROWS: str(self.threshold)}


def near(owners: list[tuple[str, int]], threshold: int) -> list[tuple[str, int]]:
    """The owners to measure both ways: those within NEAR of the threshold."""
    return [(o, n) for o, n in owners if threshold / NEAR <= n <= threshold * NEAR]


def choose_threshold(routes: list[Route], threshold: int, table_rows: int) -> RouteChoice:
    """Where exact and index p95 cross, from the owners measured both ways (see the module's text);
    the threshold unchanged when nothing was measured both ways or every owner measured already
    takes its quicker route (by QUICKER)."""
    exact = [r.exact_p95 / r.rows for r in routes if r.exact_p95 is not None]
    index = [r.index_p95 * r.rows / table_rows for r in routes if r.index_p95 is not None and r.index_meets]
    shown = "; ".join(_said(r) for r in routes)
    if not exact or not index:
        why = ("no owner near it was measured through the index at the target" if exact
               else "no owner near it was measured read whole")
        return RouteChoice(threshold, f"owners read whole up to {threshold:,} rows, kept: {why} ({shown})")
    per_row, per_share = max(exact), max(index)  # the slower of each: the threshold errs towards neither
    crossing = math.sqrt(per_share * table_rows / per_row)
    both = [r for r in routes if r.exact_p95 is not None and r.index_p95 is not None]
    if all((r.rows <= threshold) == (not r.index_meets or r.index_p95 > QUICKER * r.exact_p95) for r in both):
        return RouteChoice(threshold, f"owners read whole up to {threshold:,} rows, kept: each owner measured already "
                                      f"takes its quicker route (they cost the same near {crossing:,.0f} rows; {shown})")
    if crossing < threshold:  # lower, but never below an owner whose index route was measured to meet the target
        proven = min(r.rows for r in routes if r.index_meets)
        new = max(math.ceil(crossing), proven - 1)
        if new >= threshold:
            return RouteChoice(threshold, f"owners read whole up to {threshold:,} rows, kept: the index would be "
                                          f"quicker from {crossing:,.0f} rows, but no owner that small was measured "
                                          f"through it at the target ({shown})")
    else:
        new = math.floor(crossing)
    return RouteChoice(new, f"owners read whole up to {new:,} rows (was {threshold:,}): both routes cost the same "
                            f"near {crossing:,.0f} rows ({shown})")


def _said(r: Route) -> str:
    parts = [f"read whole p95 {r.exact_p95:.1f} ms" if r.exact_p95 is not None else None,
             (f"through the index p95 {r.index_p95:.1f} ms" + ("" if r.index_meets else " below the target"))
             if r.index_p95 is not None else None]
    return f"{r.owner} ({r.rows:,} rows): " + ", ".join(p for p in parts if p)


def measure_routes(owners: list[tuple[str, int]], threshold: int,
                   measure: Callable[[str, int, dict[str, str], bool], tuple[float, bool]],
                   index_steps: list[dict[str, str]]) -> list[Route]:
    """Each owner near the threshold both ways: `measure(owner, rows, settings, exact)` returns
    (p95 ms, met the target) for the probe with `settings` over the chosen ones; the index route
    tries `index_steps` (the filter grid, from what is bound now) until one meets the target."""
    routes = []
    for owner, rows in near(owners, threshold):
        route = Route(owner, rows)
        route.exact_p95, _ = measure(owner, rows, {EXACT_OWNER_ROWS: str(rows)}, True)
        for step in index_steps:
            route.index_p95, route.index_meets = measure(owner, rows, {EXACT_OWNER_ROWS: str(rows - 1), **step}, False)
            if route.index_meets:
                route.index_step = step
                break
        routes.append(route)
    return routes


def pick_owners(conn, table: str, rows: int, k: int, asked) -> list[tuple[str, int]]:
    """(owner, rows) of the owners pgvkit confirm measures filtered searches for: by default the
    largest, the one nearest 1 % of the rows (with at least k rows) and, when search_assets reads
    small owners whole (003), the smallest owner it searches through the vector index (the hardest
    for it) and the largest it reads whole within NEAR of the threshold (the slowest exact one);
    `asked` names them; none for []."""
    if asked is None:
        return []
    if asked != "auto":
        names = list(asked)
        counts = dict(conn.execute(sql.SQL("SELECT owner_id, count(*) FROM {} WHERE owner_id = ANY(%s) GROUP BY 1")
                                   .format(sql.Identifier(table)), [names]).fetchall())
        missing = [n for n in names if n not in counts]
        if missing:
            raise PgvkitError(f"no row of {table} has owner_id = {missing[0]!r}; name an owner that exists "
                              "(or --owners auto)")
        return [(n, counts[n]) for n in names]
    counts = conn.execute(sql.SQL("SELECT owner_id, count(*) FROM {} WHERE owner_id IS NOT NULL GROUP BY 1"
                                  " ORDER BY 2 DESC, 1").format(sql.Identifier(table))).fetchall()
    if not counts:
        return []
    picked = [counts[0]]
    small = [c for c in counts[1:] if c[1] >= k]
    if small:
        picked.append(min(small, key=lambda c: (abs(c[1] - rows / 100), c[0])))
    threshold = search.exact_owner_rows(conn)
    if threshold is not None:
        walked = [c for c in counts if c[1] > threshold and c not in picked]
        if walked:
            picked.append(min(walked, key=lambda c: (c[1], c[0])))
        whole = [c for c in counts if threshold / NEAR <= c[1] <= threshold and c[1] >= k and c not in picked]
        if whole and not any(threshold / NEAR <= n <= threshold for _, n in picked):
            picked.append(max(whole, key=lambda c: (c[1], c[0])))
    return [(o, n) for o, n in picked]
