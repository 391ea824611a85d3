-- The job queue without the churn that made a big backlog slow (issue 6).
--
-- Before: a finished job stayed in `jobs` as 'done', and the claim index
-- held running jobs as well as ready ones. Every job was updated twice and
-- neither update could be HOT (state and run_at are indexed), so each claim
-- left a dead index entry at the front of its tenant's range and each
-- completion one at the back, next to the live entries the claim's probes
-- land on. Under concurrent workers those entries were not marked dead by
-- the scans (the pages kept changing), so with a 200,000-job backlog every
-- claim visited ~5,000 dead heap tuples per tenant, twice: 200k → 2–4k
-- jobs/s.
--
-- Now:
-- 1. `jobs_claimable` holds only ready jobs. A claim's new (running)
--    version is not added to it, so nothing is inserted among the entries
--    claims read, and the dead ones at a tenant's front stay put until a
--    scan marks them dead (after which they cost nothing) or vacuum
--    removes them.
-- 2. Running jobs are found by their lease end in `jobs_leases` (a small
--    index: at most the jobs in flight). A lease that ran out is put back
--    to 'ready' by the claim's rescue step and then claimed fairly like any
--    other job (it keeps its attempt count, so the fence still holds).
-- 3. A completed job is deleted: `jobs` holds only waiting, running and
--    dead jobs. Nothing read the 'done' rows (the admin view shows ready,
--    running, retrying and dead) and nothing ever pruned them.
-- 4. Idempotency keys live in `job_keys`, so a key still names its job
--    after the job finished and left `jobs` (as before, when the 'done'
--    row kept it). Discarding a dead letter removes its key with it.

CREATE TABLE job_keys (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key        text NOT NULL,
    job_id     uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
INSERT INTO job_keys (tenant_id, key, job_id, created_at)
SELECT tenant_id, idempotency_key, id, created_at FROM jobs WHERE idempotency_key IS NOT NULL;

ALTER TABLE job_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_keys
    USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
    WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]));
CREATE POLICY queue_worker ON job_keys TO tenantry_worker USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, DELETE ON job_keys TO tenantry_app;
GRANT SELECT, DELETE ON job_keys TO tenantry_worker;

DELETE FROM jobs WHERE state = 'done';
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN ('ready', 'running', 'dead'));

-- The key's uniqueness is job_keys' primary key now; the column stays so a
-- discarded dead letter can take its key with it.
DROP INDEX jobs_idempotency;

DROP INDEX jobs_claimable;
CREATE INDEX jobs_claimable ON jobs (tenant_id, priority DESC, run_at, id) WHERE state = 'ready';
CREATE INDEX jobs_leases ON jobs (run_at) WHERE state = 'running';
