"""The migrations of an embedding model change, written by `pgvkit model ...`.

`write_add()`: NNN_model_add_<model>.sql adds a nullable column for the new model's vectors (a
catalog change: no rewrite, a moment's ACCESS EXCLUSIVE lock under pgvkit migrate's lock_timeout
and retries), records both models in pgvkit.embedding_models, and makes search_assets serve
both: a query of the new dimension searches the new column among the rows that have it, any
other the old column exactly as before (similar_assets stays on the old one). Its down file
puts search_assets back and drops the column and the records.

`write_index()`: NNN_model_index_<model>.sql builds the new column's HNSW index CONCURRENTLY.

`model_switch.write_switch()`: NNN_model_switch_<model>.sql makes the new model the table's `embedding`: after
a NOT NULL check is validated beside the application (no long lock), one transaction renames the
columns and their indexes (the old one becomes embedding_<old model>, still answering queries of
its dimension through search_assets for application versions not yet moved), re-creates
similar_assets on the new column and records the change. Its down file swaps them back.

`write_retire()`: NNN_model_retire_<model>.sql drops a switched-away model's column, index and
record once the rollback window has passed, with its name typed back; its down file refuses
(the vectors are gone: a backup restores them).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

from .. import search
from ..errors import PgvkitError
from ..indexes import search_index
from ..kinds import KINDS, function_sql
from ..migrator import history
from ..migrator.files import default_migrations_dir, read_migrations
from ..schema.models import REGISTRY_DDL, ModelColumn, column_slug, declared_dimension, models, searched_beside
from ..server.db import connect

__all__ = ["write_add", "write_index", "write_retire", "MAX_INDEX_DIMS"]

MAX_INDEX_DIMS = {"vector": 2_000, "halfvec": 4_000}  # what pgvector's HNSW and IVFFlat index at most

_REBIND_LOOP = """    FOREACH setting IN ARRAY coalesce(bound, '{}') LOOP
        EXECUTE format('ALTER FUNCTION search_assets(vector, integer, text) SET %s = %L',
                       split_part(setting, '=', 1), substr(setting, strpos(setting, '=') + 1));
    END LOOP;
"""
_REBIND = """DO $migration$
DECLARE
    bound text[] := (SELECT proconfig FROM pg_proc WHERE oid = 'search_assets(vector, integer, text)'::regprocedure);
    setting text;
BEGIN
    -- CREATE OR REPLACE resets the bound settings to its own SET clauses: bind the others back
    EXECUTE $create$
{create}$create$;
""" + _REBIND_LOOP.replace("{", "{{").replace("}", "}}") + """END
$migration$;
"""


def _unbound(definition: str) -> str:
    """pg_get_functiondef's text without its SET lines (the DO block binds what is bound then)."""
    return "".join(line for line in definition.splitlines(keepends=True) if not line.startswith(" SET "))


def _serving_body(conn, table: str, kind, dims: int, others) -> tuple[sql.Composable, str | None]:
    """The live function's body must be the one pgvkit writes (003 on), so that the new one
    keeps every search of the old model as it is: the table reference it was written with, and
    the owner setting it applies (pgvkit confirm's, kept)."""
    written = search.written_as(conn, table, kind, dims, others)
    if written is None:
        raise PgvkitError("search_assets is not the function pgvkit writes (changed by hand, or "
                          "003_search_assets_by_owner not applied): apply the pending migrations (pgvkit migrate), "
                          "or put it back, then pgvkit model add again")
    return written


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
    if not model.strip() or not model.isprintable():
        raise PgvkitError(f"the model name {model!r} must be one line of printable text, e.g. clip-vit-L/14@v2")
    column = column or column_slug(model)
    if not column.isprintable() or "$" in column:
        raise PgvkitError(f"--column {column!r}: a column name of printable characters without $, e.g. embedding_v2")
    directory = Path(migrations_dir or default_migrations_dir())
    existing = read_migrations(directory)
    with connect(url) as conn:
        recorded = history.applied(conn)
        if declared_dimension(conn, table) is None:
            raise PgvkitError(f"{table}.embedding does not exist or has no fixed dimension here; run pgvkit migrate "
                              "first")
        if not search.exists(conn):
            raise PgvkitError("search_assets does not exist here: a model change needs the application searching "
                              "through it (002_search_assets; docs/how-to/smaller-indexes.md: Moving the application); run pgvkit migrate")
        served = models(conn, table)  # a model switched away from still answers its queries until dropped
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
        others = searched_beside(served)
        ident, owner_setting = _serving_body(conn, table, live_kind, base_dims, others)
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
        both = function_sql(conn, live_kind, base_dims, {}, ident, searched_beside(others + [new]), owner_setting)
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


def _version(directory: Path, conn) -> int:
    return max([m.version for m in read_migrations(directory)] + list(history.applied(conn)), default=0) + 1


def _model(conn, table: str, name: str) -> ModelColumn:
    found = [m for m in models(conn, table) if name in (m.column, m.model) and m.column != "embedding"
             and m.state != "retired"]
    if not found:
        raise PgvkitError(f"no second model {name!r} on {table}: pgvkit model list shows them")
    return found[0]


def _index_name(column: str) -> str:
    return f"idx_{column}_cosine"[:63]


def write_index(url: str, name: str, migrations_dir: str | Path | None = None, *, m: int = 16,
                ef_construction: int = 64, table: str = "ip_asset_embeddings",
                recommendation=None) -> tuple[Path, Path]:
    """NNN_model_index_<model>.sql: the new model's HNSW index (pgvector's default build settings
    unless given), built CONCURRENTLY with memory and workers sized for it; its down file drops it.
    `recommendation`: what `pgvkit tune --model` chose (a tuning.Recommendation of an HNSW index
    of the column's kind): its build settings, its figures in the header, its build estimate for
    pgvkit plan, and its search setting and prediction in the index's comment (pgvkit confirm
    --model starts from it)."""
    from ..indexes import TUNED_BY
    from ..migrator.plan import ESTIMATE
    from ..tuning.build import Config, build_settings

    directory = Path(migrations_dir or default_migrations_dir())
    point = recommendation.point if recommendation is not None else None
    if point is not None:
        if point.config.method != "hnsw":
            raise PgvkitError(f"pgvkit model index builds HNSW, and the recommendation is {point.config.label}; "
                              "tune the model's column again without an ivfflat_lists grid")
        m, ef_construction = dict(point.config.params)["m"], dict(point.config.params)["ef_construction"]
    with connect(url) as conn:
        model = _model(conn, table, name)
        if point is not None and point.config.kind_name != model.kind:
            raise PgvkitError(f"{model.column} is a {model.kind} column and the recommendation a "
                              f"{point.config.kind_name} index; tune it with --candidates {model.kind}")
        rows = conn.execute(sql.SQL("SELECT count({}) FROM {}").format(
            sql.Identifier(model.column), sql.Identifier(table))).fetchone()[0]
        settings = build_settings(url, Config("hnsw", (("m", m), ("ef_construction", ef_construction))),
                                  max(rows, 1), model.dimensions)
        index = _index_name(model.column)
        create = sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING hnsw ({} {}) WITH (m = {}, "
                         "ef_construction = {});\n").format(
            sql.Identifier(index), sql.Identifier(table), sql.Identifier(model.column),
            sql.SQL(f"{model.kind}_cosine_ops"), sql.Literal(m), sql.Literal(ef_construction)).as_string(conn)
        sets = "".join(sql.SQL("SET {} = {};\n").format(sql.SQL(k), sql.Literal(str(v))).as_string(conn)
                       for k, v in settings.items())
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {};\n").format(sql.Identifier(index)).as_string(conn)
        tuned, comment = "", ""
        if point is not None:
            from ..tuning.migration import carried_build_s, setting_text
            from ..tuning.recommend import figures
            from ..tuning.scale import PREDICTED

            predicted = point.note.startswith(PREDICTED)
            tuned = (f"-- Chosen by pgvkit tune --model on {datetime.now(timezone.utc):%Y-%m-%d}, measured on "
                     f"{recommendation.workload}:\n--   {point.config.label}, {setting_text(point)}: "
                     f"recall@{recommendation.k} {figures(point)}, p95 {point.p95_ms:.2f} ms"
                     + (f"\n--   ({point.note})" if predicted else "") + "\n"
                     f"{ESTIMATE}build_s={round(carried_build_s(point.build_s, recommendation.live_rows, rows))} rows={rows} "
                     f"maintenance_work_mem={settings['maintenance_work_mem']}\n"
                     f"-- Target was recall@{recommendation.k} >= {recommendation.target}; the search setting is "
                     "measured on this index once built: pgvkit confirm --model.\n")
            comment = sql.SQL("COMMENT ON INDEX {} IS {};\n").format(sql.Identifier(index), sql.Literal(
                f"{TUNED_BY} {setting_text(point)} ({model.model})"
                + (f"; {point.note.split(' from ')[0]}: {figures(point).split('; ')[0]}" if predicted else "")
            )).as_string(conn)
        version = _version(directory, conn)
    stem = f"{version:03d}_model_index_{model.column.removeprefix('embedding_')}"[:63]
    up = ("-- pgvkit:no-transaction\n"
          f"-- {stem}: the HNSW index of {model.model}'s column {model.column}, built CONCURRENTLY (searches and "
          "writes go on).\n"
          f"-- Sized for {rows:,} rows that have its embedding: build it once the backfill is done (each row filled "
          "after it\n-- costs an index insert), then pgvkit model switch.\n"
          + tuned + sets + create + comment + "".join(f"RESET {k};\n" for k in settings))
    down = f"-- pgvkit:no-transaction\n-- Undo {stem}: the index goes.\n" + drop
    up_path, down_path = directory / f"{stem}.sql", directory / f"{stem}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path


def write_retire(url: str, name: str, migrations_dir: str | Path | None = None, *, confirm: str | None = None,
                 window_days: float = 7.0, table: str = "ip_asset_embeddings") -> tuple[Path, Path]:
    """NNN_model_retire_<model>.sql (see the module's doc): refused unless the model was switched
    away from at least `window_days` ago and its name is typed back as `confirm`."""
    from datetime import timedelta

    from ..indexes import vector_indexes

    directory = Path(migrations_dir or default_migrations_dir())
    with connect(url) as conn:
        found = [m for m in models(conn, table) if name in (m.column, m.model) and m.state == "retired"]
        if not found:
            raise PgvkitError(f"no model {name!r} switched away from on {table} (pgvkit model list): only a model the "
                              "table no longer serves can be retired")
        old = found[0]
        if confirm != old.model:
            raise PgvkitError(f"retiring drops {old.column} and every {old.model} embedding in it; type the model's name "
                              f"back to go ahead: --confirm-model {old.model!r}")
        switched = [r for r in history.applied(conn).values() if r.name.startswith("model_switch_")
                    and r.status == "applied"]
        since = datetime.now(timezone.utc) - max(r.applied_at for r in switched) if switched else None
        if since is not None and since < timedelta(days=window_days):
            raise PgvkitError(f"the switch was applied {since.total_seconds() / 86400:.1f} days ago, inside the "
                              f"{window_days:g}-day rollback window: until it passes, pgvkit rollback can still bring "
                              f"{old.model} back; wait, or pass --window-days 0 to retire it now")
        served = models(conn, table)
        live = search_index(conn, table)
        live_kind = live.kind if live else KINDS["vector"]
        ident, owner_setting = _serving_body(conn, table, live_kind, served[0].dimensions, searched_beside(served))
        after = function_sql(conn, live_kind, served[0].dimensions, {}, ident,
                             searched_beside([m for m in served if m.column != old.column]), owner_setting)
        drops = "".join(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {};\n").format(
            sql.Identifier(i.schema, i.name)).as_string(conn) for i in vector_indexes(conn, table, old.column))
        column = sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {};\n").format(
            sql.Identifier(table), sql.Identifier(old.column)).as_string(conn)
        record = (f"DO $record$ BEGIN DELETE FROM pgvkit.embedding_models WHERE table_name = "
                  f"{sql.Literal(table).as_string(conn)} AND column_name = {sql.Literal(old.column).as_string(conn)};"
                  " END $record$;\n")
        version = _version(directory, conn)
        stem = f"{version:03d}_model_retire_{old.column.removeprefix('embedding_')}"[:63]
        message = sql.Literal(f"{stem} dropped {old.column} and its {old.model} embeddings: restore the backup taken "
                              "before it (pgvkit restore FILE --yes)").as_string(conn)
    up = ("-- pgvkit:no-transaction\n"
          f"-- {stem}: {old.model}'s column {old.column} goes, with its index and record; search_assets no longer\n"
          f"-- answers queries of {old.dimensions} dimensions. Irreversible but by a backup (pgvkit migrate --backup).\n\n"
          + _REBIND.format(create=after) + drops + column + record)
    down = (f"-- {stem} dropped {old.column} and its vectors: no down file can bring them back.\n"
            f"DO $$ BEGIN RAISE EXCEPTION USING MESSAGE = {message}; END $$;\n")
    up_path, down_path = directory / f"{stem}.sql", directory / f"{stem}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path
