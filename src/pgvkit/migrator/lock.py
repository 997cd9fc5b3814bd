"""Who may write: the migration advisory lock, and who holds a lock a statement waits for."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Iterator

import psycopg
from pglast import ast

from ..errors import LockTimeout, PgvkitError
from ..server.db import connect
from .sqlfile import Statement

__all__ = ["LOCK_KEY", "migration_lock", "LockBusy", "abort_when_client_dies"]

LOCK_KEY = (int.from_bytes(b"pgvk", "big"), 1)  # (classid, objid) of the advisory lock


@contextlib.contextmanager
def migration_lock(url: str, wait: float) -> Iterator[None]:
    """Hold the migration advisory lock on a connection of its own, waiting up to `wait` seconds."""
    conn = connect(url, autocommit=True, application_name="pgvkit lock")
    try:
        deadline = time.monotonic() + wait
        delay = 0.05
        while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()[0]:
            if time.monotonic() >= deadline:
                pid, query = _advisory_holder(conn)
                raise LockTimeout("pgvkit migration lock", pid, wait, query)
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 1.5, 1.0)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEY)
    finally:
        conn.close()


class LockBusy(Exception):
    """A statement hit lock_timeout; carries what is needed to retry or to report the blocker."""

    def __init__(self, url: str, st: Statement, exc: psycopg.Error | None = None):
        self.url = url
        self.statement = st
        self.wait = 0.5 + random.random()
        named = re.fullmatch(r"pid=(\d+)", (exc.diag.message_detail or "") if exc is not None else "")
        if named:  # a wait for a transaction to end (pgvkit's own SQL names the pid it waits for)
            self.pid, self.query = int(named[1]), _query_of(url, int(named[1]))
        else:
            self.pid, self.query = _table_lock_holder(url, st)

    def describe(self) -> str:
        return f"held by pid {self.pid}" if self.pid else "held by another session"

    def timeout(self, budget: float) -> LockTimeout:
        return LockTimeout(f"lock needed by line {self.statement.line}", self.pid, budget, self.query)


def abort_when_client_dies(conn) -> None:
    """If this process is killed mid-statement, let the server notice within a second and roll
    the migration back, instead of finishing a long statement for nobody while holding its
    locks (client_connection_check_interval, PostgreSQL 14+; older servers lack it)."""
    if conn.info.server_version >= 140000:
        conn.execute("SET client_connection_check_interval = '1s'")


def _advisory_holder(conn) -> tuple[int | None, str | None]:
    row = conn.execute(
        "SELECT l.pid, a.query FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
        " AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        LOCK_KEY,
    ).fetchone()
    return (row[0], None) if row else (None, None)


def _relations(node) -> list[tuple[str | None, str]]:
    """(schema, name) of the tables a statement touches, from its parse tree."""
    found: list[tuple[str | None, str]] = []

    def walk(value):
        if isinstance(value, ast.RangeVar):
            found.append((value.schemaname, value.relname))
        elif isinstance(value, ast.Node):
            for slot in value:
                walk(getattr(value, slot))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(node)
    return found


def _table_lock_holder(url: str, st: Statement) -> tuple[int | None, str | None]:
    """Who holds a lock on a table the statement needs (asked on a fresh connection)."""
    names = _relations(st.node)
    if not names:
        return None, None
    try:
        with connect(url, autocommit=True, application_name="pgvkit lock probe") as probe:
            row = probe.execute(
                "SELECT l.pid, left(a.query, 200) FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.granted AND l.locktype = 'relation'"
                " AND l.relation = ANY (SELECT to_regclass(CASE WHEN s IS NULL THEN quote_ident(n)"
                "     ELSE quote_ident(s) || '.' || quote_ident(n) END)"
                "     FROM unnest(%s::text[], %s::text[]) AS t (s, n))"
                " AND a.application_name NOT LIKE 'pgvkit%%'"
                " ORDER BY l.mode = 'AccessExclusiveLock' DESC LIMIT 1",
                [[s for s, _ in names], [n for _, n in names]],
            ).fetchone()
    except (PgvkitError, psycopg.Error):
        return None, None
    return (row[0], " ".join(row[1].split())) if row else (None, None)


def _query_of(url: str, pid: int) -> str | None:
    """What a session is running, as far as this role may see (asked on a fresh connection)."""
    try:
        with connect(url, autocommit=True, application_name="pgvkit lock probe") as probe:
            row = probe.execute("SELECT left(query, 200) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    except (PgvkitError, psycopg.Error):
        return None
    return " ".join(row[0].split()) if row and row[0] else None
