-- Analytics events, group-committed by the ingest collector (crates/jobs),
-- and the daily summaries `GET /v1/stats/daily` reads.
--
-- Events are range-partitioned by the server's receipt time, so every insert
-- lands in the partition the maintenance worker made for this month (a
-- client's occurred_at can be anything; received_at cannot). Monthly
-- partitions `analytics_events_pYYYYMM` are created by
-- tenantry_db::partitions::maintain; the default partition only catches rows
-- that arrive before their month's partition exists.
CREATE TABLE analytics_events (
    tenant_id   uuid NOT NULL,
    received_at timestamptz NOT NULL,
    id          uuid NOT NULL,
    user_id     uuid NOT NULL,
    type        text NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, received_at, id)
) PARTITION BY RANGE (received_at);
CREATE TABLE analytics_events_default PARTITION OF analytics_events DEFAULT;

-- One row per tenant and day, kept incrementally by the statements that
-- cause the counts (never recomputed from the raw rows):
-- analytics_events by the day the events occurred, analytics_received by the
-- day they were received (the daily quota counts these), active_users by
-- daily_active_users below.
CREATE TABLE tenant_daily_stats (
    tenant_id          uuid NOT NULL,
    day                date NOT NULL,
    analytics_events   bigint NOT NULL DEFAULT 0,
    analytics_received bigint NOT NULL DEFAULT 0,
    active_users       bigint NOT NULL DEFAULT 0,
    posts              bigint NOT NULL DEFAULT 0,
    comments           bigint NOT NULL DEFAULT 0,
    likes              bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

-- Who was active on a day: a new row here is one more active user in
-- tenant_daily_stats, counted in the same statement.
CREATE TABLE daily_active_users (
    tenant_id uuid NOT NULL,
    day       date NOT NULL,
    user_id   uuid NOT NULL,
    PRIMARY KEY (tenant_id, day, user_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['analytics_events', 'tenant_daily_stats', 'daily_active_users'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
                 WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO tenantry_app', t);
    END LOOP;
END
$$;
