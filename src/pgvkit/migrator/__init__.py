"""Migrations against one database, as yoyo separates them: read the files and the history into
a status, plan what would run, then apply under a lock; baseline, repair and rollback beside.

    migrator = Migrator(url)
    migrations = migrator.read()        # files on disk, parsed; a bad file is refused here
    migrator.status(migrations)         # applied / pending / drifted / failed / missing
    migrator.plan(migrations)           # the SQL migrate would run
    migrator.migrate(migrations)        # apply under the advisory lock

`Migrator` is the façade the notebooks and the CLI use; each step lives in its own module:
status (reading), plan, lock, apply, records (baseline / repair).
"""

from __future__ import annotations

from pathlib import Path

from ..display import Echo, echo_to, step
from ..errors import ConfigError, ConfirmationRequired, PgvkitError
from ..server.db import connect, mask_url
from . import history
from .apply import Applier
from .files import Migration, default_migrations_dir, directory_notes, read_migrations
from .lock import LOCK_KEY, abort_when_client_dies, migration_lock
from .plan import (Files, Plan, apply_steps, build_estimate, check_down_files, check_extensions, check_partitioned, direct_query_notes,
                   memory_note, pending_build, rollback_steps, rollback_targets, stacked_notes)
from .records import forget_attempt, record_baseline, record_repair
from .rewrites import rewrite_notes
from .status import (StatusReport, already_created, baseline_hint, check_consistency, entries, objects_present, parse_version,
                     pending, refuse_half_rolled_back)

__all__ = ["Migrator", "StatusReport", "Plan", "LOCK_KEY", "parse_version", "objects_present"]


class Migrator:
    """Migrations of one directory against one database."""

    def __init__(self, url: str, migrations_dir: Path | str | None = None, *, lock_wait: float = 60.0,
                 lock_timeout: str = "5s", retry_budget: float = 60.0, echo: Echo | None = None,
                 progress: bool = True):
        self.url = url
        self.progress = progress  # a bar for each index build (lines at each phase either way)
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

    def files(self, migrations: list[Migration] | None = None) -> Files:
        """The migration files as a table: version, mode, statements, what each changes."""
        return Files(self.read() if migrations is None else migrations)

    def status(self, migrations: list[Migration] | None = None) -> StatusReport:
        """Applied / pending / drifted / failed / missing for every migration (read-only)."""
        migrations = self.read() if migrations is None else migrations
        with connect(self.url) as conn:
            rows = history.applied(conn)
            return StatusReport(conn.info.dbname, entries(migrations, rows), baseline_hint(conn, migrations, rows),
                                directory_notes(self._dir()))

    def plan(self, migrations: list[Migration] | None = None) -> Plan:
        """A dry run: each migration migrate would run, its transaction mode and its SQL."""
        migrations = self.read() if migrations is None else migrations
        with connect(self.url) as conn:
            rows = history.applied(conn)
            check_consistency(migrations, rows)
            to_apply = pending(migrations, rows)
            check_extensions(conn, to_apply)
            check_partitioned(conn, [m.up for m in to_apply])
            builds = {m.version: pending_build(conn, m) for m in to_apply if build_estimate(m)}
            memory = [note for m in to_apply if (note := memory_note(m, builds.get(m.version)))]
            return Plan(conn.info.dbname, apply_steps(to_apply, rows, builds),
                        notes=directory_notes(self._dir()) + direct_query_notes(conn, to_apply)
                        + stacked_notes(to_apply) + memory + rewrite_notes(conn, to_apply))

    def rollback_plan(self, to: int | str, migrations: list[Migration] | None = None) -> Plan:
        """A dry run of rollback: each down file that would run, newest first, and what it drops."""
        migrations = self.read() if migrations is None else migrations
        by_version = {m.version: m for m in migrations}
        with connect(self.url) as conn:
            rows = history.applied(conn)
            database = conn.info.dbname
            targets = rollback_targets(rows, parse_version(to))
            steps = rollback_steps(targets, by_version)
            check_partitioned(conn, [by_version[v].down for v in targets])
            notes = rewrite_notes(conn, [by_version[v] for v in targets if by_version[v].down], down=True)
        return Plan(database, steps, verb="roll back", notes=notes)

    # -- writing ---------------------------------------------------------------------------

    def lock(self):
        """Hold the migration advisory lock on a connection of its own, waiting up to lock_wait."""
        return migration_lock(self.url, self.lock_wait)

    def _applier(self) -> Applier:
        return Applier(self.url, lock_timeout=self.lock_timeout, retry_budget=self.retry_budget, echo=self.echo,
                       progress=self.progress)

    def migrate(self, migrations: list[Migration] | None = None, *, target: int | None = None) -> list[str]:
        """Apply every pending migration (up to target), each in its own transaction; returns ids."""
        migrations = self.read() if migrations is None else migrations
        if target is not None:
            migrations = [m for m in migrations if m.version <= target]
        applier = self._applier()
        done = []
        self._primary_only()
        with self.lock(), connect(self.url, autocommit=True) as conn:
            conn.add_notice_handler(applier.notice)
            abort_when_client_dies(conn)
            self._ensure_history(conn)
            rows = history.applied(conn)  # re-read under the lock
            check_consistency(migrations, rows)
            refuse_half_rolled_back(rows)
            hint = baseline_hint(conn, migrations, rows)
            if hint:
                raise PgvkitError(hint + " (migrate refuses so as not to record a schema it did not create)")
            to_apply = pending(migrations, rows)
            check_extensions(conn, to_apply)
            check_partitioned(conn, [m.up for m in to_apply])
            if not to_apply:
                self.echo(f"{conn.info.dbname}: up to date, nothing to apply")
            for m in to_apply:
                with step(f"Applying {m.id} ({'transaction' if m.transactional else 'no-transaction'})", self.echo):
                    applier.apply(conn, m, rows.get(m.version))
                done.append(m.id)
        return done

    def detect_baseline(self, migrations: list[Migration] | None = None) -> list[Migration]:
        """What `baseline()` with no version would record: with no history yet, the leading
        migrations whose objects all exist already (the old docker init ran them); else []."""
        migrations = self.read() if migrations is None else migrations
        with connect(self.url) as conn:
            return already_created(conn, migrations, history.applied(conn))

    def baseline(self, version: int | str | None = None, migrations: list[Migration] | None = None) -> list[str]:
        """Record migrations up to `version` as applied without running them (old init-dir DBs).
        With no version: the ones `detect_baseline()` finds, re-checked under the lock."""
        migrations = self.read() if migrations is None else migrations
        if version is not None:
            version = parse_version(version)
            if version not in {m.version for m in migrations}:
                raise ConfigError(f"no migration numbered {version} in {self._dir()}; see pgvkit status")
        self._primary_only()
        with self.lock(), connect(self.url, autocommit=True) as conn:
            self._ensure_history(conn)
            rows = history.applied(conn)
            if version is None:
                found = already_created(conn, migrations, rows)
                if not found:
                    raise ConfigError(
                        "nothing to baseline: " + ("the history already has entries; pgvkit status shows them" if rows
                                                   else "the first migration's objects do not all exist; pgvkit "
                                                   "migrate creates them (or name a version: pgvkit baseline 001)"))
                version = found[-1].version
            recorded = record_baseline(conn, migrations, version, rows)
        self.echo(f"Baselined {', '.join(recorded) if recorded else 'nothing (already recorded)'}")
        return recorded

    def baseline_from(self, tool: str, migrations: list[Migration] | None = None) -> list[str]:
        """Record as baselined the imported migrations (pgvkit import) that `tool`'s own history
        table on this database shows applied, without running them; a dirty or failed entry in
        that history stops it first."""
        from .importing import imported_versions, old_history

        migrations = self.read() if migrations is None else migrations
        imported = imported_versions(migrations)
        self._primary_only()
        with self.lock(), connect(self.url, autocommit=True) as conn:
            versions = old_history(conn, tool, imported)
            missing = [v for v in versions if (tool, v) not in imported]
            if missing:
                raise ConfigError(
                    f"{tool}'s history shows {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} applied, but "
                    f"no migration in {self._dir()} was imported from it; run pgvkit import --from {tool} DIR --write "
                    "first")
            if not versions:
                raise ConfigError(f"{tool}'s history on {conn.info.dbname} shows nothing applied; pgvkit migrate "
                                  "applies everything")
            self._ensure_history(conn)
            chosen = sorted((imported[(tool, v)] for v in versions), key=lambda m: m.version)
            recorded = record_baseline(conn, chosen, chosen[-1].version, history.applied(conn))
        self.echo(f"Baselined from {tool}'s history: {', '.join(recorded) if recorded else 'nothing (already recorded)'}")
        return recorded

    def repair(self, version: int | str, reason: str, migrations: list[Migration] | None = None) -> None:
        """Accept an applied file's new checksum, recording who, when and why as an event."""
        if not reason or not reason.strip():
            raise ConfigError("repair needs --reason TEXT saying why the applied file changed")
        migrations = self.read() if migrations is None else migrations
        version = parse_version(version)
        by_version = {m.version: m for m in migrations}
        self._primary_only()
        with self.lock(), connect(self.url, autocommit=True) as conn:
            rows = history.applied(conn)
            if version not in rows:
                raise ConfigError(f"migration {version} is not applied; repair only applies to applied migrations")
            if version not in by_version and rows[version].status in ("running", "failed"):
                forget_attempt(conn, version, rows[version], reason.strip())
                self.echo(f"Forgot the {rows[version].status} attempt at {version:03d}_{rows[version].name}: "
                          "pgvkit migrate no longer expects its file")
                return
            if version not in by_version:
                raise ConfigError(f"migration {version} has no file in {self._dir()}; restore it first")
            m, row = by_version[version], rows[version]
            if row.checksum == m.checksum:
                self.echo(f"{m.id}: checksum already matches; nothing to repair")
                return
            record_repair(conn, m, row.checksum, reason.strip())
        self.echo(f"Repaired {m.id}: new checksum {m.checksum[:12]} recorded")

    def rollback(self, to: int | str, *, yes: bool = False, migrations: list[Migration] | None = None) -> list[str]:
        """Run down files newest first until only migrations <= `to` remain applied."""
        migrations = self.read() if migrations is None else migrations
        to = parse_version(to)
        by_version = {m.version: m for m in migrations}
        with connect(self.url) as conn:
            targets = rollback_targets(history.applied(conn), to)
            if targets:
                check_down_files(targets, by_version)
                check_partitioned(conn, [by_version[v].down for v in targets])
        if not targets:
            self.echo(f"Nothing to roll back: no applied migration above {to}")
            return []
        if not yes:
            names = ", ".join(by_version[v].id for v in targets)
            raise ConfirmationRequired(
                f"rollback would undo {names} and may drop data; back up first (pgvkit backup) "
                "and add --yes to go ahead"
            )
        applier = self._applier()
        undone = []
        self._primary_only()
        with self.lock(), connect(self.url, autocommit=True) as conn:
            conn.add_notice_handler(applier.notice)
            self._ensure_history(conn)
            rows = history.applied(conn)  # re-read under the lock
            targets = rollback_targets(rows, to)
            check_down_files(targets, by_version)
            for v in targets:
                m = by_version[v]
                resuming = " (resuming: its last rollback stopped part-way)" if rows[v].status in history.ROLLING_BACK else ""
                with step(f"Rolling back {m.id}{resuming}", self.echo):
                    applier.run_down(conn, m, to)
                undone.append(m.id)
        return undone

    def _primary_only(self) -> None:
        """Refuse, in one line and before any lock, a server in recovery (a hot standby) and a URL
        through a transaction pooler (the migration lock is a session's)."""
        from ..server.pooler import require_session
        from ..server.sessions import require_writable

        with connect(self.url, autocommit=True) as conn:
            require_writable(conn, "a migration")
        require_session(self.url, mask_url(self.url), "a migration")

    def _ensure_history(self, conn) -> None:
        for upgrade in history.ensure(conn):
            self.echo(f"Upgraded pgvkit's history: {upgrade}")

    def _dir(self) -> str:
        return str(self.migrations_dir or default_migrations_dir())
