"""Step 7: the migration. The recommendation as the next numbered migration: the new index built
concurrently beside the old one, swapped in, and the query-time setting for the database and for
search_assets; its down file restores the previous index and settings.

When the index kind changes (to halfvec or binary quantization, or back), the query must change
with it: the migration replaces search_assets' body and settings once the new index is valid,
before the old index goes, and its down file restores the function as it was
(pg_get_functiondef). Direct ORDER BY embedding <=> ... queries cannot use a halfvec or binary
index, so such a migration is written only when asked (`allow_query_change`)."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from pathlib import Path

from pglast import parse_sql
from pglast.stream import RawStream
from psycopg import sql

from .. import search
from ..errors import PgvkitError
from ..indexes import TUNED_BY, VectorIndex, search_index
from ..kinds import KINDS, OWNER_SETTING, RERANK_DEPTH, function_sql
from ..migrator import history
from ..migrator.files import default_migrations_dir, read_migrations
from ..migrator.plan import ESTIMATE, TUNE_WRITTEN, n_log_n, replaced_indexes
from ..server.db import connect
from .build import SEARCH_PARAM, Config, build_settings
from .recommend import Recommendation, figures
from .scale import PREDICTED

__all__ = ["write_migration", "QueryChangeRefused", "StackedTuning", "refuse_stacking",
           "carried_build_s", "setting_text"]


class QueryChangeRefused(PgvkitError):
    """The recommended index serves only search_assets, and the query change was not allowed."""


class StackedTuning(PgvkitError):
    """A pending migration replaces the index a new tuning migration would replace."""


def refuse_stacking(url: str, migrations_dir: str | Path | None = None, table: str = "ip_asset_embeddings",
                    index: str = "idx_embedding_cosine") -> None:
    """A tuning migration's down file restores the index that stands when it is written: refuse to
    write one while a pending migration replaces that index (or was written by tune), since its
    rollback would restore neither what the pending one leaves nor what stood before it."""
    existing = read_migrations(Path(migrations_dir or default_migrations_dir()))
    with connect(url) as conn:
        recorded = history.applied(conn)
        live = search_index(conn, table)
    target = live.name if live else index
    for m in existing:
        done = recorded.get(m.version)
        if done is not None and done.status in ("applied", "baselined"):
            continue
        if target in replaced_indexes(m) or TUNE_WRITTEN in m.up.text:
            raise StackedTuning(
                f"{m.path.name} is not applied yet and replaces {target} too: a tuning migration written now would, "
                f"on rollback, restore the index that stands today instead of what {m.id} leaves; apply it first "
                f"(pgvkit migrate) and tune again, or delete {m.id}'s files")


BELOW = "below the target at the predicted size: confirm decides"

# an index build is long by design: a statement_timeout meant for the application's queries
# (on its role or the database) would stop it and leave an INVALID index
UNBOUNDED = ("-- an index build is long by design: no statement_timeout of the role's or the database's stops it\n"
             "SET statement_timeout = '0';\n")


def _current_setting(conn, name: str) -> str | None:
    row = conn.execute(
        "SELECT s.opt FROM pg_db_role_setting r, unnest(r.setconfig) AS s(opt)"
        " WHERE r.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND r.setrole = 0 AND s.opt LIKE %s", [name + "=%"]).fetchone()
    return row[0].split("=", 1)[1] if row else None


def _set_database(conn, name: str, value: str | None) -> str:
    # current_database(): the file stays valid in every environment it is deployed to;
    # touching a vector first loads pgvector, so its settings are known to the server
    if value is None:
        execute = sql.SQL("format({}, current_database())").format(sql.Literal(f"ALTER DATABASE %I RESET {name}"))
    else:
        execute = sql.SQL("format({}, current_database(), {})").format(
            sql.Literal(f"ALTER DATABASE %I SET {name} = %L"), sql.Literal(value))
    return sql.SQL("DO $$\nBEGIN\n    PERFORM '[1]'::vector;\n    EXECUTE {};\nEND\n$$;\n").format(execute).as_string(conn)


def _set_function(conn, name: str, value: str | None) -> str:
    """The setting bound to search_assets (002_search_assets), which overrides the database's for
    every caller of the function; nothing where the function does not exist."""
    change = (sql.SQL("ALTER FUNCTION {} RESET {}").format(sql.SQL(search.SIGNATURE), sql.SQL(name)) if value is None
              else sql.SQL("ALTER FUNCTION {} SET {} = {}").format(sql.SQL(search.SIGNATURE), sql.SQL(name),
                                                                   sql.Literal(value)))
    return sql.SQL("DO $$\nBEGIN\n    IF to_regprocedure({}) IS NOT NULL THEN\n        {};\n    END IF;\nEND\n$$;\n").format(
        sql.Literal(search.SIGNATURE), change).as_string(conn)


def _suffixed(name: str, suffix: str) -> str:
    """name + suffix within PostgreSQL's 63-byte identifiers."""
    base = name.encode()[: 63 - len(suffix)].decode(errors="ignore")
    return base + suffix


def _partitions(conn, table_schema: str, table_name: str) -> list[tuple[str, str, str, bool]]:
    """Each partition of a partitioned table, parents before children: (schema, name, parent's
    name, leaf); [] for a plain table."""
    return conn.execute(
        "SELECT n.nspname, c.relname, pc.relname, t.isleaf FROM pg_partition_tree(%s::regclass) t"
        " JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_class pc ON pc.oid = t.parentrelid WHERE t.level > 0 ORDER BY t.level, c.relname",
        [sql.Identifier(table_schema, table_name).as_string(conn)]).fetchall()


def _swap(conn, create: str, schema: str, name: str, temp: str, between: str = "", parts=()) -> str:
    """Build `temp` concurrently beside `name`, run `between` (the function that searches it),
    then drop `name` and give `temp` its name. On a partitioned table (`parts`), which PostgreSQL
    cannot index concurrently: the index ON ONLY the table, then each partition's built
    concurrently and attached (the table keeps answering; the parent index turns valid with its
    last partition), and the old one dropped without CONCURRENTLY (a brief lock on every partition)."""
    rename = sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {};").format(sql.Identifier(schema, temp),
                                                                      sql.Identifier(name))
    if not parts:
        drop = sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {};").format(sql.Identifier(schema, name))
        return (f"{create};\n{between}-- the old index goes only once the new one is built and valid\n"
                f"{drop.as_string(conn)}\n{rename.as_string(conn)}\n")
    suffix = "_prev" if temp.endswith("_prev") else "_next"
    node = parse_sql(create)[0].stmt
    node.concurrent, node.if_not_exists, node.idxname = False, True, temp
    node.relation.inh = False
    lines = ["-- a partitioned table: the index ON ONLY the table, then each partition's, built concurrently and "
             "attached", RawStream()(node) + ";"]
    index_of = {node.relation.relname: (schema, temp)}
    renames = []
    for part_schema, part, parent, leaf in parts:
        child = copy.deepcopy(node)
        child.relation.schemaname, child.relation.relname, child.relation.inh = part_schema, part, leaf
        child.concurrent, child.idxname = leaf, _suffixed(f"{part}_{name}", suffix)
        lines.append(RawStream()(child) + ";")
        lines.append(sql.SQL("ALTER INDEX {} ATTACH PARTITION {};").format(
            sql.Identifier(*index_of[parent]), sql.Identifier(part_schema, child.idxname)).as_string(conn))
        index_of[part] = (part_schema, child.idxname)
        renames.append(sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {};").format(
            sql.Identifier(part_schema, child.idxname), sql.Identifier(_suffixed(f"{part}_{name}", ""))))
    drop = sql.SQL("DROP INDEX IF EXISTS {};").format(sql.Identifier(schema, name))
    return ("\n".join(lines) + f"\n{between}-- the old index goes only once the new one is valid on every partition "
            "(a partitioned index cannot be dropped concurrently)\n" + drop.as_string(conn) + "\n"
            + rename.as_string(conn) + "\n" + "".join(r.as_string(conn) + "\n" for r in renames))


def _other_models(conn, table: str) -> list:
    """The second models' columns search_assets serves beside embedding (pgvkit model add): a
    change of index kind keeps their searches."""
    from ..schema.models import models, searched_beside

    return searched_beside(models(conn, table))


def _function_now(conn) -> str:
    """search_assets as it is defined now (its body and SET clauses), to restore it."""
    text = conn.execute("SELECT pg_get_functiondef(to_regprocedure(%s))", [search.SIGNATURE]).fetchone()[0]
    return text.rstrip() + ";\n"


def _bound_after(bound: dict, changes: dict) -> dict:
    """The function's settings once the migration ran: iterative scans kept, the tuned values in,
    a re-rank depth only for a binary index, no owners' setting (confirm measured it on the index
    this one replaces: until confirm runs again, owners get the tuned value)."""
    after = {k: v for k, v in bound.items() if k != RERANK_DEPTH and k not in OWNER_SETTING.values()}
    after.update(changes)
    return after


def _comment(conn, schema: str, name: str, text: str | None) -> str:
    return sql.SQL("COMMENT ON INDEX {} IS {};\n").format(
        sql.Identifier(schema, name), sql.Literal(text) if text is not None else sql.SQL("NULL")).as_string(conn)


def _live_config(live: VectorIndex) -> Config:
    """The live index's build parameters (pgvector's defaults where its definition names none)."""
    node = parse_sql(live.definition)[0].stmt
    given = {d.defname: int(str(d.arg.sval if hasattr(d.arg, "sval") else d.arg.ival))
             for d in (node.options or ())}
    defaults = {"ivfflat": {"lists": 100}, "hnsw": {"m": 16, "ef_construction": 64}}[live.method]
    params = tuple((k, given.get(k, v)) for k, v in defaults.items())
    return Config(live.method, params, live.kind.name if live.kind else "vector")


def _previous(conn, live: VectorIndex, temp: str) -> str:
    """The live index's own definition (parsed by PostgreSQL's parser), built concurrently as `temp`."""
    node = parse_sql(live.definition)[0].stmt
    node.idxname, node.concurrent, node.if_not_exists = temp, True, True
    return RawStream()(node)


def write_migration(url: str, recommendation: Recommendation, migrations_dir: str | Path | None = None, *,
                    table: str = "ip_asset_embeddings", index: str = "idx_embedding_cosine",
                    allow_query_change: bool = False) -> tuple[Path, Path]:
    """Write NNN_tune_<index>.sql and its .down.sql: the table's live search index (of any kind),
    found by what it is whatever its name (else a new one called `index`), replaced concurrently
    under its own name, with the query-time setting for search_assets (and for the database when
    direct queries can use the new index); a change of kind replaces search_assets' body with it.
    The down file brings back the previous definition, comment, function and settings."""
    below = recommendation.point is None and recommendation.below is not None
    if recommendation.point is None and not below:
        raise PgvkitError("no configuration could be measured, so there is no migration to write; "
                          "tune again with more rows (--rows) or a wider grid (--hnsw M:EF)")
    directory = Path(migrations_dir or default_migrations_dir())
    refuse_stacking(url, directory, table, index)
    existing = read_migrations(directory)
    p = recommendation.point or recommendation.below
    kind = p.config.kind
    with connect(url) as conn:
        recorded = history.applied(conn)  # a version applied here whose file is gone is still taken
        where = conn.execute("SELECT n.nspname, c.relname, (SELECT atttypmod FROM pg_attribute WHERE attrelid = c.oid"
                             " AND attname = 'embedding') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                             " WHERE c.oid = to_regclass(%s)", [sql.Identifier(table).as_string(conn)]).fetchone()
        if where is None:
            raise PgvkitError(f"table {table} does not exist here; run pgvkit migrate first")
        table_schema, table_name, dims = where
        parts = _partitions(conn, table_schema, table_name)
        live = search_index(conn, table)
        live_kind = live.kind if live else KINDS["vector"]
        has_function = search.exists(conn)
        if not kind.direct and not has_function:
            raise QueryChangeRefused(f"the recommendation is a {kind.name} index, which only search_assets can search, "
                                     "and this database has no search_assets: run pgvkit migrate (002_search_assets) "
                                     "and move the application to it, or tune with --candidates vector")
        if not kind.direct and not allow_query_change:
            raise QueryChangeRefused(
                f"the recommendation is a {kind.name} index ({p.config.label}): direct ORDER BY embedding <=> ... "
                "queries cannot use it and would read every row; move the application to search_assets ("
                "docs/how-to/smaller-indexes.md: Moving the application), then pass --allow-query-change, or tune with --candidates vector")
        body_changes = has_function and kind.name != live_kind.name
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table_schema, table_name))).fetchone()[0]
        old = {param: _current_setting(conn, param) for param in SEARCH_PARAM.values()}
        bound = search.settings(conn) if has_function else None  # None: no search_assets here
        previous_function = _function_now(conn) if body_changes else ""
        schema, target = (live.schema, live.name) if live else (table_schema, index)
        temp = _suffixed(target, "_next")
        create = sql.SQL("CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} USING {} ({}) WITH ({})").format(
            sql.Identifier(temp), sql.Identifier(table_schema, table_name), sql.SQL(p.config.method),
            kind.index_key(dims), p.config.with_clause()).as_string(conn)
        settings = build_settings(url, p.config, max(rows, 1), dims)
        set_lines = "".join(sql.SQL("SET {} = {};\n").format(sql.SQL(k), sql.Literal(str(v))).as_string(conn)
                            for k, v in settings.items())
        changes = {p.search_param: str(p.search_value), **({RERANK_DEPTH: str(p.rerank)} if kind.reranks else {}),
                   **search.INDEX_ONLY}  # the tuner measured the index: the application gets it at every size
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        what = f"{kind.name} {p.config.method}" if not kind.direct else p.config.method
        replaces = (f"replaces {live_kind.name} {live.method} index {sql.Identifier(live.name).as_string(conn)}"
                    f" with a {what} index" if live else f"creates the {what} index")
        between = ""
        if body_changes:
            between = ("-- search_assets searches the new index from here on (its query and settings change with it)\n"
                       + function_sql(conn, kind, dims, _bound_after(bound, changes),
                                      sql.Identifier(table_schema, table_name), _other_models(conn, table)))
        predicted = p.note.startswith(PREDICTED)
        measured = (f"{p.note}:\n--   {p.config.label}, {setting_text(p)}: recall@{recommendation.k} {figures(p)},"
                    f" p95 ~{p.p95_ms:.2f} ms" if predicted else
                    f"--   {p.config.label}, {setting_text(p)}: recall@{recommendation.k} {figures(p)},"
                    f" p95 {p.p95_ms:.2f} ms, build {p.build_s:.1f} s, {p.size_bytes / 2**20:.1f} MB")
        up = (f"-- pgvkit:no-transaction\n"
              f"{TUNE_WRITTEN}{stamp}; {replaces}. Measured on {recommendation.workload}"
              + (";\n-- " if predicted else ":\n") + measured + "\n"
              + f"{ESTIMATE}build_s={round(carried_build_s(p.build_s, recommendation.live_rows, rows))} rows={rows} "
                f"maintenance_work_mem={settings['maintenance_work_mem']}\n"
              f"-- Target was recall@{recommendation.k} >= {recommendation.target}.\n"
              + (f"-- {BELOW}: its lower bound {p.recall_low:.3f} is under the target. pgvkit confirm measures\n"
                 "-- it at full size and raises the search setting as far as pgvector allows; it says if that is not "
                 "enough.\n" if below else "")
              + ("" if kind.direct else
                 f"-- Direct ORDER BY embedding <=> ... queries cannot use a {kind.name} index: after this migration "
                 "they read every row.\n-- Written with --allow-query-change: the application searches through "
                 "search_assets.\n") + "\n")
        if kind.direct:
            up += "-- queries read the setting when they connect\n" + _set_database(conn, p.search_param,
                                                                                      str(p.search_value))
        up += (f"\n-- sized for {rows:,} rows so the build fits in memory\n" + set_lines + UNBOUNDED
               + _swap(conn, create, schema, target, temp, between, parts)
               + _comment(conn, schema, target, f"{TUNED_BY} {setting_text(p)}"
                          + ("" if kind.direct else f" ({kind.name}, through search_assets)")
                          + (f"; {BELOW}" if below else "")
                          + (f"; {p.note.split(' from ')[0]}: {figures(p).split('; ')[0]}" if predicted else ""))
               + "".join(f"RESET {k};\n" for k in settings) + "RESET statement_timeout;\n")
        owners = [g for g in OWNER_SETTING.values() if g in (bound or {})]  # confirm's, for the index replaced
        if has_function and not body_changes:
            up += ("\n-- search_assets binds its own setting: it changes with the index it is for\n"
                   + "".join(_set_function(conn, k, v) for k, v in {**changes, **dict.fromkeys(owners)}.items()))
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", target).strip("_-") or "vector_index"
        name = f"{version_after(existing, recorded):03d}_tune_{slug}"
        down = f"-- pgvkit:no-transaction\n-- Undo {name}: the previous index, search_assets and query-time settings.\n\n"
        down += "".join(_set_database(conn, param, value) for param, value in old.items())
        if bound is not None and not body_changes:
            down += "".join(_set_function(conn, param, bound.get(param))
                            for param in dict.fromkeys([*SEARCH_PARAM.values(), *changes, *owners]))
        restore = ("-- search_assets as it was, searching the index it was written for\n" + previous_function
                   if body_changes else "")
        if live:
            # the previous index is built again at the table's size: sized as the up file's build is
            again = build_settings(url, _live_config(live), max(rows, 1), dims)
            down += (f"\n-- sized for {rows:,} rows so the rebuild of the previous index fits in memory\n"
                     + "".join(sql.SQL("SET {} = {};\n").format(sql.SQL(k), sql.Literal(str(v))).as_string(conn)
                               for k, v in again.items())
                     + UNBOUNDED + _swap(conn, _previous(conn, live, _suffixed(target, "_prev")), schema, target,
                                         _suffixed(target, "_prev"), restore, parts)
                     + _comment(conn, schema, target, live.comment)
                     + "".join(f"RESET {k};\n" for k in again) + "RESET statement_timeout;\n")
        else:
            down += "\n" + restore + sql.SQL("DROP INDEX {}IF EXISTS {};\n").format(
                sql.SQL("" if parts else "CONCURRENTLY "), sql.Identifier(schema, target)).as_string(conn)
    up_path = directory / f"{name}.sql"
    down_path = directory / f"{name}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path


def carried_build_s(build_s: float, tuned_rows: int, rows: int) -> float:
    """Tune's build estimate, made for the rows it counted when it started, carried to the rows
    counted as the migration is written (writers go on adding rows through a long tune)."""
    return n_log_n(build_s, tuned_rows, rows) if tuned_rows > 1 and rows > 1 else build_s


def setting_text(p) -> str:
    return f"{p.search_param} = {p.search_value}" + (f", {RERANK_DEPTH} = {p.rerank}" if p.rerank else "")


def all_applied(conn, migrations_dir, measured: str, again: str) -> tuple[Path, list, dict]:
    """(directory, its files, the database's record) for a migration written from what the database
    holds now: refused while a file of the directory is not applied (`measured` says what was read)."""
    directory = Path(migrations_dir or default_migrations_dir())
    existing = read_migrations(directory)
    recorded = history.applied(conn)
    pending = [m for m in existing if recorded.get(m.version) is None
               or recorded[m.version].status not in ("applied", "baselined")]
    if pending:
        raise PgvkitError(f"{pending[0].path.name} is not applied yet: {measured}; apply it first (pgvkit migrate) "
                          f"and {again}")
    return directory, existing, recorded


def version_after(existing, recorded: dict) -> int:
    """The next migration number: above every file and every version the database recorded."""
    return max([m.version for m in existing] + list(recorded), default=0) + 1
