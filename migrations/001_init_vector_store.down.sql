-- Rollback of 001_init_vector_store: the seed's list, newest object first.
-- Dropping the table deletes every embedding in it: take a backup first (pgvkit backup).
DROP VIEW IF EXISTS similar_assets;
DROP TRIGGER IF EXISTS update_ip_asset_embeddings_updated_at ON ip_asset_embeddings;
DROP FUNCTION IF EXISTS update_updated_at_column();
DROP TABLE IF EXISTS ip_asset_embeddings CASCADE;
DROP EXTENSION IF EXISTS vector;
