-- What a deployment did for a tenant is not the tenant's data: an export
-- leaves it out and a restore or import leaves it alone, as it does `jobs`.
-- job_history and job_keys (V80, V30) record this deployment's jobs (the
-- export job itself among them); usage_daily (V81) is what this deployment
-- metered for billing.
INSERT INTO tenantry_lifecycle_skip VALUES
    ('job_history', 'finished jobs of this deployment (the export job itself among them)'),
    ('job_keys', 'idempotency keys of this deployment''s jobs'),
    ('usage_daily', 'what this deployment metered for billing');
