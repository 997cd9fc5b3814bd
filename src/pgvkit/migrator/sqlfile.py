"""Reading SQL files with PostgreSQL's own parser (pglast/libpg_query): statements, lines,
header directives, and which statements cannot run inside a transaction."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pglast import ast, enums, parser

from ..errors import MigrationFileError, MigrationSQLError
from .foreign import foreign_syntax

__all__ = [
    "Statement",
    "SQLFile",
    "read_sql_file",
    "parse_sql",
    "split_statements",
    "normalise",
    "checksum",
    "DIRECTIVES",
]

DIRECTIVES = {"no-transaction": "run statement by statement in autocommit (CREATE INDEX CONCURRENTLY)"}
_DIRECTIVE = re.compile(r"^\s*--\s*pgvkit:([A-Za-z0-9_-]+)\s*$")


def normalise(text: str) -> str:
    """Text as checksummed: BOM stripped, CRLF and CR line endings made LF."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def checksum(text: str) -> str:
    """sha256 of the normalised text, so an editor's line endings never count as drift."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a file, with the 1-based line it starts on."""

    sql: str
    line: int
    node: ast.Node = field(repr=False, compare=False)

    @property
    def kind(self) -> str:
        return type(self.node).__name__

    @property
    def needs_autocommit(self) -> bool:
        """True for statements PostgreSQL refuses to run inside a transaction block."""
        n = self.node
        if isinstance(n, (ast.IndexStmt, ast.DropStmt)):
            return bool(n.concurrent)
        if isinstance(n, ast.ReindexStmt):
            return any(getattr(p, "defname", None) == "concurrently" for p in (n.params or ()))
        if isinstance(n, ast.VacuumStmt):
            return bool(n.is_vacuumcmd)
        return isinstance(
            n,
            (
                ast.CreatedbStmt,
                ast.DropdbStmt,
                ast.AlterSystemStmt,
                ast.CreateTableSpaceStmt,
                ast.DropTableSpaceStmt,
                ast.CreateSubscriptionStmt,
                ast.DropSubscriptionStmt,
            ),
        )

    @property
    def validates(self) -> bool:
        """ALTER TABLE ... VALIDATE CONSTRAINT: it scans the table under a lock that lets reads and
        writes go on, unless a statement before it in the same transaction took ACCESS EXCLUSIVE
        (ADD CONSTRAINT ... NOT VALID does): it belongs in a no-transaction file."""
        n = self.node
        if isinstance(n, ast.DoStmt):  # a guarded one: IF ... THEN ALTER TABLE ... VALIDATE CONSTRAINT ...
            return bool(re.search(r"\bVALIDATE\s+CONSTRAINT\b", self.sql, re.I))
        return isinstance(n, ast.AlterTableStmt) and any(
            getattr(c, "subtype", None) == enums.AlterTableType.AT_ValidateConstraint for c in n.cmds or ())

    @property
    def locks_readers(self) -> bool:
        """True for statements that take an ACCESS EXCLUSIVE lock on a table or index (DROP,
        ALTER TABLE, TRUNCATE, REINDEX, CLUSTER, VACUUM FULL): a hot standby replays it as a lock
        its searches wait behind."""
        n = self.node
        if isinstance(n, ast.DropStmt):
            return n.removeType in (enums.ObjectType.OBJECT_INDEX, enums.ObjectType.OBJECT_TABLE,
                                    enums.ObjectType.OBJECT_MATVIEW)
        if isinstance(n, ast.VacuumStmt):
            return any(getattr(o, "defname", None) == "full" for o in (n.options or ()))
        return isinstance(n, (ast.AlterTableStmt, ast.TruncateStmt, ast.ReindexStmt, ast.ClusterStmt))

    @property
    def creates(self) -> tuple[str, str | None, str] | None:
        """(kind, schema, name) of the object this statement creates, if any."""
        n = self.node
        if isinstance(n, ast.CreateExtensionStmt):
            return ("extension", None, n.extname)
        if isinstance(n, ast.CreateStmt):
            return ("relation", n.relation.schemaname, n.relation.relname)
        if isinstance(n, ast.ViewStmt):
            return ("relation", n.view.schemaname, n.view.relname)
        if isinstance(n, ast.IndexStmt) and n.idxname:
            return ("relation", n.relation.schemaname, n.idxname)
        if isinstance(n, ast.CreateFunctionStmt):
            names = [s.sval for s in n.funcname]
            return ("function", names[0] if len(names) > 1 else None, names[-1])
        return None


@dataclass(frozen=True)
class SQLFile:
    """A parsed file: normalised text, its checksum, header directives and statements."""

    path: Path
    text: str
    checksum: str
    directives: frozenset[str]
    statements: tuple[Statement, ...]

    @property
    def transactional(self) -> bool:
        return "no-transaction" not in self.directives


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MigrationFileError(
            f"{path}:{line}", f"is not UTF-8 (byte 0x{raw[exc.start]:02x}); re-save the file as UTF-8"
        ) from None


def _directives(path: Path, text: str) -> frozenset[str]:
    """Directives are `-- pgvkit:name` lines in the comment header before the first statement."""
    found = set()
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("--"):
            break
        m = _DIRECTIVE.match(line)
        if m:
            name = m.group(1)
            if name not in DIRECTIVES:
                raise MigrationFileError(
                    f"{path}:{number}",
                    f"unknown directive pgvkit:{name}; known: "
                    + ", ".join(f"pgvkit:{d}" for d in DIRECTIVES),
                )
            found.add(name)
    return frozenset(found)


def split_statements(text: str, path: Path | str = "<sql>") -> list[Statement]:
    """Split SQL into top-level statements with the real PostgreSQL grammar."""
    try:
        parsed = parser.parse_sql(text)
    except parser.ParseError as exc:
        message, location = (exc.args + (0,))[:2]
        line = text.count("\n", 0, max(int(location or 0), 0)) + 1
        raise MigrationSQLError(path, line, f"SQL syntax error: {message}") from None
    statements = []
    for raw in parsed:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(text)
        sql = text[start:end].strip().rstrip(";").rstrip()
        statements.append(Statement(sql=sql, line=text.count("\n", 0, start) + 1, node=raw.stmt))
    return statements


def parse_sql(text: str, path: Path | str = "<sql>") -> SQLFile:
    """Parse migration text: directives, statements, and the checks that need no server."""
    path = Path(path)
    text = normalise(text)
    directives = _directives(path, text)
    foreign = foreign_syntax(text)  # before parsing: another tool's markers parse as comments
    if foreign:
        raise MigrationFileError(f"{path}:{foreign[0]}", foreign[1])
    statements = split_statements(text, path)
    if not statements:
        raise MigrationFileError(path, "has no SQL statement; delete it or add its SQL")
    transactional = "no-transaction" not in directives
    for st in statements:
        if isinstance(st.node, ast.TransactionStmt):
            raise MigrationFileError(
                f"{path}:{st.line}",
                "contains a transaction command (BEGIN/COMMIT/ROLLBACK/SAVEPOINT); remove it: "
                "pgvkit runs each file in its own transaction",
            )
        if transactional and st.needs_autocommit:
            raise MigrationFileError(
                f"{path}:{st.line}",
                f"{_first_words(st.sql)} cannot run inside a transaction; "
                "put it in its own file whose first line is: -- pgvkit:no-transaction",
            )
        if not transactional:
            _check_repeatable(path, st)
    # CLUSTER of a partitioned table cannot run in a transaction either, which the text alone cannot tell
    if not transactional and not any(st.needs_autocommit or st.validates or isinstance(st.node, ast.ClusterStmt)
                                     for st in statements):
        raise MigrationFileError(path, "is marked -- pgvkit:no-transaction but nothing in it needs that; "
                                       "remove the directive so the file runs in one transaction, all or nothing")
    return SQLFile(path, text, checksum(text), directives, tuple(statements))


_DATA_CHANGES = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.CopyStmt, ast.TruncateStmt, ast.MergeStmt)
_GUARDED = {  # node type -> (attribute that makes it repeatable, the clause to add)
    ast.CreateStmt: ("if_not_exists", "IF NOT EXISTS"),
    ast.IndexStmt: ("if_not_exists", "IF NOT EXISTS"),
    ast.CreateExtensionStmt: ("if_not_exists", "IF NOT EXISTS"),
    ast.CreateSchemaStmt: ("if_not_exists", "IF NOT EXISTS"),
    ast.DropStmt: ("missing_ok", "IF EXISTS"),
    ast.RenameStmt: ("missing_ok", "IF EXISTS"),
}


def _check_repeatable(path, st: Statement) -> None:
    """A no-transaction file is not atomic: a run that stops part-way is resumed from its first
    statement, so every statement must be safe to run twice (Flyway refuses such mixing outright;
    pgvkit allows it when each step is idempotent)."""
    where = f"{path}:{st.line}"
    if isinstance(st.node, _DATA_CHANGES):
        raise MigrationFileError(where, f"{_first_words(st.sql)} changes data in a no-transaction file, which is "
                                        "re-run from the top when resumed (the change would apply twice); "
                                        "move it to a transactional migration")
    guard = _GUARDED.get(type(st.node))
    if guard and not getattr(st.node, guard[0], False):
        raise MigrationFileError(where, f"{_first_words(st.sql)} in a no-transaction file must be safe to re-run "
                                        f"when the file is resumed; add {guard[1]}")


def read_sql_file(path: Path | str) -> SQLFile:
    """Read and parse a migration file, refusing what is not UTF-8 SQL."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MigrationFileError(path, f"cannot be read: {exc.strerror}") from None
    return parse_sql(_decode(path, raw), path)


def _first_words(sql: str, n: int = 4) -> str:
    return " ".join(sql.split()[:n])
