"""pgvkit: migrate, verify and operate a PostgreSQL + pgvector vector store from notebooks or a CLI.

The workflow, one notebook cell per step::

    target = pgvkit.resolve()                 # --database-url, $DATABASE_URL or the embedded server
    migrator = pgvkit.Migrator(target.url)
    migrator.status()                         # what is applied, pending, drifted
    migrator.plan()                           # the SQL that would run
    migrator.migrate()                        # apply, each file in its own transaction
"""

from importlib import import_module

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

# The rest is imported when first used (PEP 562): `pgvkit migrate` should not pay for numpy, nor a
# notebook's first cell for the migrator; `from pgvkit import Migrator` works as ever.
_LAZY = {
    "backup": "server.backups", "restore": "server.backups",
    "Check": "checks", "ChecksFailed": "checks", "Report": "checks",
    "Diagnosis": "health.doctor", "Finding": "health.doctor",
    "explain": "server.explain",
    "Target": "server.db", "connect": "server.db", "mask_url": "server.db", "resolve": "server.db",
    "server_info": "server.db", "sqlalchemy_url": "server.db",
    "EmbeddedServer": "server.embedded",
    "Migration": "migrator.files", "read_migrations": "migrator.files",
    "Migrator": "migrator", "Plan": "migrator", "StatusReport": "migrator",
    "BadVector": "vectors", "as_vector": "vectors", "as_vectors": "vectors", "read_vector_file": "vectors",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pgvkit' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
