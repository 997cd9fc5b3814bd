"""Connections: one rule everywhere (flag, then DATABASE_URL, then the embedded server)."""

from __future__ import annotations

import os
import re
from urllib.parse import quote
from dataclasses import dataclass

import psycopg
from psycopg import conninfo as _conninfo

from ..errors import ConfigError, ConfirmationRequired, ConnectionFailed
from .explain import explain

__all__ = [
    "Target",
    "resolve",
    "connect",
    "mask_url",
    "label",
    "has_password",
    "scrub",
    "psycopg_url",
    "sqlalchemy_url",
    "server_info",
    "is_local",
    "require_database_name",
]

_SCHEME = re.compile(r"^(postgres(?:ql)?)(\+\w+)?://", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """Where pgvkit connects: the URL (secret), where it came from, and a printable form."""

    url: str
    source: str  # "flag", "env", "PGVKIT_DIRECT_URL" or "embedded"

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    @property
    def label(self) -> str:
        return label(self.url)

    @property
    def is_embedded(self) -> bool:
        return self.source == "embedded"

    def __repr__(self) -> str:
        return f"Target({self.masked!r}, source={self.source!r})"


def resolve(database_url: str | None = None, *, start_embedded: bool = True, session: bool = False) -> Target:
    """Pick the database: the explicit URL, else $DATABASE_URL, else the embedded server. A
    command that needs a session of its own (`session`) takes $PGVKIT_DIRECT_URL before
    $DATABASE_URL: the server itself, where DATABASE_URL may go through a transaction pooler."""
    if database_url:
        return Target(psycopg_url(database_url), "flag")
    direct = os.environ.get("PGVKIT_DIRECT_URL") if session else None
    if direct:
        return Target(psycopg_url(direct), "PGVKIT_DIRECT_URL")
    env = os.environ.get("DATABASE_URL")
    if env:
        return Target(psycopg_url(env), "env")
    from .embedded import EmbeddedServer

    server = EmbeddedServer.default()
    if start_embedded:
        server.start()
    return Target(server.url(), "embedded")


def psycopg_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+psycopg://) and return what libpq takes."""
    url = url.strip()
    if "://" in url:
        if not _SCHEME.match(url):
            scheme = url.split("://", 1)[0]
            raise ConfigError(
                f"database URL scheme {scheme!r} is not PostgreSQL; "
                "use postgresql://user:password@host:port/dbname"
            )
        return _SCHEME.sub("postgresql://", url, count=1)
    try:
        _conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(
            "database URL is neither a postgresql:// URL nor a libpq key=value string; "
            "use postgresql://user:password@host:port/dbname"
        ) from None
    return url


def sqlalchemy_url(url: str) -> str:
    """The same database as a SQLAlchemy URL using the psycopg 3 driver (for JupySQL)."""
    url = psycopg_url(url)
    if "://" not in url:
        params = _conninfo.conninfo_to_dict(url)
        from sqlalchemy.engine import URL

        query = {k: str(v) for k, v in params.items() if k not in {"user", "password", "dbname", "port"}}
        host = query.pop("host", None)
        if host and host.startswith("/"):
            query["host"] = host
            host = None
        return URL.create(
            "postgresql+psycopg",
            username=params.get("user"),
            password=params.get("password"),
            host=host,
            port=int(params["port"]) if params.get("port") else None,
            database=params.get("dbname"),
            query=query,
        ).render_as_string(hide_password=False)
    _, credentials, rest = _credentials(url)
    if credentials is not None:  # written as libpq took it (# or ? as is): encoded for SQLAlchemy
        params = _conninfo.conninfo_to_dict(url)
        credentials = quote(params.get("user") or "", safe="") + (
            ":" + quote(params["password"], safe="") if params.get("password") is not None else "")
        rest = credentials + rest
    return "postgresql+psycopg://" + rest


def _password(url: str) -> str | None:
    try:
        params = _conninfo.conninfo_to_dict(psycopg_url(url))
    except Exception:
        return None
    return params.get("password") or None


def has_password(text: str) -> bool:
    """Whether a URL or conninfo string carries a password."""
    return _password(text) is not None


def _credentials(url: str) -> tuple[str, str | None, str]:
    """A URL split as libpq splits it: (scheme://, user[:password] or None, the rest). The
    credentials run from :// to the first @ or / (so #, ?, & and : may stand in a password as
    written), and only when that first one is an @."""
    scheme, _, rest = url.partition("://")
    ends = [i for i in (rest.find("@"), rest.find("/")) if i >= 0]
    if ends and rest[min(ends)] == "@":
        return scheme + "://", rest[: min(ends)], rest[min(ends):]
    return scheme + "://", None, rest


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print, log or store.

    Read as libpq reads it: the password follows the first colon of a URL's credentials, or
    stands in ?password=; in key=value form a value is quoted '...' or runs to the next space."""
    if "://" in url:
        scheme, credentials, rest = _credentials(url)
        if credentials is not None and ":" in credentials:
            rest = credentials.partition(":")[0] + ":***" + rest
        elif credentials is not None:
            rest = credentials + rest
        host, question, query = rest.partition("?")
        if question:
            query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", query, flags=re.IGNORECASE)
        return f"{scheme}{host}{question}{query}"
    return re.sub(
        r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url, flags=re.IGNORECASE
    )


def label(url: str) -> str:
    """Where a URL points, in words for a title: `jarvis as jarvis on db.internal:5432`, or `via
    the local socket` (a socket directory is this machine's path: it would date a saved notebook
    and means nothing to its reader). Never the password; the masked URL when it will not parse."""
    try:
        params = _conninfo.conninfo_to_dict(psycopg_url(url))
    except Exception:
        return mask_url(url)
    user = params.get("user") or os.environ.get("PGUSER") or "the login user"
    database = params.get("dbname") or user
    hosts = (params.get("host") or os.environ.get("PGHOST") or "").split(",")
    if not hosts[0] or hosts[0].startswith("/"):
        return f"{database} as {user} via the local socket"
    ports = (params.get("port") or "5432").split(",")
    where = ",".join(f"{h}:{ports[min(i, len(ports) - 1)]}" for i, h in enumerate(hosts))
    return f"{database} as {user} on {where}"


def scrub(text: str, url: str) -> str:
    """Remove the URL's password from any text (server messages can echo parts of it)."""
    pw = _password(url)
    if pw:
        text = text.replace(pw, "***")
    return text


def connect(url: str, *, autocommit: bool = False, application_name: str = "pgvkit",
            long_steps: bool = False, prepared: bool = False) -> psycopg.Connection:
    """Open a psycopg connection; a failure becomes ConnectionFailed with no password in it.
    `long_steps`: a session whose steps are long by design (a load, tune's copies and builds),
    with the statement and idle-in-transaction timeouts a role or database may set turned off.
    `prepared`: searches measured as the application sends them, prepared (execute(...,
    prepare=True)); only on a session of its own (never through a transaction pooler)."""
    try:
        # else no server-side prepared statements: behind a transaction pooler they land on another
        # backend ("prepared statement _pg3_0 already exists"), and pgvkit's own queries gain nothing from them
        conn = psycopg.connect(
            url, autocommit=autocommit, application_name=application_name, connect_timeout=10,
            prepare_threshold=5 if prepared else None,
        )
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        reason = re.sub(r"^connection failed: ", "", reason)
        reason = scrub(reason, url)
        known = [c for c in explain(reason, exc.sqlstate) if c.name == "connection"][:1]  # what it means
        what, fix = (known[0].detail, known[0].fix) if known else (None, None)
        raise ConnectionFailed(mask_url(url), reason, what, fix, exc.sqlstate) from None
    if long_steps:
        from .timeouts import lift

        lift(conn, local=False)
        if not autocommit:
            conn.commit()  # the caller starts in no transaction, the settings kept for the session
    return conn


def server_info(conn: psycopg.Connection) -> dict:
    """Server version, current database and role, and the pgvector version if installed."""
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " current_database(), current_user,"
        " (SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
        " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'),"
        " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()
    return {
        "server_version": row[0],
        "server_version_num": row[1],
        "database": row[2],
        "user": row[3],
        "vector_version": row[4],
        "vector_available": row[5],
        "superuser": row[6],
    }


def is_local(url: str) -> bool:
    """Whether the server runs on this machine (Unix socket or loopback)."""
    host = _conninfo.conninfo_to_dict(psycopg_url(url)).get("host") or ""
    return not host or host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")


def require_database_name(target: Target, given: str | None, what: str, how: str) -> None:
    """Guard a step that drops or deletes: the embedded default may go ahead; any other database
    only when its name was typed back (`how` says where, with {name} in it), so a URL still
    pointing at production cannot be wiped by a command meant for a test database."""
    if target.is_embedded:
        return
    with connect(target.url) as conn:
        name = conn.info.dbname
    if given != name:
        typed = f" (given: {given})" if given else ""
        raise ConfirmationRequired(f"{what} on {target.masked}, which is not the embedded database; "
                                   f"type its name back to go ahead: {how.format(name=name)}{typed}")
