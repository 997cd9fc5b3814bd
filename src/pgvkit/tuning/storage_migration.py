"""Where the table's vectors live, and the migration that moves them into the table's own pages,
each owner's rows side by side.

pgvector stores a vector of more than ~500 dimensions out of line, in the table's TOAST relation
(its type's storage is EXTERNAL): each row read costs a TOAST index lookup and two chunks more. A
search through the vector index reads k rows and does not notice; search_assets reading a small
owner whole (migration 003's exact route) reads every row of the owner and does: at 1,000,000 rows a
1 % owner's 10,000 rows take p95 76 ms out of line, 25 ms inline and 16 ms inline and clustered by
owner (bench/owner_storage.py).

The migration (`pgvkit storage --write-migration`) sets the column's storage to MAIN (inline, moved
out only when a row would not fit a page) and rewrites the table with CLUSTER on its owner index, so
the rows already there move inline too; ANALYZE after. CLUSTER holds an ACCESS EXCLUSIVE lock and
rebuilds every index of the table under it (pgvkit plan says so, with their sizes): a maintenance
window. Its down file puts back the column's storage and the table's clustered index as they were;
rows stay where they are until the table is rewritten again (new rows follow the old storage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

from ..errors import PgvkitError
from ..memory import size_text
from ..server.db import connect
from .migration import all_applied, version_after

__all__ = ["VectorStorage", "vector_storage", "write_storage_migration", "STORAGE_WRITTEN", "INLINE_HINT"]

STORAGE_WRITTEN = "-- Written by pgvkit storage on "  # the second line of the migration it writes
STORAGE_NAMES = {"p": "PLAIN", "e": "EXTERNAL", "x": "EXTENDED", "m": "MAIN"}
# what confirm adds to its owner-route line when small owners are read whole from TOAST
INLINE_HINT = ("their vectors are stored out of line (TOAST): pgvkit storage --write-migration stores them in the "
               "table's pages, clustered by owner (a 1 % owner at 1M rows read whole: p95 76 -> 16 ms; a rewrite "
               "under an exclusive lock)")


@dataclass
class VectorStorage:
    """Where one vector column's values live, and what a rewrite would take."""

    schema: str
    table: str
    column: str
    storage: str  # pg_attribute.attstorage: p, e, x, m
    partitioned: bool
    rows: int  # the planner's count (reltuples), summed over partitions
    heap_bytes: int
    toast_bytes: int  # the TOAST relations (with their indexes): out-of-line values, this column's and others'
    owner_index: str | None  # a valid btree index led by owner_id: what CLUSTER orders by
    clustered_on: str | None  # the index the table was last clustered on (ALTER TABLE ... CLUSTER ON)
    indexes: list[tuple[str, str, int]] = field(default_factory=list)  # (name, method, bytes): rebuilt by a rewrite

    @property
    def inline(self) -> bool:
        """New values stay in the table's pages (MAIN or PLAIN)."""
        return self.storage in ("m", "p")

    @property
    def out_of_line(self) -> bool:
        """Most of the table's bytes sit in TOAST: the vectors are read from it."""
        return self.toast_bytes > self.heap_bytes

    def said(self) -> str:
        where = ("out of line (TOAST)" if self.out_of_line else "in the table's pages")
        return (f"{self.table}.{self.column}: storage {STORAGE_NAMES[self.storage]}, {self.rows:,} rows, "
                f"heap {size_text(self.heap_bytes)}, TOAST {size_text(self.toast_bytes)}: the vectors are {where}; "
                + (f"clustered on {self.clustered_on}" if self.clustered_on else "not clustered")
                + (f"; owner index {self.owner_index}" if self.owner_index else "; no btree index led by owner_id"))


def vector_storage(conn, table: str = "ip_asset_embeddings", column: str = "embedding") -> VectorStorage:
    """The column's storage, the table's heap and TOAST sizes (every partition's), its owner index."""
    row = conn.execute(
        "SELECT n.nspname, c.relname, c.oid, a.attstorage::text, c.relkind = 'p' FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped"
        " WHERE c.oid = to_regclass(%s)", [column, sql.Identifier(table).as_string(conn)]).fetchone()
    if row is None:
        raise PgvkitError(f"no column {column} in a table {table} on the search_path; run pgvkit migrate first "
                          "(001 creates it), or set the search_path to the schema that holds it")
    schema, name, oid, storage, partitioned = row
    leaves = ("(SELECT relid FROM pg_partition_tree(%s) WHERE isleaf)" if partitioned else "(%s)")  # a plain table: itself
    rows, heap, toast = conn.execute(
        "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint, coalesce(sum(pg_relation_size(c.oid)), 0)::bigint,"
        " coalesce(sum(pg_total_relation_size(nullif(c.reltoastrelid, 0))), 0)::bigint"
        f" FROM pg_class c WHERE c.oid IN {leaves}", [oid]).fetchone()
    owner_index = conn.execute(
        "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam"
        " JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]"
        " WHERE x.indrelid = %s AND am.amname = 'btree' AND a.attname = 'owner_id' AND x.indpred IS NULL"
        " AND (x.indisvalid OR i.relkind = 'I') ORDER BY x.indnkeyatts, i.relname LIMIT 1", [oid]).fetchone()
    clustered = conn.execute("SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                             " WHERE x.indrelid = %s AND x.indisclustered", [oid]).fetchone()
    indexes = conn.execute(
        "SELECT i.relname, am.amname, CASE WHEN i.relkind = 'I' THEN (SELECT sum(pg_relation_size(t.relid))"
        " FROM pg_partition_tree(i.oid) t) ELSE pg_relation_size(i.oid) END::bigint FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am am ON am.oid = i.relam"
        " WHERE x.indrelid = %s ORDER BY 3 DESC, 1", [oid]).fetchall()
    return VectorStorage(schema, name, column, storage, partitioned, rows, heap, toast,
                         owner_index[0] if owner_index else None, clustered[0] if clustered else None,
                         [tuple(i) for i in indexes])


def write_storage_migration(url: str, migrations_dir: str | Path | None = None, *, cluster: bool = True,
                            table: str = "ip_asset_embeddings", column: str = "embedding") -> tuple[Path, Path] | None:
    """NNN_inline_vectors.sql: the column's storage MAIN and the table rewritten (CLUSTER on its
    owner index; without `cluster`, VACUUM FULL), ANALYZE after; its down file puts back the storage
    and the clustered index. None when there is nothing to do: the storage is inline already and no
    value sits out of line (nor, with `cluster`, is the table unclustered)."""
    with connect(url) as conn:
        directory, existing, recorded = all_applied(conn, migrations_dir, "the storage migration is written for the "
                                                    "table as it stands", "run pgvkit storage again")
        now = vector_storage(conn, table, column)
        if cluster and now.owner_index is None:
            raise PgvkitError(f"{now.table} has no btree index led by owner_id for CLUSTER to order the rows by: create "
                              f"one (CREATE INDEX ON {sql.Identifier(now.schema, now.table).as_string(conn)} (owner_id)) "
                              "and apply it, or pass --no-cluster to store the vectors inline without ordering them")
        if now.inline and not now.out_of_line and (not cluster or now.clustered_on == now.owner_index
                                                   or now.partitioned):
            return None
        t = sql.Identifier(now.schema, now.table)
        c = sql.Identifier(column)
        rewrite = (sql.SQL("CLUSTER {} USING {};").format(t, sql.Identifier(now.owner_index)) if cluster
                   else sql.SQL("VACUUM (FULL) {};").format(t))
        # CLUSTER of a partitioned table and VACUUM cannot run inside a transaction: then each statement commits
        # alone, and a rerun after a failure does again what is left (every statement is idempotent)
        alone = now.partitioned or not cluster
        name = f"{version_after(existing, recorded):03d}_inline_vectors"
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        rebuilt = ", ".join(f"{n} ({m}, {size_text(s)})" for n, m, s in now.indexes)
        up = (("-- pgvkit:no-transaction\n" if alone else "")
              + f"-- {name}: the vectors of {now.table}.{column} stored in the table's own pages"
              + (", each owner's rows side by side\n" if cluster else "\n")
              + f"{STORAGE_WRITTEN}{stamp}: {now.said()}\n"
              "-- MAINTENANCE WINDOW: the rewrite holds an ACCESS EXCLUSIVE lock on the table, so every search and\n"
              f"-- write waits until it ends; every index is rebuilt under it: {rebuilt or 'none'}.\n"
              "-- A small owner's searches (read whole by search_assets) then read a few pages instead of a TOAST\n"
              "-- lookup a row. Rows added later land wherever there is room: the clustering wears off, inline\n"
              "-- storage stays.\n"
              "-- a rewrite is long by design: no statement_timeout of the role's or the database's stops it\n"
              + ("SET statement_timeout = '0';\n" if alone else "SET LOCAL statement_timeout = '0';\n")
              + sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE MAIN;\n").format(t, c).as_string(conn)
              + rewrite.as_string(conn) + "\n"
              + sql.SQL("ANALYZE {};\n").format(t).as_string(conn))
        marker = ""
        if not now.partitioned and cluster and now.clustered_on != now.owner_index:  # CLUSTER marked the owner index
            marker = (sql.SQL("ALTER TABLE {} CLUSTER ON {};\n").format(t, sql.Identifier(now.clustered_on))
                      if now.clustered_on else sql.SQL("ALTER TABLE {} SET WITHOUT CLUSTER;\n").format(t)
                      ).as_string(conn)
        down = (f"-- Undo {name}: the column's storage and the table's clustered index as they were. The rows stay\n"
                "-- inline until the table is rewritten again (VACUUM FULL moves them out); new rows follow the\n"
                "-- storage set here.\n"
                + sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET STORAGE {};\n").format(
                    t, c, sql.SQL(STORAGE_NAMES[now.storage])).as_string(conn)
                + marker)
    up_path, down_path = directory / f"{name}.sql", directory / f"{name}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path
