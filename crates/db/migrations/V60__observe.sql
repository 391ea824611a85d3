-- Observe every tenant (crates/api/src/observe): per-tenant performance
-- history, storage figures, thresholds and alerts.
--
-- Every table here has a tenant_id and is isolated like any tenant table, so
-- the purge removes a deleted tenant's rows and a request of one tenant can
-- never read another's. The operator's views read across tenants as the role
-- tenantry_observer, which the policies below let read (and the flush and
-- rollup write) these tables only: performance figures, never tenant
-- content. Like tenantry_app it owns nothing and cannot log in.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_observer') THEN
        CREATE ROLE tenantry_observer NOLOGIN NOBYPASSRLS NOSUPERUSER NOINHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'tenantry_observer', 'MEMBER') THEN
        EXECUTE format('GRANT tenantry_observer TO %I', current_user);
    END IF;
END
$$;

GRANT EXECUTE ON FUNCTION tenantry_allowed_tenants() TO tenantry_observer;
-- The views name tenants and show their tier and thresholds.
GRANT SELECT ON tenants TO tenantry_observer;

-- Per-tenant overrides of the tier's thresholds (PATCH /v1/admin/tenants/{id}
-- {"thresholds": {...}}): p99_ms, error_rate, throttle_rate, db_wait_p99_ms,
-- for_minutes.
ALTER TABLE tenants ADD COLUMN thresholds jsonb NOT NULL DEFAULT '{}';

-- One row per tenant and minute with traffic (a minute without requests
-- writes nothing), flushed by each node in one statement per interval; rows
-- of several nodes (or several flushes) of a minute are merged on conflict.
-- Histograms are bucket counts (bounds in crates/api/src/observe/meter.rs),
-- so percentiles over any window are exact to a bucket and merge by adding.
--
-- Partitioned by day on `minute` (minutes since the Unix epoch, an integer
-- so that the monthly partition maintenance of time-keyed tables leaves it
-- alone): the observe worker makes tomorrow's partition ahead and drops
-- partitions older than two days. Retention is a DROP, never a DELETE.
CREATE TABLE tenant_perf_minute (
    tenant_id      uuid    NOT NULL,
    minute         integer NOT NULL,
    requests       bigint  NOT NULL,
    errors         bigint  NOT NULL,
    throttled      bigint  NOT NULL,
    shed           bigint  NOT NULL,
    latency_hist   bigint[] NOT NULL,
    db_time_us     bigint  NOT NULL,
    db_wait_hist   bigint[] NOT NULL,
    cache_hits     bigint  NOT NULL,
    cache_misses   bigint  NOT NULL,
    PRIMARY KEY (tenant_id, minute)
) PARTITION BY RANGE (minute);
-- `top` ranks every tenant over a recent window: a range of minutes first.
CREATE INDEX tenant_perf_minute_recent ON tenant_perf_minute (minute, tenant_id);
SELECT tenantry_isolate('tenant_perf_minute');
CREATE POLICY observer ON tenant_perf_minute TO tenantry_observer USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_perf_minute TO tenantry_observer;

-- Hourly rollups of the minute rows, kept 90 days: monthly partitions made
-- by tenantry_db::partitions (three months kept), so retention is a DROP too.
CREATE TABLE tenant_perf_hour (
    tenant_id      uuid        NOT NULL,
    at             timestamptz NOT NULL,
    requests       bigint  NOT NULL,
    errors         bigint  NOT NULL,
    throttled      bigint  NOT NULL,
    shed           bigint  NOT NULL,
    latency_hist   bigint[] NOT NULL,
    db_time_us     bigint  NOT NULL,
    db_wait_hist   bigint[] NOT NULL,
    cache_hits     bigint  NOT NULL,
    cache_misses   bigint  NOT NULL,
    PRIMARY KEY (tenant_id, at)
) PARTITION BY RANGE (at);
CREATE TABLE tenant_perf_hour_default PARTITION OF tenant_perf_hour DEFAULT;
CREATE INDEX tenant_perf_hour_recent ON tenant_perf_hour (at, tenant_id);
INSERT INTO tenantry_partition_retention (parent, keep_months) VALUES ('tenant_perf_hour', 3);
SELECT tenantry_isolate('tenant_perf_hour');
CREATE POLICY observer ON tenant_perf_hour TO tenantry_observer USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_perf_hour TO tenantry_observer;

-- Adds two histograms bucket by bucket (a missing bucket counts 0).
CREATE FUNCTION tenantry_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;
CREATE AGGREGATE tenantry_hist_sum(bigint[]) (
    SFUNC = tenantry_hist_add, STYPE = bigint[], INITCOND = '{}'
);

-- A tenant's storage, computed by the observe worker's storage pass (rows
-- per tenant table, from the catalog, and their bytes), never per request.
CREATE TABLE tenant_storage (
    tenant_id   uuid PRIMARY KEY,
    bytes       bigint      NOT NULL,
    rows        jsonb       NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now()
);
SELECT tenantry_isolate('tenant_storage');
CREATE POLICY observer ON tenant_storage TO tenantry_observer USING (true) WITH CHECK (true);
GRANT SELECT ON tenant_storage TO tenantry_observer;

-- Alerts: opened when a measure breaks its threshold for `for_minutes`
-- consecutive minutes (or rises steadily, or makes other tenants wait),
-- resolved after as many clean ones. At most one open alert per tenant,
-- kind and metric: a second node that sees the same breach opens nothing.
CREATE TABLE tenant_alerts (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('threshold', 'trend', 'noisy_neighbour')),
    metric      text NOT NULL,
    value       double precision NOT NULL,
    threshold   double precision NOT NULL,
    opened_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    detail      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX tenant_alerts_open ON tenant_alerts (tenant_id, kind, metric)
    WHERE resolved_at IS NULL;
-- The admin list, newest first, across tenants (ids are UUIDv7: time order).
CREATE INDEX tenant_alerts_newest ON tenant_alerts (id DESC);
SELECT tenantry_isolate('tenant_alerts');
CREATE POLICY observer ON tenant_alerts TO tenantry_observer USING (true) WITH CHECK (true);
GRANT SELECT ON tenant_alerts TO tenantry_observer;
