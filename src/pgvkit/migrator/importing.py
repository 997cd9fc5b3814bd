"""Migrations written for other tools, brought into pgvkit: goose, dbmate, golang-migrate and
Flyway directories become NNN_name.sql / NNN_name.down.sql pairs (`pgvkit import`), and their
history tables become baseline events (`pgvkit baseline --from TOOL`).

Each imported file keeps where it came from in a header line, which is how the old tool's
history finds its file later:

    -- Imported by pgvkit from goose 20240101120000 (20240101120000_create_vectors.sql)

Every translated text is parsed with pgvkit's own rules before anything is written, with the
source file's line numbers, so a refusal names the line to fix in the file the team knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pglast import split
from psycopg import sql

from ..display import Table
from ..errors import MigrationFileError, PgvkitError
from .files import _NAME, default_migrations_dir, read_migrations
from .foreign import comment_text
from .sqlfile import parse_sql

__all__ = ["TOOLS", "Foreign", "ImportPlan", "ImportRefused", "read_foreign", "plan_import", "imported_versions",
           "old_history", "canonical"]

TOOLS = ("goose", "dbmate", "golang-migrate", "flyway")
HEADER = re.compile(r"^-- Imported by pgvkit from (?P<tool>[\w-]+) (?P<version>\S+) \((?P<file>[^)]*)\)$", re.M)
NO_TRANSACTION = "-- pgvkit:no-transaction"
NOTHING_TO_UNDO = ("-- {tool}'s down for {file} is empty: nothing to undo. Rolling back past this migration changes\n"
                   "-- nothing, as `{tool} down` would; the statement below only gives pgvkit one to run.\n"
                   "SELECT 1;\n")


class ImportRefused(PgvkitError):
    """A file of the old tool cannot be translated; nothing was written."""


@dataclass
class Foreign:
    """One migration of the old tool: its version as the tool writes it, and its SQL sections as
    text of the source file's length (lines outside the section blanked, so lines keep numbers)."""

    tool: str
    version: str
    name: str
    up_path: Path
    up: str
    down_path: Path | None = None
    down: str | None = None
    no_transaction: bool = False
    key: tuple = field(default=(), repr=False)  # the tool's order


def _name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower()
    return name or "imported"


def _blank(lines: list[str], keep) -> str:
    return "\n".join(line if keep(i) else "" for i, line in enumerate(lines))


def _sections(tool: str, up_marker: str, m: re.Match, path: Path, lines: list[str], sections: dict,
              no_tx: bool) -> Foreign:
    """One file holding both directions (goose, dbmate): the line numbers of each section. A down
    marker with nothing under it is the tool's "nothing to undo" (down ""), not a missing down."""
    if not sections["up"]:
        raise ImportRefused(f"{path}: no {up_marker}; {tool} needs one too")
    down = _blank(lines, sections["down"].__contains__) if "down" in sections["seen"] else None
    return Foreign(tool, m[1], _name(m[2]), path, _blank(lines, sections["up"].__contains__),
                   path if down is not None else None, down, no_tx, (int(m[1]),))


def _goose(directory: Path) -> list[Foreign]:
    found = []
    for path in sorted(directory.iterdir()):
        m = re.match(r"^(\d+)_(.+)\.(sql|go)$", path.name)
        if not m:
            continue
        if m[3] == "go":
            raise ImportRefused(f"{path}: a Go migration; pgvkit runs SQL only: write what it does as SQL first")
        lines = path.read_text(encoding="utf-8").split("\n")
        section, sections, no_tx = None, {"up": set(), "down": set(), "seen": set()}, False
        for i, line in enumerate(lines):
            if line.startswith("-- +goose") or line.lower().startswith("-- +goose"):
                word = comment_text(line)[len("+goose"):].strip().lower()
                if word in ("up", "down"):
                    section = word
                    sections["seen"].add(word)
                elif word == "no transaction":
                    no_tx = True
                elif word.startswith("envsub") and word != "envsub off":
                    raise ImportRefused(f"{path}:{i + 1}: -- +goose ENVSUB substitutes environment variables when "
                                        "goose runs; pgvkit runs files as written: write the values into the SQL")
                elif word not in ("statementbegin", "statementend", "envsub off"):
                    raise ImportRefused(f"{path}:{i + 1}: unknown goose annotation `{line.strip()}`")
                continue
            if section:
                sections[section].add(i)
            elif line.strip() and not line.strip().startswith("--"):
                raise ImportRefused(f"{path}:{i + 1}: SQL before `-- +goose Up`; goose would not run it either: "
                                    "move it below the Up annotation")
        found.append(_sections("goose", "`-- +goose Up` annotation", m, path, lines, sections, no_tx))
    return found


def _dbmate(directory: Path) -> list[Foreign]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = re.match(r"^(\d+)_(.+)\.sql$", path.name)
        if not m:
            continue
        lines = path.read_text(encoding="utf-8").split("\n")
        section, sections, no_tx = None, {"up": set(), "down": set(), "seen": set()}, False
        for i, line in enumerate(lines):
            marker = re.match(r"^--\s*migrate:(up|down)\b(.*)$", line.strip(), re.I)
            if marker:
                section = marker[1].lower()
                sections["seen"].add(section)
                options = dict(o.split(":", 1) for o in marker[2].split() if ":" in o)
                if options.get("transaction") == "false":
                    no_tx = True
                continue
            if section:
                sections[section].add(i)
        found.append(_sections("dbmate", "`-- migrate:up` section", m, path, lines, sections, no_tx))
    return found


def _pairs(directory: Path, pattern: str, tool: str, key) -> list[Foreign]:
    """One file per direction (golang-migrate's N_name.up.sql / .down.sql, Flyway's V / U)."""
    ups, downs = {}, {}
    for path in sorted(directory.iterdir()):
        m = re.match(pattern, path.name)
        if m:
            (ups if m["dir"] in ("up", "V") else downs)[m["version"]] = (m["name"], path)
    for version, (_, path) in downs.items():
        if version not in ups:
            raise ImportRefused(f"{path}: a down migration without its up migration; add it or delete this one")
    return [Foreign(tool, v, _name(name), path, path.read_text(encoding="utf-8"),
                    downs[v][1] if v in downs else None,
                    downs[v][1].read_text(encoding="utf-8") if v in downs else None, key=key(v))
            for v, (name, path) in ups.items()]


def _flyway(directory: Path) -> list[Foreign]:
    for path in sorted(directory.iterdir()):
        if re.match(r"^R__.+\.sql$", path.name):
            raise ImportRefused(f"{path}: a Flyway repeatable migration re-runs whenever it changes; pgvkit has none: "
                                "make its current text a versioned V file (then import), or keep it outside")
        if re.match(r"^B\d.*__.+\.sql$", path.name):
            raise ImportRefused(f"{path}: a Flyway baseline migration; import the V files it stands for instead")
    found = _pairs(directory, r"^(?P<dir>[VU])(?P<version>\d+(?:[._]\d+)*)__(?P<name>.+)\.sql$", "flyway",
                   lambda v: tuple(int(p) for p in re.split(r"[._]", v)))
    for f in found:
        for path, text in ((f.up_path, f.up), (f.down_path, f.down or "")):
            placeholder = re.search(r"\$\{[^}]+\}", text)
            if placeholder:
                raise ImportRefused(f"{path}:{text.count(chr(10), 0, placeholder.start()) + 1}: Flyway placeholder "
                                    f"{placeholder[0]} is replaced when Flyway runs; write its value into the SQL")
        f.version = f.version.replace("_", ".")
    return found


def read_foreign(tool: str, directory: Path | str) -> list[Foreign]:
    """The old tool's migrations in its own order; refused with file and line if any cannot be read."""
    directory = Path(directory)
    if tool not in TOOLS:
        raise PgvkitError(f"unknown tool {tool!r}; pgvkit imports from {', '.join(TOOLS)}")
    if not directory.is_dir():
        raise PgvkitError(f"{directory} is not a directory; name the {tool} migrations directory")
    reader = {"goose": _goose, "dbmate": _dbmate, "flyway": _flyway,
              "golang-migrate": lambda d: _pairs(d, r"^(?P<version>\d+)_(?P<name>.+)\.(?P<dir>up|down)\.sql$",
                                                 "golang-migrate", lambda v: (int(v),))}[tool]
    found = sorted(reader(directory), key=lambda f: f.key)
    if not found:
        raise PgvkitError(f"no {tool} migrations in {directory}; is it the right directory and tool?")
    return found


def canonical(tool: str, version) -> str:
    """A version as the tool compares it: numbers for goose, dbmate and golang-migrate (a file's
    `00001` is the history's 1), dotted numbers for Flyway (`1_1`, `1.1` and `1.01` are one)."""
    if tool == "flyway":
        return ".".join(str(int(p)) for p in re.split(r"[._]", str(version)))
    return str(int(version))


def imported_versions(migrations) -> dict[tuple[str, str], object]:
    """(tool, old version) -> the pgvkit Migration imported from it, read from the header line."""
    found = {}
    for m in migrations:
        header = HEADER.search(m.up.text)
        if header:
            found[(header["tool"], canonical(header["tool"], header["version"]))] = m
    return found


@dataclass(repr=False)
class ImportPlan(Table):
    tool: str
    source: Path
    migrations_dir: Path
    files: list[tuple[Path, str]] = field(default_factory=list)  # what would be written
    rows_: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # imported before
    columns = ("from", "version", "to", "mode", "down")

    @property
    def title(self) -> str:
        return (f"Import from {self.tool} ({self.source}) into {self.migrations_dir}: {len(self.rows_)} migration(s)"
                + (f", {len(self.skipped)} imported before" if self.skipped else ""))

    def rows(self) -> list[dict]:
        return self.rows_

    def write(self) -> list[Path]:
        for path, text in self.files:
            if path.exists():
                raise ImportRefused(f"{path} exists already; nothing was written (rename it or import into another "
                                    "directory)")
        for path, text in self.files:
            path.write_text(text, encoding="utf-8")
        return [p for p, _ in self.files]


def _translate(text: str, path: Path, no_transaction: bool) -> tuple[str, bool]:
    """The section as a pgvkit file body, checked by parse_sql with the source's line numbers:
    (body, whether it runs without a transaction)."""
    try:
        parse_sql(text, path)
        return text.strip("\n") + "\n", False
    except MigrationFileError as exc:
        if not (no_transaction or "cannot run inside a transaction" in str(exc)):
            raise ImportRefused(str(exc)) from None
    # the tool ran it outside a transaction, or a statement needs that: pgvkit's rules for such a file
    shift = 0 if text.startswith("\n") else 1  # the directive takes the blanked marker line, or one more
    try:
        parse_sql(NO_TRANSACTION + ("" if shift == 0 else "\n") + text, path)
    except MigrationFileError as exc:
        message = re.sub(rf"^{re.escape(str(path))}:(\d+)", lambda m: f"{path}:{int(m[1]) - shift}", str(exc))
        raise ImportRefused(f"{message} (it runs without a transaction, so pgvkit resumes it from its first statement "
                            "after a failure)") from None
    return text.strip("\n") + "\n", True


def plan_import(tool: str, source: Path | str, migrations_dir: Path | str | None = None) -> ImportPlan:
    """What `pgvkit import --from TOOL DIR` would write: the old tool's migrations not imported
    before, numbered after the highest version in migrations_dir, in the old tool's order."""
    source = Path(source)
    migrations_dir = Path(migrations_dir) if migrations_dir is not None else default_migrations_dir()
    existing = read_migrations(migrations_dir) if migrations_dir.is_dir() else []
    done = imported_versions(existing)
    plan = ImportPlan(tool, source, migrations_dir)
    number = max((m.version for m in existing), default=0)
    width = max(3, len(str(number + 1)))
    taken = {p.name for p in migrations_dir.iterdir()} if migrations_dir.is_dir() else set()
    for f in read_foreign(tool, source):
        if (tool, canonical(tool, f.version)) in done:
            plan.skipped.append(f"{f.version} ({done[(tool, canonical(tool, f.version))].id})")
            continue
        up, up_no_tx = _translate(f.up, f.up_path, f.no_transaction)
        down = down_no_tx = None
        undoes_nothing = f.down is not None and not split(f.down)
        if undoes_nothing:  # the tool's "nothing to undo": a down file that does nothing
            down, down_no_tx = NOTHING_TO_UNDO.format(tool=tool, file=f.down_path.name), False
        elif f.down is not None:
            down, down_no_tx = _translate(f.down, f.down_path, f.no_transaction)
        number += 1
        label = f"{number:0{width}d}"
        header = f"-- Imported by pgvkit from {tool} {f.version} ({f.up_path.name})\n"
        up_text = (NO_TRANSACTION + "\n" if up_no_tx else "") + header + "\n" + up
        up_path = migrations_dir / f"{label}_{f.name}.sql"
        if not _NAME.match(up_path.name) or up_path.name in taken:
            raise ImportRefused(f"{f.up_path}: would be written as {up_path.name}, which is taken or not a pgvkit name")
        plan.files.append((up_path, up_text))
        if down is not None:
            plan.files.append((migrations_dir / f"{label}_{f.name}.down.sql",
                               (NO_TRANSACTION + "\n" if down_no_tx else "")
                               + f"-- Down of {label}_{f.name}, imported from {tool} {f.version} ({f.down_path.name})\n\n"
                               + down))
        plan.rows_.append({"from": f.up_path.name, "version": f.version, "to": up_path.name,
                           "mode": "no-transaction" if up_no_tx else "transaction", "down": "nothing to undo" if undoes_nothing else "yes" if down else "no"})
    return plan


# -- the old tool's history --------------------------------------------------------------------

_HISTORY = {"goose": "goose_db_version", "dbmate": "schema_migrations", "golang-migrate": "schema_migrations",
            "flyway": "flyway_schema_history"}


def _columns(conn, table: str) -> set[str] | None:
    rows = conn.execute("SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0"
                        " AND NOT a.attisdropped", [table]).fetchall()
    return {r[0] for r in rows} or None


def old_history(conn, tool: str, imported: dict) -> list[str]:
    """The old tool's applied versions, as it records them (refusing a dirty or failed history);
    the versions are those of the imported files' headers."""
    if tool not in TOOLS:
        raise PgvkitError(f"unknown tool {tool!r}; pgvkit reads the history of {', '.join(TOOLS)}")
    table = _HISTORY[tool]
    columns = _columns(conn, table)
    if columns is None:
        raise PgvkitError(f"no {table} table in {conn.info.dbname} (on the search_path): is this the database "
                          f"{tool} migrated?")
    q = sql.Identifier(table)
    if tool == "goose":
        rows = conn.execute(sql.SQL("SELECT DISTINCT ON (version_id) version_id, is_applied FROM {}"
                                    " ORDER BY version_id, id DESC").format(q)).fetchall()
        return [canonical(tool, v) for v, applied in rows if applied and v != 0]
    if tool == "dbmate":
        if "dirty" in columns:
            raise PgvkitError(f"{table} has a dirty column: that is golang-migrate's history; use --from golang-migrate")
        return [canonical(tool, r[0]) for r in conn.execute(sql.SQL("SELECT version FROM {} ORDER BY version").format(q))]
    if tool == "golang-migrate":
        if "dirty" not in columns:
            raise PgvkitError(f"{table} has no dirty column: that is not golang-migrate's history (dbmate's?)")
        row = conn.execute(sql.SQL("SELECT version, dirty FROM {}").format(q)).fetchone()
        if row is None:
            return []
        if row[1]:
            raise PgvkitError(f"golang-migrate's history is dirty at version {row[0]}: that migration failed part-way; "
                              f"repair the schema by hand, then `migrate force {row[0]}` (or the version before) first")
        return [v for t, v in imported if t == tool and int(v) <= row[0]]
    failed = conn.execute(sql.SQL("SELECT version, script FROM {} WHERE NOT success ORDER BY installed_rank").format(
        q)).fetchone()
    if failed:
        raise PgvkitError(f"flyway_schema_history records a failed migration ({failed[1]}, version {failed[0]}): fix "
                          "the schema and run flyway repair first")
    rows = conn.execute(sql.SQL("SELECT version, type FROM {} WHERE version IS NOT NULL AND success"
                                " ORDER BY installed_rank").format(q)).fetchall()
    applied = [canonical(tool, v) for v, kind in rows if kind != "BASELINE"]
    for v, kind in rows:
        if kind == "BASELINE":  # everything up to it counts as applied
            key = tuple(int(p) for p in canonical(tool, v).split("."))
            applied += [iv for t, iv in imported if t == tool and tuple(int(p) for p in iv.split(".")) <= key]
    return sorted(set(applied), key=lambda v: tuple(int(p) for p in v.split(".")))
