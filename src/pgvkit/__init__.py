"""pgvkit: migrate, verify and operate a PostgreSQL + pgvector vector store from notebooks or a CLI.

The workflow, one notebook cell per step::

    target = pgvkit.resolve()                 # --database-url, $DATABASE_URL or the embedded server
    migrator = pgvkit.Migrator(target.url)
    migrator.status()                         # what is applied, pending, drifted
    migrator.plan()                           # the SQL that would run
    migrator.migrate()                        # apply, each file in its own transaction
"""

from .backups import backup, restore
from .checks import Check, ChecksFailed, Report
from .doctor import Diagnosis, Finding
from .explain import explain
from .db import Target, connect, mask_url, resolve, server_info, sqlalchemy_url
from .embedded import EmbeddedServer
from .errors import (
    ConfigError,
    ConfirmationRequired,
    ConnectionFailed,
    ExtensionPrivilegeError,
    ExtensionUnavailable,
    LockTimeout,
    MigrationDriftError,
    MigrationFailed,
    MigrationFileError,
    MigrationSQLError,
    MissingMigrationError,
    PgvkitError,
    RollbackError,
)
from .migrations import Migration, read_migrations
from .migrator import Migrator, Plan, StatusReport
from .vectors import BadVector, as_vector, as_vectors, read_vector_file

__all__ = [
    "resolve",
    "connect",
    "mask_url",
    "server_info",
    "sqlalchemy_url",
    "Target",
    "EmbeddedServer",
    "read_migrations",
    "Migration",
    "Migrator",
    "StatusReport",
    "Plan",
    "as_vector",
    "as_vectors",
    "read_vector_file",
    "backup",
    "restore",
    "Check",
    "Report",
    "ChecksFailed",
    "explain",
    "Diagnosis",
    "Finding",
    "PgvkitError",
    "ConfigError",
    "ConnectionFailed",
    "MigrationFileError",
    "MigrationSQLError",
    "MigrationFailed",
    "MigrationDriftError",
    "MissingMigrationError",
    "LockTimeout",
    "ExtensionUnavailable",
    "ExtensionPrivilegeError",
    "RollbackError",
    "ConfirmationRequired",
    "BadVector",
]
