-- Rollback of 003_search_assets_by_owner: search_assets as 002 wrote it (a filtered search takes
-- the way the planner chooses), with the settings bound to it now.

DO $migration$
DECLARE
    bound text[] := (SELECT proconfig FROM pg_proc WHERE oid = 'search_assets(vector, integer, text)'::regprocedure);
    setting text;
BEGIN
    -- CREATE OR REPLACE resets the bound settings to its own SET clauses: bind the others back
    EXECUTE $function$
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

$function$;
    FOREACH setting IN ARRAY coalesce(bound, '{}') LOOP
        EXECUTE format('ALTER FUNCTION search_assets(vector, integer, text) SET %s = %L',
                       split_part(setting, '=', 1), substr(setting, strpos(setting, '=') + 1));
    END LOOP;
END
$migration$;
