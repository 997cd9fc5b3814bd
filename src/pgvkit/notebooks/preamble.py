"""The notebooks' preamble: connect by the one rule, show where (masked) and what versions, point
JupySQL's %sql at the same database, and check that what a notebook needs has run first."""

from __future__ import annotations

from psycopg import sql

from ..errors import ConfigError, PgvkitError
from ..server.db import Target, connect, has_password, require_database_name, resolve, server_info, sqlalchemy_url

__all__ = ["open_target", "describe", "sql_engine", "enable_sql", "migrations_path", "require_migrated",
           "confirm_destructive", "NotReady"]


class NotReady(PgvkitError):
    """A notebook needs a step that has not run yet (01_migrate, usually)."""


def describe(target: Target) -> dict:
    """Where we are connected (password masked), server and pgvector versions."""
    with connect(target.url) as conn:
        info = server_info(conn)
        shared, cache = conn.execute("SELECT current_setting('shared_buffers'), current_setting('effective_cache_size')"
                                     ).fetchone()
    from ..server.machine import Machine

    sized = f" (sized for this machine: {Machine.here().describe()})" if target.is_embedded else ""
    return {
        "database": info["database"],
        "user": info["user"],
        "source": "embedded server (.pgvkit/pgdata)" if target.is_embedded else f"{target.source}: {target.masked}",
        "server": f"PostgreSQL {info['server_version']}",
        "pgvector": info["vector_version"] or f"not created in this database ({info['vector_available'] or 'none'} available)",
        "memory": f"shared_buffers {shared}, effective_cache_size {cache}{sized}",
    }


def open_target(database_url: str | None = None) -> Target:
    """Resolve the database (parameter, $DATABASE_URL, embedded), print what it is, return it.

    A parameter is saved in the notebook (and in every executed copy), so one holding a password
    is refused, as `pgvkit run -p` refuses it: the password belongs in DATABASE_URL or ~/.pgpass."""
    if database_url and has_password(database_url):
        raise ConfigError("the database_url parameter holds a password, and parameters are saved in the notebook; "
                          "leave it None and set DATABASE_URL in the environment (pgvkit lab and pgvkit run pass it "
                          "to the kernels), or keep the password in ~/.pgpass")
    target = resolve(database_url)
    for key, value in describe(target).items():
        print(f"{key:>9}: {value}")
    return target


def sql_engine(target: Target):
    """A SQLAlchemy engine on the target for `%sql engine` (JupySQL)."""
    from sqlalchemy import create_engine

    return create_engine(sqlalchemy_url(target.url))


def enable_sql(target: Target) -> None:
    """`%sql` and `%%sql` (JupySQL) on the target, configured for these notebooks: full errors,
    no connection banner, no row-count chatter. Loading the extension quietly: JupySQL announces
    which configuration files it looked for, by this machine's paths."""
    from IPython import get_ipython
    from IPython.utils.capture import capture_output

    shell = get_ipython()
    if shell is None:
        raise PgvkitError("enable_sql runs inside a notebook (an IPython kernel); elsewhere use pgvkit.connect")
    with capture_output():
        shell.run_line_magic("load_ext", "sql")
    for setting in ("SqlMagic.short_errors = False", "SqlMagic.displaycon = False", "SqlMagic.feedback = 0"):
        shell.run_line_magic("config", setting)
    shell.user_ns["_pgvkit_sql_engine"] = sql_engine(target)
    shell.run_line_magic("sql", "_pgvkit_sql_engine")
    print(f"%sql connected to {target.label}")


def migrations_path(migrations_dir: str | None = None) -> str:
    """The migrations directory a notebook works with: the one given, else $PGVKIT_MIGRATIONS (as
    for the CLI: a team keeping its migrations elsewhere), else the project's (../migrations
    from notebooks/)."""
    import os

    return migrations_dir or os.environ.get("PGVKIT_MIGRATIONS") or "../migrations"


def require_migrated(target: Target, migrations_dir="../migrations", *, table: str = "ip_asset_embeddings") -> int:
    """Stop with one line unless the migrations have run (01_migrate first); else say so and
    return how many rows the table holds."""
    from ..migrator import Migrator

    with connect(target.url) as conn:
        database = conn.info.dbname
        if conn.execute("SELECT to_regclass(%s)", [sql.Identifier(table).as_string(conn)]).fetchone()[0] is None:
            raise NotReady(f"{table} does not exist in {database}: run 01_migrate first (or pgvkit migrate)")
    status = Migrator(target.url, migrations_dir, echo=lambda _: None).status()
    if status.baseline_hint:
        raise NotReady(f"{database} has the schema but no pgvkit history: run 01_migrate first (it records it)")
    if status.exit_code != 0:
        raise NotReady(f"{database}: {status.summary}: run 01_migrate first (or pgvkit status to see why)")
    with connect(target.url) as conn:
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
    print(f"ready: {database} is migrated ({status.summary}); {table} holds {rows:,} rows")
    return rows


def confirm_destructive(target: Target, confirm_database: str | None, what: str) -> None:
    """Guard a notebook step that drops or deletes: off the embedded default, the database's name
    must be set in the notebook's confirm_database parameter (running all cells of a notebook
    pointed at production cannot wipe it)."""
    require_database_name(target, confirm_database, what, "set the parameter confirm_database = '{name}'")
