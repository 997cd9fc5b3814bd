"""What the seed's schema is meant to be (migrations/001_init_vector_store.sql): the names the
checks look for, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

__all__ = ["TABLE", "VIEW", "TRIGGER", "APP_ROLE", "EXPECTED_COLUMNS", "EXPECTED_INDEXES", "Located", "locate",
           "require_visible"]

TABLE = "ip_asset_embeddings"
VIEW = "similar_assets"
TRIGGER = "update_ip_asset_embeddings_updated_at"
APP_ROLE = "jarvis"

EXPECTED_COLUMNS = {
    "id": "bigint",
    "asset_id": "character varying(255)",
    "owner_id": "character varying(255)",
    "embedding": "vector(768)",
    "metadata": "jsonb",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
}
# name -> (access method(s), column, operator class or None); the vector index may be IVFFlat
# (the seed) or HNSW (what pgvkit tune may recommend)
EXPECTED_INDEXES = {
    "idx_asset_id": ("btree", "asset_id", None),
    "idx_owner_id": ("btree", "owner_id", None),
    "idx_embedding_cosine": ("ivfflat|hnsw", "embedding", "vector_cosine_ops"),
}


@dataclass(frozen=True)
class Located:
    """Where a table of that name is: the schema the session's search_path resolves it to (None
    when it resolves to none), and every other schema that holds a table of the same name."""

    table: str
    schema: str | None
    others: list[str] = field(default_factory=list)
    search_path: str = ""
    role: str = ""

    @property
    def qualified(self) -> str:
        """schema.table as a report names it (the bare name when it is nowhere)."""
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def elsewhere(self) -> str | None:
        """One line for a table the session cannot see, with the fix (None: it can, or it is nowhere)."""
        if self.schema is not None or not self.others:
            return None
        where = ", ".join(self.others)
        path = ", ".join([p.strip() for p in self.search_path.split(",") if p.strip()] + [self.others[0]])
        return (f"{self.table} is in schema {where}, which is not on {self.role}'s search_path ({self.search_path}): "
                f"ALTER ROLE {self.role} SET search_path = {path}; (or for pgvkit alone: PGOPTIONS='-c "
                f"search_path={path.replace(' ', '')}')")

    def shadowed(self) -> str | None:
        """One line when another table of the same name exists beside the one used (None: none)."""
        if self.schema is None or not self.others:
            return None
        return (f"another table named {self.table} is in schema {', '.join(self.others)}: pgvkit and every "
                f"unqualified query use {self.qualified}, first on {self.role}'s search_path ({self.search_path})")


def locate(conn, table: str = TABLE) -> Located:
    """Find the table by name in every schema, and the one the search_path resolves it to."""
    used = conn.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE c.oid = to_regclass(%s)", [sql.Identifier(table).as_string(conn)]).fetchone()
    others = [r[0] for r in conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s"
        " AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname <> ALL (%s) ORDER BY n.nspname",
        [table, [used[0]] if used else []])]
    path, role = conn.execute("SELECT current_setting('search_path'), current_user").fetchone()
    return Located(table, used[0] if used else None, others, path, sql.Identifier(role).as_string(conn))


def require_visible(conn, table: str = TABLE) -> Located:
    """The table as the session sees it; one line with the fix when it sits in a schema off the
    search_path ("run pgvkit migrate" would loop: migrate says up to date)."""
    from ..errors import PgvkitError

    found = locate(conn, table)
    if found.schema is None:
        raise PgvkitError(found.elsewhere() or f"table {table} does not exist here; run pgvkit migrate first")
    return found
