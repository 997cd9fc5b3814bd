"""Applying migrations: status, plan, migrate, baseline, repair, rollback.

Each step is its own call so a notebook can show before it acts (read -> status/plan -> migrate).
Writers hold a session-level advisory lock on their own autocommit connection and re-read the
history once they have it; DDL runs under a short lock_timeout and is retried within a budget.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pglast import ast
from psycopg import errors as pgerrors
from psycopg import sql

from . import history
from .db import connect, mask_url, scrub
from .display import Echo, Table, echo_to, step
from .errors import (
    ConfigError,
    ConfirmationRequired,
    ExtensionPrivilegeError,
    ExtensionUnavailable,
    LockTimeout,
    MigrationDriftError,
    MigrationFailed,
    MissingMigrationError,
    PgvkitError,
    RollbackError,
)
from .migrations import Migration, read_migrations
from .sqlfile import SQLFile, Statement

__all__ = ["Migrator", "StatusReport", "Plan", "LOCK_KEY", "parse_version", "objects_present"]

LOCK_KEY = (int.from_bytes(b"pgvk", "big"), 1)  # (classid, objid) of the advisory lock


@dataclass(repr=False)
class StatusReport(Table):
    """Where each migration stands; exit_code is 0 up to date, 1 pending, 2 drift or missing."""

    database: str
    entries: list[dict]
    baseline_hint: str | None = None
    columns = ("version", "name", "state", "applied_at", "detail")
    colour_by = "state"

    @property
    def title(self) -> str:
        return f"Migrations on {self.database}: {self.summary}"

    @property
    def pending(self) -> list[dict]:
        return [e for e in self.entries if e["state"] in ("pending", "failed", "running")]

    @property
    def problems(self) -> list[dict]:
        return [e for e in self.entries if e["state"] in ("drifted", "missing")]

    @property
    def exit_code(self) -> int:
        if self.problems:
            return 2
        return 1 if self.pending else 0

    @property
    def summary(self) -> str:
        if self.problems:
            return f"{len(self.problems)} problem(s): " + ", ".join(
                f"{e['version']} {e['state']}" for e in self.problems
            )
        if self.baseline_hint:
            return self.baseline_hint
        if self.pending:
            return f"{len(self.pending)} pending"
        return "up to date"

    def rows(self) -> list[dict]:
        return self.entries

    def to_dict(self) -> dict:
        return {
            "database": self.database,
            "summary": self.summary,
            "exit_code": self.exit_code,
            "baseline_hint": self.baseline_hint,
            "migrations": [
                {**e, "applied_at": e["applied_at"].isoformat() if e.get("applied_at") else None}
                for e in self.entries
            ],
        }


@dataclass(repr=False)
class Plan(Table):
    """What migrate would run, without running it."""

    database: str
    steps: list[dict] = field(default_factory=list)
    verb: str = "apply"

    @property
    def columns(self) -> tuple[str, ...]:
        base = ("version", "name", "mode", "statements", "action")
        return base + ("drops",) if self.verb == "roll back" else base

    @property
    def title(self) -> str:
        n = len(self.steps)
        return f"Plan for {self.database}: " + (f"{n} migration(s) to {self.verb}" if n else f"nothing to {self.verb}")

    def rows(self) -> list[dict]:
        return self.steps

    def __str__(self) -> str:
        out = [super().__str__()]
        for s in self.steps:
            out.append(f"\n-- {s['version']}_{s['name']} ({s['mode']})\n{s['sql'].rstrip()}")
        return "\n".join(out)

    def to_dict(self) -> dict:
        return {"database": self.database, "migrations": self.steps}


class Migrator:
    """Migrations of one directory against one database."""

    def __init__(
        self,
        url: str,
        migrations_dir: Path | str | None = None,
        *,
        lock_wait: float = 60.0,
        lock_timeout: str = "5s",
        retry_budget: float = 60.0,
        echo: Echo | None = None,
    ):
        self.url = url
        self.migrations_dir = migrations_dir
        self.lock_wait = lock_wait
        self.lock_timeout = lock_timeout
        self.retry_budget = retry_budget
        self.echo = echo or echo_to()

    def __repr__(self) -> str:
        return f"Migrator({mask_url(self.url)!r})"

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> list[Migration]:
        """The migrations on disk, parsed; any bad file is refused before anything runs."""
        return read_migrations(self.migrations_dir)

    def status(self, migrations: list[Migration] | None = None) -> StatusReport:
        """Applied / pending / drifted / failed / missing for every migration (read-only)."""
        migrations = self.read() if migrations is None else migrations
        with connect(self.url) as conn:
            rows = history.applied(conn)
            database = conn.info.dbname
            hint = self._baseline_hint(conn, migrations, rows)
        return StatusReport(database, _entries(migrations, rows), hint)

    def plan(self, migrations: list[Migration] | None = None) -> Plan:
        """A dry run: each migration migrate would run, its transaction mode and its SQL."""
        migrations = self.read() if migrations is None else migrations
        with connect(self.url) as conn:
            rows = history.applied(conn)
            database = conn.info.dbname
        self._check_consistency(migrations, rows)
        steps = []
        for m in self._pending(migrations, rows):
            row = rows.get(m.version)
            steps.append(
                {
                    "version": m.label,
                    "name": m.name,
                    "mode": "transaction" if m.transactional else "no-transaction (autocommit)",
                    "statements": len(m.up.statements),
                    "action": f"resume ({row.status})" if row else "apply",
                    "sql": m.up.text,
                }
            )
        return Plan(database, steps)

    # -- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the migration advisory lock on a connection of its own, waiting up to lock_wait."""
        conn = connect(self.url, autocommit=True, application_name="pgvkit lock")
        try:
            deadline = time.monotonic() + self.lock_wait
            delay = 0.05
            while not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()[0]:
                if time.monotonic() >= deadline:
                    pid, query = _advisory_holder(conn)
                    raise LockTimeout("pgvkit migration lock", pid, self.lock_wait, query)
                time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
                delay = min(delay * 1.5, 1.0)
            try:
                yield
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEY)
        finally:
            conn.close()

    # -- writing ---------------------------------------------------------------------------

    def migrate(self, migrations: list[Migration] | None = None, *, target: int | None = None) -> list[str]:
        """Apply every pending migration (up to target), each in its own transaction; returns ids."""
        migrations = self.read() if migrations is None else migrations
        if target is not None:
            migrations = [m for m in migrations if m.version <= target]
        done = []
        with self.lock(), connect(self.url, autocommit=True) as conn:
            conn.add_notice_handler(self._notice)
            _abort_when_client_dies(conn)
            history.ensure(conn)
            rows = history.applied(conn)  # re-read under the lock
            self._check_consistency(migrations, rows)
            if not rows:
                hint = self._baseline_hint(conn, migrations, rows)
                if hint:
                    raise PgvkitError(hint + " (migrate refuses so as not to record a schema it did not create)")
            pending = self._pending(migrations, rows)
            if not pending:
                self.echo(f"{conn.info.dbname}: up to date, nothing to apply")
            for m in pending:
                with step(f"Applying {m.id} ({'transaction' if m.transactional else 'no-transaction'})", self.echo):
                    if m.transactional:
                        self._apply_transactional(conn, m)
                    else:
                        self._apply_autocommit(conn, m, rows.get(m.version))
                done.append(m.id)
        return done

    def baseline(self, version: int | str, migrations: list[Migration] | None = None) -> list[str]:
        """Record migrations up to `version` as applied without running them (old init-dir DBs)."""
        migrations = self.read() if migrations is None else migrations
        version = parse_version(version)
        if version not in {m.version for m in migrations}:
            raise ConfigError(f"no migration numbered {version} in {self._dir()}; see pgvkit status")
        recorded = []
        with self.lock(), connect(self.url, autocommit=True) as conn:
            history.ensure(conn)
            rows = history.applied(conn)
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
        self.echo(f"Baselined {', '.join(recorded) if recorded else 'nothing (already recorded)'}")
        return recorded

    def repair(self, version: int | str, reason: str, migrations: list[Migration] | None = None) -> None:
        """Accept an applied file's new checksum, recording who, when and why as an event."""
        if not reason or not reason.strip():
            raise ConfigError("repair needs --reason TEXT saying why the applied file changed")
        migrations = self.read() if migrations is None else migrations
        version = parse_version(version)
        by_version = {m.version: m for m in migrations}
        with self.lock(), connect(self.url, autocommit=True) as conn:
            rows = history.applied(conn)
            if version not in rows:
                raise ConfigError(f"migration {version} is not applied; repair only applies to applied migrations")
            if version not in by_version:
                raise ConfigError(f"migration {version} has no file in {self._dir()}; restore it first")
            m, row = by_version[version], rows[version]
            if row.checksum == m.checksum:
                self.echo(f"{m.id}: checksum already matches; nothing to repair")
                return
            with conn.transaction():
                conn.execute(
                    "UPDATE pgvkit.schema_migrations SET checksum = %s WHERE version = %s",
                    [m.checksum, version],
                )
                history.record_event(
                    conn, version, "repair", m.checksum, f"{row.checksum} -> {m.checksum}: {reason.strip()}"
                )
        self.echo(f"Repaired {m.id}: new checksum {m.checksum[:12]} recorded")

    def rollback_plan(self, to: int | str, migrations: list[Migration] | None = None) -> Plan:
        """A dry run of rollback: each down file that would run, newest first, and what it drops."""
        migrations = self.read() if migrations is None else migrations
        to = parse_version(to)
        by_version = {m.version: m for m in migrations}
        with connect(self.url) as conn:
            rows = history.applied(conn)
            database = conn.info.dbname
        targets = sorted((v for v in rows if v > to), reverse=True)
        self._check_down_files(targets, by_version)
        steps = []
        for v in targets:
            down = by_version[v].down
            drops = [" ".join(st.sql.split()) for st in down.statements if st.kind == "DropStmt"]
            steps.append({"version": by_version[v].label, "name": by_version[v].name,
                          "mode": "transaction" if down.transactional else "no-transaction (autocommit)",
                          "statements": len(down.statements), "action": "roll back",
                          "drops": "; ".join(drops) or "(nothing dropped)", "sql": down.text})
        return Plan(database, steps, verb="roll back")

    def rollback(self, to: int | str, *, yes: bool = False, migrations: list[Migration] | None = None) -> list[str]:
        """Run down files newest first until only migrations <= `to` remain applied."""
        migrations = self.read() if migrations is None else migrations
        to = parse_version(to)
        by_version = {m.version: m for m in migrations}
        with connect(self.url) as conn:
            rows = history.applied(conn)
        targets = sorted((v for v in rows if v > to), reverse=True)
        if not targets:
            self.echo(f"Nothing to roll back: no applied migration above {to}")
            return []
        self._check_down_files(targets, by_version)
        if not yes:
            names = ", ".join(by_version[v].id for v in targets)
            raise ConfirmationRequired(
                f"rollback would undo {names} and may drop data; back up first (pgvkit backup) "
                "and add --yes to go ahead"
            )
        undone = []
        with self.lock(), connect(self.url, autocommit=True) as conn:
            conn.add_notice_handler(self._notice)
            rows = history.applied(conn)
            targets = sorted((v for v in rows if v > to), reverse=True)
            self._check_down_files(targets, by_version)
            for v in targets:
                m = by_version[v]
                with step(f"Rolling back {m.id}", self.echo):
                    self._run_down(conn, m)
                undone.append(m.id)
        return undone

    # -- internals -------------------------------------------------------------------------

    def _dir(self) -> str:
        from .migrations import default_migrations_dir

        return str(self.migrations_dir or default_migrations_dir())

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized in ("NOTICE", "WARNING") and diag.message_primary:
            extra = " ".join(x for x in (diag.message_detail, diag.message_hint) if x)
            self.echo(f"  {diag.severity}: {diag.message_primary}" + (f" ({extra})" if extra else ""))

    @staticmethod
    def _pending(migrations: list[Migration], rows: dict) -> list[Migration]:
        return [m for m in migrations if m.version not in rows or rows[m.version].status in ("running", "failed")]

    @staticmethod
    def _check_consistency(migrations: list[Migration], rows: dict) -> None:
        on_disk = {m.version: m for m in migrations}
        missing = [f"{v:03d}_{rows[v].name}" for v in rows if v not in on_disk]
        if missing:
            raise MissingMigrationError(missing)
        for v, row in rows.items():
            m = on_disk[v]
            if row.status in ("applied", "baselined") and row.checksum != m.checksum:
                raise MigrationDriftError(m.label, row.checksum, m.checksum)

    def _baseline_hint(self, conn, migrations: list[Migration], rows: dict) -> str | None:
        """With no history, do the first migration's objects already exist (old docker init)?"""
        if rows or not migrations:
            return None
        first = migrations[0]
        objects = [s.creates for s in first.up.statements if s.creates]
        if not objects or not all(_object_exists(conn, o) for o in objects):
            return None
        return (
            f"the objects of {first.id} already exist but there is no pgvkit history "
            f"(created by the old docker init?); record it without running it: pgvkit baseline {first.label}"
        )

    def _apply_transactional(self, conn: psycopg.Connection, m: Migration) -> None:
        deadline = time.monotonic() + self.retry_budget
        attempt = 0
        while True:
            attempt += 1
            start = time.perf_counter()
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", [self.lock_timeout])
                    for st in m.up.statements:
                        self._execute(conn, m, m.up, st, transactional=True)
                    elapsed = int((time.perf_counter() - start) * 1000)
                    conn.execute(
                        "INSERT INTO pgvkit.schema_migrations"
                        " (version, name, checksum, status, transactional, execution_ms)"
                        " VALUES (%s, %s, %s, 'applied', true, %s)",
                        [m.version, m.name, m.checksum, elapsed],
                    )
                    history.record_event(conn, m.version, "apply", m.checksum, f"attempt {attempt}")
                return
            except _LockBusy as busy:
                if time.monotonic() + busy.wait > deadline:
                    raise busy.timeout(self.retry_budget) from None
                self.echo(f"  lock busy ({busy.describe()}); retrying in {busy.wait:.1f}s")
                time.sleep(busy.wait)
            except MigrationFailed as exc:
                self._log_failure(conn, m, exc)
                raise

    def _apply_autocommit(self, conn: psycopg.Connection, m: Migration, previous) -> None:
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
        conn.execute(
            "UPDATE pgvkit.schema_migrations SET status = 'applied', execution_ms = %s WHERE version = %s",
            [int((time.perf_counter() - start) * 1000), m.version],
        )
        history.record_event(conn, m.version, "apply", m.checksum)

    def _execute_with_retry(self, conn, m: Migration, f: SQLFile, st: Statement) -> None:
        deadline = time.monotonic() + self.retry_budget
        while True:
            try:
                self._execute(conn, m, f, st, transactional=False)
                return
            except _LockBusy as busy:
                if time.monotonic() + busy.wait > deadline:
                    raise busy.timeout(self.retry_budget) from None
                self.echo(f"  lock busy ({busy.describe()}); retrying in {busy.wait:.1f}s")
                time.sleep(busy.wait)

    def _execute(self, conn, m: Migration, f: SQLFile, st: Statement, *, transactional: bool) -> None:
        try:
            conn.execute(st.sql)
        except pgerrors.LockNotAvailable:
            raise _LockBusy(self.url, st) from None
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
        message = " ".join(str(exc.diag.message_primary or exc).split())
        return MigrationFailed(m.label, f.path, line, scrub(message, self.url), transactional=transactional)

    def _log_failure(self, conn, m: Migration, exc: Exception) -> None:
        with contextlib.suppress(psycopg.Error):
            history.record_event(conn, m.version, "fail", m.checksum, str(exc)[:2000])

    def _drop_invalid_indexes(self, conn, m: Migration) -> None:
        """An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index: drop it to rebuild."""
        for st in m.up.statements:
            node = st.node
            if not (isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname):
                continue
            schema = node.relation.schemaname
            name = sql.Identifier(schema, node.idxname) if schema else sql.Identifier(node.idxname)
            regname = name.as_string(conn)
            row = conn.execute(
                "SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)", [regname]
            ).fetchone()
            if row and row[0]:
                self.echo(f"  dropping invalid index {regname} left by an interrupted build")
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(name))

    def _check_down_files(self, targets: list[int], by_version: dict) -> None:
        missing = [str(v) for v in targets if v not in by_version]
        if missing:
            raise RollbackError(
                f"applied migration(s) {', '.join(missing)} have no file; restore them before rolling back"
            )
        no_down = [by_version[v] for v in targets if by_version[v].down is None]
        if no_down:
            raise RollbackError(
                "cannot roll back: no down file for "
                + ", ".join(f"{m.id} (write {m.path.with_suffix('').name}.down.sql)" for m in no_down)
            )

    def _run_down(self, conn, m: Migration) -> None:
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


class _LockBusy(Exception):
    """A statement hit lock_timeout; carries what is needed to retry or to report the blocker."""

    def __init__(self, url: str, st: Statement):
        self.url = url
        self.statement = st
        self.wait = 0.5 + random.random()
        self.pid, self.query = _table_lock_holder(url, st)

    def describe(self) -> str:
        return f"held by pid {self.pid}" if self.pid else "held by another session"

    def timeout(self, budget: float) -> LockTimeout:
        return LockTimeout(f"lock needed by line {self.statement.line}", self.pid, budget, self.query)


def parse_version(value: int | str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{value!r} is not a migration number; use the digits of the file name, e.g. 001") from None


def _entries(migrations: list[Migration], rows: dict) -> list[dict]:
    entries = []
    on_disk = {m.version for m in migrations}
    for m in migrations:
        row = rows.get(m.version)
        entry = {"version": m.label, "name": m.name, "state": "pending", "applied_at": None, "detail": ""}
        if row:
            entry["applied_at"] = row.applied_at
            if row.status in ("running", "failed"):
                entry["state"] = row.status
                entry["detail"] = "interrupted or failed; pgvkit migrate resumes it"
                if row.error:
                    entry["detail"] += f" (last error: {row.error[:200]})"
            elif row.checksum != m.checksum:
                entry["state"] = "drifted"
                entry["detail"] = f"file changed after it was applied; pgvkit repair {m.label} --reason '...'"
            else:
                entry["state"] = row.status  # applied or baselined
                if row.execution_ms is not None and row.status == "applied":
                    entry["detail"] = f"by {row.applied_by}"
        if not m.transactional:
            entry["detail"] = (entry["detail"] + " [no-transaction]").strip()
        entries.append(entry)
    for v, row in sorted(rows.items()):
        if v not in on_disk:
            entries.append(
                {"version": f"{v:03d}", "name": row.name, "state": "missing", "applied_at": row.applied_at,
                 "detail": "applied, but its file is gone"}
            )
    entries.sort(key=lambda e: int(e["version"]))
    return entries


def objects_present(conn, migration: Migration) -> tuple[list[str], list[str]]:
    """The objects a migration creates, split into (present, missing) names."""
    present, missing = [], []
    for obj in (s.creates for s in migration.up.statements if s.creates):
        (present if _object_exists(conn, obj) else missing).append(obj[2])
    return present, missing


def _object_exists(conn, obj: tuple[str, str | None, str]) -> bool:
    kind, schema, name = obj
    if kind == "extension":
        return conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", [name]).fetchone() is not None
    qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    if kind == "relation":
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [qualified.as_string(conn)]).fetchone()[0]
    if kind == "function":
        return conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p WHERE p.proname = %s"
            " AND (%s::text IS NULL AND pg_function_is_visible(p.oid)"
            "      OR p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)))",
            [name, schema, schema],
        ).fetchone()[0]
    return False


def _abort_when_client_dies(conn) -> None:
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
