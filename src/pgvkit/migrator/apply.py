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
from pglast.enums import ObjectType
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.pq import TransactionStatus

from ..display import Echo
from ..server import timeouts
from ..server.db import scrub
from ..server.explain import explain
from . import history
from ..errors import (ExtensionPrivilegeError, ExtensionUnavailable, LockTimeout, MigrationFailed, PgvkitError,
                      RollbackFailed)
from .files import Migration
from .lock import LockBusy
from .plan import build_estimate, duration, n_log_n, pending_build
from .sqlfile import SQLFile, Statement

__all__ = ["Applier"]

# statements long by design: they run with no statement_timeout of the role's or database's
# (unless the file sets its own before them), since an index build stopped by a timeout meant
# for the application's queries leaves nothing but an INVALID index
_LONG = (ast.IndexStmt, ast.ReindexStmt, ast.ClusterStmt, ast.VacuumStmt, ast.RefreshMatViewStmt)


def _sets(st: Statement, names) -> bool:
    return isinstance(st.node, ast.VariableSetStmt) and st.node.name in names


def _at(f: SQLFile, st: Statement) -> int:
    """Where `st` stands in its file."""
    return next(i for i, s in enumerate(f.statements) if s is st)


def _long_by_design(f: SQLFile, st: Statement) -> bool:
    if not isinstance(st.node, _LONG):
        return False
    return not any(_sets(s, timeouts.LIFTED) for s in f.statements[:_at(f, st)])


class Applier:
    """Runs migrations on one connection (the caller holds the migration lock)."""

    def __init__(self, url: str, *, lock_timeout: str, retry_budget: float, echo: Echo, progress: bool = True):
        self.url = url
        self.lock_timeout = lock_timeout
        self.retry_budget = retry_budget
        self.echo = echo
        self.progress = progress
        self._rollback_to = 0  # set by run_down: the --to that resumes a down file

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
        history.record_event(conn, m.version, "start", m.checksum)
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [self.lock_timeout])
        try:
            self._drop_before(conn, m.up)
            for st in m.up.statements:
                self._execute_with_retry(conn, m, m.up, st)
        except KeyboardInterrupt:  # psycopg cancelled the statement on the server; leave nothing half-built
            self._interrupted(m, m.up, "failed", "pgvkit migrate starts it again")
            raise
        except (MigrationFailed, LockTimeout) as exc:
            conn.execute(
                "UPDATE pgvkit.schema_migrations SET status = 'failed', error = %s WHERE version = %s",
                [str(exc), m.version],
            )
            self._log_failure(conn, m, exc)
            self._drop_leftovers(conn, m.up)
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

    def _drop_before(self, conn, f: SQLFile) -> None:
        """Before a no-transaction file runs: the INVALID indexes an earlier attempt (pgvkit's or
        by hand) left where its builds would meet them, dropped so that they are built again,
        never skipped by IF NOT EXISTS and renamed into service; retried while a lock is busy."""
        for st in f.statements:
            def attempt(n: int, st=st) -> None:
                try:
                    self._drop_invalid_index(conn, st)
                except pgerrors.LockNotAvailable:
                    raise LockBusy(self.url, st) from None

            self._retrying(attempt)

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

    def _interrupted(self, m: Migration, f: SQLFile, status: str, resume: str) -> None:
        """Ctrl-C during a no-transaction file (up or down): on a session of its own (the running
        one may be mid-cancel), the attempt marked `status` and any INVALID index its interrupted
        CREATE INDEX CONCURRENTLY left dropped, so nothing half-built stays behind."""
        with psycopg.connect(self.url, autocommit=True) as fresh:
            fresh.execute("UPDATE pgvkit.schema_migrations SET status = %s, error = %s WHERE version = %s",
                          [status, "interrupted", m.version])
            self._log_failure(fresh, m, RuntimeError("interrupted" if f is m.up else f"interrupted: {f.path.name}"))
            left = self._drop_leftovers(fresh, f)
        self.echo(f"  interrupted: {f.path.name} stopped{left}; {resume}")

    def _drop_leftovers(self, conn, f: SQLFile) -> str:
        """After a failed or interrupted no-transaction file: drop the INVALID indexes its builds
        left (one that is ready is updated by every write), waiting no longer than lock_timeout;
        what was done, as words for the message."""
        try:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", [self.lock_timeout])
            dropped = self._drop_invalid_indexes(conn, f)
        except pgerrors.LockNotAvailable:
            return ("; its build left an INVALID index that a session's lock keeps from being dropped now "
                    "(the next run drops it)")
        except psycopg.Error:
            return ""
        return f"; dropped the INVALID index {', '.join(dropped)} its build left" if dropped else ""

    def _execute(self, conn, m: Migration, f: SQLFile, st: Statement, *, transactional: bool) -> None:
        if not transactional:
            self._guard_swap(conn, m, f, st)
        before = timeouts.lift(conn, local=transactional) if _long_by_design(f, st) else None
        try:
            if isinstance(st.node, ast.IndexStmt) and st.node.idxname:
                from ..server.buildprogress import watch

                stop = watch(self.url, conn.info.backend_pid, st.node.idxname, progress=self.progress, echo=self.echo)
                try:
                    return self._run(conn, m, f, st, transactional=transactional)
                finally:
                    stop()
            return self._run(conn, m, f, st, transactional=transactional)
        finally:
            state = None if conn.closed else conn.info.transaction_status
            if before is not None and state in (TransactionStatus.IDLE, TransactionStatus.INTRANS):
                timeouts.restore(conn, before, local=state == TransactionStatus.INTRANS)

    def _run(self, conn, m: Migration, f: SQLFile, st: Statement, *, transactional: bool) -> None:
        try:
            conn.execute(st.sql)
        except pgerrors.LockNotAvailable as exc:
            raise LockBusy(self.url, st, exc) from None
        except pgerrors.InsufficientPrivilege as exc:
            if isinstance(st.node, ast.CreateExtensionStmt) and st.node.extname == "vector":
                raise ExtensionPrivilegeError(conn.info.dbname, conn.info.user) from None
            raise self._failed(conn, m, f, st, exc, transactional) from None
        except (pgerrors.UndefinedFile, pgerrors.FeatureNotSupported) as exc:
            if isinstance(st.node, ast.CreateExtensionStmt) and st.node.extname == "vector":
                raise ExtensionUnavailable(conn.info.dbname) from None
            raise self._failed(conn, m, f, st, exc, transactional) from None
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError) and conn.closed:
                raise PgvkitError(
                    f"lost the connection to the server while running {m.id} at {f.path}:{st.line}; "
                    "check the server, then run pgvkit status and pgvkit migrate again"
                ) from None
            raise self._failed(conn, m, f, st, exc, transactional) from None

    def _failed(self, conn, m, f: SQLFile, st: Statement, exc: psycopg.Error, transactional: bool) -> MigrationFailed:
        line = st.line
        pos = exc.diag.statement_position
        if pos:  # 1-based character position inside the statement
            line += st.sql.count("\n", 0, int(pos) - 1)
        message = scrub(" ".join(str(exc.diag.message_primary or exc).split()), self.url)
        name = timeouts.fired(exc)
        own = next((s for s in f.statements if _sets(s, (name,))), None) if name else None
        where = (f"{name} is set by the file itself at line {own.line}; raise it there" if own else
                 timeouts.explain_fired(self.url, exc, conn) if name else None)
        known = explain(message, exc.sqlstate)
        if where:  # which setting, set where, and how to change it
            message += f" ({where})"
        elif known.checks:  # what it means and the fix, by SQLSTATE when the words are another language's
            message += f" ({known[0].detail}: {known[0].fix})"
        return MigrationFailed(m.label, f.path, line, message, transactional=transactional)

    def _log_failure(self, conn, m: Migration, exc: Exception) -> None:
        with contextlib.suppress(psycopg.Error):
            history.record_event(conn, m.version, "fail", m.checksum, str(exc)[:2000])

    def _drop_invalid_indexes(self, conn, f: SQLFile) -> list[str]:
        """An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index: drop each one the
        file's builds would meet, so that they build it again. Returns the names dropped."""
        return [name for st in f.statements if (name := self._drop_invalid_index(conn, st))]

    def _guard_swap(self, conn, m: Migration, f: SQLFile, st: Statement) -> None:
        """A swap (DROP INDEX name, then ALTER INDEX temp RENAME TO name) goes ahead only while
        `temp` exists and is valid: never an INVALID index renamed into service, never the name
        left with no index. Checked before the DROP and before the RENAME."""
        node = st.node
        pairs = []  # (the index whose name is taken over, the index that takes it over)
        if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX:
            later = f.statements[_at(f, st) + 1:]
            for obj in node.objects:
                names = [n.sval for n in obj]
                for r in (s.node for s in later):
                    if (isinstance(r, ast.RenameStmt) and r.renameType == ObjectType.OBJECT_INDEX
                            and r.newname == names[-1]):
                        pairs.append((names, [x for x in (r.relation.schemaname or (names[:-1] or [None])[0],
                                                          r.relation.relname) if x]))
        elif isinstance(node, ast.RenameStmt) and node.renameType == ObjectType.OBJECT_INDEX:
            pairs.append(([node.newname], [x for x in (node.relation.schemaname, node.relation.relname) if x]))
        for old, new in pairs:
            valid = conn.execute("SELECT i.indisvalid AND i.indisready FROM pg_index i WHERE i.indexrelid ="
                                 " to_regclass(%s)", [sql.Identifier(*new).as_string(conn)]).fetchone()
            if valid and valid[0]:
                continue
            if not valid and isinstance(node, ast.RenameStmt):
                continue  # nothing to rename (IF EXISTS): the swap already happened
            if not valid and conn.execute("SELECT to_regclass(%s) IS NULL", [sql.Identifier(*old).as_string(conn)]
                                          ).fetchone()[0]:
                continue  # neither is there: nothing to keep
            what = "INVALID (its build did not finish)" if valid else "missing"
            raise MigrationFailed(m.label, f.path, st.line, f"refused to put {'.'.join(new)} in place of "
                                  f"{'.'.join(old)}: it is {what}, and {'.'.join(old)} keeps serving",
                                  transactional=False, **self._resume_for(m, f))

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

    def run_down(self, conn, m: Migration, to: int = 0) -> None:
        """Run one migration's down file, leaving migrations <= `to` applied (the command that
        resumes a down file stopped part-way names it)."""
        down = m.down
        assert down is not None
        self._rollback_to = to
        if down.transactional:
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", [self.lock_timeout])
                    for st in down.statements:
                        self._execute(conn, m, down, st, transactional=True)
                    self._forget(conn, m, down)
            except MigrationFailed as exc:
                raise self._down_failed(exc) from None
            return
        # no transaction: marked rolling_back, then rollback_failed if a statement fails, so status,
        # doctor and migrate know the migration is neither applied nor undone, and what resumes it
        conn.execute("UPDATE pgvkit.schema_migrations SET status = 'rolling_back', error = NULL WHERE version = %s",
                     [m.version])
        history.record_event(conn, m.version, "start", down.checksum, f"rollback: {down.path.name}")
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [self.lock_timeout])
        try:
            self._drop_before(conn, down)
            for st in down.statements:
                self._execute_with_retry(conn, m, down, st)
        except KeyboardInterrupt:
            self._interrupted(m, down, "rollback_failed", f"{self._resume_for(m, down)['resume']} resumes it")
            raise
        except (MigrationFailed, LockTimeout) as exc:
            failure = self._down_failed(exc) if isinstance(exc, MigrationFailed) else exc
            conn.execute("UPDATE pgvkit.schema_migrations SET status = 'rollback_failed', error = %s"
                         " WHERE version = %s", [str(failure), m.version])
            self._log_failure(conn, m, failure)
            self._drop_leftovers(conn, down)
            if isinstance(exc, LockTimeout):
                raise RollbackFailed(f"{exc}; the rollback of {m.id} is recorded as failed: once the lock is free, "
                                     f"{self._resume_for(m, down)['resume']} resumes it") from None
            raise failure from None
        finally:
            if not conn.closed:
                conn.execute("RESET lock_timeout")
        with conn.transaction():
            self._forget(conn, m, down)

    def _resume_for(self, m: Migration, f: SQLFile) -> dict:
        """How MigrationFailed names the command that runs `f` again (up: pgvkit migrate)."""
        return {} if f is m.up else self._rollback_words()

    def _rollback_words(self) -> dict:
        return {"resume": f"pgvkit rollback --to {self._rollback_to:03d} --yes", "doing": "rollback of"}

    def _down_failed(self, exc: MigrationFailed) -> MigrationFailed:
        """A down file's statement failure, naming the rollback that resumes it."""
        if exc.resume != "pgvkit migrate":
            return exc
        return MigrationFailed(exc.version, exc.path, exc.line, exc.message, transactional=exc.transactional,
                               **self._rollback_words())

    @staticmethod
    def _forget(conn, m: Migration, down: SQLFile) -> None:
        conn.execute("DELETE FROM pgvkit.schema_migrations WHERE version = %s", [m.version])
        history.record_event(conn, m.version, "rollback", down.checksum, f"ran {down.path.name}")
