"""The notebooks' preamble: connect by the one rule, show where (masked) and what versions, and
point JupySQL's %sql at the same database."""

from __future__ import annotations

from .db import Target, connect, require_database_name, resolve, server_info, sqlalchemy_url

__all__ = ["open_target", "describe", "sql_engine", "confirm_destructive"]


def describe(target: Target) -> dict:
    """Where we are connected (password masked), server and pgvector versions."""
    with connect(target.url) as conn:
        info = server_info(conn)
    return {
        "database": info["database"],
        "user": info["user"],
        "source": "embedded server (.pgvkit/pgdata)" if target.is_embedded else f"{target.source}: {target.masked}",
        "server": f"PostgreSQL {info['server_version']}",
        "pgvector": info["vector_version"] or f"not created in this database ({info['vector_available'] or 'none'} available)",
    }


def open_target(database_url: str | None = None) -> Target:
    """Resolve the database (parameter, $DATABASE_URL, embedded), print what it is, return it."""
    target = resolve(database_url)
    for key, value in describe(target).items():
        print(f"{key:>9}: {value}")
    return target


def sql_engine(target: Target):
    """A SQLAlchemy engine on the target for `%sql engine` (JupySQL)."""
    from sqlalchemy import create_engine

    return create_engine(sqlalchemy_url(target.url))


def confirm_destructive(target: Target, confirm_database: str | None, what: str) -> None:
    """Guard a notebook step that drops or deletes: off the embedded default, the database's name
    must be set in the notebook's confirm_database parameter (running all cells of a notebook
    pointed at production cannot wipe it)."""
    require_database_name(target, confirm_database, what, "set the parameter confirm_database = '{name}'")
