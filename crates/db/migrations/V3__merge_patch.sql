-- Merges a patch into a JSON object one level deep: each top-level key of the
-- patch replaces the stored one, a key set to null is removed, and nothing
-- else changes (jsonb_strip_nulls would also drop nulls nested in untouched
-- keys).
CREATE FUNCTION tenantry_merge_patch(doc jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT (doc || patch)
               - ARRAY(SELECT key FROM jsonb_each(patch) WHERE value = 'null'::jsonb)
    $$;
GRANT EXECUTE ON FUNCTION tenantry_merge_patch(jsonb, jsonb) TO tenantry_app;
