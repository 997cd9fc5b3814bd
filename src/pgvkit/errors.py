"""One exception tree: every expected failure is a PgvkitError whose text says what to do."""

from __future__ import annotations

__all__ = [
    "PgvkitError",
    "ConfigError",
    "ConnectionFailed",
    "EmbeddedServerError",
    "MigrationFileError",
    "MigrationSQLError",
    "MigrationFailed",
    "MigrationDriftError",
    "MissingMigrationError",
    "LockTimeout",
    "ExtensionUnavailable",
    "ExtensionPrivilegeError",
    "RollbackError",
    "RollbackFailed",
    "ConfirmationRequired",
    "BackupError",
    "MissingExtra",
    "ExtensionNotOnServer",
]


class PgvkitError(Exception):
    """Root of every error pgvkit raises on purpose; str() is one line with the fix."""

    exit_code = 2

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: in a notebook, an expected error is its one
        line (what happened and the fix), as on the command line."""
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class ConfigError(PgvkitError):
    """A setting (flag, environment variable, path) is wrong."""


class ConnectionFailed(PgvkitError):
    """The database could not be reached with the URL given (password never shown)."""

    def __init__(self, masked_url: str, reason: str, what: str | None = None, fix: str | None = None,
                 sqlstate: str | None = None):
        self.masked_url = masked_url
        self.reason = reason  # the server's (or libpq's) own words
        self.sqlstate = sqlstate  # when the server answered
        fix = fix or "check --database-url / DATABASE_URL, or unset it to use the embedded server"
        super().__init__(f"cannot connect to {masked_url}: {what or reason}; {fix}")


class EmbeddedServerError(PgvkitError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class MigrationFileError(PgvkitError):
    """A migration file is misnamed, duplicated, unreadable or unusable."""

    def __init__(self, path, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class MigrationSQLError(MigrationFileError):
    """A migration file's SQL does not parse; carries the line number."""

    def __init__(self, path, line: int, problem: str):
        self.line = line
        super().__init__(f"{path}:{line}", problem)
        self.path = path


class MigrationFailed(PgvkitError):
    """A statement of a migration failed on the server."""

    def __init__(self, version: str, path, line: int, message: str, *, transactional: bool,
                 resume: str = "pgvkit migrate", doing: str = "migration"):
        self.version = version
        self.path = path
        self.line = line
        self.message = message
        self.transactional = transactional
        self.resume = resume  # the command that runs it again
        if transactional:
            after = f"nothing from it was kept; fix the file and run {resume} again"
        else:
            after = (
                f"it is recorded as failed; fix the cause and run {resume} again "
                "to resume it (its statements must be idempotent)"
            )
        super().__init__(f"{doing} {version} failed at {path}:{line}: {message} ({after})")


class MigrationDriftError(PgvkitError):
    """An applied migration's file changed after it was applied."""

    def __init__(self, version: str, expected: str, found: str):
        self.version = version
        self.expected = expected
        self.found = found
        super().__init__(
            f"migration {version} was changed after it was applied "
            f"(checksum {expected[:12]} applied, {found[:12]} on disk); restore the file, or "
            f"record the change with: pgvkit repair {version} --reason '...'"
        )


class MissingMigrationError(PgvkitError):
    """The database has applied a migration whose file is gone."""

    def __init__(self, versions: list[str], stuck: list[str] | None = None):
        self.versions = versions
        self.stuck = stuck or []
        if self.stuck:  # never applied: the way out is the file back, or forgetting the attempt
            first = self.stuck[0].split("_")[0]
            super().__init__(
                f"migration(s) {', '.join(self.stuck)} stopped part-way (failed or interrupted) and the file is gone; "
                f"restore it and pgvkit migrate resumes it, or undo by hand what it ran (pgvkit history) and forget "
                f"the attempt: pgvkit repair {first} --reason '...'"
            )
            return
        names = ", ".join(versions)
        super().__init__(
            f"applied migration(s) {names} have no file in the migrations directory; "
            "restore the file(s) or point --migrations at the right directory"
        )


class LockTimeout(PgvkitError):
    """Another process holds the migration lock, or a table lock, for too long."""

    def __init__(self, what: str, pid: int | None, timeout: float, query: str | None = None):
        self.what = what
        self.pid = pid
        self.timeout = timeout
        self.query = query
        holder = f"process {pid}" if pid else "another session"
        extra = f" running: {query}" if query else ""
        super().__init__(
            f"{holder} has held the {what} for more than {timeout:g}s{extra} "
            f"(wait for it to finish, or stop it with: SELECT pg_terminate_backend({pid or 'PID'}))"
        )


class ExtensionUnavailable(PgvkitError):
    """The server has no pgvector installed at all."""

    def __init__(self, database: str):
        self.database = database
        super().__init__(
            f"this PostgreSQL server has no pgvector extension installed (database {database}); "
            "install pgvector on the server (https://github.com/pgvector/pgvector#installation) "
            "or use the embedded server by unsetting DATABASE_URL"
        )


class ExtensionPrivilegeError(PgvkitError):
    """The role may not create the (untrusted) vector extension."""

    def __init__(self, database: str, role: str):
        self.database = database
        self.role = role
        super().__init__(
            f"role {role} may not create the vector extension (it is not a trusted extension); "
            f'ask a superuser to run: psql -d {database} -c "CREATE EXTENSION IF NOT EXISTS vector;" '
            "then run pgvkit migrate again"
        )


class RollbackError(PgvkitError):
    """A rollback cannot be done as asked."""


class RollbackFailed(RollbackError):
    """A down file stopped part-way; it is recorded as rollback_failed, and the text names the
    command that resumes it."""


class ConfirmationRequired(PgvkitError):
    """A destructive step was asked for without an explicit yes."""


class BackupError(PgvkitError):
    """pg_dump or pg_restore failed."""


class MissingExtra(PgvkitError):
    """A command needs a package of an optional extra that is not installed."""

    def __init__(self, what: str, module: str, extra: str):
        self.module = module
        self.extra = extra
        super().__init__(f"{what} needs {module}, which comes with pgvkit's {extra} extra; "
                         f"install it with: pip install 'pgvkit[{extra}]'")


class ExtensionNotOnServer(PgvkitError):
    """A migration creates an extension the target server does not have (checked before running)."""

    def __init__(self, path, line: int, name: str, fix: str):
        self.path = path
        self.line = line
        self.name = name
        super().__init__(f"{path}:{line}: CREATE EXTENSION {name}: this server has no {name} extension; {fix}")
