"""`pgvkit model switch`: the migration that makes a second model the table's `embedding`.

After a NOT NULL check is validated beside the application (no long lock), one transaction
renames the columns and their indexes (the old one becomes embedding_<old model>, still
answering queries of its dimension through search_assets for application versions not yet
moved), re-creates similar_assets on the new column, records the change and writes search_assets
back. For the moments of the swap search_assets finds its column at each call
(`_switching_sql`), and the swap first waits for the transactions begun before that body was
written (`_OLDER`), so no search fails across it. Its down file swaps everything back the same way.
"""

from __future__ import annotations

from pathlib import Path

from psycopg import sql

from .. import search
from ..errors import PgvkitError
from ..indexes import search_index
from ..kinds import FUNCTION_HEAD, KINDS, OWNER_ROUTE_DECLARE, function_sql
from ..migrator.files import default_migrations_dir
from ..schema.models import ModelColumn, column_slug, models, searched_beside
from ..server.db import connect
from .change import _REBIND, _REBIND_LOOP, _index_name, _model, _serving_body, _unbound, _version

__all__ = ["write_switch"]


# Between search_assets finding its column at each call and the swap: a search that began before
# the switching body was written may hold the body from before, naming the columns the swap renames,
# and reach the table only once the swap commits. Every transaction older than this statement is
# waited for, as CREATE INDEX CONCURRENTLY waits for older snapshots (pg_locks shows each one's
# virtual transaction to every role; background workers, which have no role, are left out). After
# lock_timeout the wait is refused as a lock wait, naming the pid, and pgvkit migrate retries it.
_OLDER = """DO $older$
DECLARE
    older text[] := ARRAY(SELECT l.virtualxid FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
        WHERE l.locktype = 'virtualxid' AND l.pid <> pg_backend_pid() AND a.usesysid IS NOT NULL
        AND a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()));
    patience interval := nullif(current_setting('lock_timeout'), '0')::interval;
    holder integer;
BEGIN
    LOOP
        SELECT l.pid INTO holder FROM pg_locks AS l WHERE l.locktype = 'virtualxid' AND l.virtualxid = ANY (older)
            LIMIT 1;
        EXIT WHEN holder IS NULL;
        IF clock_timestamp() - statement_timestamp() > patience THEN
            RAISE EXCEPTION USING ERRCODE = 'lock_not_available', DETAIL = format('pid=%s', holder),
                MESSAGE = format('the transaction of pid %s began before search_assets looked its column up at '
                                 'each call; the swap waits for it to end', holder);
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
END
$older$;
"""


def _switching_sql(conn, ident: sql.Composable, table: str) -> str:
    """search_assets for the moments of a switch: each call first takes its lock on the table
    (waiting for the switch's, if it is there), then looks up the column of its query's model in
    pgvkit.embedding_models and searches it by dynamic SQL, so a call that waited searches the
    columns as they are once the switch commits (a compiled static body would name a column the
    switch just renamed). VOLATILE, so each statement takes a fresh snapshot (a STABLE function
    reads with its caller's, from before the switch committed). Plain `<=>` order: a halfvec or binary index is not used for these
    moments; the switch then writes the static body back."""
    t = ident.as_string(conn)
    cols = "SELECT e.id, e.asset_id, e.owner_id, e.%1$I <=> $1 AS distance FROM " + t + " AS e"
    wrap = ("WITH nearest AS MATERIALIZED ({}) SELECT n.id, n.asset_id, n.owner_id, n.distance, 1 - n.distance "
            "FROM nearest AS n ORDER BY n.distance")

    def run(inner: str, args: str) -> str:
        return "RETURN QUERY EXECUTE format(" + sql.Literal(wrap.format(inner)).as_string(conn) + f", col) USING {args};"

    few = f"SELECT count(*) FROM (SELECT FROM {t} AS e WHERE e.owner_id = owner LIMIT few + 1) AS o"
    head = FUNCTION_HEAD.replace("LANGUAGE plpgsql STABLE", "LANGUAGE plpgsql VOLATILE")  # a snapshot per statement
    return (head + "AS $$\n#variable_conflict use_column\n" + OWNER_ROUTE_DECLARE + "    col text;\nBEGIN\n"
            f"    PERFORM FROM {t} WHERE false;  -- the table's lock first: a switch in progress is waited for\n"
            "    SELECT m.column_name INTO col FROM pgvkit.embedding_models AS m WHERE m.table_name = "
            f"{sql.Literal(table).as_string(conn)} AND m.dimensions = vector_dims(query);\n"
            "    IF owner IS NULL THEN\n        "
            + run(cols + " WHERE e.%1$I IS NOT NULL ORDER BY e.%1$I <=> $1 LIMIT $2", "query, k") + "\n"
            f"    ELSIF ({few}) <= few THEN\n        "
            + run(cols + " WHERE e.owner_id = $3 AND e.%1$I IS NOT NULL ORDER BY (e.%1$I <=> $1) + 0 LIMIT $2",
                  "query, k, owner") + "\n    ELSE\n        "
            + run(cols + " WHERE e.owner_id || '' = $3 AND e.%1$I IS NOT NULL ORDER BY e.%1$I <=> $1 LIMIT $2",
                  "query, k, owner") + "\n    END IF;\nEND;\n$$;\n")



def write_switch(url: str, name: str, migrations_dir: str | Path | None = None, *,
                 table: str = "ip_asset_embeddings", view: str = "similar_assets") -> tuple[Path, Path]:
    """NNN_model_switch_<model>.sql and its down file (see the module's doc)."""
    from ..indexes import vector_indexes

    directory = Path(migrations_dir or default_migrations_dir())
    with connect(url) as conn:
        model = _model(conn, table, name)
        if model.kind != "vector":
            raise PgvkitError(f"{model.column} is {model.type_name}: switching to a halfvec column is not supported "
                              "yet (search_assets would need its query cast); keep it a second model for now")
        missing = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(
            sql.Identifier(table), sql.Identifier(model.column))).fetchone()[0]
        if missing:
            raise PgvkitError(f"{missing:,} rows have no {model.model} embedding in {model.column}: they would vanish "
                              "from searches after the switch; backfill them (pgvkit model backfill) or delete them, "
                              "then switch")
        new_index = [i for i in vector_indexes(conn, table, model.column) if i.valid]
        old_index = search_index(conn, table)
        if not new_index:
            raise PgvkitError(f"{model.column} has no valid vector index: after the switch every search would read "
                              f"the whole table; pgvkit tune --model {model.model} --write-migration (or pgvkit model index "
                              f"{model.model}), pgvkit migrate, then switch")
        served = models(conn, table)
        old = served[0]
        old_column = column_slug(old.model)
        if conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT "
                        "attisdropped", [sql.Identifier(table).as_string(conn), old_column]).fetchone():
            raise PgvkitError(f"{table} already has a column {old_column} for the old model to move to; rename or "
                              "drop it first")
        live_kind = old_index.kind if old_index else KINDS["vector"]
        others = [m for m in searched_beside(served) if m.column != model.column]
        # (the owner setting confirm bound was measured on the old model's index: the new body leaves it out)
        ident, _ = _serving_body(conn, table, live_kind, old.dimensions, searched_beside(served))
        previous = conn.execute("SELECT pg_get_functiondef(to_regprocedure(%s))", [search.SIGNATURE]).fetchone()[0]
        view_sql = conn.execute("SELECT pg_get_viewdef(to_regclass(%s), true)", [view]).fetchone()[0]
        version = _version(directory, conn)
        stem = f"{version:03d}_model_switch_{model.column.removeprefix('embedding_')}"[:63]
        moved = ModelColumn(old_column, old.model, old.dimensions, old.kind, "retired", old.added_by)
        after = function_sql(conn, KINDS[new_index[0].kind.name], model.dimensions, {}, ident,
                             searched_beside(others + [moved]))
        switching = _switching_sql(conn, ident, table)
        i = lambda n: sql.Identifier(n).as_string(conn)  # noqa: E731
        lit = lambda v: sql.Literal(v).as_string(conn)  # noqa: E731
        check = i(f"{model.column}_not_null"[:63])
        old_name = old_index.name if old_index else None
        renames = [f"ALTER TABLE {i(table)} RENAME COLUMN embedding TO {i(old_column)};",
                   f"ALTER TABLE {i(table)} RENAME COLUMN {i(model.column)} TO embedding;"]
        back = [f"ALTER TABLE {i(table)} RENAME COLUMN embedding TO {i(model.column)};",
                f"ALTER TABLE {i(table)} RENAME COLUMN {i(old_column)} TO embedding;"]
        target = old_name or "idx_embedding_cosine"
        back.insert(0, f"ALTER INDEX {i(target)} RENAME TO {i(new_index[0].name)};")
        if old_name:
            parked = _index_name(old_column)
            renames.append(f"ALTER INDEX {i(old_name)} RENAME TO {i(parked)};")
            back.append(f"ALTER INDEX {i(parked)} RENAME TO {i(old_name)};")
        renames.append(f"ALTER INDEX {i(new_index[0].name)} RENAME TO {i(target)};")
        view_create = f"CREATE OR REPLACE VIEW {i(view)} AS\n{view_sql.rstrip().rstrip(';')};\n"
        move = ("UPDATE pgvkit.embedding_models SET column_name = {to}, state = {state} WHERE table_name = "
                + lit(table) + " AND column_name = {column};\n    ")  # one row after the other: the key stays unique
        registry = (move.format(to=lit(old_column), state="'retired'", column="'embedding'")
                    + move.format(to="'embedding'", state="'serving'", column=lit(model.column)))
        registry_back = (move.format(to=lit(model.column), state="'backfilling'", column="'embedding'")
                         + move.format(to="'embedding'", state="'serving'", column=lit(old_column)))
        up = ("-- pgvkit:no-transaction\n"
              f"-- {stem}: {model.model} becomes the table's embedding; {old.model} moves to {old_column}.\n"
              "-- First a NOT NULL check is validated beside the application (SHARE UPDATE EXCLUSIVE: reads and writes go"
              " on),\n-- so SET NOT NULL needs no scan under its lock; then one transaction swaps the columns and their\n"
              f"-- indexes, re-creates {view} on the new column and search_assets with queries of {old.dimensions}\n"
              f"-- dimensions still answered from {old_column} (application versions not yet moved). Direct ORDER BY\n"
              f"-- embedding <=> ... queries must now send {model.dimensions}-dimension vectors.\n\n"
              f"DO $check$ BEGIN\n    IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = {lit(check.strip(chr(34)))}) "
              f"THEN\n        ALTER TABLE {i(table)} ADD CONSTRAINT {check} CHECK ({i(model.column)} IS NOT NULL) NOT VALID;"
              f"\n    END IF;\nEND $check$;\n"
              f"ALTER TABLE {i(table)} VALIDATE CONSTRAINT {check};\n\n"
              "-- for the moments of the switch: search_assets finds its column at each call\n"
              + _REBIND.format(create=switching) + "\n"
              "-- searches begun before that may hold the body naming the columns about to be renamed: waited for\n"
              + _OLDER + "\n"
              "-- the switch, in one transaction (a DO block is one statement): the columns, the view and\n"
              "-- search_assets change together, so no search sees one without the other\n"
              "DO $switch$\nDECLARE\n"
              "    bound text[] := (SELECT proconfig FROM pg_proc WHERE oid = "
              "'search_assets(vector, integer, text)'::regprocedure);\n    setting text;\nBEGIN\n"
              f"    IF EXISTS (SELECT FROM pgvkit.embedding_models WHERE table_name = {lit(table)} AND column_name = "
              f"'embedding' AND model = {lit(model.model)}) THEN\n        RETURN;  -- switched already (a resumed run)\n"
              "    END IF;\n" + "".join(f"    {r}\n" for r in renames)
              + f"    ALTER TABLE {i(table)} ALTER COLUMN embedding SET NOT NULL;  -- the validated check: no scan\n"
              f"    ALTER TABLE {i(table)} DROP CONSTRAINT {check};\n"
              f"    ALTER TABLE {i(table)} ALTER COLUMN {i(old_column)} DROP NOT NULL;  -- new rows need no old embedding\n"
              f"    EXECUTE $view${view_create}$view$;\n    {registry}\n"
              f"    -- search_assets: the new model on embedding, the old one's queries on {old_column}, its settings kept\n"
              f"    EXECUTE $create$\n{after}$create$;\n" + _REBIND_LOOP + "END\n$switch$;\n")
        back_check = i(f"{old_column}_not_null"[:63])
        switched = (f"EXISTS (SELECT FROM pgvkit.embedding_models WHERE table_name = {lit(table)} AND column_name = "
                    f"'embedding' AND model = {lit(model.model)})")
        down = ("-- pgvkit:no-transaction\n"
                f"-- Undo {stem}: {old.model} is the embedding again, {model.model} back in {model.column}, as the\n"
                "-- switch did it: a NOT NULL check validated beside the application, search_assets finding its column\n"
                "-- at each call for the moments of the swap, then one transaction. Refused (nothing changed) when rows\n"
                f"-- written since the switch have no {old.model} embedding.\n\n"
                f"DO $refuse$ BEGIN\n    IF {switched} AND EXISTS (SELECT FROM {i(table)} WHERE {i(old_column)} IS NULL)"
                " THEN\n"
                "        RAISE EXCEPTION USING MESSAGE = format('%s row(s) written since the switch have no %s embedding "
                "in %s: fill them (pgvkit model backfill %s --from FILE) or delete them, then roll back again', "
                f"(SELECT count(*) FROM {i(table)} WHERE {i(old_column)} IS NULL), {lit(old.model)}, {lit(old_column)}, "
                f"{lit(old.model)});\n    END IF;\nEND $refuse$;\n"
                f"DO $check$ BEGIN\n    IF {switched} AND NOT EXISTS (SELECT FROM pg_constraint WHERE conname = "
                f"{lit(back_check.strip(chr(34)))}) THEN\n        ALTER TABLE {i(table)} ADD CONSTRAINT {back_check} CHECK "
                f"({i(old_column)} IS NOT NULL) NOT VALID;\n    END IF;\nEND $check$;\n"
                f"DO $validate$ BEGIN\n    IF {switched} THEN\n        ALTER TABLE {i(table)} VALIDATE CONSTRAINT "
                f"{back_check};\n    END IF;\nEND $validate$;\n"
                "\n-- for the moments of the swap: search_assets finds its column at each call\n"
                + _REBIND.format(create=switching) + "\n"
                "-- searches begun before that may hold the body naming the columns about to be renamed: waited for\n"
                + _OLDER + "\n"
                "DO $switch$\nDECLARE\n"
                "    bound text[] := (SELECT proconfig FROM pg_proc WHERE oid = "
                "'search_assets(vector, integer, text)'::regprocedure);\n    setting text;\nBEGIN\n"
                f"    IF NOT {switched} THEN\n        RETURN;  -- swapped back already (a resumed run)\n    END IF;\n"
                + "".join(f"    {r}\n" for r in back)
                + f"    ALTER TABLE {i(table)} ALTER COLUMN embedding SET NOT NULL;  -- the validated check: no scan\n"
                f"    ALTER TABLE {i(table)} DROP CONSTRAINT {back_check};\n"
                f"    ALTER TABLE {i(table)} ALTER COLUMN {i(model.column)} DROP NOT NULL;\n"
                f"    EXECUTE $view${view_create}$view$;\n    {registry_back}\n"
                "    -- search_assets as it was before the switch, its settings kept\n"
                f"    EXECUTE $create$\n{_unbound(previous).rstrip(chr(10))};\n$create$;\n" + _REBIND_LOOP
                + "END\n$switch$;\n")
    up_path, down_path = directory / f"{stem}.sql", directory / f"{stem}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path
