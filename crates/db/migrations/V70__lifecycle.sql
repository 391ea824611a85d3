-- Tenant lifecycle (issue 18): exports, imports, backups, restores.
--
-- A tenant being imported exists (its slug is taken, its id reserved) but
-- serves nothing until its archive is verified and loaded: `importing`.
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'suspended', 'deleted', 'importing'));

-- Every export of a tenant, made on request or on its tier's schedule. The
-- archive lives in the export directory; this row is its registry entry.
--
-- The tenant is named `of_tenant`, not `tenant_id`, on purpose: a table with
-- `tenant_id` is a tenant table (tenantry_tenant_tables()), exported with the
-- tenant, replaced by a restore and purged with it. An export is none of
-- those: a restore must not bring back an older list of backups, and the
-- backups of a deleted tenant are what undoes the deletion. Only the
-- platform admin reads it.
CREATE TABLE tenant_exports (
    id          uuid PRIMARY KEY,
    of_tenant   uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('manual', 'scheduled')),
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ready', 'failed')),
    job_id      uuid,
    file        text,
    bytes       bigint,
    manifest    jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
-- A tenant's exports newest first (the backups list, pruning, the schedule).
CREATE INDEX tenant_exports_by_tenant ON tenant_exports (of_tenant, created_at DESC, id DESC);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_exports TO tenantry_app;

-- Tenant tables whose rows are the deployment's machinery rather than the
-- tenant's data, and so are neither exported nor replaced by a restore:
-- the job queue holds work leased to this deployment's workers (among it
-- the running export itself); importing it would run that work twice.
-- Everything else tenantry_tenant_tables() names is exported.
CREATE TABLE tenantry_lifecycle_skip (
    tbl    regclass PRIMARY KEY,
    reason text NOT NULL
);
INSERT INTO tenantry_lifecycle_skip VALUES
    ('jobs', 'queued and running work of this deployment (leases, the export job itself)');
GRANT SELECT ON tenantry_lifecycle_skip TO tenantry_app;
