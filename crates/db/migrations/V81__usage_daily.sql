-- Usage per tenant per UTC day, for cost attribution and billing exports
-- (GET /v1/admin/usage). Counted in memory by each server and added here in
-- batches (one statement per flush). A row's `id` in the API is a UUIDv5 of
-- the tenant and the day, computed when read, so it is the same on every
-- read and every server.
CREATE TABLE usage_daily (
    tenant_id        uuid NOT NULL,
    day              date NOT NULL,
    requests         bigint NOT NULL DEFAULT 0,
    db_time_us       bigint NOT NULL DEFAULT 0,
    rows_written     bigint NOT NULL DEFAULT 0,
    -- The tenant's storage as last seen that day (a level, not a sum).
    storage_bytes    bigint NOT NULL DEFAULT 0,
    analytics_events bigint NOT NULL DEFAULT 0,
    -- Recounted from job_history (a level, not a sum).
    jobs_run         bigint NOT NULL DEFAULT 0,
    egress_bytes     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
-- The platform-wide list walks days, then tenants.
CREATE INDEX usage_daily_day ON usage_daily (day, tenant_id);

SELECT tenantry_isolate('usage_daily');
-- Written and read across tenants by the platform, as the worker role.
CREATE POLICY platform_usage ON usage_daily TO tenantry_worker USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE ON usage_daily TO tenantry_worker;
