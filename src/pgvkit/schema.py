"""What the seed's schema is meant to be (migrations/001_init_vector_store.sql): the names the
checks look for, in one place."""

from __future__ import annotations

__all__ = ["TABLE", "VIEW", "TRIGGER", "APP_ROLE", "EXPECTED_COLUMNS", "EXPECTED_INDEXES"]

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
