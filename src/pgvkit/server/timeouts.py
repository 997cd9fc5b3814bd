"""Timeouts: a step that is long by design (an index build, a load, tune's copies and builds)
sets its own statement_timeout, so the one a team puts on its application role cannot kill it;
a timeout that still fires is named with where its value came from and how to change it.

    lift(conn, local=False)                    # statement_timeout (and the idle one) off for this step
    explain_fired(url, exc)                    # "statement_timeout = 2s, set on role app; ALTER ROLE ..."
"""

from __future__ import annotations

import psycopg

from ..errors import PgvkitError
from .sessions import describe

__all__ = ["LIFTED", "lift", "restore", "fired", "explain_fired", "TimeoutFired"]

# what a long step turns off for itself: a statement's own limit, and the two that end a
# session whose transaction waits (a load's connections wait for each other before committing)
LIFTED = ("statement_timeout", "idle_in_transaction_session_timeout")

# the server's words for each timeout (English; other languages fall back to the SQLSTATE)
_MESSAGES = {
    "statement_timeout": "statement timeout",
    "lock_timeout": "lock timeout",
    "idle_in_transaction_session_timeout": "idle-in-transaction timeout",
    "transaction_timeout": "transaction timeout",
}
_SQLSTATES = {"25P03": "idle_in_transaction_session_timeout", "25P04": "transaction_timeout",
              "55P03": "lock_timeout"}


class TimeoutFired(PgvkitError):
    """A server-side timeout cancelled a step; the text says where the setting came from."""


def lift(conn: psycopg.Connection, *, local: bool) -> dict[str, str]:
    """Turn LIFTED off for this step (for the transaction when `local`); returns what they were."""
    before = {}
    for name in LIFTED:
        before[name] = conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0]
        conn.execute("SELECT set_config(%s, '0', %s)", [name, local])
    return before


def restore(conn: psycopg.Connection, before: dict[str, str], *, local: bool) -> None:
    for name, value in before.items():
        conn.execute("SELECT set_config(%s, %s, %s)", [name, value, local])


def fired(exc: BaseException) -> str | None:
    """The timeout setting that cancelled a statement, from the server's error (None: not a timeout)."""
    if not isinstance(exc, psycopg.Error):
        return None
    if exc.sqlstate in _SQLSTATES:
        return _SQLSTATES[exc.sqlstate]
    text = str(exc.diag.message_primary or exc)
    for name, words in _MESSAGES.items():
        if words in text:
            return name
    return None


def explain_fired(url: str, exc: BaseException, conn: psycopg.Connection | None = None) -> str | None:
    """One line for a timeout that cancelled a step (None when it was not a timeout): which
    setting, its value and source, and the fix. Read on `conn` when it can still answer (a SET
    in the session counts), else on a fresh session (role, database, PGOPTIONS and the server's
    configuration reach it too)."""
    name = fired(exc)
    if name is None:
        return None
    try:
        if conn is not None and not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return describe(conn, name)
        with psycopg.connect(url, autocommit=True, connect_timeout=10, prepare_threshold=None) as fresh:
            return describe(fresh, name)
    except psycopg.Error:
        return None
