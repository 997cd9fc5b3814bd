"""The migration history in its own schema: one row per migration, and an append-only log."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime

import psycopg

__all__ = ["HistoryRow", "ensure", "exists", "applied", "events", "record_event", "SCHEMA"]

SCHEMA = "pgvkit"

_DDL = """
CREATE SCHEMA IF NOT EXISTS pgvkit;
CREATE TABLE IF NOT EXISTS pgvkit.schema_migrations (
    version       integer PRIMARY KEY,
    name          text        NOT NULL,
    checksum      text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('running', 'applied', 'failed', 'baselined')),
    transactional boolean     NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    execution_ms  integer,
    applied_by    text        NOT NULL DEFAULT current_user,
    error         text
);
CREATE TABLE IF NOT EXISTS pgvkit.migration_events (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version  integer     NOT NULL,
    event    text        NOT NULL CHECK (event IN ('start', 'apply', 'fail', 'baseline', 'repair', 'rollback')),
    checksum text,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    db_role  text        NOT NULL DEFAULT current_user,
    client   text,
    detail   text
);
CREATE OR REPLACE FUNCTION pgvkit.events_are_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pgvkit.migration_events is append-only';
END;
$$;
CREATE OR REPLACE TRIGGER migration_events_append_only
    BEFORE UPDATE OR DELETE ON pgvkit.migration_events
    FOR EACH ROW EXECUTE FUNCTION pgvkit.events_are_append_only();
"""


@dataclass(frozen=True)
class HistoryRow:
    version: int
    name: str
    checksum: str
    status: str
    transactional: bool
    applied_at: datetime
    execution_ms: int | None
    applied_by: str
    error: str | None


def exists(conn: psycopg.Connection) -> bool:
    """True when the history table is there (read-only commands never create it)."""
    return conn.execute("SELECT to_regclass('pgvkit.schema_migrations') IS NOT NULL").fetchone()[0]


def ensure(conn: psycopg.Connection) -> None:
    """Create the history schema and tables; call only while holding the migration lock."""
    if exists(conn):
        return
    with conn.transaction():
        conn.execute(_DDL)


def applied(conn: psycopg.Connection) -> dict[int, HistoryRow]:
    """Every recorded migration by version (empty when there is no history yet)."""
    if not exists(conn):
        return {}
    rows = conn.execute(
        "SELECT version, name, checksum, status, transactional, applied_at, execution_ms,"
        " applied_by, error FROM pgvkit.schema_migrations ORDER BY version"
    ).fetchall()
    return {r[0]: HistoryRow(*r) for r in rows}


def events(conn: psycopg.Connection, limit: int = 50) -> list[dict]:
    """The newest events first."""
    if not exists(conn):
        return []
    cur = conn.execute(
        "SELECT id, version, event, checksum, at, db_role, client, detail"
        " FROM pgvkit.migration_events ORDER BY id DESC LIMIT %s",
        [limit],
    )
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _client() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no login name in some containers
        return socket.gethostname()


def record_event(
    conn: psycopg.Connection, version: int, event: str, checksum: str | None = None, detail: str | None = None
) -> None:
    conn.execute(
        "INSERT INTO pgvkit.migration_events (version, event, checksum, client, detail)"
        " VALUES (%s, %s, %s, %s, %s)",
        [version, event, checksum, _client(), detail],
    )
