"""One tuning run per database: an advisory lock taken before the scratch table is touched
(dropped, filled, indexed) and held until the run's last cleanup, so a second `pgvkit tune` or
notebook 04 never drops another run's table; it stops in one line naming the run that holds it."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import psycopg

from ..errors import PgvkitError
from ..migrator import LOCK_KEY
from ..server.db import connect

__all__ = ["TUNE_LOCK", "TuneRunning", "TuneLock", "hold", "lock"]

TUNE_LOCK = (LOCK_KEY[0], 2)  # (classid, objid) of the advisory lock
_APP = "pgvkit tune"
_held: dict[str, TuneLock] = {}  # database URL -> the lock this process holds on it


class TuneRunning(PgvkitError):
    """Another tuning run holds the tune lock of this database."""

    def __init__(self, database: str, holder: str | None, since: str | None, backend: int | None):
        self.holder, self.since, self.backend = holder, since, backend
        who = f"{holder}, since {since}" if holder else "another session"
        super().__init__(f"a pgvkit tune is already running on {database} ({who}) and owns the scratch table "
                         "pgvkit.tune_workload: wait for it to finish and run this again, or stop that process "
                         "(Ctrl-C, or kill its pid); the next run drops what a killed run left")


class TuneLock:
    """The tune lock on its own connection; `acquire()` raises TuneRunning when held elsewhere."""

    def __init__(self, url: str):
        self.url = url
        self.conn = None

    @property
    def held(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def acquire(self) -> TuneLock:
        if self.held:
            return self
        me = f"{_APP} (process {os.getpid()} on {socket.gethostname()})"
        conn = connect(self.url, autocommit=True, application_name=me[:63])
        # refused while no session holds it: a holder whose connection just closed, its session not yet ended
        if not (self._try(conn) or (self._holder(conn) is None and self._try(conn))):
            try:
                row = self._holder(conn)
                database = conn.info.dbname
            finally:
                conn.close()
            raise TuneRunning(database, *(row or (None, None, None)))
        self.conn = conn
        _held[self.url] = self
        return self

    @staticmethod
    def _try(conn) -> bool:
        return conn.execute("SELECT pg_try_advisory_lock(%s, %s)", TUNE_LOCK).fetchone()[0]

    @staticmethod
    def _holder(conn):
        """(application name, since, pid) of the session holding the lock here, or None."""
        return conn.execute(
            "SELECT a.application_name, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
            " || ' UTC', l.pid FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
            " AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database())", TUNE_LOCK).fetchone()

    def release(self) -> None:
        """Let the next run in: unlocked before the connection closes (a closed connection's
        session, and its lock, end a moment later, after the next run may have asked)."""
        if _held.get(self.url) is self:
            del _held[self.url]
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", TUNE_LOCK)
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

    def __enter__(self) -> TuneLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock(url: str) -> TuneLock:
    """Take the tune lock for a run spread over several calls (notebook 04's cells); `release()`
    it at the end (a kernel that exits releases it too). The lock this process holds already is
    returned as it is: a notebook run twice in one kernel does not stop at its own lock."""
    current = _held.get(url)
    if current is not None and current.held:
        return current
    return TuneLock(url).acquire()


@contextlib.contextmanager
def hold(url: str) -> Iterator[None]:
    """The tune lock for one call: kept if this process already holds it (pgvkit tune, a
    notebook's `lock()`), else taken for the call and released after it."""
    current = _held.get(url)
    if current is not None and current.held:
        yield
        return
    with TuneLock(url):
        yield
