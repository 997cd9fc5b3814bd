"""Reading: the files on disk and the history in the database, compared into a status."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from ..display import Table
from ..errors import ConfigError, MigrationDriftError, MissingMigrationError, RollbackError
from .files import Migration
from .history import ROLLING_BACK

__all__ = ["StatusReport", "entries", "pending", "check_consistency", "refuse_half_rolled_back", "resume_rollback", "baseline_hint", "objects_present",
           "parse_version"]


@dataclass(repr=False)
class StatusReport(Table):
    """Where each migration stands; exit_code is 0 up to date, 1 pending, 2 drift or missing."""

    database: str
    entries: list[dict]
    baseline_hint: str | None = None
    notes: list[str] = field(default_factory=list)  # what in the directory is not a migration
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
        return [e for e in self.entries if e["state"] in ("drifted", "missing", "rolling back", "rollback failed")]

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
            "warnings": self.notes,
            "migrations": [
                {**e, "applied_at": e["applied_at"].isoformat() if e.get("applied_at") else None}
                for e in self.entries
            ],
        }


def pending(migrations: list[Migration], rows: dict) -> list[Migration]:
    """What migrate would run: never recorded, or stopped part-way (failed / running)."""
    return [m for m in migrations if m.version not in rows or rows[m.version].status in ("running", "failed")]


def resume_rollback(version: int, rows: dict) -> str:
    """The command that finishes the rollback of `version`: down to the applied migration below it."""
    below = max((v for v in rows if v < version), default=0)
    return f"pgvkit rollback --to {below:03d} --yes"


def refuse_half_rolled_back(rows: dict) -> None:
    """migrate refuses while a down file stopped part-way: the schema is between two versions."""
    stuck = [v for v, row in sorted(rows.items()) if row.status in ROLLING_BACK]
    if stuck:
        v = stuck[-1]
        raise RollbackError(f"the rollback of {v:03d}_{rows[v].name} stopped part-way ({rows[v].status}): the schema "
                            f"is between two versions; finish it first: {resume_rollback(v, rows)}")


def check_consistency(migrations: list[Migration], rows: dict) -> None:
    """Refuse when an applied file changed (drift) or is gone."""
    on_disk = {m.version: m for m in migrations}
    missing = [v for v in rows if v not in on_disk]
    if missing:
        stuck = [f"{v:03d}_{rows[v].name}" for v in missing if rows[v].status in ("running", "failed")]
        raise MissingMigrationError([f"{v:03d}_{rows[v].name}" for v in missing], stuck)
    for v, row in rows.items():
        m = on_disk[v]
        if row.status in ("applied", "baselined") and row.checksum != m.checksum:
            raise MigrationDriftError(m.label, row.checksum, m.checksum)


def already_created(conn, migrations: list[Migration], rows: dict) -> list[Migration]:
    """With no history: the leading migrations whose every created object already exists (a
    database the old docker init directory made), in order; [] when there is history, or when
    even the first one's objects are not all there. A file that creates nothing named stops it."""
    if rows:
        return []
    found = []
    for m in migrations:
        objects = [s.creates for s in m.up.statements if s.creates]
        if not objects or not all(_object_exists(conn, o) for o in objects):
            break
        found.append(m)
    return found


def baseline_hint(conn, migrations: list[Migration], rows: dict) -> str | None:
    """With no history, do the first migrations' objects already exist (old docker init)?"""
    found = already_created(conn, migrations, rows)
    if not found:
        return None
    names = ", ".join(m.id for m in found)
    return (
        f"the objects of {names} already exist but there is no pgvkit history "
        f"(created by the old docker init?); record it without running it: pgvkit baseline {found[-1].label}"
    )


def parse_version(value: int | str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(f"{value!r} is not a migration number; use the digits of the file name, e.g. 001") from None


def entries(migrations: list[Migration], rows: dict) -> list[dict]:
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
            elif row.status in ROLLING_BACK:
                entry["state"] = row.status.replace("_", " ")
                entry["resume"] = resume_rollback(m.version, rows)
                entry["detail"] = (f"its down file stopped part-way; {entry['resume']} resumes it"
                                   + (f" (last error: {row.error[:200]})" if row.error else ""))
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
                 "detail": "applied, but its file is gone" if row.status in ("applied", "baselined") else
                 f"stopped part-way ({row.status}) and its file is gone: restore it, or pgvkit repair {v:03d} "
                 "--reason '...' once what it ran is undone"}
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
