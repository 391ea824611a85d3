-- Adaptive capacity (issue 16): every change the autoscaler makes to a
-- tenant's database concurrency (crates/api/src/scaling.rs), served at
-- GET /v1/admin/tenants/{id}/scaling.
--
-- Each node keeps its changes in memory and writes them in one statement per
-- control interval (a few rows at most: a tenant moves when its queue wait
-- says so, not per request), as tenantry_observer, the role that writes the
-- performance history and nothing else. Isolated like every tenant table, so
-- the purge takes a deleted tenant's rows and a tenant never reads another's.
-- `id` is a UUIDv7 taken when the change was made: newest first is `id DESC`
-- on the primary key, which leads with tenant_id. Rows older than 30 days
-- are deleted by the same worker (`at` index).
CREATE TABLE tenant_scaling (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL,
    at         timestamptz NOT NULL,
    from_limit integer NOT NULL,
    to_limit   integer NOT NULL,
    reason     text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX tenant_scaling_at ON tenant_scaling (at);

SELECT tenantry_isolate('tenant_scaling');
CREATE POLICY observer ON tenant_scaling TO tenantry_observer USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, DELETE ON tenant_scaling TO tenantry_observer;
