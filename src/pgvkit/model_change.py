"""The migrations of an embedding model change, written by `pgvkit model ...`.

`write_add()`: NNN_model_add_<model>.sql adds a nullable column for the new model's vectors (a
catalog change: no rewrite, a moment's ACCESS EXCLUSIVE lock under pgvkit migrate's lock_timeout
and retries), records both models in pgvkit.embedding_models, and makes search_assets serve
both: a query of the new dimension searches the new column among the rows that have it, any
other the old column exactly as before (similar_assets stays on the old one). Its down file
puts search_assets back and drops the column and the records.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

from . import history, search
from .db import connect
from .errors import PgvkitError
from .indexes import search_index
from .kinds import KINDS, function_sql
from .migrations import default_migrations_dir, read_migrations
from .models import REGISTRY_DDL, ModelColumn, column_slug, declared_dimension, models

__all__ = ["write_add", "MAX_INDEX_DIMS"]

MAX_INDEX_DIMS = {"vector": 2_000, "halfvec": 4_000}  # what pgvector's HNSW and IVFFlat index at most

_REBIND = """DO $migration$
DECLARE
    bound text[] := (SELECT proconfig FROM pg_proc WHERE oid = 'search_assets(vector, integer, text)'::regprocedure);
    setting text;
BEGIN
    -- CREATE OR REPLACE resets the bound settings to its own SET clauses: bind the others back
    EXECUTE $create$
{create}$create$;
    FOREACH setting IN ARRAY coalesce(bound, '{{}}') LOOP
        EXECUTE format('ALTER FUNCTION search_assets(vector, integer, text) SET %s = %L',
                       split_part(setting, '=', 1), substr(setting, strpos(setting, '=') + 1));
    END LOOP;
END
$migration$;
"""


def _unbound(definition: str) -> str:
    """pg_get_functiondef's text without its SET lines (the DO block binds what is bound then)."""
    return "".join(line for line in definition.splitlines(keepends=True) if not line.startswith(" SET "))


def _body(create: str) -> str:
    return create.split("AS $$\n", 1)[1].rsplit("\n$$;", 1)[0]


def _serving_body(conn, table: str, kind, dims: int, others) -> tuple[str, sql.Composable]:
    """The live function's body must be the one pgvkit writes (003 on), so that the new one
    keeps every search of the old model as it is: the table reference it was written with."""
    live = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)", [search.SIGNATURE]).fetchone()
    schema = conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass(%s)",
                          [sql.Identifier(table).as_string(conn)]).fetchone()[0]
    for ident in (sql.Identifier(table), sql.Identifier(schema, table)):
        if _body(function_sql(conn, kind, dims, {}, ident, others)).strip("\n") == live[0].strip("\n"):
            return live[0], ident
    raise PgvkitError("search_assets is not the function pgvkit writes (changed by hand, or "
                      "003_search_assets_by_owner not applied): apply the pending migrations (pgvkit migrate), "
                      "or put it back, then pgvkit model add again")


def write_add(url: str, model: str, dimensions: int, migrations_dir: str | Path | None = None, *,
              kind: str = "vector", column: str | None = None, current: str = "current",
              table: str = "ip_asset_embeddings") -> tuple[Path, Path]:
    """Write NNN_model_add_<model>.sql and its down file (see the module's doc)."""
    if kind not in MAX_INDEX_DIMS:
        raise PgvkitError(f"--type takes vector or halfvec, not {kind!r}")
    if not 0 < dimensions <= MAX_INDEX_DIMS[kind]:
        hint = " (store it as --type halfvec, which HNSW indexes up to 4,000)" if kind == "vector" else ""
        raise PgvkitError(f"--dimensions {dimensions}: a {kind} column can be indexed for search with 1 to "
                          f"{MAX_INDEX_DIMS[kind]:,} dimensions{hint}")
    column = column or column_slug(model)
    directory = Path(migrations_dir or default_migrations_dir())
    existing = read_migrations(directory)
    with connect(url) as conn:
        recorded = history.applied(conn)
        if declared_dimension(conn, table) is None:
            raise PgvkitError(f"{table}.embedding does not exist or has no fixed dimension here; run pgvkit migrate "
                              "first")
        if not search.exists(conn):
            raise PgvkitError("search_assets does not exist here: a model change needs the application searching "
                              "through it (002_search_assets; README: Moving the application); run pgvkit migrate")
        served = [m for m in models(conn, table) if m.state != "retired"]
        same = [m for m in served if m.dimensions == dimensions]
        if same:
            raise PgvkitError(
                f"{same[0].column} already holds {same[0].dimensions}-dimension vectors ({same[0].model}): search_assets "
                "tells the models apart by their dimension, and a query from the wrong model of the same dimension "
                "would be answered silently wrong; pick the new model's own dimension, or retire the old one first")
        if any(m.model == model for m in served):
            raise PgvkitError(f"the model {model} is already recorded for {table}: pgvkit model list")
        taken = conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s"
                             " AND NOT attisdropped", [sql.Identifier(table).as_string(conn), column]).fetchone()
        if taken:
            raise PgvkitError(f"{table} already has a column {column}; pass --column NAME for the new model's vectors")
        live = search_index(conn, table)
        live_kind = live.kind if live else KINDS["vector"]
        base_dims = served[0].dimensions if served else declared_dimension(conn, table)
        others = [m for m in served if m.column != "embedding"]
        _, ident = _serving_body(conn, table, live_kind, base_dims, others)
        previous = conn.execute("SELECT pg_get_functiondef(to_regprocedure(%s))", [search.SIGNATURE]).fetchone()[0]
        version = max([m.version for m in existing] + list(recorded), default=0) + 1
        name = f"{version:03d}_model_add_{column.removeprefix('embedding_')}"[:63]
        new = ModelColumn(column, model, dimensions, kind, "backfilling", name)
        first = [] if any(m.column == "embedding" for m in served if m.model != "(not recorded)") else [
            ModelColumn("embedding", current, base_dims, "vector", "serving", name)]
        lit = lambda v: sql.Literal(v).as_string(conn)  # noqa: E731
        records = "".join(
            f"INSERT INTO pgvkit.embedding_models (table_name, column_name, model, dimensions, kind, state, added_by)\n"
            f"VALUES ({lit(table)}, {lit(m.column)}, {lit(m.model)}, {m.dimensions}, {lit(m.kind)}, {lit(m.state)}, "
            f"{lit(m.added_by)});\n" for m in first + [new])
        add = sql.SQL("ALTER TABLE {} ADD COLUMN {} {};\n").format(
            sql.Identifier(table), sql.Identifier(column), sql.SQL(new.type_name)).as_string(conn)
        both = function_sql(conn, live_kind, base_dims, {}, ident, others + [new])
        drop = sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {};\n").format(
            sql.Identifier(table), sql.Identifier(column)).as_string(conn)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        up = (f"-- {name}: a column for the model {model} ({new.type_name}), written by pgvkit model add on {stamp}.\n"
              "-- Nullable, no default: ADD COLUMN changes the catalog only (no table rewrite), holding an ACCESS\n"
              "-- EXCLUSIVE lock for a moment (pgvkit migrate sets lock_timeout and retries behind long transactions).\n"
              f"-- search_assets serves both models from here on: a query of {dimensions} dimensions searches {column}\n"
              f"-- among the rows that have it, one of {base_dims} the embedding column as before; similar_assets stays\n"
              "-- on embedding. Next: pgvkit load --column to backfill, then index, audit and switch.\n\n"
              + REGISTRY_DDL + "\n" + records + "\n" + add
              + "\n-- search_assets: the new model's queries go to its column\n" + _REBIND.format(create=both))
        down = (f"-- Undo {name}: search_assets as it was, the column {column} (and every {model} embedding in it)\n"
                "-- and the model records gone.\n\n"
                + _REBIND.format(create=_unbound(previous).rstrip("\n") + ";\n") + drop
                + f"DELETE FROM pgvkit.embedding_models WHERE added_by = {lit(name)};\n"
                "-- the record of models goes with the last model change\n"
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pgvkit.embedding_models) THEN DROP TABLE pgvkit.embedding_models; "
                "END IF; END $$;\n")
    up_path, down_path = directory / f"{name}.sql", directory / f"{name}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path
