"""What the application's searches cost, from the server's own statistics, as differences.

Two sources, whichever the server has:
- `pg_stat_statements` (shared_preload_libraries, then CREATE EXTENSION in the database): per
  statement calls, execution time (total, mean, stddev), rows and shared blocks. The
  application's statements that call search_assets (or read similar_assets) form one group, the
  statements that order the table by a distance operator themselves another ("direct").
- `pg_stat_user_functions` (track_functions = pl): search_assets' own calls and time.

Both are cumulative since a reset, so a reading is kept whole (`Reading.baseline()`, stored by
`pgvkit watch`) and the next one is differenced against it entry by entry: an entry whose
`stats_since` moved (reset on its own, or evicted and back) or whose calls went down counts
from its new start, and a reset of the whole view or a crash is said, never shown as a negative
rate. Within an interval the mean is exact (difference of totals) and so is the standard
deviation (the sums of squares are recovered from mean and stddev: n·(σ² + μ²)); the 95th
percentile is estimated from those two by a log-normal (latencies are skewed to the right),
capped at the view's max. The server cannot give more without sampling every call.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import errors, sql

from ..search import KIT_MARK

__all__ = ["Counters", "Reading", "Interval", "read", "difference", "GROUPS"]

GROUPS = ("search_assets", "direct")
_DISTANCE = r"<=>|<->|<#>|<\+>|<~>|<%>"


@dataclass
class Counters:
    """Sums over calls: time in ms, its sum of squares in ms², rows, shared blocks hit and read."""

    calls: int = 0
    total_ms: float = 0.0
    sumsq: float = 0.0
    rows: int = 0
    hit: int = 0
    read: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple:
        return (self.calls, self.total_ms, self.sumsq, self.rows, self.hit, self.read)

    @property
    def mean_ms(self) -> float | None:
        return self.total_ms / self.calls if self.calls else None

    @property
    def stddev_ms(self) -> float | None:
        if not self.calls:
            return None
        return math.sqrt(max(0.0, self.sumsq / self.calls - (self.total_ms / self.calls) ** 2))

    def p95_ms(self, cap: float | None = None) -> float | None:
        """The 95th percentile of a log-normal with this mean and stddev (at most `cap`)."""
        mean, sd = self.mean_ms, self.stddev_ms
        if mean is None or mean <= 0:
            return mean
        s2 = math.log1p((sd / mean) ** 2)
        value = math.exp(math.log(mean) - s2 / 2 + 1.6448536 * math.sqrt(s2))
        return min(value, cap) if cap else value

    def figures(self, cap: float | None = None) -> dict:
        p95 = self.p95_ms(cap)
        return {"calls": self.calls, "mean_ms": _round(self.mean_ms), "stddev_ms": _round(self.stddev_ms),
                "p95_ms_est": _round(p95), "rows_per_call": round(self.rows / self.calls, 2) if self.calls else None,
                "blocks_hit": self.hit, "blocks_read": self.read}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


@dataclass
class Reading:
    """One look at the statistics of one database: cumulative, to difference later."""

    at: datetime
    started: datetime  # the server's start: a crash loses what was not saved
    statements: dict[str, tuple[str, Counters, str | None, float | None]] | None  # key: (group, sums, since, max)
    stats_reset: str | None = None  # pg_stat_statements_info: the whole view's last reset
    dealloc: int = 0  # entries evicted because pg_stat_statements.max was reached
    function: Counters | None = None  # pg_stat_user_functions for search_assets (calls, time)
    unseen: list[str] = field(default_factory=list)  # what it cannot see, and the one setting that would let it

    def baseline(self) -> dict:
        """The reading as JSON, for the next difference."""
        return {"at": self.at.isoformat(), "started": self.started.isoformat(), "stats_reset": self.stats_reset,
                "dealloc": self.dealloc,
                "statements": None if self.statements is None else {
                    k: [g, *c.astuple(), since, top] for k, (g, c, since, top) in self.statements.items()},
                "function": None if self.function is None else list(self.function.astuple())}

    @classmethod
    def from_baseline(cls, data: dict) -> Reading:
        statements = None if data.get("statements") is None else {
            k: (v[0], Counters(*v[1:7]), v[7], v[8]) for k, v in data["statements"].items()}
        return cls(datetime.fromisoformat(data["at"]), datetime.fromisoformat(data["started"]), statements,
                   data.get("stats_reset"), data.get("dealloc", 0),
                   Counters(*data["function"]) if data.get("function") else None)


@dataclass
class Interval:
    """What the application's searches did between two readings."""

    seconds: float
    groups: dict[str, Counters]  # by GROUPS; empty when pg_stat_statements is not readable
    function: Counters | None
    max_ms: dict[str, float]  # the view's max per group: a cap for the p95 estimate (since its minmax reset)
    notes: list[str] = field(default_factory=list)  # resets, restarts, evictions: said, not hidden

    def figures(self) -> dict:
        out = {g: c.figures(self.max_ms.get(g)) for g, c in self.groups.items()}
        if self.function is not None:
            out["function"] = {"calls": self.function.calls, "mean_ms": _round(self.function.mean_ms)}
        return out


def _extension_schema(conn) -> str | None:
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                       " WHERE e.extname = 'pg_stat_statements'").fetchone()
    return row[0] if row else None


def read(conn, table: str = "ip_asset_embeddings", function: str = "search_assets") -> Reading:
    """The statistics as they are now (in their own transaction: they are a snapshot per
    transaction by default)."""
    with conn.transaction():
        at, started = conn.execute("SELECT clock_timestamp(), pg_postmaster_start_time()").fetchone()
    reading = Reading(at, started, None)
    _read_statements(conn, reading, table, function)
    _read_function(conn, reading, function)
    return reading


def _loaded(conn) -> bool | None:
    """pg_stat_statements in shared_preload_libraries; None when this role may not read it."""
    try:
        with conn.transaction():
            preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
    except errors.InsufficientPrivilege:
        return None
    return "pg_stat_statements" in [p.strip() for p in preload.split(",")]


_NOT_LOADED = ("search latency and calls per statement: pg_stat_statements is not loaded (set shared_preload_libraries "
               "= 'pg_stat_statements' in postgresql.conf, restart, then CREATE EXTENSION pg_stat_statements;)")


def _read_statements(conn, reading: Reading, table: str, function: str) -> None:
    schema = _extension_schema(conn)
    loaded = _loaded(conn)
    if loaded is False:
        reading.unseen.append(_NOT_LOADED)
        return
    if schema is None:
        reading.unseen.append("search latency and calls per statement: pg_stat_statements is " + (
            "loaded but " if loaded else "") + "not created in this database (as a superuser: CREATE EXTENSION "
            "pg_stat_statements;" + ("" if loaded else " it must be in shared_preload_libraries too") + ")")
        return
    view = sql.Identifier(schema, "pg_stat_statements")
    columns = {r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0",
        [view.as_string(conn)])}
    since = sql.SQL("s.stats_since::text") if "stats_since" in columns else sql.SQL("NULL::text")
    top = sql.SQL("s.toplevel") if "toplevel" in columns else sql.SQL("true")
    query = sql.SQL(
        "SELECT s.userid::text || ':' || coalesce(s.queryid::text, s.query) || ':' || {top}::text, {top}, s.query,"
        " s.calls, s.total_exec_time, s.mean_exec_time, s.stddev_exec_time, s.rows, s.shared_blks_hit,"
        " s.shared_blks_read, {since}, s.max_exec_time"
        " FROM {view} AS s WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND (s.query ILIKE {fn} OR s.query ILIKE '%%similar_assets%%'"
        " OR (s.query ILIKE {tab} AND s.query ~ {dist}) OR s.query = '<insufficient privilege>')").format(
        top=top, since=since, view=view, fn=sql.Literal(f"%{function}%"), tab=sql.Literal(f"%{table}%"),
        dist=sql.Literal(_DISTANCE))
    try:
        with conn.transaction():
            found = conn.execute(query).fetchall()
            info_view = sql.Identifier(schema, "pg_stat_statements_info")  # 1.9 (PostgreSQL 14) on
            info = conn.execute(sql.SQL("SELECT stats_reset::text, dealloc FROM {}").format(info_view)).fetchone() \
                if conn.execute("SELECT to_regclass(%s)", [info_view.as_string(conn)]).fetchone()[0] else None
    except errors.ObjectNotInPrerequisiteState:  # created, but the library is not loaded
        reading.unseen.append(_NOT_LOADED)
        return
    except errors.InsufficientPrivilege as exc:
        reading.unseen.append(f"search latency and calls per statement: {str(exc).splitlines()[0]} (GRANT "
                              "pg_read_all_stats TO the role pgvkit watch runs as)")
        return
    hidden = 0
    statements = {}
    for key, toplevel, text, calls, total, mean, sd, rows, hit, rd, stats_since, top_ms in found:
        if text == "<insufficient privilege>":
            hidden += 1
            continue
        group = _group(text, function, toplevel)
        if group is None:
            continue
        statements[key] = (group, Counters(calls, total, calls * (sd * sd + mean * mean), rows, hit, rd),
                           stats_since, top_ms)
    reading.statements = statements
    if info:
        reading.stats_reset, reading.dealloc = info
    if hidden:
        reading.unseen.append(f"{hidden} statements of other roles, without their text: they may be searches "
                              "(GRANT pg_read_all_stats TO the role pgvkit watch runs as)")


_NOT_A_SEARCH = re.compile(r"^\s*(create|alter|drop|comment|grant|revoke|do|explain|copy|vacuum|analyze|reindex|"
                           r"cluster|prepare|deallocate)\b", re.IGNORECASE)


def _group(text: str, function: str, toplevel: bool) -> str | None:
    """Which search a statement is: a call of the function (or a read of the view), an ORDER BY
    of its own, or none (DDL, a catalog lookup naming the function, pgvkit's own searches, a
    statement inside a function: counted by its caller)."""
    if not toplevel or KIT_MARK in text or _NOT_A_SEARCH.match(text):
        return None
    if re.search(rf"(?<![\w'\"]){re.escape(function)}\s*\(", text, re.IGNORECASE) or re.search(
            r"(?<![\w'\"])similar_assets\b", text, re.IGNORECASE):
        return "search_assets"
    return "direct" if re.search(_DISTANCE, text) else None


def _read_function(conn, reading: Reading, function: str) -> None:
    with conn.transaction():
        track = conn.execute("SELECT current_setting('track_functions')").fetchone()[0]
        row = conn.execute("SELECT count(*), sum(calls), sum(total_time) FROM pg_stat_user_functions"
                           " WHERE funcname = %s AND schemaname = ANY (current_schemas(false))", [function]).fetchone()
    if track == "none":
        reading.unseen.append(f"{function}'s own calls and time: track_functions is none (ALTER SYSTEM SET "
                              "track_functions = 'pl'; SELECT pg_reload_conf();)")
    if row[0]:
        reading.function = Counters(int(row[1]), float(row[2]))
    elif track != "none":
        reading.function = Counters()  # not called since the statistics began


def difference(now: Reading, before: Reading | None) -> Interval:
    """`now` minus `before`, entry by entry; resets and restarts said in `notes`."""
    if before is None:
        return Interval(0.0, {g: Counters() for g in GROUPS} if now.statements is not None else {},
                        None if now.function is None else Counters(), {},
                        ["the first watch of this server: the next one shows what searches cost in between"])
    notes: list[str] = []
    if now.started > before.at:
        notes.append(f"the server restarted at {now.started:%Y-%m-%d %H:%M:%S %Z}: statistics a crash lost are not "
                     "in these figures")
    if now.stats_reset and now.stats_reset != before.stats_reset:
        notes.append(f"pg_stat_statements was reset at {now.stats_reset[:19]} (pg_stat_statements_reset()): "
                     "the figures cover the time since")
    if now.dealloc > before.dealloc:
        notes.append(f"{now.dealloc - before.dealloc} statements were evicted from pg_stat_statements (it keeps "
                     "pg_stat_statements.max): searches among them are missing; raise pg_stat_statements.max")
    groups: dict[str, Counters] = {}
    top: dict[str, float] = {}
    if now.statements is not None and before.statements is None:
        notes.append("pg_stat_statements was not readable at the last watch: its figures start with the next one")
        groups = {g: Counters() for g in GROUPS}
    elif now.statements is not None:
        old = before.statements
        reset = 0
        for key, (group, sums, stats_since, max_ms) in now.statements.items():
            prev = old.get(key)
            if prev is not None and (sums.calls < prev[1].calls or (stats_since and prev[2] != stats_since)):
                prev, reset = None, reset + 1  # reset on its own (or evicted and back): counts from its new start
            part = sums if prev is None else sums - prev[1]
            groups[group] = groups.get(group, Counters()) + part
            if part.calls and max_ms is not None:
                top[group] = max(top.get(group, 0.0), max_ms)
        if reset and not any("was reset" in n for n in notes):
            notes.append(f"{reset} search statements' statistics were reset or evicted since the last watch: they "
                         "count from their new start")
        for group in GROUPS:
            groups.setdefault(group, Counters())
    function = None
    if now.function is not None:
        prev_f = before.function
        function = now.function if prev_f is None or now.function.calls < prev_f.calls else now.function - prev_f
    seconds = (now.at - before.at).total_seconds()
    return Interval(seconds, groups, function, top, notes)
