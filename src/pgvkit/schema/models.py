"""Embedding models: which model's vectors each column of the table holds, recorded where verify,
status and search_assets' migrations read them.

A team changes its model online (pgvector's own advice: a second column, never an ALTER TYPE of a
full one): `pgvkit model add` writes a migration that adds a nullable column for the new model,
records it in `pgvkit.embedding_models` and makes `search_assets` serve both, a query going to the
column of its dimension. Until then, the table has one column (`embedding`) and no record: its
dimension is what the column declares, whatever tool made the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from psycopg import sql

from ..checks import Check
from ..display import Table
from ..errors import PgvkitError

__all__ = ["REGISTRY", "ModelColumn", "Coverage", "models", "searched_beside", "coverage", "check_models", "column_slug", "declared_dimension",
           "expected_columns", "REGISTRY_DDL", "STATES"]

REGISTRY = "pgvkit.embedding_models"
STATES = ("backfilling", "serving", "retired")  # a new column fills; the default serves; an old one waits to go
REGISTRY_DDL = """CREATE TABLE IF NOT EXISTS pgvkit.embedding_models (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    model       text NOT NULL,
    dimensions  integer NOT NULL CHECK (dimensions > 0),
    kind        text NOT NULL CHECK (kind IN ('vector', 'halfvec')),
    state       text NOT NULL CHECK (state IN ('backfilling', 'serving', 'retired')),
    added_by    text NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, column_name)
);
"""


@dataclass(frozen=True)
class ModelColumn:
    """One embedding column: the model whose vectors it holds, their dimension and type."""

    column: str
    model: str
    dimensions: int
    kind: str = "vector"  # the column's type: vector, or halfvec (HNSW indexes up to 4,000 of them)
    state: str = "serving"
    added_by: str = ""

    @property
    def type_name(self) -> str:
        return f"{self.kind}({self.dimensions})"


def declared_dimension(conn, table: str, column: str = "embedding") -> int | None:
    """The dimension a vector column declares (vector(N)), None when it has none or is missing."""
    row = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s"
                       " AND NOT attisdropped", [sql.Identifier(table).as_string(conn), column]).fetchone()
    return row[0] if row and row[0] > 0 else None


def _registry_exists(conn) -> bool:
    """Whether the registry is there and this role may read it (to_regclass would raise for a
    role without USAGE on schema pgvkit: the application's role, say)."""
    row = conn.execute("SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')"
                       " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE n.nspname = 'pgvkit' AND c.relname = 'embedding_models'").fetchone()
    return bool(row and row[0])


def models(conn, table: str = "ip_asset_embeddings") -> list[ModelColumn]:
    """The table's embedding columns: the recorded ones (the serving one first), else the one
    `embedding` column as it is declared (model unknown)."""
    if _registry_exists(conn):
        rows = conn.execute("SELECT column_name, model, dimensions, kind, state, added_by FROM pgvkit.embedding_models"
                            " WHERE table_name = %s ORDER BY state <> 'serving', added_at, column_name",
                            [table]).fetchall()
        if rows:
            return [ModelColumn(*r) for r in rows]
    dims = declared_dimension(conn, table)
    return [ModelColumn("embedding", "(not recorded)", dims)] if dims else []


def searched_beside(found: list[ModelColumn]) -> list[ModelColumn]:
    """The columns search_assets answers beside `embedding` (a model being filled, or one switched
    away from and not yet dropped), in the order its body tests them: by column name."""
    return sorted((m for m in found if m.column != "embedding"), key=lambda m: m.column)


def column_slug(model: str) -> str:
    """The column a model's vectors go in: `embedding_` and the name's letters and digits
    (clip-vit-L/14@v2 -> embedding_clip_vit_l_14_v2), within PostgreSQL's 63 bytes."""
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    if not slug:
        raise PgvkitError(f"the model name {model!r} has no letter or digit to name its column; "
                          "pass --column NAME (e.g. --column embedding_v2)")
    return f"embedding_{slug}"[:63].rstrip("_")


def expected_columns(conn, table: str, base: dict[str, str], dimension: int | None = None) -> tuple[dict[str, str],
                                                                                                    str]:
    """The columns verify expects (`base`, the seed's, with each embedding column's type) and where
    the embedding's type comes from: `dimension` when given, else the recorded models, else the
    column's own declaration (a table another tool made, e.g. vector(1024))."""
    expected = dict(base)
    if dimension is not None:
        expected["embedding"] = f"vector({dimension})"
        return expected, f"embedding vector({dimension}) as asked"
    found = models(conn, table)
    if not found:
        return expected, "embedding: no fixed dimension declared"
    for m in found:
        expected[m.column] = m.type_name
    if found[0].model == "(not recorded)":
        return expected, f"embedding {found[0].type_name} as declared (no model recorded)"
    return expected, "; ".join(f"{m.column} {m.type_name} for {m.model} ({m.state})" for m in found)


@dataclass(repr=False)
class Coverage(Table):
    """Each embedding column of the table: its model, type, state and how many rows have a vector."""

    table: str = "ip_asset_embeddings"
    found: list[tuple[ModelColumn, int, int]] = field(default_factory=list)  # (model, rows with one, rows)
    columns = ("column", "model", "type", "state", "rows with it", "coverage")

    @property
    def title(self) -> str:
        return f"Embedding models of {self.table}"

    def rows(self) -> list[dict]:
        return [{"column": m.column, "model": m.model, "type": m.type_name, "state": m.state, "rows with it": have,
                 "coverage": f"{have / total:.1%}" if total else "-"} for m, have, total in self.found]

    def to_dict(self) -> dict:
        return {"table": self.table, "models": [{**r, "rows": total} for r, (_, _, total) in zip(self.rows(),
                                                                                               self.found)]}


def coverage(conn, table: str = "ip_asset_embeddings") -> Coverage:
    """How far each model's column is filled (one pass over the table, counting non-NULL values)."""
    found = models(conn, table)
    if not found:
        return Coverage(table)
    counts = conn.execute(sql.SQL("SELECT count(*), {} FROM {}").format(
        sql.SQL(", ").join(sql.SQL("count({})").format(sql.Identifier(m.column)) for m in found),
        sql.Identifier(table))).fetchone()
    return Coverage(table, [(m, have, counts[0]) for m, have in zip(found, counts[1:])])


def check_models(conn, table: str = "ip_asset_embeddings") -> Check | None:
    """During a model change: each recorded column's coverage and what comes next (None when the
    table has one model)."""
    found = coverage(conn, table).found
    if len(found) < 2:
        return None
    said = "; ".join(f"{m.model} in {m.column} ({m.state}): {have:,} of {total:,} rows" for m, have, total in found)
    short = [(m, have, total) for m, have, total in found if m.state == "backfilling" and have < total]
    if short:
        m, have, total = short[0]
        return Check("embedding models", "warn", said, f"{total - have:,} rows have no {m.model} embedding yet: their "
                     "new-model searches cannot find them, and the switch is refused until they do",
                     f"pgvkit model backfill {m.model} --from FILE")
    nxt = ("pgvkit tune --model (its index) / switch" if any(m.state == "backfilling" for m, _, _ in found)
           else "pgvkit model retire once the rollback window has passed")
    return Check("embedding models", "pass", f"{said}; next: {nxt}")
