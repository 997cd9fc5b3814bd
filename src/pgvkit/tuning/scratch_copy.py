"""The scratch copy the sweep builds its candidates on, pgvkit.tune_workload: who may make it, what
it holds, and what a killed run left of it.

It holds only what the sweep's queries read (id, owner_id, embedding) and a padding column as
wide as the live table's other columns: the planner costs a scan by the table's heap pages, and
with 768-d vectors stored out of line those pages are made of the other columns, so the copy must
be as wide to plan like the live table (a narrow copy chose the index where the live table
chose a sequential scan), but it need not carry asset ids, metadata or anything else a team may
not want copied. A comment on the table records who made it and when, for the leftover check."""

from __future__ import annotations

import os
import socket

from psycopg import sql

from ..checks import Check
from ..errors import PgvkitError
from .lock import TUNE_LOCK

__all__ = ["SCHEMA", "WORKLOAD", "SCRATCH", "MADE_BY", "TunePrivilegeError", "create", "create_synthetic", "fill",
           "require_privileges", "leftover"]

SCHEMA = "pgvkit"
WORKLOAD = "tune_workload"
SCRATCH = sql.Identifier(SCHEMA, WORKLOAD)
MADE_BY = "pgvkit tune scratch copy"


class TunePrivilegeError(PgvkitError):
    """This role may not read the table or make the scratch copy; names the least grant."""


def require_privileges(conn, table: str | None) -> None:
    """What tune needs, checked before anything is made: SELECT on the table (None: synthetic
    vectors only), and CREATE in schema pgvkit (or on the database, when pgvkit does not exist yet)."""
    user = sql.Identifier(conn.info.user).as_string(conn)
    name = sql.Identifier(table).as_string(conn) if table else None
    if name and not conn.execute("SELECT has_table_privilege(%s, 'SELECT')", [name]).fetchone()[0]:
        raise TunePrivilegeError(f"{conn.info.user} may not read {table}, which tune samples; as its owner: "
                                 f"GRANT SELECT ON {name} TO {user};")
    schema = conn.execute("SELECT to_regnamespace(%s)", [SCHEMA]).fetchone()[0]
    if schema is None:
        if not conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()[0]:
            db = sql.Identifier(conn.info.dbname).as_string(conn)
            raise TunePrivilegeError(
                f"{conn.info.user} may not create schema {SCHEMA} in {conn.info.dbname}, where tune keeps its scratch "
                f"copy; run pgvkit migrate first (it makes the schema), or as the database owner: "
                f"GRANT CREATE ON DATABASE {db} TO {user};")
        return
    if not conn.execute("SELECT has_schema_privilege(%s, 'CREATE') AND has_schema_privilege(%s, 'USAGE')",
                        [SCHEMA, SCHEMA]).fetchone()[0]:
        owner = conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
                             [SCHEMA]).fetchone()[0]
        raise TunePrivilegeError(
            f"{conn.info.user} may not create tables in schema {SCHEMA}, where tune keeps its scratch copy; run pgvkit "
            f"tune as {owner}, or as {owner}: GRANT USAGE, CREATE ON SCHEMA {SCHEMA} TO {user};")


def _searched(column: str) -> tuple[str, ...]:
    return ("id", "owner_id", column)


def create(conn, table: str, column: str = "embedding") -> None:
    """The empty scratch table: the searched columns of `table` (their types, the embedding's
    storage) and a padding column; a comment saying who made it and when. `column`: a second
    model's column (pgvkit model add), copied as the scratch table's embedding, a vector of its
    dimension (a halfvec column is swept as the halfvec kind of it: the same stored precision)."""
    searched = _searched(column)
    columns = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attstorage, a.atttypmod FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum", [sql.Identifier(table).as_string(conn), list(searched)]).fetchall()
    found = {row[0] for row in columns}
    if found != set(searched):
        raise PgvkitError(f"{table} has no column {', '.join(sorted(set(searched) - found))}; tune reads id, "
                          f"owner_id and {column} (run pgvkit verify to compare the table with migration 001)")
    types = {name: (f"vector({typmod})" if name == column != "embedding" else kind) for name, kind, _, typmod in columns}
    _new_table(conn, sql.SQL(", ").join(sql.SQL("{} {}").format(
        sql.Identifier("embedding" if n == column else n), sql.SQL(types[n])) for n, *_ in columns), f"of {table}"
        + ("" if column == "embedding" else f" ({column})"))
    storage = {"p": "PLAIN", "e": "EXTERNAL", "m": "MAIN", "x": "EXTENDED"}[dict((r[0], r[2]) for r in columns)[column]]
    conn.execute(sql.SQL("ALTER TABLE {} ALTER embedding SET STORAGE {}").format(SCRATCH, sql.SQL(storage)))


def create_synthetic(conn, dims: int) -> None:
    """The empty scratch table for synthetic vectors (no live table to sample)."""
    _new_table(conn, sql.SQL("id bigint, owner_id text, embedding vector({}) NOT NULL").format(sql.Literal(dims)),
               "of synthetic vectors")


def _new_table(conn, columns: sql.Composable, what: str) -> None:
    if not conn.execute("SELECT to_regnamespace(%s)", [SCHEMA]).fetchone()[0]:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(SCRATCH))
    conn.execute(sql.SQL("CREATE TABLE {} ({}, pad text, PRIMARY KEY (id))").format(SCRATCH, columns))
    made = conn.execute("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')").fetchone()[0]
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(SCRATCH, sql.Literal(
        f"{MADE_BY} {what}, made {made} UTC by process {os.getpid()} on {socket.gethostname()}")))


def fill(conn, table: str, rows: int, column: str = "embedding") -> sql.Composed:
    """INSERT a random sample of `rows` rows: the searched columns, and as padding as many bytes
    as the row's other columns take (their content is not copied). `column`: a second model's,
    whose rows without an embedding yet (a backfill under way) are not sampled."""
    others = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
        " AND NOT attname = ANY(%s) ORDER BY attnum", [sql.Identifier(table).as_string(conn), list(_searched(column))])]
    width = sql.SQL(" + ").join([sql.SQL("coalesce(pg_column_size(t.{}), 0)").format(sql.Identifier(c))
                                 for c in others] or [sql.SQL("0")])
    # a sample of a large table: TABLESAMPLE reads only the sampled rows' vectors (out of line), not
    # all of them as ORDER BY random() alone would; a fifth more than asked, then exactly `rows`
    col = sql.Identifier(column)
    live = conn.execute(sql.SQL("SELECT count({}) FROM {}").format(col, sql.Identifier(table))).fetchone()[0]
    share = 100.0 * min(1.0, rows * 1.2 / live) if live else 100.0
    sample = (sql.SQL(" TABLESAMPLE BERNOULLI ({}) REPEATABLE (0)").format(sql.Literal(round(share, 6)))
              if share < 50 else sql.SQL(""))
    value = sql.SQL("t.{}").format(col) if column == "embedding" else sql.SQL("t.{}::vector").format(col)
    return sql.SQL(
        "INSERT INTO {scratch} (id, owner_id, embedding, pad) SELECT t.id, t.owner_id, {value}, repeat('x', {width})"
        " FROM {table} AS t{sample} WHERE vector_norm({value}) > 0 ORDER BY random() LIMIT {n}").format(
        scratch=SCRATCH, value=value, width=width, table=sql.Identifier(table), sample=sample, n=sql.Literal(rows))


def leftover(conn) -> Check:
    """pgvkit.tune_workload with no tuning run holding the lock: what a killed run left (its
    size, when, the command that drops it); a run in progress is named, not reported."""
    row = conn.execute(  # the catalog, not to_regclass: a role without USAGE on pgvkit may still ask
        "SELECT pg_total_relation_size(c.oid), c.reltuples::bigint, obj_description(c.oid, 'pg_class')"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        [SCHEMA, WORKLOAD]).fetchone()
    if row is None:
        return Check("tune leftovers", "pass", "no scratch copy left by a tuning run")
    size, rows, comment = row
    running = conn.execute(
        "SELECT a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())", TUNE_LOCK).fetchone()
    if running:
        return Check("tune leftovers", "pass", f"a tuning run is in progress ({running[0] or 'another session'}); "
                     f"its scratch copy {SCHEMA}.{WORKLOAD} takes {size / 2**20:,.1f} MB")
    made = comment.split(", ", 1)[1] if comment and comment.startswith(MADE_BY) and ", " in comment else "made by a " \
        "pgvkit older than the leftover check"
    return Check("tune leftovers", "warn",
                 f"{SCHEMA}.{WORKLOAD} ({size / 2**20:,.1f} MB, ~{max(rows, 0):,} rows copied from the table; {made}) "
                 "was left by a tuning run that did not finish (killed, or its connection lost)",
                 "it holds a copy of the team's vectors and owners and takes disk and backup space until dropped",
                 f"pgvkit tune --cleanup (or: DROP TABLE {SCHEMA}.{WORKLOAD};)")
