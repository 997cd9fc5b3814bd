"""Statements that rewrite a whole table under an ACCESS EXCLUSIVE lock (CLUSTER, VACUUM FULL,
ALTER COLUMN ... TYPE): said by plan before anything runs, with what the lock holds up.

PostgreSQL rebuilds every index of the table during such a rewrite, under the same lock: at a
million rows of 768 dimensions an HNSW index alone takes 10 to 25 minutes to build on two cores, and
every search and write of the table waits all that time. Such a file belongs in a maintenance
window (docs/how-to/tune-at-scale.md: A small owner's searches at a million rows); nothing stops it.
"""

from __future__ import annotations

from pglast import ast, enums
from psycopg import sql

from ..memory import size_text
from .files import Migration

__all__ = ["rewritten_tables", "rewrite_notes"]


def _name(relation: ast.RangeVar) -> tuple[str | None, str]:
    return relation.schemaname, relation.relname


def rewritten_tables(statements) -> list[tuple[int, str, tuple[str | None, str]]]:
    """(line, what, (schema, table)) for each statement that rewrites a table: CLUSTER of a table,
    VACUUM FULL, ALTER TABLE ... ALTER COLUMN ... TYPE."""
    found = []
    for st in statements:
        node = st.node
        if isinstance(node, ast.ClusterStmt) and node.relation is not None:
            found.append((st.line, "CLUSTER", _name(node.relation)))
        elif isinstance(node, ast.VacuumStmt) and node.is_vacuumcmd and any(
                getattr(o, "defname", None) == "full" and getattr(o.arg, "boolval", True) is not False
                for o in node.options or ()):
            found += [(st.line, "VACUUM FULL", _name(rel.relation)) for rel in node.rels or () if rel.relation]
        elif isinstance(node, ast.AlterTableStmt) and node.relation is not None and any(
                getattr(cmd, "subtype", None) == enums.AlterTableType.AT_AlterColumnType for cmd in node.cmds or ()):
            found.append((st.line, "ALTER COLUMN ... TYPE", _name(node.relation)))
    return found


def rewrite_notes(conn, to_apply: list[Migration], *, down: bool = False) -> list[str]:
    """One warning for each pending file (or down file) that rewrites an existing table: its size,
    rows, and the indexes rebuilt under the same lock (vector indexes named)."""
    notes = []
    for m in to_apply:
        for line, what, (schema, table) in rewritten_tables((m.down if down else m.up).statements):
            named = sql.Identifier(schema, table) if schema else sql.Identifier(table)
            row = conn.execute(
                "SELECT c.oid, pg_table_size(c.oid), c.reltuples::bigint FROM pg_class c WHERE c.oid = to_regclass(%s)",
                [named.as_string(conn)]).fetchone()
            if row is None:
                continue  # made by an earlier file of the same run: empty until then
            indexes = conn.execute(
                "SELECT i.relname, am.amname, pg_relation_size(i.oid) FROM pg_index x JOIN pg_class i ON i.oid ="
                " x.indexrelid JOIN pg_am am ON am.oid = i.relam WHERE x.indrelid = %s ORDER BY 3 DESC",
                [row[0]]).fetchall()
            vector = [f"{name} ({method}, {size_text(size)})" for name, method, size in indexes if method in ("hnsw", "ivfflat")]
            rebuilt = (f"; its {len(indexes)} indexes are rebuilt under the same lock"
                       + (f", {', '.join(vector)} among them" if vector else "")) if indexes else ""
            notes.append(f"{m.id}{'.down' if down else ''}:{line}: {what} rewrites {table} ({size_text(row[1])}, "
                         f"{max(row[2], 0):,} rows) under an ACCESS EXCLUSIVE lock{rebuilt}: every search and write of "
                         f"{table} waits until it ends; apply it in a maintenance window")
    return notes
