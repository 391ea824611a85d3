-- The durable job queue (crates/jobs).
--
-- A job belongs to a tenant: tenant_id leads its key and every index, and the
-- same forced row-level security as every tenant table lets a request enqueue
-- only for its own tenant (inside its own transaction, so a job exists iff
-- its cause committed) and lets a job complete itself inside the tenant
-- transaction that did its work.
--
-- Claiming is the one thing that must see every tenant's queue. It runs as
-- the role tenantry_worker, which the policy below lets read and update the
-- rows of this table (and only this table's kind of rows: queue bookkeeping,
-- never tenant content). Like tenantry_app it owns nothing and cannot log in.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_worker') THEN
        CREATE ROLE tenantry_worker NOLOGIN NOBYPASSRLS NOSUPERUSER NOINHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'tenantry_worker', 'MEMBER') THEN
        EXECUTE format('GRANT tenantry_worker TO %I', current_user);
    END IF;
END
$$;

CREATE TABLE jobs (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    -- A label for operators (depth by queue); every worker serves every queue.
    queue           text NOT NULL DEFAULT 'default',
    kind            text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}',
    -- Where a long job got to (announcement fan-out stores its keyset here),
    -- written in the same transaction as the work it records.
    progress        jsonb,
    -- Higher runs first within a tenant.
    priority        smallint NOT NULL DEFAULT 0,
    -- ready: waiting for run_at; running: leased until run_at (a lease that
    -- ran out makes the job claimable again); done; dead (attempts used up,
    -- or discarded by an admin).
    state           text NOT NULL DEFAULT 'ready'
                    CHECK (state IN ('ready', 'running', 'done', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    run_at          timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    idempotency_key text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- Claiming walks this index: a skip scan over tenant_id finds the tenants
-- with claimable jobs (one probe per tenant, never a scan of a big tenant's
-- backlog), then each tenant's first few jobs by priority and due time.
CREATE INDEX jobs_claimable ON jobs (tenant_id, priority DESC, run_at, id)
    WHERE state IN ('ready', 'running');
-- An idempotency key names one job per tenant for as long as the job is kept.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Dead letters, for the admin view and retry/discard.
CREATE INDEX jobs_dead ON jobs (tenant_id, finished_at DESC) WHERE state = 'dead';

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs
    USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
    WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]));
CREATE POLICY queue_worker ON jobs TO tenantry_worker USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON jobs TO tenantry_app;
GRANT SELECT, UPDATE, DELETE ON jobs TO tenantry_worker;
GRANT EXECUTE ON FUNCTION tenantry_allowed_tenants() TO tenantry_worker;
-- The admin view names tenants.
GRANT SELECT ON tenants TO tenantry_worker;

-- A queue table churns: every job is inserted, updated twice and pruned.
-- Vacuum it far more eagerly than the default 20 % of the table, so dead
-- index entries do not pile up in front of the claimable jobs.
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
