"""The table's vector indexes found by what they are (a pgvector access method on the embedding
column, or on an expression of it: halfvec, binary quantization), whatever they are called:
PostgreSQL's default name, a quoted one, the migration's."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from .errors import PgvkitError
from .kinds import KINDS, Kind, kind_of

__all__ = ["VectorIndex", "vector_indexes", "live_vector_index", "searched_index", "search_index", "partition_owners",
           "TUNED_BY", "plan_index"]

COSINE = tuple(k.opclass for k in KINDS.values())  # the operator classes a cosine search can use

TUNED_BY = "pgvkit tune:"  # how the comment on an index tune built begins


@dataclass(frozen=True)
class VectorIndex:
    schema: str
    name: str
    table_schema: str
    table: str
    method: str  # ivfflat / hnsw
    opclass: str
    definition: str  # pg_get_indexdef
    valid: bool
    comment: str | None
    key: str = ""  # the indexed column, or the expression: (embedding::halfvec(768))

    @property
    def kind(self) -> Kind | None:
        """vector / halfvec / binary (None: an operator class cosine searches cannot use)."""
        return kind_of(self.opclass)

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def table_identifier(self) -> sql.Identifier:
        return sql.Identifier(self.table_schema, self.table)

    @property
    def tuned_for(self) -> str | None:
        """The query-time setting pgvkit tune chose for this index, from its comment."""
        if self.comment and self.comment.startswith(TUNED_BY):
            return self.comment[len(TUNED_BY):].split(";")[0].strip()
        return None

    @property
    def predicted(self) -> str | None:
        """What pgvkit tune predicted for this index at the table's size ("predicted at 1,000,000
        rows: new vectors 0.962 (fresh 0.960), ..."), from its comment; None when it measured the whole table."""
        if self.tuned_for and "; predicted at" in self.comment:
            return "predicted at" + self.comment.split("; predicted at", 1)[1].split("; confirmed at")[0]
        return None

    @property
    def confirmed(self) -> str | None:
        """What pgvkit confirm measured and bound for this index on the live table ("confirmed at
        1,000,000 rows: hnsw.ef_search = 80"), from its comment; None when never confirmed."""
        if self.comment and "; confirmed at" in self.comment:
            return "confirmed at" + self.comment.split("; confirmed at", 1)[1]
        return None


def vector_indexes(conn, table: str, column: str = "embedding") -> list[VectorIndex]:
    """Every IVFFlat / HNSW index on the column or on an expression of it (cosine first, valid
    first, then by name)."""
    rows = conn.execute("""
        SELECT n.nspname, c.relname, tn.nspname, t.relname, am.amname, opc.opcname, pg_get_indexdef(c.oid),
               i.indisvalid, obj_description(c.oid, 'pg_class'), pg_get_indexdef(c.oid, 1, true)
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_am am ON am.oid = c.relam
        LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[0]
        WHERE i.indrelid = to_regclass(%s) AND am.amname IN ('ivfflat', 'hnsw')
          AND (a.attname = %s OR (i.indkey[0] = 0 AND EXISTS (
               SELECT FROM pg_depend d JOIN pg_attribute x ON x.attrelid = d.refobjid AND x.attnum = d.refobjsubid
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refobjid = i.indrelid
                 AND x.attname = %s)))
        ORDER BY opc.opcname = 'vector_cosine_ops' DESC, i.indisvalid DESC, c.relname""",
        [sql.Identifier(table).as_string(conn), column, column]).fetchall()
    return [VectorIndex(*r) for r in rows]


def live_vector_index(conn, table: str, opclass: str = "vector_cosine_ops") -> VectorIndex | None:
    """The one valid index the table's cosine searches use; None when there is none. Two of them
    is a question only the team can answer, so it is refused with both names."""
    live = [i for i in vector_indexes(conn, table) if i.opclass == opclass and i.valid]
    if len(live) > 1:
        names = ", ".join(sql.Identifier(i.name).as_string(conn) for i in live)
        raise PgvkitError(f"{table} has {len(live)} vector indexes with {opclass} ({names}); every write pays for "
                          "each: drop the one the application does not need (DROP INDEX CONCURRENTLY ...), "
                          "then run pgvkit tune again")
    return live[0] if live else None


def searched_index(conn, table: str, opclass: str | None = None, *, column: str = "embedding") -> VectorIndex | None:
    """The first valid index cosine searches can use (of `opclass`; by default of any kind,
    vector first: a halfvec or binary one once search_assets searches it), without refusing
    when there are two. `column`: a second model's (its halfvec_cosine_ops index counts)."""
    return next((i for i in vector_indexes(conn, table, column)
                 if (i.opclass == opclass if opclass else i.opclass in COSINE) and i.valid), None)


def search_index(conn, table: str) -> VectorIndex | None:
    """The one valid index a cosine search uses, of any kind (vector, halfvec, binary
    quantization); None when there is none. Two of them is refused with both names, as
    live_vector_index does."""
    live = [i for i in vector_indexes(conn, table) if i.opclass in COSINE and i.valid]
    if len(live) > 1:
        names = ", ".join(f"{sql.Identifier(i.name).as_string(conn)} ({i.kind.name})" for i in live)
        raise PgvkitError(f"{table} has {len(live)} indexes a cosine search can use ({names}); every write pays for "
                          "each: drop the one search_assets does not use (DROP INDEX CONCURRENTLY ...), "
                          "then run pgvkit tune again")
    return live[0] if live else None


def partition_owners(conn, indexes: list[VectorIndex]) -> dict[str, str]:
    """Each index name a plan may scan, mapped to the table's index it belongs to: the index
    itself, and on a partitioned table every partition's index attached to it (a plan over
    partitions names those, never the parent's)."""
    if not indexes:
        return {}
    rows = conn.execute("""
        WITH RECURSIVE tree(oid, top) AS (
            SELECT to_regclass(q), name FROM unnest(%s::text[], %s::text[]) AS u(q, name)
            UNION ALL
            SELECT i.inhrelid, t.top FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid)
        SELECT c.relname, t.top FROM tree t JOIN pg_class c ON c.oid = t.oid""",
        [[i.identifier.as_string(conn) for i in indexes], [i.name for i in indexes]]).fetchall()
    return dict(rows)


def plan_index(conn, query: sql.Composable, params: dict) -> tuple[str | None, str]:
    """(index scanned or None, the plan's top node type) of a query."""
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params).fetchone()[0][0]["Plan"]

    def walk(node):
        if node.get("Index Name"):
            return node["Index Name"]
        for child in node.get("Plans", []):
            found = walk(child)
            if found:
                return found
        return None

    return walk(plan), plan["Node Type"]
