-- Who did what: written in the same transaction as the change it records.
-- Range-partitioned by month on created_at (partitions audit_log_pYYYYMM made
-- by tenantry_db::partitions::maintain; the default partition catches the
-- rest). Newest first is a backwards walk of the primary key.
CREATE TABLE audit_log (
    tenant_id  uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    id         uuid NOT NULL,
    -- NULL for the platform admin (admin token).
    actor_id   uuid,
    action     text NOT NULL,
    target     text,
    details    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, created_at, id)
) PARTITION BY RANGE (created_at);
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
    WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]));
-- Append-only for the application: no UPDATE; DELETE only for the purge of
-- a deleted tenant.
GRANT SELECT, INSERT, DELETE ON audit_log TO tenantry_app;
