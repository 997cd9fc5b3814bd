"""The seed README's verification, as structured checks: one function per concern, each
returning Check(name, status, detail, fix); `verify()` runs them all into a Report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg
from pglast import ast
from psycopg import sql

from ..checks import Check, Report, VerificationFailed, verification
from ..errors import PgvkitError
from ..indexes import searched_index, vector_indexes
from ..kinds import kind_of
from ..memory import check_cache
from ..schema import APP_ROLE, EXPECTED_COLUMNS, EXPECTED_INDEXES, TRIGGER, VIEW, locate
from ..schema.models import check_models, expected_columns, models
from ..search import SIGNATURE, check_search_function, effective_settings, exists as search_exists
from ..server.db import connect
from ..sizing import ROWS_PER_LIST
from ..watch.history import latest_findings
from .planchecks import check_index_used, check_vector_indexes

__all__ = ["Check", "Report", "VerificationFailed", "Recreate", "verify", "schema_checks", "health_checks",
           "EXPECTED_COLUMNS", "EXPECTED_INDEXES"]


def _q(conn, query, params=()):
    return conn.execute(query, params).fetchall()


def check_extension(conn) -> Check:
    rows = _q(conn, "SELECT e.extversion, a.default_version FROM pg_available_extensions a"
                    " LEFT JOIN pg_extension e ON e.extname = a.name WHERE a.name = 'vector'")
    if not rows:
        return Check("extension", "fail", "pgvector is not installed on this server",
                     fix="install pgvector on the server (https://github.com/pgvector/pgvector#installation)")
    installed, newest = rows[0]
    if installed is None:
        return Check("extension", "fail", f"vector extension not created in {conn.info.dbname} ({newest} available)",
                     fix=f'as a superuser: psql -d {conn.info.dbname} -c "CREATE EXTENSION vector;"')
    if installed != newest:
        return Check("extension", "warn", f"vector {installed} installed, {newest} available",
                     fix="ALTER EXTENSION vector UPDATE;")
    return Check("extension", "pass", f"vector {installed} (newest available)")


def check_table(conn, table: str) -> Check:
    """The table by its schema-qualified name; one the search_path cannot see, or another of the
    same name beside it, said so (never silently used)."""
    found = locate(conn, table)
    if found.schema is None:
        what, _, fix = (found.elsewhere() or f"{table} does not exist: pgvkit migrate (or pgvkit doctor)").partition(": ")
        return Check("table", "fail", what, fix=fix)
    (count,) = _q(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))[0]
    if found.others:
        return Check("table", "warn", f"{found.qualified} exists, {count} rows; {found.shadowed()}", fix=(
            f"if the team's table is the other one, put its schema first (ALTER ROLE {found.role} SET search_path = "
            "...), or drop the stray one"))
    return Check("table", "pass", f"{found.qualified} exists, {count} rows")


def check_columns(conn, table: str, dimension: int | None = None) -> Check:
    """The seed's columns, and each embedding column with the type of its model: the recorded one
    (pgvkit model add), else what the column declares, else `dimension` when given."""
    expected, source = expected_columns(conn, table, EXPECTED_COLUMNS, dimension)
    found = dict(_q(conn, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                          " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                    [_qualified(conn, table)]))
    wrong = [f"{c} is {found.get(c, 'missing')}, expected {t}" for c, t in expected.items() if found.get(c) != t]
    if wrong:
        return Check("columns", "fail", "; ".join(wrong), fix="compare with migrations/001_init_vector_store.sql"
                     + (" and pgvkit.embedding_models" if "for " in source else ""))
    return Check("columns", "pass", f"{len(expected)} columns as expected; {source}")


def search_dimension(conn, table: str, dimension: int | None = None) -> int:
    """The dimension searches of the table use: `dimension` when given, else the serving model's
    (recorded, or as the column declares it); 768, the seed's, when nothing says."""
    if dimension is not None:
        return dimension
    found = models(conn, table)
    return found[0].dimensions if found else 768


def check_index(conn, table: str, name: str, method: str, column: str, opclass: str | None,
                recreate: Recreate | None = None) -> Check:
    rows = _q(conn, """
        SELECT am.amname, i.indisvalid, a.attname, opc.opcname, c.reloptions
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_am am ON am.oid = c.relam
        LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        LEFT JOIN pg_opclass opc ON opc.oid = i.indclass[0]
        WHERE i.indrelid = to_regclass(%s) AND c.relname = %s""", [_qualified(conn, table), name])
    if not rows and method == "ivfflat|hnsw":  # the vector index may have another name, or another kind
        found = [i for i in vector_indexes(conn, table, column) if opclass in (None, i.opclass)]
        found = found or [i for i in vector_indexes(conn, table, column) if i.kind and i.valid]
        if found:
            check = check_index(conn, table, found[0].name, method, column, opclass, recreate)
            return replace(check, name=f"index {name}", detail=f"{check.detail} (named {found[0].name})")
    if not rows:
        return Check(f"index {name}", "fail", "missing", fix=(recreate or Recreate()).fix(name, "pgvkit migrate (it creates the index)"))
    am, valid, col, opc, options = rows[0]
    kind = kind_of(opc)
    if kind is not None and not kind.direct and valid and search_exists(conn):  # pgvkit tune's change of kind
        key = conn.execute("SELECT pg_get_indexdef(to_regclass(%s), 1, true)",
                           [sql.Identifier(name).as_string(conn)]).fetchone()[0]
        return Check(f"index {name}", "pass", f"{am} on {key} {opc}{', ' + ', '.join(options) if options else ''}, "
                     f"valid: a {kind.name} index, searched through search_assets")
    problems = []
    if am not in method.split("|"):
        problems.append(f"access method {am}, expected {method.replace('|', ' or ')}")
    if col != column:
        problems.append(f"on {col}, expected {column}")
    if opclass and opc != opclass:
        problems.append(f"operator class {opc}, expected {opclass} (queries with <=> cannot use it)")
    if not valid:
        return Check(f"index {name}", "fail", "INVALID (a failed concurrent build left it)",
                     fix=f"DROP INDEX CONCURRENTLY {name}; then pgvkit migrate or REINDEX")
    if problems:
        return Check(f"index {name}", "fail", "; ".join(problems), fix="compare with migrations/001_init_vector_store.sql")
    opts = f", {', '.join(options)}" if options else ""
    return Check(f"index {name}", "pass", f"{am} on {col}{' ' + opc if opclass else ''}{opts}, valid")


def check_trigger(conn, table: str, recreate: Recreate | None = None) -> Check:
    rows = _q(conn, "SELECT tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(%s)"
                    " AND tgname = %s", [_qualified(conn, table), TRIGGER])
    if not rows:
        return Check("trigger", "fail", f"{TRIGGER} missing", fix=(recreate or Recreate()).fix(TRIGGER))
    if rows[0][0] == "D":
        return Check("trigger", "fail", "update_ip_asset_embeddings_updated_at is disabled",
                     fix=f"ALTER TABLE {table} ENABLE TRIGGER update_ip_asset_embeddings_updated_at;")
    return Check("trigger", "pass", "update_ip_asset_embeddings_updated_at keeps updated_at current")


def check_view(conn, recreate: Recreate | None = None) -> Check:
    if _regclass(conn, VIEW) is None:
        return Check("view", "fail", f"{VIEW} missing", fix=(recreate or Recreate()).fix(VIEW))
    return Check("view", "pass", "similar_assets exists")


def check_grants(conn, table: str, role: str = APP_ROLE) -> Check:
    if not _q(conn, "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]):
        return Check("grants", "pass", f"no role {role} on this server: nothing to grant")
    target = _qualified(conn, table)
    missing = [p for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
               if not _q(conn, "SELECT has_table_privilege(%s, %s, %s)", [role, target, p])[0][0]]
    if _regclass(conn, "similar_assets") and not _q(conn, "SELECT has_table_privilege(%s, 'similar_assets', 'SELECT')", [role])[0][0]:
        missing.append("SELECT on similar_assets")
    if missing:
        return Check("grants", "fail", f"{role} lacks {', '.join(missing)}",
                     fix=f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}; GRANT SELECT ON similar_assets TO {role};")
    return Check("grants", "pass", f"{role} may read and write {table} and read similar_assets")


def check_history(url: str, migrations_dir) -> Check:
    from ..migrator import Migrator

    try:
        report = Migrator(url, migrations_dir, echo=lambda _: None).status()
    except psycopg.errors.InsufficientPrivilege:
        return Check("migrations", "warn", "this role may not read pgvkit's history (schema pgvkit)",
                     fix="run pgvkit verify as the migrating role")
    if report.exit_code == 0:
        return Check("migrations", "pass", "history up to date")
    return Check("migrations", "fail" if report.problems else "warn", report.summary, fix="pgvkit status, then pgvkit migrate")


def check_ivfflat_data(conn, table: str) -> Check:
    rows = _q(conn, """
        SELECT c.relname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND am.amname = 'ivfflat'""",
              [_qualified(conn, table)])
    if not rows:
        return Check("ivfflat lists", "pass", "no IVFFlat index")
    (count,) = _q(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))[0]
    worst = []
    for name, options in rows:
        lists = int(dict(o.split("=", 1) for o in options or ["lists=100"]).get("lists", 100))
        if count < lists * ROWS_PER_LIST:
            worst.append(f"{name}: {lists} lists need >= {lists * ROWS_PER_LIST} rows, table has {count}")
    if worst:
        return Check("ivfflat lists", "warn", "; ".join(worst) + " (centroids from too few rows: recall collapses)",
                     fix="load the data first, then REINDEX INDEX CONCURRENTLY the index (lists ~ rows/1000)")
    return Check("ivfflat lists", "pass", f"{count} rows for {len(rows)} IVFFlat index(es)")


def check_zero_vectors(conn, table: str) -> Check:
    (zeros,) = _q(conn, sql.SQL("SELECT count(*) FROM {} WHERE vector_norm(embedding) = 0").format(sql.Identifier(table)))[0]
    if zeros:
        return Check("zero vectors", "warn", f"{zeros} zero vectors: cosine distance is undefined, the index skips them",
                     fix="fix the embedding pipeline; delete or re-embed those rows")
    return Check("zero vectors", "pass", "none")


def check_null_embeddings(conn, table: str) -> Check:
    """Rows with no embedding are in no search's answer, and a nullable column lets the pipeline
    store them silently (the seed's column is NOT NULL; a table made by hand may not be)."""
    (nullable,) = _q(conn, "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                           " AND attname = 'embedding'", [_qualified(conn, table)])[0]
    (missing,) = _q(conn, sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NULL").format(sql.Identifier(table)))[0]
    not_null = sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET NOT NULL;").format(
        sql.Identifier(table)).as_string(conn)
    if missing:
        return Check("null embeddings", "warn", f"{missing} rows have no embedding (NULL): no search ever returns them",
                     fix=f"re-embed those rows (SELECT asset_id FROM {table} WHERE embedding IS NULL), then in a "
                         f"migration: {not_null}")
    if nullable:
        return Check("null embeddings", "warn", "none yet, but the embedding column is nullable: a failed embedding "
                     "step stores rows no search returns", fix=f"in a migration: {not_null}")
    return Check("null embeddings", "pass", "none (the column is NOT NULL)")


def check_recall(conn, table: str) -> Check:
    """The latest pgvkit recall audit of the index and settings in place now."""
    from ..audit.recall import SETTINGS, latest_audits

    audits = latest_audits(conn, table)
    if audits is None:
        return Check("recall", "warn", f"{conn.info.user} may not read pgvkit.recall_audits", fix="run pgvkit verify "
                     "as the migrating role to see the latest recall audit")
    if not audits:
        return Check("recall", "warn", "never measured: nothing says what share of the true neighbours searches return",
                     fix="pgvkit recall (add --query-file with new query vectors to measure that shape too)")
    live = searched_index(conn, table)
    conn.execute("SELECT '[1]'::vector")  # loads pgvector so its settings exist in this session
    settings = effective_settings(conn, SETTINGS, table)
    when = max(a["at"] for a in audits).strftime("%Y-%m-%d %H:%M")
    if any(a["index_definition"] != (live.definition if live else None) or a["settings"] != settings for a in audits):
        return Check("recall", "warn", f"the index or its settings changed since the last audit ({when})",
                     fix="pgvkit recall")
    k = audits[0]["k"]
    figures = ", ".join(f"{a['recall']:.3f} on {a['shape'].replace('_', ' ')}" for a in audits)
    missed = [a for a in audits if a["recall"] < a["target"]]
    if missed:
        return Check("recall", "fail", f"recall@{k} {figures} (target {missed[0]['target']}, audited {when}): "
                                       "searches miss true neighbours",
                     fix=f"pgvkit tune --target-recall {missed[0]['target']} --write-migration, then pgvkit migrate "
                         "and pgvkit recall")
    return Check("recall", "pass", f"recall@{k} {figures} (target {audits[0]['target']}, audited {when})")


def check_tune_leftovers(conn) -> Check:
    """A scratch copy (pgvkit.tune_workload) that a killed tuning run left behind."""
    from ..tuning.scratch_copy import leftover

    return leftover(conn)


def check_invalid_indexes(conn, table: str) -> Check:
    rows = _q(conn, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indrelid = to_regclass(%s) AND NOT i.indisvalid", [_qualified(conn, table)])
    if rows:
        names = ", ".join(r[0] for r in rows)
        return Check("invalid indexes", "fail", f"{names} INVALID (left by a failed concurrent build)",
                     fix="; ".join(f"DROP INDEX CONCURRENTLY {r[0]}" for r in rows) + "; then rebuild")
    return Check("invalid indexes", "pass", "none")


def _settings_fix(conn, table: str, name: str, value: int) -> str:
    """Where a search setting must change: on search_assets first (it binds its own), and for the
    database (direct queries)."""
    bound = f"ALTER FUNCTION {SIGNATURE} SET {name} = {value}; " \
        if table == "ip_asset_embeddings" and search_exists(conn) else ""
    return f"{bound}ALTER DATABASE {conn.info.dbname} SET {name} = {value}; (or run pgvkit tune)"


def check_probes(conn, table: str = "ip_asset_embeddings", k: int = 10) -> Check:
    """The query-time setting of each vector index the table has: ivfflat.probes = 1 (the
    default) searches one list; hnsw.ef_search below k returns fewer than k rows."""
    conn.execute("SELECT '[1]'::vector")  # loads pgvector so its settings exist in this session
    methods = {r[0] for r in _q(conn, "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                                      " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s)",
                                [_qualified(conn, table)])}
    details = []
    effective = effective_settings(conn, ("ivfflat.probes", "hnsw.ef_search"), table)  # search_assets' own
    if "ivfflat" in methods:
        probes = effective["ivfflat.probes"]
        if probes in (None, "", "1"):
            return Check("search settings", "warn",
                         "ivfflat.probes = 1 (the default): each query searches 1 list, recall is poor",
                         fix=_settings_fix(conn, table, "ivfflat.probes", 10))
        details.append(f"ivfflat.probes = {probes}")
    if "hnsw" in methods:
        ef = int(effective["hnsw.ef_search"] or 40)
        if ef < k:
            return Check("search settings", "warn", f"hnsw.ef_search = {ef} < k = {k}: queries return fewer than {k} rows",
                         fix=_settings_fix(conn, table, "hnsw.ef_search", max(40, k)))
        details.append(f"hnsw.ef_search = {ef}")
    live = searched_index(conn, table)
    if live is not None and live.predicted and not live.confirmed:
        return Check("search settings", "warn", f"{', '.join(details)}: chosen by pgvkit tune on samples "
                     f"({live.predicted}), never measured on the live index",
                     "at a fixed setting recall falls as a table grows; a sample's figure is a prediction",
                     "pgvkit confirm --write-migration (add --query-file with new query vectors), then pgvkit migrate")
    return Check("search settings", "pass", ", ".join(details) + (f"; {live.confirmed}" if live and live.confirmed
                                                                   else "") if details else "no vector index")


def schema_checks(conn, table: str, dimension: int | None = None, recreate: Recreate | None = None) -> list[Check]:
    """The table's columns, its three indexes, the trigger and the view, as migration 001 made them."""
    checks = [check_columns(conn, table, dimension)]
    checks += [check_index(conn, table, name, *spec, recreate=recreate) for name, spec in EXPECTED_INDEXES.items()]
    return checks + [check_trigger(conn, table, recreate), check_view(conn, recreate)]


def health_checks(conn, table: str, dimension: int | None = None) -> list[Check]:
    """What makes searches good or bad on a correct schema: data for IVFFlat, zero vectors, the
    query plan and the query-time setting."""
    dimension = search_dimension(conn, table, dimension)
    return [check_ivfflat_data(conn, table), check_zero_vectors(conn, table), check_null_embeddings(conn, table),
            check_index_used(conn, table, dimension), check_probes(conn, table),
            check_search_function(conn, table, dimension), check_cache(conn, table)]


def verify(url: str, *, table: str = "ip_asset_embeddings", dimension: int | None = None,
           migrations_dir=None) -> Report:
    """Run every check; the report renders as a table and says pass / warn / fail with fixes.
    `dimension`: what the embedding column must be; by default its model's (recorded by pgvkit
    model add, else what the column declares: a table another tool made with vector(1024) is
    checked as such)."""
    with connect(url, autocommit=True) as conn:
        report = verification(conn.info.dbname, table)
        ext = check_extension(conn)
        tbl = check_table(conn, table)
        report.checks += [ext, tbl]
        report.heading = report.heading.replace(f"of {table} ", f"of {locate(conn, table).qualified} ", 1)
        if tbl.status != "fail":
            schema = schema_checks(conn, table, dimension, Recreate.read(conn, migrations_dir))
            report.checks += schema + [check_grants(conn, table), check_invalid_indexes(conn, table)]
            if ext.status != "fail":
                report.checks.append(check_vector_indexes(conn, table, search_dimension(conn, table, dimension)))
            if ext.status != "fail" and schema[0].status == "pass":  # the health checks read the embedding column
                report.checks += health_checks(conn, table, dimension) + [check_recall(conn, table)]
                # what the newest pgvkit watch saw, per server: said, not failed (it was then; doctor fails on it)
                report.checks += [replace(c, status="warn") if c.status == "fail" else c for c in latest_findings(conn, table)]
                report.checks += [c for c in [check_models(conn, table)] if c]
        report.checks.append(check_tune_leftovers(conn))
    report.checks.append(check_history(url, migrations_dir))
    return report


@dataclass
class Recreate:
    """How to bring back a schema object that is missing: pgvkit migrate while the migration that
    creates it is pending; once the history says it is applied, migrate will not run it again,
    so the fix is its statement, by hand."""

    applied: dict[str, tuple[str, str]] = field(default_factory=dict)  # object -> (migration id, file:line)

    @classmethod
    def read(cls, conn, migrations_dir=None) -> Recreate:
        """Which applied migration creates each object (from the files and the history)."""
        from ..migrator import history
        from ..migrator.files import read_migrations

        try:
            migrations = read_migrations(migrations_dir)
            rows = history.applied(conn)
        except (PgvkitError, psycopg.errors.InsufficientPrivilege):  # the migrations check says why
            return cls()
        applied = {}
        for m in migrations:
            if m.version in rows and rows[m.version].status in ("applied", "baselined"):
                for st in m.up.statements:
                    name = _created_name(st.node)
                    if name:
                        applied[name] = (m.id, f"{m.path}:{st.line}")
        return cls(applied)

    def fix(self, name: str, pending: str = "pgvkit migrate") -> str:
        if name not in self.applied:
            return pending
        migration, where = self.applied[name]
        return (f"run the statement at {where} again (psql, or a new migration); pgvkit status shows "
                f"{migration} applied, so pgvkit migrate will not re-create {name}")


def _created_name(node) -> str | None:
    """The name of the index, view, trigger or table a statement creates."""
    if isinstance(node, ast.IndexStmt):
        return node.idxname
    if isinstance(node, ast.ViewStmt):
        return node.view.relname
    if isinstance(node, ast.CreateTrigStmt):
        return node.trigname
    if isinstance(node, ast.CreateStmt):
        return node.relation.relname
    return None


def _regclass(conn, name: str):
    return conn.execute("SELECT to_regclass(%s)", [_qualified(conn, name)]).fetchone()[0]


def _qualified(conn, name: str) -> str:
    return sql.Identifier(name).as_string(conn)
