"""The seed README's troubleshooting, diagnosed automatically.

`doctor()` walks from the outside in: can we reach the server, is pgvector there, is it created
in this database and visible on the search_path, may this role do what migrations need, did the
migrations run, can the vector index be built, is anything holding a lock on the table. Each
finding says what is wrong, why, and the exact fix. `explain()` maps an error message a user
pasted (``type "vector" does not exist`` and friends) to the same kind of finding.
"""

from __future__ import annotations

from dataclasses import replace

import psycopg
from psycopg import sql

from ..checks import Check, DiagnosisFailed, Report, diagnosis
from ..errors import ConnectionFailed, EmbeddedServerError, PgvkitError
from ..migrator import Migrator, objects_present
from ..schema import locate
from ..server.db import Target, connect, resolve, server_info
from ..server.explain import explain
from ..sizing import ROWS_PER_LIST, hnsw_build_bytes, ivfflat_build_bytes, mb
from ..watch.history import latest_findings
from .verify import Recreate, check_grants, check_invalid_indexes, check_tune_leftovers, schema_checks, search_dimension

__all__ = [
    "Finding",
    "Diagnosis",
    "DiagnosisFailed",
    "doctor",
    "diagnose",
    "explain",
    "ivfflat_build_bytes",
    "hnsw_build_bytes",
]

# the doctor's names of the one model of checks (pgvkit.checks), kept for code written against them
Finding = Check
Diagnosis = Report


def doctor(database_url: str | None = None, *, table: str = "ip_asset_embeddings", migrations_dir=None,
           dimension: int | None = None) -> Report:
    """Diagnose the database (flag / $DATABASE_URL / embedded): never raises for a problem it can
    name; every finding has what, why and the fix."""
    try:
        target = resolve(database_url)
    except EmbeddedServerError as exc:  # its own words say why and the fix (a full disk: free space)
        return diagnosis("(embedded server)", [Check("connection", "fail", str(exc).split(": ", 1)[0],
                                                     "the embedded server did not start", str(exc).split(": ", 1)[-1])])
    except PgvkitError as exc:
        return diagnosis("(no database)", [Check("connection", "fail", str(exc), "the database URL could not be used",
                                                   "fix DATABASE_URL / --database-url, or unset it to use the embedded server")])
    return diagnose(target, table=table, migrations_dir=migrations_dir, dimension=dimension)


def diagnose(target: Target, *, table: str = "ip_asset_embeddings", migrations_dir=None,
             dimension: int | None = None) -> Report:
    """The stages, outside in: connection, extension, privileges, migrations, then (when the table
    exists) the schema as verify checks it, index builds, invalid indexes, grants and locks."""
    report = diagnosis(target.masked, where=target.label)
    try:
        conn = connect(target.url, autocommit=True, application_name="pgvkit doctor")
    except ConnectionFailed as exc:
        known = [c for c in explain(exc.reason, exc.sqlstate) if c.name == "connection"][:1]
        report.checks += [replace(c, why=f"{c.why} (server said: {exc.reason})") for c in known] or [
            Check("connection", "fail", f"cannot connect: {exc.reason}", "the server refused or was unreachable",
                  "check host, port, user and database in --database-url / DATABASE_URL")]
        return report
    with conn:
        info = server_info(conn)
        report.checks.append(Check(
            "connection", "pass",
            f"connected to {info['database']} as {info['user']}"
            f"{' (superuser)' if info['superuser'] else ''}, PostgreSQL {info['server_version']}"))
        report.checks += _writable(conn)
        report.checks += _extension(conn, info)
        report.checks += _privileges(conn, info, table)
        report.checks += _migrations(conn, target.url, migrations_dir, table)
        found = locate(conn, table)
        if found.elsewhere():  # not "run pgvkit migrate": it says up to date, the search_path is what is wrong
            what, _, fix = found.elsewhere().partition(": ")
            report.checks.append(Check("table", "fail", what, "unqualified queries (the application's, pgvkit's) "
                                       "look for it in the search_path's schemas only", fix))
        if _exists(conn, table):
            report.checks += _schema(conn, table, dimension, migrations_dir)
            report.checks += _index_builds(conn, table, search_dimension(conn, table, dimension))
            report.checks.append(_from_verify("invalid indexes", check_invalid_indexes(conn, table)))
            report.checks.append(_from_verify("application role", check_grants(conn, table)))
            report.checks += _locks(conn, table)
            report.checks += latest_findings(conn, table)  # the newest pgvkit watch: slower searches, dead rows
        report.checks.append(check_tune_leftovers(conn))
    return report


def _writable(conn) -> list[Check]:
    """A hot standby, or a session that opens read-only transactions: every writing command fails."""
    from ..server.sessions import read_only

    why = read_only(conn)
    if why is None:
        return []
    return [Check("writes", "fail", why[0],
                  "migrate, rollback, tune, confirm, load and backfill write: pgvkit refuses them here before they "
                  "start", why[1])]


def _from_verify(name: str, check: Check) -> Check:
    return replace(check, name=name, why="" if check.status == "pass" else "found by pgvkit verify")


def _schema(conn, table: str, dimension: int | None, migrations_dir) -> list[Check]:
    """The checks verify makes of the table, its indexes, trigger and view: an object dropped or
    changed by hand after migrating is a finding too."""
    why = "the schema differs from what the migrations create (dropped or changed by hand after migrating?)"
    return [c if c.status == "pass" else replace(c, why=why)
            for c in schema_checks(conn, table, dimension, Recreate.read(conn, migrations_dir))]


def _extension(conn, info) -> list[Check]:
    db, user = info["database"], info["user"]
    if info["vector_available"] is None:
        return [Check("extension", "fail", "pgvector is not installed on this server",
                        "CREATE EXTENSION vector needs pgvector's files in the server's share directory",
                        "install pgvector on the server (https://github.com/pgvector/pgvector#installation), "
                        "or unset DATABASE_URL to use the embedded server, which ships it")]
    if info["vector_version"] is None:
        trusted = conn.execute(
            "SELECT trusted FROM pg_available_extension_versions WHERE name = 'vector' AND version = %s",
            [info["vector_available"]]).fetchone()
        may_create = info["superuser"] or (trusted and trusted[0] and conn.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0])
        why = ('queries and CREATE TABLE fail with: type "vector" does not exist '
               "(the old docker init created it only in the database it initialised)")
        if may_create:
            return [Check("extension", "fail", f"the vector extension is not created in {db}", why,
                            "pgvkit migrate (migration 001 creates it)")]
        return [Check("extension", "fail", f"the vector extension is not created in {db}, and {user} may not create it",
                        why + "; vector is not a trusted extension, so only a superuser may create it",
                        f'as a superuser: psql -d {db} -c "CREATE EXTENSION IF NOT EXISTS vector;" then pgvkit migrate')]
    findings = []
    schema, visible, usable, listed = conn.execute(
        "SELECT n.nspname, n.nspname = ANY (current_schemas(false)), has_schema_privilege(n.oid, 'USAGE'),"
        " n.nspname = ANY (SELECT trim(both '\" ' from p) FROM unnest(string_to_array(current_setting('search_path'), ',')) p)"
        " FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'").fetchone()
    if not visible:
        path = conn.execute("SHOW search_path").fetchone()[0]
        role, schema_id = sql.Identifier(user).as_string(conn), sql.Identifier(schema).as_string(conn)
        fixes, problems = [], []
        if not listed:
            problems.append(f"not on {user}'s search_path ({path})")
            fixes.append(f"ALTER ROLE {role} IN DATABASE {sql.Identifier(db).as_string(conn)}"
                         f" SET search_path = {path}, {schema_id}")
        if not usable:
            problems.append(f"{user} lacks USAGE on it")
            fixes.append(f"GRANT USAGE ON SCHEMA {schema_id} TO {role}")
        findings.append(Check(
            "search_path", "fail", f"vector is installed in schema {schema}, " + " and ".join(problems),
            'queries fail with: type "vector" does not exist, although the extension is there',
            "; ".join(fixes) + "; (or, as its owner: ALTER EXTENSION vector SET SCHEMA public;)"))
    else:
        findings.append(Check("search_path", "pass", f"vector {info['vector_version']} in schema {schema}, on the search_path"))
    if info["vector_version"] != info["vector_available"]:
        findings.append(Check("extension", "warn",
                                f"vector {info['vector_version']} created, {info['vector_available']} installed on the server",
                                "newer pgvector versions fix bugs and add index features (iterative scans in 0.8)",
                                "ALTER EXTENSION vector UPDATE;"))
    else:
        findings.append(Check("extension", "pass", f"vector {info['vector_version']} (newest the server has)"))
    return findings


def _privileges(conn, info, table: str) -> list[Check]:
    """What migrations need from this role: CREATE on the database (schema pgvkit), CREATE on
    public (the table, function, view), ownership of the table for DDL on it."""
    if info["superuser"]:
        return [Check("privileges", "pass", f"{info['user']} is a superuser")]
    user, db = info["user"], info["database"]
    ident = sql.Identifier(user).as_string(conn)
    needs = []
    row = conn.execute(
        "SELECT has_database_privilege(current_database(), 'CREATE'),"
        " has_schema_privilege('public', 'CREATE'),"
        " (SELECT pg_has_role(current_user, nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'pgvkit'),"
        " (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(%s)),"
        " (SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass(%s))",
        [_qualified(conn, table)] * 2).fetchone()
    db_create, public_create, owns_pgvkit, owner, owns_table = row
    if not db_create and owns_pgvkit is None:
        needs.append(Check("privileges", "fail", f"{user} may not create schemas in {db}",
                             "pgvkit keeps its history in schema pgvkit, created on the first migrate",
                             f"as the database owner: GRANT CREATE ON DATABASE {sql.Identifier(db).as_string(conn)} TO {ident};"))
    if not public_create and owner is None:
        needs.append(Check("privileges", "fail", f"{user} may not create objects in schema public",
                             "since PostgreSQL 15 only public's owner may create there by default; "
                             "CREATE TABLE fails with: permission denied for schema public",
                             f"as the schema owner: GRANT CREATE ON SCHEMA public TO {ident}; (or migrate as the database owner)"))
    if owner is not None and not owns_table:  # never hand the team's table to another role
        needs.append(Check("privileges", "fail", f"{table} is owned by {owner}, not {user}",
                             "CREATE INDEX, ALTER TABLE and DROP need ownership: migrations fail with: must be owner of table",
                             f"run pgvkit migrate as {owner} (--database-url with that user); a role that only reads, "
                             f"searches or tunes needs no ownership (pgvkit tune: SELECT on {table} and "
                             f"GRANT USAGE, CREATE ON SCHEMA pgvkit TO {ident};)"))
    return needs or [Check("privileges", "pass", f"{user} may create what migrations need")]


def _migrations(conn, url: str, migrations_dir, table: str) -> list[Check]:
    migrator = Migrator(url, migrations_dir, echo=lambda _: None)
    try:
        migrations = migrator.read()
        report = migrator.status(migrations)
    except PgvkitError as exc:
        return [Check("migrations", "fail", str(exc), "the migration files or history cannot be used as they are",
                        "fix what the message names, then pgvkit status")]
    except psycopg.errors.InsufficientPrivilege as exc:
        role = sql.Identifier(conn.info.user).as_string(conn)
        return [Check("migrations", "fail", f"{conn.info.user} may not read pgvkit's history ({exc.diag.message_primary})",
                        "pgvkit keeps the migration history in schema pgvkit, owned by whoever migrated first",
                        f"run pgvkit as that owner, or: GRANT USAGE ON SCHEMA pgvkit TO {role}; "
                        f"GRANT SELECT ON ALL TABLES IN SCHEMA pgvkit TO {role};")]
    halfway = [e for e in report.problems if e["state"] in ("rolling back", "rollback failed")]
    if halfway:
        e = halfway[-1]
        return [Check("migrations", "fail", f"the rollback of {e['version']}_{e['name']} stopped part-way ({e['state']})",
                        "a no-transaction down file failed or was interrupted: the schema is between two versions",
                        f"fix the cause (pgvkit history shows it), then: {e['resume']}")]
    if report.problems:
        return [Check("migrations", "fail", report.summary,
                        "an applied file changed (drift) or an applied file is gone",
                        "pgvkit status names each; restore the file, or pgvkit repair VERSION --reason '...'")]
    if report.baseline_hint:
        return [Check("migrations", "fail", f"the objects of {migrations[0].id} exist but no migration is recorded",
                        "the database was set up by the old docker init (or by hand): pgvkit migrate refuses "
                        "to record a schema it did not create",
                        f"pgvkit baseline {migrations[0].label}")]
    applied = [e for e in report.entries if e["state"] in ("applied", "baselined")]
    stuck = [e for e in report.entries if e["state"] in ("failed", "running")]
    if stuck:
        names = ", ".join(f"{e['version']} ({e['state']})" for e in stuck)
        return [Check("migrations", "fail", f"interrupted migration(s): {names}",
                        "a no-transaction migration stopped part-way (error, kill or lost connection)",
                        "fix the cause (see pgvkit history), then pgvkit migrate resumes it")]
    if not applied and migrations:
        present, missing = objects_present(conn, migrations[0])
        if not present:
            return [Check("migrations", "fail", f"migrations didn't run: no {table}, no history",
                            "the docker init directory only runs on an empty data directory: an existing "
                            "volume (or any other server) never saw the SQL files",
                            "pgvkit migrate")]
        return [Check("migrations", "fail",
                        f"{migrations[0].id} ran part-way: {', '.join(present)} exist, {', '.join(missing)} missing",
                        "somebody ran part of the SQL by hand",
                        f"pgvkit migrate ({migrations[0].id} uses IF NOT EXISTS, so it completes what is missing)")]
    if report.pending:
        names = ", ".join(e["version"] for e in report.pending)
        return [Check("migrations", "warn", f"pending: {names}", "newer migration files than the database has",
                        "pgvkit plan, then pgvkit migrate --backup")]
    return [Check("migrations", "pass", f"up to date ({len(applied)} applied)")]


def _index_builds(conn, table: str, dimension: int) -> list[Check]:
    findings = []
    if conn.execute("SELECT has_table_privilege(%s, 'SELECT')", [_qualified(conn, table)]).fetchone()[0]:
        (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    else:  # the planner's estimate is all this role may see
        (rows,) = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                               [_qualified(conn, table)]).fetchone()
    mwm, max_samples = conn.execute(
        "SELECT (SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'),"
        # pgvector samples at most MaxHeapTuplesPerPage (291 on 8 kB pages) rows per heap page
        # (of the largest partition on a partitioned table: each partition's index is built on its own)
        " coalesce((SELECT max(pg_relation_size(relid)) FROM pg_partition_tree(to_regclass(%s)) WHERE isleaf),"
        " pg_relation_size(to_regclass(%s)))"
        " / current_setting('block_size')::int * 291",
        [_qualified(conn, table)] * 2).fetchone()
    indexes = conn.execute("""
        SELECT c.relname, am.amname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass(%s) AND am.amname IN ('ivfflat', 'hnsw')
        ORDER BY c.relname""", [_qualified(conn, table)]).fetchall()
    for name, am, options in indexes:
        opts = dict(o.split("=", 1) for o in options or [])
        if am == "ivfflat":
            lists = int(opts.get("lists", 100))
            need = ivfflat_build_bytes(lists, dimension, rows, max_samples)
            if rows < lists * ROWS_PER_LIST:
                findings.append(Check(
                    "ivfflat data", "warn", f"{name}: {lists} lists, {rows} rows (needs >= {lists * ROWS_PER_LIST})",
                    "IVFFlat learns its centroids from the rows present at build time: built on too little data "
                    "(NOTICE: ivfflat index created with little data) its recall collapses",
                    f"load the data, then REINDEX INDEX CONCURRENTLY {name}; (lists ~ rows / 1000)"))
        else:
            m = int(opts.get("m", 16))
            need = hnsw_build_bytes(rows, dimension, m)
        if need > mwm:
            consequence = ("IVFFlat's k-means sample must fit maintenance_work_mem: CREATE INDEX and REINDEX fail "
                           "until it does" if am == "ivfflat"
                           else "the rebuild spills to disk and takes many times longer")
            findings.append(Check(
                "index memory", "fail" if am == "ivfflat" else "warn",
                f"rebuilding {name} needs about {mb(need)}, maintenance_work_mem is {mb(mwm)}",
                consequence,
                f"SET maintenance_work_mem = '{mb(int(need * 1.2)).replace(' ', '')}'; before CREATE INDEX / REINDEX"))
    if not any(f.name == "index memory" for f in findings):
        findings.append(Check("index memory", "pass",
                                f"{len(indexes)} vector index(es) fit maintenance_work_mem ({mb(mwm)}) at {rows} rows"))
    return findings


def _locks(conn, table: str) -> list[Check]:
    """Sessions that hold a lock on the table while idle in a transaction, or that are waiting:
    DDL (migrate, CREATE INDEX) would queue behind them, and everything else behind the DDL."""
    rows = conn.execute("""
        SELECT DISTINCT a.pid, a.state, l.mode, l.granted, left(a.query, 120),
               extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::int
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.relation = to_regclass(%s) AND a.pid <> pg_backend_pid()
          AND (NOT l.granted OR a.state LIKE 'idle in transaction%%')
        ORDER BY 1""", [_qualified(conn, table)]).fetchall()
    if not rows:
        return [Check("locks", "pass", f"no idle transaction holds {table}, nobody waits on it")]
    findings = []
    for pid, state, mode, granted, query, age in rows:
        if granted:
            findings.append(Check(
                "locks", "warn", f"process {pid} has been {state} for {_age(age)} holding {mode} on {table} "
                f"(last query: {query})",
                "a migration's DDL waits for it, and every later query on the table waits behind the DDL",
                f"finish that transaction, or: SELECT pg_terminate_backend({pid});"))
        else:
            findings.append(Check(
                "locks", "warn", f"process {pid} waits for {mode} on {table} (query: {query})",
                "another session holds a conflicting lock",
                f"SELECT pg_blocking_pids({pid}); names the holder"))
    return findings


def _age(seconds: int | None) -> str:
    """12 s, 4 min, 3 h: how long a session has held its transaction open."""
    if not seconds or seconds < 1:
        return "under a second"
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min" if seconds < 7200 else f"{seconds // 3600} h"


def _exists(conn, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [_qualified(conn, table)]).fetchone()[0]


def _qualified(conn, name: str) -> str:
    return sql.Identifier(name).as_string(conn)

