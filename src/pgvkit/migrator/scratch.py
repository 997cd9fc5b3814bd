"""Throwaway databases and roles next to the target, for reproducing a problem without touching
the real data (the troubleshooting notebook, tuning experiments).

Everything is named ``pgvkit_scratch_*`` and dropped by `cleanup()`; leftovers of an interrupted
run are dropped when the next `Scratch` starts.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from ..errors import PgvkitError
from ..server.db import connect

__all__ = ["Scratch", "PREFIX", "attempt", "run_sql_file", "fresh_database"]

PREFIX = "pgvkit_scratch_"


class Scratch:
    """Create scratch databases and roles on the target's server; `cleanup()` drops them all."""

    def __init__(self, url: str):
        self.url = url
        self.databases: list[str] = []
        self.roles: dict[str, str] = {}  # name -> password, kept in memory only
        with connect(url, autocommit=True) as conn:
            may = conn.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone()[0]
            if not may:
                raise PgvkitError(f"role {conn.info.user} may not create scratch databases; run this as a role with "
                                  "CREATEDB (the embedded server's jarvis has it), or skip the scratch steps")
            self._drop(conn, self._leftovers(conn))

    def database(self, name: str, *, owner: str | None = None, migrations: str | Path | None = None) -> str:
        """A fresh database pgvkit_scratch_<name>, empty or with `migrations` applied (quietly);
        returns its URL (same server, same login)."""
        full = PREFIX + name
        url = fresh_database(self.url, full, owner=owner)
        self.databases.append(full)
        if migrations is not None:
            from . import Migrator

            Migrator(url, migrations, echo=lambda _: None).migrate()
        return url

    def role(self, name: str) -> str:
        """A login role pgvkit_scratch_<name> without privileges (a random password nobody sees)."""
        full = PREFIX + name
        password = secrets.token_urlsafe(18)
        with connect(self.url, autocommit=True) as conn:
            self._drop(conn, ([], [full]))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(full), sql.Literal(password)))
        self.roles[full] = password
        return full

    def login(self, database_url: str, role: str) -> str:
        """The URL of `database_url` logged in as a scratch role."""
        return conninfo.make_conninfo(database_url, user=role, password=self.roles[role])

    def cleanup(self) -> None:
        """Drop every scratch database, then every scratch role."""
        with connect(self.url, autocommit=True) as conn:
            self._drop(conn, self._leftovers(conn))
        self.databases.clear()
        self.roles.clear()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @staticmethod
    def _leftovers(conn) -> tuple[list[str], list[str]]:
        like = PREFIX.replace("_", r"\_") + "%"
        dbs = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [like])]
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [like])]
        return dbs, roles

    @staticmethod
    def _drop(conn, names: tuple[list[str], list[str]]) -> None:
        dbs, roles = names
        for db in dbs:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        for role in roles:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                continue
            # privileges granted in this database go first; other scratch databases are gone already
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def fresh_database(url: str, name: str, *, owner: str | None = None) -> str:
    """Drop (if there) and create database `name` on url's server; returns its URL."""
    with connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        conn.execute(query)
    return conninfo.make_conninfo(url, dbname=name)


def attempt(url: str, query: str | sql.Composable, params=None) -> psycopg.Error | None:
    """Run one statement and return the error the server raised (None if it worked); rolled back
    either way. For showing a real error message in a notebook without failing the cell."""
    with connect(url) as conn:
        try:
            conn.execute(query, params)
        except psycopg.Error as exc:
            return exc
        finally:
            conn.rollback()
    return None


def run_sql_file(url: str, path: str | Path) -> None:
    """Run a SQL file as one script, as the old docker init (psql -f) did, outside pgvkit's
    migration history."""
    text = Path(path).read_text(encoding="utf-8")
    with connect(url, autocommit=True) as conn:
        conn.execute(text)  # no parameters: psycopg sends the script with the simple query protocol
