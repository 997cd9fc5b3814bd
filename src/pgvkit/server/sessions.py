"""What a session inherits from where it connects: each setting's value and source (the role,
the database, PGOPTIONS, the server's configuration), and whether it may write at all (a hot
standby, or default_transaction_read_only on the role or database).

    describe(conn, "statement_timeout")   # "statement_timeout = 2s, set on role app; ALTER ROLE ..."
    require_writable(conn, "pgvkit load") # one line with the fix, before anything is written
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..errors import PgvkitError

__all__ = ["describe", "read_only", "require_writable", "ReadOnlyServer"]


class ReadOnlyServer(PgvkitError):
    """A writing command was pointed at a hot standby or a read-only session."""


def describe(conn: psycopg.Connection, name: str, off: str = "0") -> str:
    """`name = value, set <where>; <how to change it>` in one line, from pg_settings' source;
    `off` is the value that lifts it for pgvkit alone."""
    value, source, sourcefile, sourceline = conn.execute(
        "SELECT current_setting(name), source, sourcefile, sourceline FROM pg_settings WHERE name = %s",
        [name]).fetchone()
    role = sql.Identifier(conn.info.user).as_string(conn)
    db = sql.Identifier(conn.info.dbname).as_string(conn)
    alone = f"for pgvkit alone: PGOPTIONS='-c {name}={off}'"
    where, fix = {
        "user": (f"on role {role}", f"ALTER ROLE {role} RESET {name} (or SET it for the application's role only), or "
                                    + alone),
        "database user": (f"on role {role} in database {db}",
                          f"ALTER ROLE {role} IN DATABASE {db} RESET {name}, or {alone}"),
        "database": (f"on database {db}", f"ALTER DATABASE {db} RESET {name}, or {alone}"),
        "client": ("by the connection (PGOPTIONS, or options= in the URL)", "raise or remove it there"),
        "configuration file": ("in the server's configuration" + (f" ({sourcefile}:{sourceline})" if sourcefile else ""),
                               f"ALTER SYSTEM SET {name} = ... and SELECT pg_reload_conf(), or {alone}"),
        "session": ("by a SET in this session (a migration file's own)", "raise it in that file"),
    }.get(source, (f"by {source}", alone))
    return f"{name} = {value}, set {where}; {fix}"


def read_only(conn: psycopg.Connection) -> tuple[str, str] | None:
    """Why this session may not write and the fix, in words (None: it may)."""
    standby, ro = conn.execute("SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'"
                               ).fetchone()
    host = conn.info.host
    where = f"{conn.info.dbname} on {host if host and not host.startswith('/') else 'the local socket'}"
    if standby:
        return (f"{where} is a hot standby (in recovery, read-only)",
                "point --database-url (or DATABASE_URL) at the primary; the standbys replay what it does")
    if ro:
        setting, _, fix = describe(conn, "default_transaction_read_only", "off").partition("; ")
        return f"{where} opens read-only transactions ({setting})", fix
    return None


def require_writable(conn: psycopg.Connection, what: str) -> None:
    """Refuse, in one line and before anything is written, a standby or a read-only session."""
    why = read_only(conn)
    if why:
        raise ReadOnlyServer(f"{what} writes, and {why[0]}: {why[1]}")
