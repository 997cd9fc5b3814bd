-- Rollback of 002_search_assets: similar_assets as 001 wrote it, then the function.
-- Callers of search_assets must go back to writing their own ORDER BY embedding <=> ... first.
CREATE OR REPLACE VIEW similar_assets AS
SELECT src.asset_id  AS source_asset_id,
       src.owner_id  AS source_owner_id,
       nn.asset_id   AS similar_asset_id,
       nn.owner_id   AS similar_owner_id,
       nn.distance   AS distance,
       1 - nn.distance AS similarity
FROM ip_asset_embeddings AS src
CROSS JOIN LATERAL (
    SELECT other.asset_id, other.owner_id, other.embedding <=> src.embedding AS distance
    FROM ip_asset_embeddings AS other
    WHERE other.id <> src.id
    ORDER BY other.embedding <=> src.embedding
    LIMIT 10
) AS nn;

DROP FUNCTION IF EXISTS search_assets(vector, integer, text);
