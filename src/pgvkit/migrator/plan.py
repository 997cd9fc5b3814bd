"""Planning: what migrate or rollback would run, shown before anything runs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import psycopg
from pglast import ast, enums
from psycopg import sql

from ..display import Table
from ..errors import ExtensionNotOnServer, ExtensionUnavailable, MigrationFileError, PgvkitError, RollbackError
from .files import Migration
from .sqlfile import SQLFile

__all__ = ["Plan", "Files", "changes", "apply_steps", "rollback_targets", "rollback_steps", "check_down_files", "check_extensions",
           "direct_query_notes", "replaced_indexes", "stacked_notes", "check_partitioned", "TUNE_WRITTEN", "ESTIMATE",
           "build_estimate", "build_text", "memory_note", "pending_build", "n_log_n", "duration"]

TUNE_WRITTEN = "-- Written by pgvkit tune on "  # the second line of every migration pgvkit tune writes
ESTIMATE = "-- pgvkit:estimate "  # tune's estimate of its index build at the table's size: build_s=, rows=, ...

_NO_EXTENSION = {  # what to do instead when a server lacks an extension migrations often start with
    "pgcrypto": "if it is for gen_random_uuid(), that is built in since PostgreSQL 13: drop the CREATE EXTENSION",
    "uuid-ossp": "uuid_generate_v4() has a built-in twin since PostgreSQL 13, gen_random_uuid(): use it and drop "
                 "the CREATE EXTENSION",
}


@dataclass(repr=False)
class Plan(Table):
    """What migrate would run, without running it."""

    database: str
    steps: list[dict] = field(default_factory=list)
    verb: str = "apply"
    notes: list[str] = field(default_factory=list)  # what in the directory is not a migration

    @property
    def columns(self) -> tuple[str, ...]:
        base = ("version", "name", "mode", "statements", "action")
        if self.verb == "roll back":
            return base + ("drops",)
        return base + ("changes",) + (("build",) if any(s.get("build") for s in self.steps) else ())

    @property
    def title(self) -> str:
        n = len(self.steps)
        return f"Plan for {self.database}: " + (f"{n} migration(s) to {self.verb}" if n else f"nothing to {self.verb}")

    def rows(self) -> list[dict]:
        return self.steps

    def sql(self) -> str:
        """Every file's SQL, in the order it would run (`pgvkit plan --sql`); the table leaves it out."""
        return "\n".join(f"-- {s['version']}_{s['name']} ({s['mode']})\n{s['sql'].rstrip()}\n" for s in self.steps)

    def to_dict(self) -> dict:
        return {"database": self.database, "migrations": self.steps, "warnings": list(self.notes)}


@dataclass(repr=False)
class Files(Table):
    """The migration files as a reader wants them: one row each, what it changes, no SQL."""

    migrations: list[Migration]
    columns = ("version", "name", "mode", "statements", "changes", "down file")

    @property
    def title(self) -> str:
        return f"{len(self.migrations)} migration file(s), each parsed by PostgreSQL's grammar"

    def rows(self) -> list[dict]:
        return [{"version": m.label, "name": m.name, "mode": "transaction" if m.transactional else "no-transaction",
                 "statements": len(m.up.statements), "changes": changes(m.up.statements),
                 "down file": "yes" if m.down else "none: cannot be rolled back"} for m in self.migrations]


def build_estimate(m: Migration, rows_now: int | None = None) -> dict | None:
    """What pgvkit tune estimated for the index build of a migration it wrote (its ESTIMATE line):
    {"build_s": seconds, "rows": rows, "maintenance_work_mem": "4200MB"}; None for any other file.
    With `rows_now` (the table's rows when it is planned or applied) the time is scaled to them as
    n log n (how tune estimated it) and "tuned_rows" keeps the count tune estimated for."""
    for line in m.up.text.splitlines():
        if line.startswith(ESTIMATE):
            fields = dict(part.split("=", 1) for part in line[len(ESTIMATE):].split() if "=" in part)
            try:
                estimate = {"build_s": float(fields["build_s"]), "rows": int(fields["rows"]),
                            "maintenance_work_mem": fields.get("maintenance_work_mem", "")}
            except (KeyError, ValueError):
                return None
            if rows_now and rows_now != estimate["rows"] and estimate["rows"] > 1:
                estimate.update(build_s=n_log_n(estimate["build_s"], estimate["rows"], rows_now),
                                rows=rows_now, tuned_rows=estimate["rows"])
            return estimate
    return None


def n_log_n(seconds: float, rows: int, to_rows: int) -> float:
    """An HNSW build's time on `rows` rows carried to `to_rows`: each insert searches a graph of
    log n layers (tuning.scale.build_estimate carries its sample builds the same way)."""
    return seconds * (to_rows * math.log(max(to_rows, 2))) / (rows * math.log(max(rows, 2)))


def pending_build(conn, m: Migration) -> dict | None:
    """What the first CREATE INDEX of `m` would build now: {"rows": the rows it would index (a
    vector index leaves NULLs out: a model's column being backfilled counts its filled rows),
    "need_bytes": an HNSW graph's memory at that size (None for other indexes)}; None when `m`
    creates no index or its table is not there yet."""
    from ..sizing import hnsw_build_bytes

    for st in m.up.statements:
        if not isinstance(st.node, ast.IndexStmt):
            continue
        node = st.node
        rel, first = node.relation, (node.indexParams or [None])[0]
        name = sql.Identifier(*([rel.schemaname] if rel.schemaname else []), rel.relname)
        column = first.name if first is not None and first.name else None
        try:
            with conn.transaction():
                if conn.execute("SELECT to_regclass(%s)", [name.as_string(conn)]).fetchone()[0] is None:
                    return None
                counted = sql.SQL("count({})").format(sql.Identifier(column)) if column else sql.SQL("count(*)")
                rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(counted, name)).fetchone()[0]
                dims = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
                                    [name.as_string(conn), column]).fetchone() if column else None
        except psycopg.Error:
            return None
        opclass = [x.sval for x in (first.opclass or ())][-1:] if first is not None else []
        weight = 0.5 if opclass and opclass[0].startswith("halfvec") else 1.0
        options = {o.defname: o.arg.ival for o in (node.options or ()) if hasattr(o.arg, "ival")}
        need = (hnsw_build_bytes(rows, max(1, round(dims[0] * weight)), options.get("m", 16))
                if node.accessMethod == "hnsw" and dims and dims[0] > 0 else None)
        return {"rows": rows, "need_bytes": need}
    return None


def build_text(estimate: dict) -> str:
    """`~12 min on 1,000,000 rows, maintenance_work_mem 5123MB` (and `(tune's estimate for N,
    scaled)` when the table has changed since tune counted it)."""
    tuned = estimate.get("tuned_rows")
    return (f"~{duration(estimate['build_s'])} on {estimate['rows']:,} rows"
            + (f" (tune's estimate for {tuned:,}, scaled)" if tuned else "")
            + f", maintenance_work_mem {estimate['maintenance_work_mem']}")


def memory_note(m: Migration, now: dict | None) -> str | None:
    """A warning for plan when the HNSW graph `m` would build now (pending_build) needs more than
    the maintenance_work_mem its file sets; None when it fits or cannot be told."""
    from ..memory import parse_size, size_text

    estimate = build_estimate(m, (now or {}).get("rows"))
    need = (now or {}).get("need_bytes")
    if not estimate or not need:
        return None
    try:
        given = parse_size(estimate["maintenance_work_mem"])
    except PgvkitError:
        return None
    if need <= given:
        return None
    tuned = estimate.get("tuned_rows")
    grown = (f" (the table has grown from the {tuned:,} rows it was tuned for)"
             if tuned and estimate["rows"] > tuned else "")
    return (f"{m.id}: the HNSW graph needs ~{size_text(need)} at {estimate['rows']:,} rows, more than the "
            f"maintenance_work_mem {estimate['maintenance_work_mem']} the file sets{grown}: the build would go on on disk, many times "
            "slower than estimated; run pgvkit tune --write-migration again")


def duration(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def apply_steps(to_apply: list[Migration], rows: dict, builds: dict[int, dict | None] | None = None) -> list[dict]:
    """One step per pending migration: its mode, statement count, apply or resume, its index
    build's estimate (for a migration pgvkit tune wrote; carried to `builds[version]`, what its
    CREATE INDEX would build now: pending_build) and its SQL."""
    steps = []
    for m in to_apply:
        row = rows.get(m.version)
        now = (builds or {}).get(m.version) or {}
        estimate = build_estimate(m, now.get("rows"))
        steps.append({"version": m.label, "name": m.name,
                      "mode": "transaction" if m.transactional else "no-transaction (autocommit)",
                      "statements": len(m.up.statements),
                      "action": f"resume ({row.status})" if row else "apply",
                      "changes": changes(m.up.statements),
                      "build": build_text(estimate) if estimate else "",
                      "sql": m.up.text})
    return steps


_STOP = {"CASCADE", "RESTRICT", "AS", "ON", "USING", "TO", "WITH", "FROM", "SET", "RETURNS", "IS", "FOR", "BEFORE", "AFTER", "ADD", "TYPE"}


def changes(statements) -> str:
    """What a file's statements do, in a few words: `CREATE TABLE items; CREATE INDEX a, b; DO (a block)`."""
    said: dict[str, list[str]] = {}
    for st in statements:
        words = " ".join(line for line in st.sql.splitlines() if not line.lstrip().startswith("--")).split()
        if not words:
            continue
        if words[0].upper() == "DO":  # what the block makes, when it says so in a statement it runs
            inner = re.findall(r"CREATE(?: OR REPLACE)? (FUNCTION|TABLE|INDEX|VIEW|TRIGGER) ([\w.\"]+)", st.sql, re.I)
            said.setdefault("DO (a block" + "".join(f": CREATE {k.upper()} {n}" for k, n in inner[:1]) + ")", [])
            continue
        kept = []
        for word in words[:10]:
            if word.upper() in _STOP and len(kept) > 1:
                break
            kept.append(word.split("(")[0].rstrip(";"))
            if "(" in word or word.endswith(";"):
                break
        phrase = " ".join(w for w in kept if w)
        for noise in (" OR REPLACE", " IF NOT EXISTS", " IF EXISTS"):
            phrase = phrase.replace(noise, "")
        verb, _, name = phrase.rpartition(" ") if len(phrase.split()) > 2 else (phrase, "", "")
        said.setdefault(verb, []).append(name) if name else said.setdefault(verb, [])
    return "; ".join(f"{verb} {', '.join(dict.fromkeys(names))}".strip() for verb, names in said.items())


def rollback_targets(rows: dict, to: int) -> list[int]:
    """The applied versions above `to`, newest first."""
    return sorted((v for v in rows if v > to), reverse=True)


def check_down_files(targets: list[int], by_version: dict[int, Migration]) -> None:
    """Refuse a rollback whose files or down files are missing, naming what to write."""
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


def _drops(st) -> list[str]:
    """What a statement of a down file drops: the DROP itself, or each DROP COLUMN of an ALTER
    TABLE (the column's data goes with it)."""
    if st.kind == "DropStmt":
        return [" ".join(st.sql.split())]
    if isinstance(st.node, ast.AlterTableStmt):
        return [f"ALTER TABLE {st.node.relation.relname} DROP COLUMN {c.name} (and its data)" for c in st.node.cmds or ()
                if getattr(c, "subtype", None) == enums.AlterTableType.AT_DropColumn]
    return []


def rollback_steps(targets: list[int], by_version: dict[int, Migration]) -> list[dict]:
    """One step per down file, newest first, with what it drops."""
    check_down_files(targets, by_version)
    steps = []
    for v in targets:
        down = by_version[v].down
        drops = [d for st in down.statements for d in _drops(st)]
        steps.append({"version": by_version[v].label, "name": by_version[v].name,
                      "mode": "transaction" if down.transactional else "no-transaction (autocommit)",
                      "statements": len(down.statements), "action": "roll back",
                      "drops": "; ".join(drops) or "(nothing dropped)", "sql": down.text})
    return steps


def check_extensions(conn, to_apply: list[Migration]) -> None:
    """Refuse, before anything runs, a CREATE EXTENSION the server cannot honour: one line with
    the file, the line and the fix (the server would only say it cannot open a control file)."""
    available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    for m in to_apply:
        for st in m.up.statements:
            if not isinstance(st.node, ast.CreateExtensionStmt):
                continue
            name = st.node.extname
            if name in available or name in installed:
                continue
            if name == "vector":
                raise ExtensionUnavailable(conn.info.dbname)
            fix = _NO_EXTENSION.get(name, "install it on the server (often its postgresql-contrib package)")
            raise ExtensionNotOnServer(m.path, st.line, name, fix + ", or point DATABASE_URL at a server that has it "
                                       "(SELECT name FROM pg_available_extensions lists what it has)")


def _serves_direct(node: ast.IndexStmt, column: str) -> bool:
    """An IVFFlat / HNSW index on the column itself with a vector operator class: what the
    application's own ORDER BY embedding <=> ... can use (an expression index cannot)."""
    first = node.indexParams[0] if node.indexParams else None
    opclass = [s.sval for s in (first.opclass or ())] if first is not None else []
    return (node.accessMethod in ("ivfflat", "hnsw") and first is not None and first.name == column
            and (not opclass or opclass[-1].startswith("vector_")))


def direct_query_notes(conn, to_apply: list[Migration], table: str = "ip_asset_embeddings",
                       column: str = "embedding") -> list[str]:
    """A migration that drops the last index the application's direct ORDER BY embedding <=> ...
    queries can use and creates none (e.g. a swap to a halfvec or binary-quantized index, which
    only search_assets queries): one warning each, for plan to show before anything runs."""
    from ..indexes import vector_indexes

    try:
        with conn.transaction():
            direct = {i.name for i in vector_indexes(conn, table, column) if i.valid and i.kind and i.kind.direct}
    except psycopg.Error:
        return []
    notes = []
    for m in to_apply:
        dropped, created = set(), False
        for st in m.up.statements:
            node = st.node
            if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_INDEX:
                dropped |= {obj[-1].sval for obj in node.objects} & direct
            elif isinstance(node, ast.IndexStmt) and _serves_direct(node, column):
                created = True
        if dropped and not created and not direct - dropped:
            direct -= dropped
            notes.append(f"{m.id} drops {', '.join(sorted(dropped))}, the index direct ORDER BY {column} <=> ... "
                         f"queries use, and creates none they can: after it only search_assets searches {table} "
                         "through an index; move every direct query to search_assets before applying it ("
                         "docs/how-to/smaller-indexes.md: Moving the application)")
    return notes


def replaced_indexes(m: Migration) -> set[str]:
    """The index names a migration's up file creates, drops or renames to: what it replaces."""
    names = set()
    for st in m.up.statements:
        node = st.node
        if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_INDEX:
            names |= {obj[-1].sval for obj in node.objects}
        elif isinstance(node, ast.IndexStmt) and node.idxname:
            names.add(node.idxname)
        elif isinstance(node, ast.RenameStmt) and node.renameType == enums.ObjectType.OBJECT_INDEX:
            names.add(node.newname)
    return names


def stacked_notes(to_apply: list[Migration]) -> list[str]:
    """A migration pgvkit tune wrote while another pending migration replaces the same index: its
    down file restores the index that stood when it was written, not what the earlier one leaves,
    so rolling it back would bring back neither."""
    notes = []
    for i, later in enumerate(to_apply):
        if TUNE_WRITTEN not in later.up.text:
            continue
        mine = {n for n in replaced_indexes(later) if not n.endswith(("_next", "_prev"))}  # not its temporaries
        for earlier in to_apply[:i]:
            shared = mine & replaced_indexes(earlier)
            if shared:
                notes.append(f"{later.id} was written by pgvkit tune before {earlier.id} ran, and both replace "
                             f"{', '.join(sorted(shared))}: its down file would restore the index that stood before "
                             f"{earlier.id}, not what {earlier.id} leaves; delete {later.id}'s two files, pgvkit migrate, "
                             "then tune again")
                break
    return notes


def _relkind(conn, schema: str | None, name: str) -> str | None:
    ident = psycopg.sql.Identifier(schema, name) if schema else psycopg.sql.Identifier(name)
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [ident.as_string(conn)]).fetchone()
    return row[0] if row else None


def check_partitioned(conn, files: list[SQLFile]) -> None:
    """Refuse, before anything runs, what PostgreSQL cannot do on a partitioned table: build or
    drop its index concurrently. Found only when the file runs, it would stop a no-transaction
    file part-way, after its earlier statements committed."""
    for f in files:
        for st in f.statements:
            node = st.node
            if isinstance(node, ast.IndexStmt) and node.concurrent and node.relation is not None:
                if _relkind(conn, node.relation.schemaname, node.relation.relname) == "p":
                    raise MigrationFileError(
                        f"{f.path}:{st.line}",
                        f"CREATE INDEX CONCURRENTLY on {node.relation.relname}, a partitioned table: PostgreSQL cannot "
                        "build that concurrently; create the index ON ONLY the table, then CONCURRENTLY on each "
                        "partition, and ALTER INDEX ... ATTACH PARTITION each (pgvkit tune writes such files)")
            if isinstance(node, ast.DropStmt) and node.concurrent and \
                    node.removeType == enums.ObjectType.OBJECT_INDEX:
                for obj in node.objects:
                    names = [x.sval for x in obj]
                    if _relkind(conn, names[-2] if len(names) > 1 else None, names[-1]) == "I":
                        raise MigrationFileError(
                            f"{f.path}:{st.line}",
                            f"DROP INDEX CONCURRENTLY {names[-1]}, an index of a partitioned table: PostgreSQL cannot "
                            "drop that concurrently; drop it without CONCURRENTLY (a brief lock on every partition)")
