"""Migration files on disk: NNN_name.sql with an optional NNN_name.down.sql beside it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, MigrationFileError
from .foreign import marker_refusal
from .sqlfile import SQLFile, read_sql_file

__all__ = ["Migration", "read_migrations", "default_migrations_dir", "missing_directory", "directory_notes", "MAX_VERSION"]

# other tools' file names, refused with what to rename them to
_FOREIGN_NAMES = [
    ("Flyway", re.compile(r"^[VU]\d+(?:[._]\d+)*__.+\.sql$|^R__.+\.sql$", re.IGNORECASE),
     "bring the directory in with pgvkit import --from flyway DIR (or rename V1__init.sql to 001_init.sql)"),
    ("golang-migrate", re.compile(r"^\d+_.+\.up\.sql$"),
     "bring the directory in with pgvkit import --from golang-migrate DIR (or rename NNN_name.up.sql to "
     "NNN_name.sql)"),
]
MAX_VERSION = 2**63 - 1  # the history keeps versions as bigint
_NAME = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*?)(?P<down>\.down)?\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change: its up file, parsed, and its down file if there is one."""

    version: int
    label: str  # the digits as written in the file name, e.g. "001"
    name: str
    up: SQLFile
    down: SQLFile | None = None

    @property
    def id(self) -> str:
        return f"{self.label}_{self.name}"

    @property
    def path(self) -> Path:
        return self.up.path

    @property
    def checksum(self) -> str:
        return self.up.checksum

    @property
    def transactional(self) -> bool:
        return self.up.transactional

    def __repr__(self) -> str:
        return f"Migration({self.id!r}, down={'yes' if self.down else 'no'})"


def default_migrations_dir() -> Path:
    """$PGVKIT_MIGRATIONS, else migrations/ in the working directory."""
    return Path(os.environ.get("PGVKIT_MIGRATIONS") or "migrations")


def missing_directory(directory: Path | str) -> None:
    """Refuse a migrations directory that is not there, in one line with the fix."""
    if not Path(directory).is_dir():
        raise ConfigError(
            f"migrations directory {directory} does not exist; "
            "run pgvkit from the project root or pass --migrations DIR"
        )


def read_migrations(directory: Path | str | None = None) -> list[Migration]:
    """Read and parse every migration in a directory, in version order; refuse any bad file."""
    directory = Path(directory) if directory is not None else default_migrations_dir()
    missing_directory(directory)
    files = [p for p in sorted(directory.iterdir()) if p.name.endswith(".sql") and p.is_file()]
    _refuse_other_tools(files)
    ups: dict[int, tuple[str, str, Path]] = {}
    downs: dict[int, tuple[str, Path]] = {}
    for path in files:
        m = _NAME.match(path.name)
        if not m:
            tool = next(((t, fix) for t, pattern, fix in _FOREIGN_NAMES if pattern.match(path.name)), None)
            raise MigrationFileError(
                path,
                f"named as {tool[0]} names its migrations; pgvkit's are NNN_name.sql: {tool[1]}" if tool else
                "bad migration file name; use NNN_name.sql (and NNN_name.down.sql for its rollback), "
                "e.g. 002_add_column.sql",
            )
        version = int(m["version"])
        if version > MAX_VERSION:
            raise MigrationFileError(path, f"version {m['version']} is too large ({len(m['version'])} digits; "
                                           f"at most {MAX_VERSION}, e.g. a timestamp like 20240101120000); "
                                           "renumber the file")
        table = downs if m["down"] else ups
        if version in table:
            other = table[version][-1]
            raise MigrationFileError(
                path, f"duplicate migration number {m['version']} (also used by {other.name}); renumber one"
            )
        if m["down"]:
            downs[version] = (m["name"], path)
        else:
            ups[version] = (m["version"], m["name"], path)
    for version, (name, path) in downs.items():
        if version not in ups or ups[version][1] != name:
            raise MigrationFileError(
                path,
                f"down file has no up file {path.name.replace('.down.sql', '.sql')}; "
                "rename it to match its migration or delete it",
            )
    migrations = []
    for version in sorted(ups):
        label, name, path = ups[version]
        down = read_sql_file(downs[version][1]) if version in downs else None
        migrations.append(Migration(version, label, name, read_sql_file(path), down))
    return migrations


def _refuse_other_tools(files: list[Path]) -> None:
    """Another tool's files copied in (goose's `00001_init.sql` beside `001_init_vector_store.sql`)
    are named as such before any check of names or numbers: renumbering would not make them run
    right, importing them would."""
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            continue  # read_sql_file says so, with the line
        found = marker_refusal(text)
        if found:
            raise MigrationFileError(f"{path}:{found[0]}", found[1])


def directory_notes(directory: Path | str | None = None) -> list[str]:
    """What in the directory is not a migration (pgvkit would pass over it), and whose layout it
    looks like; hidden files aside."""
    directory = Path(directory) if directory is not None else default_migrations_dir()
    if not directory.is_dir():
        return []
    entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    names = {p.name for p in entries}
    notes = []
    if "sqitch.plan" in names or "sqitch.conf" in names or {"deploy", "revert"} <= names:
        notes.append("this looks like a sqitch project (sqitch.plan, deploy/, revert/, verify/); pgvkit runs only "
                     "NNN_name.sql files at the top of the directory: write each deploy script as NNN_name.sql and "
                     "its revert as NNN_name.down.sql")
    for p in entries:
        if p.is_dir():
            notes.append(f"{p.name}/ is a directory: pgvkit does not look inside it")
        elif not p.name.endswith(".sql"):
            notes.append(f"{p.name} is not a migration (pgvkit runs NNN_name.sql files only)")
    return notes
