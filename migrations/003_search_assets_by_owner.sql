-- 003_search_assets_by_owner: a search for one owner takes the way that suits the owner's size.
-- Left to the planner, search_assets(q, 10, owner) went through the owner_id index and sorted
-- every one of the owner's vectors: measured on 198,000 real embeddings (HNSW), an owner of
-- 40 % of the rows took p95 763 ms (~10 us a row, seconds at a million rows), although the
-- vector index, scanning on until k of the owner's rows pass (iterative scan), answers it in
-- milliseconds. For an owner with few rows the reverse holds: all their rows, sorted, are exact
-- and quick, where the index would walk far for each of them. So the function counts the owner's
-- rows, stopping at pgvkit.exact_owner_rows + 1 (an index-only count; 10,000 unless a migration
-- binds another value): up to that many, they are read whole and sorted; above, the vector index
-- is walked with the owner's filter (the owner_id index kept out of it by `owner_id || ''`).
-- Same signature, same results for unfiltered searches; the settings bound to the function stay.

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
DECLARE
    few integer := coalesce(nullif(current_setting('pgvkit.exact_owner_rows', true), '')::integer, 10000);
BEGIN
    -- searches through a vector index (vector_cosine_ops)
    IF owner IS NULL THEN
        RETURN QUERY WITH nearest AS MATERIALIZED (SELECT e."id", e."asset_id", e."owner_id", e.embedding <=> query AS distance FROM "ip_asset_embeddings" AS e ORDER BY e.embedding <=> query LIMIT k) SELECT n.id, n.asset_id, n.owner_id, n.distance, 1 - n.distance FROM nearest AS n ORDER BY n.distance;
    ELSIF (SELECT count(*) FROM (SELECT FROM "ip_asset_embeddings" AS e WHERE e.owner_id = owner LIMIT few + 1) AS o) <= few THEN
        -- an owner with few rows: all of them, sorted (exact)
        RETURN QUERY WITH nearest AS MATERIALIZED (SELECT e."id", e."asset_id", e."owner_id", e.embedding <=> query AS distance FROM "ip_asset_embeddings" AS e WHERE e.owner_id = owner ORDER BY (e.embedding <=> query) + 0 LIMIT k) SELECT n.id, n.asset_id, n.owner_id, n.distance, 1 - n.distance FROM nearest AS n ORDER BY n.distance;
    ELSE
        -- an owner with many: the vector index, until k of theirs pass
        RETURN QUERY WITH nearest AS MATERIALIZED (SELECT e."id", e."asset_id", e."owner_id", e.embedding <=> query AS distance FROM "ip_asset_embeddings" AS e WHERE e.owner_id || '' = owner ORDER BY e.embedding <=> query LIMIT k) SELECT n.id, n.asset_id, n.owner_id, n.distance, 1 - n.distance FROM nearest AS n ORDER BY n.distance;
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
