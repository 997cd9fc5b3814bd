"""Connection poolers in transaction mode (PgBouncer's pool_mode = transaction, and the like).

Behind one, a client connection's transactions run on whichever server session is free: a
session-level advisory lock is taken on one backend and released on another, a SET stays on a
backend the application then uses, and a migration's SET maintenance_work_mem runs on another
backend than its CREATE INDEX. The commands that need a session of their own (migrate, rollback,
tune, confirm, watch, backfill, ...) therefore refuse such a URL and take the server's direct one
from PGVKIT_DIRECT_URL; the read-only ones (status, verify, recall) work through the pooler.

`session_survives(url)` asks the server itself: with a second client holding a transaction open,
does the first client's next statement still run on its own backend?
"""

from __future__ import annotations

import os

from ..errors import PgvkitError

__all__ = ["DIRECT_ENV", "PoolerInTheWay", "session_survives", "require_session"]

DIRECT_ENV = "PGVKIT_DIRECT_URL"


class PoolerInTheWay(PgvkitError):
    """A command that needs a session was given a URL through a transaction-mode pooler."""


def session_survives(url: str) -> tuple[bool, str]:
    """Whether a connection to `url` keeps one server session across its transactions; with the
    evidence in words. A direct connection (or a session-mode pooler) always does. A
    transaction-mode pooler hands an idle client's backend to the next client that needs one:
    the second client, holding a transaction open, gets the first one's backend, or the first
    one's next statement runs on another."""
    from .db import connect

    with connect(url, autocommit=True, application_name="pgvkit pooler probe") as first, \
            connect(url, application_name="pgvkit pooler probe") as second:
        before = first.execute("SELECT pg_backend_pid()").fetchone()[0]
        held = second.execute("SELECT pg_backend_pid()").fetchone()[0]  # a transaction, held open
        after = first.execute("SELECT pg_backend_pid()").fetchone()[0]
        second.rollback()
    if held == before:
        return False, f"another client's transaction ran on this connection's backend (pid {before})"
    if after != before:
        return False, f"one connection's statements ran on backends {before} and {after}"
    return True, f"backend {before} kept"


def require_session(url: str, masked: str, what: str) -> None:
    """Refuse, in one line with the fix, a URL whose sessions do not survive their transactions."""
    survives, evidence = session_survives(url)
    if survives:
        return
    given = os.environ.get(DIRECT_ENV)
    fix = (f"{DIRECT_ENV} is set, but --database-url overrides it: drop --database-url" if given else
           f"give the server's direct URL (host and port of PostgreSQL itself, not the pooler's): "
           f"{DIRECT_ENV}=postgresql://USER:PASSWORD@DBHOST:5432/DBNAME, or --database-url")
    raise PoolerInTheWay(f"{what} needs a session of its own (an advisory lock, session settings), and {masked} goes "
                         f"through a transaction-pooling connection pooler such as PgBouncer ({evidence}); {fix}")

