-- Tenant tables describe themselves (issue 15).
--
-- Until now every migration that added a tenant table repeated the same
-- four statements (enable and force row-level security, the tenant policy,
-- the app role's grants), and the RLS tests, the plan tests and the purge
-- each kept their own list of tenant tables. Here the rule lives in the
-- catalog once:
--
-- - `tenantry_tenant_tables()` names the tenant tables: every table of the
--   schema with a `tenant_id` column, partitioned tables by their parent,
--   except those whose row-level security is keyed by user.
-- - `tenantry_isolate(table)` is the one way to isolate a tenant table; a
--   migration that adds one ends with `SELECT tenantry_isolate('t')`.
--
-- Applied below to every existing tenant table. Each already has exactly
-- this policy and these grants, so nothing changes but the policy's oid.

-- The tenant tables, read from the catalog so a table added later is found
-- without anyone remembering to list it.
--
-- - Partitions are left out: queries through a partitioned table apply the
--   parent's policy, and the app role holds no grant on any partition, so
--   the parent is the only way in. (RLS settings and policies are not
--   inherited by partitions; a grant on one would be a way around them.)
-- - A table whose policy calls `tenantry_current_user_id()` is keyed by user,
--   not by tenant (`user_communities`, V51: the app role reads a user's rows
--   across tenants). Its row-level security is its own; the tenant policy
--   would be wrong there. pg_depend records what a policy's expressions
--   call, so the rule needs no list.
--
-- `depth` is the length of the longest chain of foreign keys from other
-- tenant tables that lead to this one (0: none does). Ordered by depth, a
-- table comes before every table it references: children first, the order
-- the purge deletes in (each chunk's cascades stay small); an import or a
-- copy goes the other way.
CREATE FUNCTION tenantry_tenant_tables() RETURNS TABLE (tbl regclass, depth integer)
    LANGUAGE sql STABLE AS $$
    WITH RECURSIVE tenant AS (
        SELECT c.oid
        FROM pg_class c
        JOIN pg_attribute a
          ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p')
          AND NOT c.relispartition
          AND NOT EXISTS (
              SELECT 1
              FROM pg_policy p
              JOIN pg_depend d
                ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
              WHERE p.polrelid = c.oid
                AND d.refclassid = 'pg_proc'::regclass
                AND d.refobjid = 'tenantry_current_user_id()'::regprocedure)
    ),
    -- Foreign keys between tenant tables (a partitioned table's keys are
    -- also cloned onto its partitions; those are not tenant tables).
    fk AS (
        SELECT DISTINCT k.conrelid AS child, k.confrelid AS parent
        FROM pg_constraint k
        WHERE k.contype = 'f'
          AND k.conrelid <> k.confrelid
          AND k.conrelid IN (SELECT oid FROM tenant)
          AND k.confrelid IN (SELECT oid FROM tenant)
    ),
    -- Walks from every table up through what it references; `path` stops a
    -- cycle of foreign keys from walking forever.
    chain (oid, depth, path) AS (
        SELECT oid, 0, ARRAY[oid] FROM tenant
        UNION ALL
        SELECT fk.parent, chain.depth + 1, chain.path || fk.parent
        FROM chain JOIN fk ON fk.child = chain.oid
        WHERE fk.parent <> ALL (chain.path)
    )
    SELECT oid::regclass, max(depth) FROM chain GROUP BY oid
$$;

-- Isolates a tenant table: row-level security enabled and forced (the owner
-- is filtered too, unless it bypasses RLS), the one tenant policy, and the
-- app role's grants. Safe to run again; other policies on the table (the
-- queue worker's) are left alone.
--
-- The policy compares tenant_id with the transaction's allowed set, called
-- as `(SELECT tenantry_allowed_tenants())` so PostgreSQL evaluates it once
-- per query as an init plan, not once per row (see V1).
--
-- The app role gets SELECT, INSERT and DELETE, which every tenant table
-- needs: requests read and write it, and the purge of a deleted tenant runs
-- as the app role in that tenant's context. UPDATE too unless the table is
-- append-only for the application (`audit_log`, whose rows record what
-- happened; queues whose rows are inserted and consumed).
--
-- A partitioned table is isolated through its parent: its partitions get no
-- grant (tenantry_db::partitions makes them without one), so there is no
-- way into them but through the parent's policy.
CREATE FUNCTION tenantry_isolate(tbl regclass, append_only boolean DEFAULT false) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = tbl AND attname = 'tenant_id' AND NOT attisdropped
    ) THEN
        RAISE EXCEPTION 'tenantry_isolate: % has no tenant_id column', tbl;
    END IF;
    IF (SELECT relispartition FROM pg_class WHERE oid = tbl) THEN
        RAISE EXCEPTION 'tenantry_isolate: % is a partition; isolate its parent', tbl;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    -- PostgreSQL has no CREATE OR REPLACE POLICY, and ALTER POLICY cannot
    -- change a policy's command; in one transaction, drop and create is the
    -- same thing.
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s
             USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
             WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))', tbl);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %s TO tenantry_app', tbl);
    IF append_only THEN
        EXECUTE format('REVOKE UPDATE ON %s FROM tenantry_app', tbl);
    ELSE
        EXECUTE format('GRANT UPDATE ON %s TO tenantry_app', tbl);
    END IF;
END
$$;
-- For migrations (the schema owner) only.
REVOKE ALL ON FUNCTION tenantry_isolate(regclass, boolean) FROM PUBLIC;

-- Every existing tenant table, each keeping whether the app role may
-- update it.
SELECT tenantry_isolate(tbl, NOT has_table_privilege('tenantry_app', tbl, 'UPDATE'))
FROM tenantry_tenant_tables();
