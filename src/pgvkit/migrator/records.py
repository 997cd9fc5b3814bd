"""Recording without running: baseline (a schema the old docker init made) and repair (an
applied file that changed on purpose), each one transaction with its event."""

from __future__ import annotations

from . import history
from .files import Migration

__all__ = ["record_baseline", "record_repair", "forget_attempt"]


def record_baseline(conn, migrations: list[Migration], version: int, rows: dict) -> list[str]:
    """Record every migration up to `version` not yet in the history as baselined."""
    recorded = []
    with conn.transaction():
        for m in migrations:
            if m.version > version or m.version in rows:
                continue
            conn.execute(
                "INSERT INTO pgvkit.schema_migrations"
                " (version, name, checksum, status, transactional, execution_ms)"
                " VALUES (%s, %s, %s, 'baselined', %s, 0)",
                [m.version, m.name, m.checksum, m.transactional],
            )
            history.record_event(conn, m.version, "baseline", m.checksum, "recorded without running")
            recorded.append(m.id)
    return recorded


def record_repair(conn, m: Migration, old_checksum: str, reason: str) -> None:
    """Accept the file's new checksum, keeping the old one and the reason in the event log."""
    with conn.transaction():
        conn.execute("UPDATE pgvkit.schema_migrations SET checksum = %s WHERE version = %s", [m.checksum, m.version])
        history.record_event(conn, m.version, "repair", m.checksum, f"{old_checksum} -> {m.checksum}: {reason}")


def forget_attempt(conn, version: int, row, reason: str) -> None:
    """A migration that stopped part-way and whose file was then removed: drop its history row,
    keeping the attempt and the reason in the event log."""
    with conn.transaction():
        conn.execute("DELETE FROM pgvkit.schema_migrations WHERE version = %s AND status IN ('running', 'failed')",
                     [version])
        history.record_event(conn, version, "repair", row.checksum, f"forgot the {row.status} attempt at "
                             f"{version:03d}_{row.name} (file removed): {reason}")
