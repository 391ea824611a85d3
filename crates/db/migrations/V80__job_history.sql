-- Every job can be looked up, finished ones for 7 days with their result,
-- and the platform has jobs of its own (issue 21).
--
-- 1. Platform jobs (database maintenance) belong to no tenant: they carry
--    the nil tenant id, and run in their own lane (tenantry_jobs::platform),
--    never claimed by the tenant-fair workers. The nil id is no tenant row,
--    so the queue's tables no longer reference `tenants`; a deleted tenant's
--    jobs and keys go with the purge, which removes the rows of every table
--    with a tenant_id column (tenantry_tenant_tables()).
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_tenant_id_fkey;
ALTER TABLE job_keys DROP CONSTRAINT IF EXISTS job_keys_tenant_id_fkey;
-- Platform jobs are enqueued by the platform (as the worker role).
GRANT INSERT ON jobs TO tenantry_worker;

-- 2. A job is looked up by its id alone (GET /v1/admin/jobs/{id}, retry,
--    discard, cancel): the primary key leads with tenant_id.
CREATE INDEX jobs_id ON jobs (id);

-- 3. A finished job leaves `jobs` (which holds only what is waiting, running
--    or dead, see V45) for `job_history`, in the statement that completes it.
--    Insert-only; pruned after 7 days by the maintenance worker
--    (`finished_at` index).
CREATE TABLE job_history (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    queue       text NOT NULL,
    kind        text NOT NULL,
    attempts    integer NOT NULL,
    progress    jsonb,
    result      jsonb,
    last_error  text,
    created_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX job_history_id ON job_history (id);
CREATE INDEX job_history_finished ON job_history (finished_at);

SELECT tenantry_isolate('job_history', true);
CREATE POLICY queue_worker ON job_history TO tenantry_worker USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, DELETE ON job_history TO tenantry_worker;
