-- Row-level security on the per-user directory of memberships (V20).
--
-- `user_communities` says who belongs where across every tenant, so it is
-- read only for the user a transaction acts for: the transaction-local
-- setting `tenantry.user_id`, set by the same prelude as the tenant set
-- (tenantry_db::pool). With no user set the directory reads as empty, as a
-- tenant table does without a tenant context (fail closed). Forced, so the
-- owner is filtered too unless it bypasses RLS.

-- The user of the current transaction, or NULL (sees nothing). Called as
-- `(SELECT tenantry_current_user_id())` so it is an init plan, evaluated
-- once per query, not once per row.
CREATE FUNCTION tenantry_current_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('tenantry.user_id', true), '')::uuid $$;

ALTER TABLE user_communities ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_communities FORCE ROW LEVEL SECURITY;

-- The app role only reads (V20 grants SELECT only): a user's own rows.
CREATE POLICY own_directory ON user_communities FOR SELECT TO tenantry_app
    USING (user_id = (SELECT tenantry_current_user_id()));

-- The trigger that keeps the directory in step with memberships is SECURITY
-- DEFINER: it writes as the schema owner (the role running this migration),
-- inside the transaction that changed the membership. That transaction's
-- tenant set names the membership's tenant (the memberships policy checks
-- it), so the owner may write exactly the directory rows of the tenants in
-- context. A superuser owner bypasses RLS altogether; this policy is what a
-- non-superuser owner needs. Foreign-key cascades (a tenant deleted) run
-- without forced RLS and need no policy.
CREATE POLICY directory_sync ON user_communities TO CURRENT_USER
    USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
    WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]));
