"""The migration history in its own schema: one row per migration, and an append-only log."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime

import psycopg

__all__ = ["HistoryRow", "ROLLING_BACK", "ensure", "exists", "applied", "events", "record_event", "kit_schema_version",
           "KIT_SCHEMA", "SCHEMA", "WATCH_DDL"]

SCHEMA = "pgvkit"

# The history as pgvkit 0.1 made it; KIT_SCHEMA below brings it (and every new one) up to date.
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
_KIT_SCHEMA_DDL = """
CREATE TABLE IF NOT EXISTS pgvkit.kit_schema (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    note       text        NOT NULL
);
"""

# where pgvkit watch keeps its looks (pgvkit.watch.history reads and writes it)
WATCH_DDL = """CREATE TABLE IF NOT EXISTS pgvkit.watch_snapshots (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               timestamptz      NOT NULL,
    server           text             NOT NULL,
    standby          boolean          NOT NULL,
    table_name       text             NOT NULL,
    interval_s       double precision NOT NULL,
    searches         jsonb            NOT NULL,
    plan             text,
    index_definition text,
    settings         jsonb            NOT NULL,
    live_rows        bigint,
    dead_rows        bigint,
    recall           jsonb            NOT NULL,
    findings         jsonb            NOT NULL,
    notes            jsonb            NOT NULL,
    baseline         jsonb            NOT NULL,
    db_role          text             NOT NULL DEFAULT current_user
);
CREATE INDEX IF NOT EXISTS watch_snapshots_by_server ON pgvkit.watch_snapshots (table_name, server, at);"""

# The kit's own schema migrations: what a history made by an older pgvkit needs to become today's.
# A history without pgvkit.kit_schema was made by 0.1 (kit schema 1).
KIT_SCHEMA = [
    (2, "migration versions of any length (timestamps such as 20240101120000): integer -> bigint",
     "ALTER TABLE pgvkit.schema_migrations ALTER COLUMN version TYPE bigint;"
     "ALTER TABLE pgvkit.migration_events ALTER COLUMN version TYPE bigint;"),
    (3, "pgvkit.recall_audits: what pgvkit recall measured, for pgvkit verify and the trend",
     """CREATE TABLE IF NOT EXISTS pgvkit.recall_audits (
            id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at               timestamptz      NOT NULL DEFAULT now(),
            table_name       text             NOT NULL,
            index_definition text,
            settings         jsonb            NOT NULL,
            shape            text             NOT NULL CHECK (shape IN ('similar_assets', 'new_vectors')),
            queries          integer          NOT NULL,
            k                integer          NOT NULL,
            recall           double precision NOT NULL,
            recall_p5        double precision NOT NULL,
            p50_ms           double precision,
            p95_ms           double precision,
            target           double precision NOT NULL,
            db_role          text             NOT NULL DEFAULT current_user
        );"""),
    (4, "pgvkit.watch_snapshots: what pgvkit watch saw of production search, a row per server", WATCH_DDL),
    (5, "a rollback that stops part-way is recorded: statuses rolling_back and rollback_failed",
     "ALTER TABLE pgvkit.schema_migrations DROP CONSTRAINT IF EXISTS schema_migrations_status_check;"
     "ALTER TABLE pgvkit.schema_migrations ADD CONSTRAINT schema_migrations_status_check CHECK (status IN"
     " ('running', 'applied', 'failed', 'baselined', 'rolling_back', 'rollback_failed'));"),
]

# A no-transaction down file marks its row rolling_back while it runs, rollback_failed when a
# statement fails: the migration is then neither applied nor undone, and only a rollback finishes it.
ROLLING_BACK = ("rolling_back", "rollback_failed")


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


def ensure(conn: psycopg.Connection) -> list[str]:
    """Create the history schema and tables, or upgrade those an older pgvkit made, in place;
    returns what was upgraded. Call only while holding the migration lock."""
    if not exists(conn):
        with conn.transaction():  # one path for all: 0.1's tables, then every kit schema step
            conn.execute(_DDL)
            _upgrade(conn)
        return []
    return _upgrade(conn)


def kit_schema_version(conn: psycopg.Connection) -> int:
    """The kit schema a history has (1: made by pgvkit 0.1, before pgvkit.kit_schema existed)."""
    if not conn.execute("SELECT to_regclass('pgvkit.kit_schema') IS NOT NULL").fetchone()[0]:
        return 1
    return conn.execute("SELECT coalesce(max(version), 1) FROM pgvkit.kit_schema").fetchone()[0]


def _upgrade(conn: psycopg.Connection) -> list[str]:
    done = []
    with conn.transaction():
        current = kit_schema_version(conn)
        if current == 1:  # no pgvkit.kit_schema yet (IF NOT EXISTS would say so on every migrate)
            conn.execute(_KIT_SCHEMA_DDL)
        for version, note, ddl in KIT_SCHEMA:
            if version > current:
                conn.execute(ddl)
                conn.execute("INSERT INTO pgvkit.kit_schema (version, note) VALUES (%s, %s)", [version, note])
                done.append(note)
    return done


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
