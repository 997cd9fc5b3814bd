"""Applying: running the statements of one migration (or its down file) on a connection that
holds the migration lock, recording each outcome in the history.

A transactional file runs in one transaction with its history row, retried whole while a table
lock is busy; a no-transaction file runs statement by statement, marked running, then applied
(or failed, and resumed from its top next time: its statements are idempotent).
"""

from __future__ import annotations

import contextlib
import time

import psycopg
from pglast import ast
from psycopg import errors as pgerrors
from psycopg import sql

from .. import history
from ..db import scrub
from ..display import Echo
from ..explain import explain
from ..errors import ExtensionPrivilegeError, ExtensionUnavailable, LockTimeout, MigrationFailed, PgvkitError
from ..migrations import Migration
from ..sqlfile import SQLFile, Statement
from .lock import LockBusy
from .plan import build_estimate, duration, n_log_n, pending_build

__all__ = ["Applier"]


class Applier:
    """Runs migrations on one connection (the caller holds the migration lock)."""

    def __init__(self, url: str, *, lock_timeout: str, retry_budget: float, echo: Echo, progress: bool = True):
        self.url = url
        self.lock_timeout = lock_timeout
        self.retry_budget = retry_budget
        self.echo = echo
        self.progress = progress

    def apply(self, conn: psycopg.Connection, m: Migration, previous) -> None:
        """Run one migration's up file; `previous` is its history row when resuming."""
        if m.transactional:
            self._apply_transactional(conn, m)
        else:
            self._apply_autocommit(conn, m, previous)

    def notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized in ("NOTICE", "WARNING") and diag.message_primary:
            extra = " ".join(x for x in (diag.message_detail, diag.message_hint) if x)
            self.echo(f"  {diag.severity}: {diag.message_primary}" + (f" ({extra})" if extra else ""))


    def _apply_transactional(self, conn: psycopg.Connection, m: Migration) -> None:
        def attempt(n: int) -> None:
            start = time.perf_counter()
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [self.lock_timeout])
                for st in m.up.statements:
                    self._execute(conn, m, m.up, st, transactional=True)
                elapsed = int((time.perf_counter() - start) * 1000)
                # a row left by an earlier no-transaction run of this version (failed part-way, its file
                # since made transactional) is replaced, not duplicated
                conn.execute(
                    "INSERT INTO pgvkit.schema_migrations"
                    " (version, name, checksum, status, transactional, execution_ms)"
                    " VALUES (%s, %s, %s, 'applied', true, %s) ON CONFLICT (version) DO UPDATE SET"
                    " name = excluded.name, checksum = excluded.checksum, status = 'applied', transactional = true,"
                    " execution_ms = excluded.execution_ms, error = NULL, applied_at = now(), applied_by = current_user",
                    [m.version, m.name, m.checksum, elapsed],
                )
                history.record_event(conn, m.version, "apply", m.checksum, f"attempt {n}")

        try:
            self._retrying(attempt)
        except MigrationFailed as exc:
            self._log_failure(conn, m, exc)
            raise

    def _apply_autocommit(self, conn: psycopg.Connection, m: Migration, previous) -> None:
        estimate = build_estimate(m)
        if estimate:  # carried to the rows the build will index, counted before it starts
            estimate = build_estimate(m, (pending_build(conn, m) or {}).get("rows"))
        start = time.perf_counter()
        if previous is None:
            conn.execute(
                "INSERT INTO pgvkit.schema_migrations (version, name, checksum, status, transactional)"
                " VALUES (%s, %s, %s, 'running', false)",
                [m.version, m.name, m.checksum],
            )
        else:
            self.echo(f"  resuming: the last run of {m.id} ended {previous.status}")
            conn.execute(
                "UPDATE pgvkit.schema_migrations SET status = 'running', checksum = %s, error = NULL,"
                " applied_at = now(), applied_by = current_user WHERE version = %s",
                [m.checksum, m.version],
            )
            self._drop_invalid_indexes(conn, m)
        history.record_event(conn, m.version, "start", m.checksum)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [self.lock_timeout])
        try:
            for st in m.up.statements:
                self._execute_with_retry(conn, m, m.up, st)
        except KeyboardInterrupt:  # psycopg cancelled the statement on the server; leave nothing half-built
            self._interrupted(m)
            raise
        except (MigrationFailed, LockTimeout) as exc:
            conn.execute(
                "UPDATE pgvkit.schema_migrations SET status = 'failed', error = %s WHERE version = %s",
                [str(exc), m.version],
            )
            self._log_failure(conn, m, exc)
            raise
        finally:
            if not conn.closed:  # else the error above says the connection was lost; keep it
                conn.execute("RESET lock_timeout")
        took = time.perf_counter() - start
        conn.execute(
            "UPDATE pgvkit.schema_migrations SET status = 'applied', execution_ms = %s WHERE version = %s",
            [int(took * 1000), m.version],
        )
        history.record_event(conn, m.version, "apply", m.checksum)
        if estimate:
            tuned = estimate.get("tuned_rows")
            scaled = (f"; tune's {duration(n_log_n(estimate['build_s'], estimate['rows'], tuned))} for the "
                      f"{tuned:,} rows it counted, scaled n log n" if tuned else "")
            self.echo(f"  took {duration(took)}; pgvkit tune estimated the build at {duration(estimate['build_s'])} "
                      f"for {estimate['rows']:,} rows ({took / max(estimate['build_s'], 1e-9):.2f}x{scaled})")

    def _execute_with_retry(self, conn, m: Migration, f: SQLFile, st: Statement) -> None:
        def attempt(n: int) -> None:
            if n > 1:  # a concurrent build that timed out waiting for a lock left its index INVALID
                try:
                    self._drop_invalid_index(conn, st)
                except pgerrors.LockNotAvailable:
                    raise LockBusy(self.url, st) from None
            self._execute(conn, m, f, st, transactional=False)

        self._retrying(attempt)

    def _retrying(self, attempt) -> None:
        """Call attempt(n) until it does not hit lock_timeout, within the retry budget."""
        deadline = time.monotonic() + self.retry_budget
        n = 0
        while True:
            n += 1
            try:
                return attempt(n)
            except LockBusy as busy:
                if time.monotonic() + busy.wait > deadline:
                    raise busy.timeout(self.retry_budget) from None
                self.echo(f"  lock busy ({busy.describe()}); retrying in {busy.wait:.1f}s")
                time.sleep(busy.wait)

    def _interrupted(self, m: Migration) -> None:
        """Ctrl-C during a no-transaction migration: on a session of its own (the migrating one may
        be mid-cancel), the attempt marked failed and any INVALID index its interrupted
        CREATE INDEX CONCURRENTLY left dropped, so nothing half-built stays behind."""
        with psycopg.connect(self.url, autocommit=True) as fresh:
            fresh.execute("UPDATE pgvkit.schema_migrations SET status = 'failed', error = %s WHERE version = %s",
                          ["interrupted", m.version])
            self._log_failure(fresh, m, RuntimeError("interrupted"))
            dropped = self._drop_invalid_indexes(fresh, m)
        self.echo(f"  interrupted: {m.id} stopped" + (f"; dropped the INVALID index {', '.join(dropped)} its build "
                                                      "left" if dropped else "")
                  + "; pgvkit migrate starts it again")

    def _execute(self, conn, m: Migration, f: SQLFile, st: Statement, *, transactional: bool) -> None:
        if isinstance(st.node, ast.IndexStmt) and st.node.idxname:
            from ..buildprogress import watch

            stop = watch(self.url, conn.info.backend_pid, st.node.idxname, progress=self.progress, echo=self.echo)
            try:
                return self._run(conn, m, f, st, transactional=transactional)
            finally:
                stop()
        return self._run(conn, m, f, st, transactional=transactional)

    def _run(self, conn, m: Migration, f: SQLFile, st: Statement, *, transactional: bool) -> None:
        try:
            conn.execute(st.sql)
        except pgerrors.LockNotAvailable:
            raise LockBusy(self.url, st) from None
        except pgerrors.InsufficientPrivilege as exc:
            if isinstance(st.node, ast.CreateExtensionStmt) and st.node.extname == "vector":
                raise ExtensionPrivilegeError(conn.info.dbname, conn.info.user) from None
            raise self._failed(m, f, st, exc, transactional) from None
        except (pgerrors.UndefinedFile, pgerrors.FeatureNotSupported) as exc:
            if isinstance(st.node, ast.CreateExtensionStmt) and st.node.extname == "vector":
                raise ExtensionUnavailable(conn.info.dbname) from None
            raise self._failed(m, f, st, exc, transactional) from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and conn.closed:
                raise PgvkitError(
                    f"lost the connection to the server while running {m.id} at {f.path}:{st.line}; "
                    "check the server, then run pgvkit status and pgvkit migrate again"
                ) from None
            raise self._failed(m, f, st, exc, transactional) from None

    def _failed(self, m, f: SQLFile, st: Statement, exc: psycopg.Error, transactional: bool) -> MigrationFailed:
        line = st.line
        pos = exc.diag.statement_position
        if pos:  # 1-based character position inside the statement
            line += st.sql.count("\n", 0, int(pos) - 1)
        message = scrub(" ".join(str(exc.diag.message_primary or exc).split()), self.url)
        known = explain(message, exc.sqlstate)
        if known.checks:  # what it means and the fix, by SQLSTATE when the words are another language's
            message += f" ({known[0].detail}: {known[0].fix})"
        return MigrationFailed(m.label, f.path, line, message, transactional=transactional)

    def _log_failure(self, conn, m: Migration, exc: Exception) -> None:
        with contextlib.suppress(psycopg.Error):
            history.record_event(conn, m.version, "fail", m.checksum, str(exc)[:2000])

    def _drop_invalid_indexes(self, conn, m: Migration) -> list[str]:
        """An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index: drop it to rebuild.
        Returns the names dropped."""
        return [name for st in m.up.statements if (name := self._drop_invalid_index(conn, st))]

    def _drop_invalid_index(self, conn, st: Statement) -> str | None:
        """The INVALID index a failed CREATE INDEX CONCURRENTLY statement left, dropped (its name),
        so that running it again builds it: with IF NOT EXISTS it would skip the broken one."""
        node = st.node
        if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname):
            return None
        schema = node.relation.schemaname
        name = sql.Identifier(schema, node.idxname) if schema else sql.Identifier(node.idxname)
        regname = name.as_string(conn)
        row = conn.execute(
            "SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", [regname]
        ).fetchone()
        if not (row and row[0]):
            return None
        self.echo(f"  dropping invalid index {regname} left by an interrupted build")
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))
        return regname

    def run_down(self, conn, m: Migration) -> None:
        down = m.down
        assert down is not None
        if down.transactional:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", [self.lock_timeout])
                for st in down.statements:
                    self._execute(conn, m, down, st, transactional=True)
                self._forget(conn, m, down)
        else:
            for st in down.statements:
                self._execute_with_retry(conn, m, down, st)
            with conn.transaction():
                self._forget(conn, m, down)

    @staticmethod
    def _forget(conn, m: Migration, down: SQLFile) -> None:
        conn.execute("DELETE FROM pgvkit.schema_migrations WHERE version = %s", [m.version])
        history.record_event(conn, m.version, "rollback", down.checksum, f"ran {down.path.name}")
