"""The seed README's troubleshooting, diagnosed automatically.

`doctor()` walks from the outside in: can we reach the server, is pgvector there, is it created
in this database and visible on the search_path, may this role do what migrations need, did the
migrations run, can the vector index be built, is anything holding a lock on the table. Each
finding says what is wrong, why, and the exact fix. `explain()` maps an error message a user
pasted (``type "vector" does not exist`` and friends) to the same kind of finding.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import psycopg
from psycopg import sql

from .db import Target, connect, resolve, server_info
from .display import Checklist
from .errors import ConnectionFailed, PgvkitError
from .verify import APP_ROLE, ROWS_PER_LIST, check_grants, check_invalid_indexes

__all__ = [
    "Finding",
    "Diagnosis",
    "DiagnosisFailed",
    "doctor",
    "explain",
    "ivfflat_build_bytes",
    "hnsw_build_bytes",
]


@dataclass(frozen=True)
class Finding:
    area: str
    status: str  # pass / warn / fail
    what: str
    why: str = ""
    fix: str = ""


class DiagnosisFailed(PgvkitError):
    """At least one finding is a failure; the diagnosis is attached."""

    def __init__(self, diagnosis: Diagnosis):
        self.diagnosis = diagnosis
        failed = [f for f in diagnosis.findings if f.status == "fail"]
        super().__init__("; ".join(f"{f.area}: {f.what} (fix: {f.fix})" for f in failed))


@dataclass(repr=False)
class Diagnosis(Checklist):
    target: str  # masked, safe to show
    findings: list[Finding] = field(default_factory=list)
    columns = ("area", "status", "what", "why", "fix")
    colour_by = "status"

    @property
    def title(self) -> str:
        problems = [f for f in self.findings if f.status != "pass"]
        if not problems:
            return f"Doctor on {self.target}: nothing wrong found ({len(self.findings)} checks)"
        fails = sum(f.status == "fail" for f in problems)
        return f"Doctor on {self.target}: {fails} problem(s), {len(problems) - fails} warning(s)"

    def items(self) -> list:
        return self.findings

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status != "pass"]

    def rows(self) -> list[dict]:
        return [asdict(f) for f in self.findings]

    def __str__(self) -> str:
        """A terminal reads findings better as blocks than as a wide table."""
        lines = [self.title]
        for f in self.findings:
            lines.append(f"{f.status.upper():>4}  {f.area}: {f.what}")
            if f.status != "pass":
                lines += [f"      why: {f.why}", f"      fix: {f.fix}"]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"target": self.target, "ok": self.ok, "findings": self.rows()}

    def __getitem__(self, key: str | int) -> Finding:
        """The first finding of an area (or by position)."""
        if isinstance(key, int):
            return self.findings[key]
        return next(f for f in self.findings if f.area == key)

    def __iter__(self):
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def raise_for_failures(self) -> Diagnosis:
        """Raise DiagnosisFailed if any finding fails (a notebook cell then fails too)."""
        if not self.ok:
            raise DiagnosisFailed(self)
        return self

    def only(self, *areas: str) -> Diagnosis:
        """The findings of some areas, still rendered as a report (for a notebook cell)."""
        return Diagnosis(self.target, [f for f in self.findings if f.area in areas])

    def __contains__(self, area: str) -> bool:
        return any(f.area == area for f in self.findings)


# -- memory estimates (pgvector 0.8 build code) ---------------------------------------------

def _item_bytes(dims: int) -> int:
    return 8 + 4 * dims  # varlena header + dim/unused + float4 per dimension


def ivfflat_build_bytes(lists: int, dims: int, rows: int | None = None, max_samples: int | None = None) -> int:
    """What an IVFFlat build holds for k-means, as pgvector 0.8 computes it before refusing with
    "memory required is N MB": room for max(lists * 50, 10000) sample vectors (at most what the
    heap's pages can hold), the centers, and the bounds of each sampled row against each center."""
    room = max(lists * ROWS_PER_LIST, 10_000)
    if max_samples is not None:
        room = max(1, min(room, max_samples))
    sampled = room if rows is None else min(room, rows)
    item = _item_bytes(dims)
    return (room * item + 3 * lists * item + sampled * lists * 4 + 2 * sampled * 4
            + lists * lists * 4 + 3 * lists * 4)


def hnsw_build_bytes(rows: int, dims: int, m: int = 16) -> int:
    """Memory for an HNSW graph built in memory: each element, its vector and its neighbour
    lists, about rows * (4 * dims + 8) * 1.3 at m = 16 (more neighbours at larger m); beyond
    maintenance_work_mem the build falls back to a much slower on-disk path."""
    return int(rows * (_item_bytes(dims) * 1.3 + max(m - 16, 0) * 2 * 8))


def _mb(n: int) -> str:
    return f"{-(-n // (1024 * 1024))} MB"


# -- error messages ---------------------------------------------------------------------------

_EXPLAIN = [
    (r'type "vector" does not exist',
     "extension", 'type "vector" does not exist',
     "the vector extension is not created in this database, or it lives in a schema that is not on the search_path",
     "run pgvkit doctor against the same database: it says which of the two and the exact fix"),
    (r"permission denied to create extension \"vector\"|must be superuser to create this extension|"
     r"permission denied to create extension",
     "privileges", "this role may not create the vector extension",
     "vector is not a trusted extension: only a superuser (or the database owner on a server that trusts it) may create it",
     'as a superuser: psql -d <database> -c "CREATE EXTENSION IF NOT EXISTS vector;" then pgvkit migrate'),
    (r"permission denied for schema (\w+)",
     "privileges", "this role may not create objects in schema {0}",
     "since PostgreSQL 15 only the schema's owner may create in public by default",
     "as the schema owner: GRANT CREATE ON SCHEMA {0} TO <role>; (or run migrations as the owner)"),
    (r"permission denied for (?:table|relation) (\w+)",
     "privileges", "this role lacks a privilege on {0}",
     "the application role was never granted (the init SQL granted to jarvis only)",
     f"GRANT SELECT, INSERT, UPDATE, DELETE ON {{0}} TO <role>; (pgvkit verify lists what {APP_ROLE} lacks)"),
    (r"must be owner of (?:table|relation|index) (\w+)",
     "privileges", "only the owner of {0} may change it",
     "DDL (CREATE INDEX, ALTER TABLE) needs ownership, not just grants",
     "run the migration as the owner, or: ALTER TABLE {0} OWNER TO <role>;"),
    (r'relation "([\w.]+)" does not exist',
     "migrations", "{0} does not exist",
     "the migrations did not run on this database (the docker init dir only runs on an empty data directory)",
     "pgvkit status, then pgvkit migrate"),
    (r"expected (\d+) dimensions, not (\d+)",
     "data", "a vector of {1} dimensions was written to a vector({0}) column",
     "the embedding model's output size must match the column (the seed's vector(3) example cannot work)",
     "send {0}-dimensional embeddings, or change the column with a migration (and rebuild its index)"),
    (r"different vector dimensions (\d+) and (\d+)",
     "data", "a query compared vectors of {0} and {1} dimensions",
     "the query vector does not have the column's dimension",
     "embed the query with the same model as the stored vectors"),
    (r"memory required is (\d+) MB, maintenance_work_mem is (\d+) MB",
     "index build", "IVFFlat build needs {0} MB, maintenance_work_mem is {1} MB",
     "k-means keeps lists * 50 sample vectors in memory",
     "SET maintenance_work_mem = '{0}MB'; before CREATE INDEX (or lower lists)"),
    (r"hnsw graph no longer fits into maintenance_work_mem after (\d+) tuples",
     "index build", "the HNSW graph outgrew maintenance_work_mem after {0} rows",
     "the rest of the build runs on disk and takes much longer",
     "SET maintenance_work_mem to the size pgvkit doctor estimates, then rebuild"),
    (r"ivfflat index created with little data",
     "index build", "the IVFFlat index was built on too little data",
     f"its centroids come from fewer than {ROWS_PER_LIST} rows per list: recall collapses",
     "load the data, then REINDEX INDEX CONCURRENTLY the index (lists ~ rows / 1000)"),
    (r"column cannot have more than (\d+) dimensions for (\w+) index",
     "index build", "{1} indexes take at most {0} dimensions",
     "pgvector's index page layout limits vector dimensions",
     "index a halfvec expression (up to 4000 dims), e.g. USING hnsw ((embedding::halfvec(N)) halfvec_cosine_ops)"),
    (r'could not open extension control file|extension "vector" is not available',
     "server", "pgvector is not installed on this server",
     "CREATE EXTENSION needs the extension's files in the server's share directory",
     "install pgvector on the server (https://github.com/pgvector/pgvector#installation), or use the embedded server"),
    (r"Connection refused|No such file or directory|could not connect to server",
     "connection", "nothing is listening where the URL points",
     "the server is not running, or host / port / socket directory is wrong",
     "start the server (embedded: pgvkit db start) or correct host and port in DATABASE_URL"),
    (r"password authentication failed for user \"?([\w.-]+)",
     "connection", "the server rejected the password of {0} (or there is no role {0}: it does not say which)",
     "wrong password or user name in the URL, or the role has no password",
     "correct the user and password in DATABASE_URL (a superuser can reset it: ALTER ROLE {0} PASSWORD '...')"),
    (r'database "([\w.-]+)" does not exist',
     "connection", "database {0} does not exist on this server",
     "the URL names a database nobody created",
     "createdb -O <role> {0} (or fix the database name in DATABASE_URL)"),
    (r'role "([\w.-]+)" does not exist',
     "connection", "role {0} does not exist on this server",
     "the URL names a role nobody created",
     "as a superuser: CREATE ROLE {0} LOGIN PASSWORD '...'; (or fix the user in DATABASE_URL)"),
    (r"no pg_hba.conf entry for host \"([\d.:a-f]+)\"",
     "connection", "the server's pg_hba.conf has no rule for client {0}",
     "PostgreSQL only accepts clients that pg_hba.conf lists",
     "add a host line for {0} to pg_hba.conf and SELECT pg_reload_conf(); (or connect from an allowed host)"),
    (r"received invalid response to SSL negotiation|expected authentication request from server, but received",
     "connection", "what answered there is not a PostgreSQL server",
     "the port belongs to another service (a web server, a proxy, another database)",
     "point DATABASE_URL at PostgreSQL's port (5432 unless the server says otherwise)"),
    (r"could not translate host name \"([^\"]+)\"|failed to resolve host '([^']+)'",
     "connection", "host name {0} does not resolve",
     "a typo in the host, or DNS is not reachable from here",
     "correct the host in DATABASE_URL"),
    (r"timeout expired",
     "connection", "the server did not answer within the connect timeout",
     "a firewall drops the packets, or the host is down",
     "check that the host and port are reachable from this machine (e.g. pg_isready -h HOST -p PORT)"),
    (r"canceling statement due to lock timeout",
     "locks", "a statement waited longer than lock_timeout for a table lock",
     "another session holds a conflicting lock (often an idle transaction)",
     "pgvkit doctor names the holder; end it or wait, then re-run (pgvkit migrate retries by itself)"),
]


def explain(error: BaseException | str) -> Diagnosis:
    """The findings a known error message points to (empty when it is not one pgvkit knows)."""
    text = " ".join(str(error).split())
    found = []
    for pattern, area, what, why, fix in _EXPLAIN:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            groups = [g for g in m.groups() if g is not None]  # alternatives leave None groups
            found.append(Finding(area, "fail", what.format(*groups), why, fix.format(*groups)))
    return Diagnosis("the error message given", found)


# -- the diagnosis ------------------------------------------------------------------------------

def doctor(database_url: str | None = None, *, table: str = "ip_asset_embeddings", migrations_dir=None,
           dimension: int = 768) -> Diagnosis:
    """Diagnose the database (flag / $DATABASE_URL / embedded): never raises for a problem it can
    name; every finding has what, why and the fix."""
    try:
        target = resolve(database_url)
    except PgvkitError as exc:
        return Diagnosis("(no database)", [Finding("connection", "fail", str(exc), "the database URL could not be used",
                                                   "fix DATABASE_URL / --database-url, or unset it to use the embedded server")])
    return diagnose(target, table=table, migrations_dir=migrations_dir, dimension=dimension)


def diagnose(target: Target, *, table: str = "ip_asset_embeddings", migrations_dir=None,
             dimension: int = 768) -> Diagnosis:
    report = Diagnosis(target.masked)
    try:
        conn = connect(target.url, autocommit=True, application_name="pgvkit doctor")
    except ConnectionFailed as exc:
        known = [f for f in explain(exc.reason) if f.area == "connection"][:1]
        report.findings += [Finding(f.area, f.status, f.what, f"{f.why} (server said: {exc.reason})", f.fix)
                            for f in known] or [
            Finding("connection", "fail", f"cannot connect: {exc.reason}", "the server refused or was unreachable",
                    "check host, port, user and database in --database-url / DATABASE_URL")]
        return report
    with conn:
        info = server_info(conn)
        report.findings.append(Finding(
            "connection", "pass",
            f"connected to {info['database']} as {info['user']}"
            f"{' (superuser)' if info['superuser'] else ''}, PostgreSQL {info['server_version']}"))
        report.findings += _extension(conn, info)
        report.findings += _privileges(conn, info, table)
        report.findings += _migrations(conn, target.url, migrations_dir, table)
        if _exists(conn, table):
            report.findings += _index_builds(conn, table, dimension)
            report.findings.append(_as_finding("invalid indexes", check_invalid_indexes(conn, table)))
            report.findings.append(_as_finding("application role", check_grants(conn, table)))
            report.findings += _locks(conn, table)
    return report


def _as_finding(area: str, check) -> Finding:
    return Finding(area, check.status, check.detail, "" if check.status == "pass" else "found by pgvkit verify",
                   check.fix)


def _extension(conn, info) -> list[Finding]:
    db, user = info["database"], info["user"]
    if info["vector_available"] is None:
        return [Finding("extension", "fail", "pgvector is not installed on this server",
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
            return [Finding("extension", "fail", f"the vector extension is not created in {db}", why,
                            "pgvkit migrate (migration 001 creates it)")]
        return [Finding("extension", "fail", f"the vector extension is not created in {db}, and {user} may not create it",
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
        findings.append(Finding(
            "search_path", "fail", f"vector is installed in schema {schema}, " + " and ".join(problems),
            'queries fail with: type "vector" does not exist, although the extension is there',
            "; ".join(fixes) + "; (or, as its owner: ALTER EXTENSION vector SET SCHEMA public;)"))
    else:
        findings.append(Finding("search_path", "pass", f"vector {info['vector_version']} in schema {schema}, on the search_path"))
    if info["vector_version"] != info["vector_available"]:
        findings.append(Finding("extension", "warn",
                                f"vector {info['vector_version']} created, {info['vector_available']} installed on the server",
                                "newer pgvector versions fix bugs and add index features (iterative scans in 0.8)",
                                "ALTER EXTENSION vector UPDATE;"))
    else:
        findings.append(Finding("extension", "pass", f"vector {info['vector_version']} (newest the server has)"))
    return findings


def _privileges(conn, info, table: str) -> list[Finding]:
    """What migrations need from this role: CREATE on the database (schema pgvkit), CREATE on
    public (the table, function, view), ownership of the table for DDL on it."""
    if info["superuser"]:
        return [Finding("privileges", "pass", f"{info['user']} is a superuser")]
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
        needs.append(Finding("privileges", "fail", f"{user} may not create schemas in {db}",
                             "pgvkit keeps its history in schema pgvkit, created on the first migrate",
                             f"as the database owner: GRANT CREATE ON DATABASE {sql.Identifier(db).as_string(conn)} TO {ident};"))
    if not public_create and owner is None:
        needs.append(Finding("privileges", "fail", f"{user} may not create objects in schema public",
                             "since PostgreSQL 15 only public's owner may create there by default; "
                             "CREATE TABLE fails with: permission denied for schema public",
                             f"as the schema owner: GRANT CREATE ON SCHEMA public TO {ident}; (or migrate as the database owner)"))
    if owner is not None and not owns_table:
        needs.append(Finding("privileges", "fail", f"{table} is owned by {owner}, not {user}",
                             "CREATE INDEX, ALTER TABLE and DROP need ownership: migrations fail with: must be owner of table",
                             f"run migrations as {owner}, or: ALTER TABLE {table} OWNER TO {ident};"))
    return needs or [Finding("privileges", "pass", f"{user} may create what migrations need")]


def _migrations(conn, url: str, migrations_dir, table: str) -> list[Finding]:
    from .migrator import Migrator, objects_present

    migrator = Migrator(url, migrations_dir, echo=lambda _: None)
    try:
        migrations = migrator.read()
        report = migrator.status(migrations)
    except PgvkitError as exc:
        return [Finding("migrations", "fail", str(exc), "the migration files or history cannot be used as they are",
                        "fix what the message names, then pgvkit status")]
    except psycopg.errors.InsufficientPrivilege as exc:
        role = sql.Identifier(conn.info.user).as_string(conn)
        return [Finding("migrations", "fail", f"{conn.info.user} may not read pgvkit's history ({exc.diag.message_primary})",
                        "pgvkit keeps the migration history in schema pgvkit, owned by whoever migrated first",
                        f"run pgvkit as that owner, or: GRANT USAGE ON SCHEMA pgvkit TO {role}; "
                        f"GRANT SELECT ON ALL TABLES IN SCHEMA pgvkit TO {role};")]
    if report.problems:
        return [Finding("migrations", "fail", report.summary,
                        "an applied file changed (drift) or an applied file is gone",
                        "pgvkit status names each; restore the file, or pgvkit repair VERSION --reason '...'")]
    if report.baseline_hint:
        return [Finding("migrations", "fail", f"the objects of {migrations[0].id} exist but no migration is recorded",
                        "the database was set up by the old docker init (or by hand): pgvkit migrate refuses "
                        "to record a schema it did not create",
                        f"pgvkit baseline {migrations[0].label}")]
    applied = [e for e in report.entries if e["state"] in ("applied", "baselined")]
    stuck = [e for e in report.entries if e["state"] in ("failed", "running")]
    if stuck:
        names = ", ".join(f"{e['version']} ({e['state']})" for e in stuck)
        return [Finding("migrations", "fail", f"interrupted migration(s): {names}",
                        "a no-transaction migration stopped part-way (error, kill or lost connection)",
                        "fix the cause (see pgvkit history), then pgvkit migrate resumes it")]
    if not applied and migrations:
        present, missing = objects_present(conn, migrations[0])
        if not present:
            return [Finding("migrations", "fail", f"migrations didn't run: no {table}, no history",
                            "the docker init directory only runs on an empty data directory: an existing "
                            "volume (or any other server) never saw the SQL files",
                            "pgvkit migrate")]
        return [Finding("migrations", "fail",
                        f"{migrations[0].id} ran part-way: {', '.join(present)} exist, {', '.join(missing)} missing",
                        "somebody ran part of the SQL by hand",
                        f"pgvkit migrate ({migrations[0].id} uses IF NOT EXISTS, so it completes what is missing)")]
    if report.pending:
        names = ", ".join(e["version"] for e in report.pending)
        return [Finding("migrations", "warn", f"pending: {names}", "newer migration files than the database has",
                        "pgvkit plan, then pgvkit migrate --backup")]
    return [Finding("migrations", "pass", f"up to date ({len(applied)} applied)")]


def _index_builds(conn, table: str, dimension: int) -> list[Finding]:
    findings = []
    if conn.execute("SELECT has_table_privilege(%s, 'SELECT')", [_qualified(conn, table)]).fetchone()[0]:
        (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    else:  # the planner's estimate is all this role may see
        (rows,) = conn.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                               [_qualified(conn, table)]).fetchone()
    mwm, max_samples = conn.execute(
        "SELECT (SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'),"
        # pgvector samples at most MaxHeapTuplesPerPage (291 on 8 kB pages) rows per heap page
        " pg_relation_size(to_regclass(%s)) / current_setting('block_size')::int * 291",
        [_qualified(conn, table)]).fetchone()
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
                findings.append(Finding(
                    "ivfflat data", "warn", f"{name}: {lists} lists, {rows} rows (needs >= {lists * ROWS_PER_LIST})",
                    "IVFFlat learns its centroids from the rows present at build time: built on too little data "
                    "(NOTICE: ivfflat index created with little data) its recall collapses",
                    f"load the data, then REINDEX INDEX CONCURRENTLY {name}; (lists ~ rows / 1000)"))
        else:
            m = int(opts.get("m", 16))
            need = hnsw_build_bytes(rows, dimension, m)
        if need > mwm:
            consequence = ("the rebuild fails: memory required is ... MB" if am == "ivfflat"
                           else "the rebuild spills to disk and takes many times longer")
            findings.append(Finding(
                "index memory", "fail" if am == "ivfflat" else "warn",
                f"rebuilding {name} needs about {_mb(need)}, maintenance_work_mem is {_mb(mwm)}",
                consequence,
                f"SET maintenance_work_mem = '{_mb(int(need * 1.2)).replace(' ', '')}'; before CREATE INDEX / REINDEX"))
    if not any(f.area == "index memory" for f in findings):
        findings.append(Finding("index memory", "pass",
                                f"{len(indexes)} vector index(es) fit maintenance_work_mem ({_mb(mwm)}) at {rows} rows"))
    return findings


def _locks(conn, table: str) -> list[Finding]:
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
        return [Finding("locks", "pass", f"no idle transaction holds {table}, nobody waits on it")]
    findings = []
    for pid, state, mode, granted, query, age in rows:
        if granted:
            findings.append(Finding(
                "locks", "warn", f"process {pid} has been {state} for {age}s holding {mode} on {table} (last query: {query})",
                "a migration's DDL waits for it, and every later query on the table waits behind the DDL",
                f"finish that transaction, or: SELECT pg_terminate_backend({pid});"))
        else:
            findings.append(Finding(
                "locks", "warn", f"process {pid} waits for {mode} on {table} (query: {query})",
                "another session holds a conflicting lock",
                f"SELECT pg_blocking_pids({pid}); names the holder"))
    return findings


def _exists(conn, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [_qualified(conn, table)]).fetchone()[0]


def _qualified(conn, name: str) -> str:
    return sql.Identifier(name).as_string(conn)

