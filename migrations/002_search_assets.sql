-- 002_search_assets: the search query, owned by the migrations.
-- The application calls SELECT * FROM search_assets($1) (nearest 10), search_assets($1, 20) or
-- search_assets($1, 10, 'owner') instead of writing ORDER BY embedding <=> $1 itself, so a later
-- migration can change the index kind (halfvec, binary quantization) together with this query,
-- and no caller changes its SQL. The query-time settings are bound to the function: a search
-- gets them whatever its session's defaults are. This file binds the values in effect where it
-- runs (the database's defaults, so searches return what they returned before), plus pgvector
-- 0.8's iterative scans, so a search filtered by owner still returns k rows. pgvkit tune's
-- migrations change the bound values with the index they are for.

CREATE OR REPLACE FUNCTION search_assets(query vector, k integer DEFAULT 10, owner text DEFAULT NULL)
RETURNS TABLE (id bigint, asset_id varchar, owner_id varchar, distance double precision,
               similarity double precision)
LANGUAGE plpgsql STABLE
SET ivfflat.iterative_scan = relaxed_order
SET hnsw.iterative_scan = relaxed_order
AS $$
#variable_conflict use_column
BEGIN
    -- relaxed_order: a filtered search keeps scanning until k rows pass the filter, and may hand
    -- them back slightly out of order; the outer ORDER BY puts them right.
    IF owner IS NULL THEN
        RETURN QUERY
            WITH nearest AS MATERIALIZED (
                SELECT e.id, e.asset_id, e.owner_id, e.embedding <=> query AS distance
                FROM ip_asset_embeddings AS e
                ORDER BY e.embedding <=> query
                LIMIT k)
            SELECT n.id, n.asset_id, n.owner_id, n.distance, 1 - n.distance FROM nearest AS n ORDER BY n.distance;
    ELSE
        RETURN QUERY
            WITH nearest AS MATERIALIZED (
                SELECT e.id, e.asset_id, e.owner_id, e.embedding <=> query AS distance
                FROM ip_asset_embeddings AS e
                WHERE e.owner_id = owner
                ORDER BY e.embedding <=> query
                LIMIT k)
            SELECT n.id, n.asset_id, n.owner_id, n.distance, 1 - n.distance FROM nearest AS n ORDER BY n.distance;
    END IF;
END;
$$;

-- The search settings in effect now, bound to the function (touching a vector first loads
-- pgvector, so its settings exist in this session).
DO $$
DECLARE
    name text;
BEGIN
    PERFORM '[1]'::vector;
    FOREACH name IN ARRAY ARRAY['ivfflat.probes', 'hnsw.ef_search'] LOOP
        EXECUTE format('ALTER FUNCTION search_assets(vector, integer, text) SET %s = %L', name, current_setting(name));
    END LOOP;
END
$$;

-- similar_assets answers through the same search: an asset's nearest k + 1, itself left out.
CREATE OR REPLACE VIEW similar_assets AS
SELECT src.asset_id      AS source_asset_id,
       src.owner_id      AS source_owner_id,
       nn.asset_id::varchar(255) AS similar_asset_id,
       nn.owner_id::varchar(255) AS similar_owner_id,
       nn.distance       AS distance,
       nn.similarity     AS similarity
FROM ip_asset_embeddings AS src
CROSS JOIN LATERAL (
    SELECT s.asset_id, s.owner_id, s.distance, s.similarity
    FROM search_assets(src.embedding, 11) AS s
    WHERE s.id <> src.id
    ORDER BY s.distance
    LIMIT 10
) AS nn;
