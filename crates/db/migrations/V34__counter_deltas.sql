-- Coalesced post counters. A like, unlike, comment or new post records a
-- delta row in its own transaction (durable with the change, and no lock on
-- the hot post row); the counter worker (crates/jobs counters) deletes a
-- batch of deltas and applies them as one UPDATE per post, in one statement,
-- and keeps the daily statistics in the same statement. A single post read
-- adds the pending deltas, so it is exact; lists show the counters as of the
-- last apply (about a second behind under load).
CREATE TABLE post_counter_deltas (
    tenant_id  uuid NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    post_id    uuid NOT NULL,
    -- Who acted: counted as an active user of the day.
    user_id    uuid NOT NULL,
    likes      integer NOT NULL DEFAULT 0,
    comments   integer NOT NULL DEFAULT 0,
    posts      integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- A post's pending deltas, for exact single-post reads.
CREATE INDEX post_counter_deltas_by_post ON post_counter_deltas (tenant_id, post_id);

ALTER TABLE post_counter_deltas ENABLE ROW LEVEL SECURITY;
ALTER TABLE post_counter_deltas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON post_counter_deltas
    USING (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]))
    WITH CHECK (tenant_id = ANY ((SELECT tenantry_allowed_tenants())::uuid[]));
-- The counter worker finds which tenants have deltas (a skip scan of the
-- primary key) as tenantry_worker; it applies them in those tenants' context.
CREATE POLICY queue_worker ON post_counter_deltas FOR SELECT TO tenantry_worker USING (true);
GRANT SELECT, INSERT, DELETE ON post_counter_deltas TO tenantry_app;
GRANT SELECT ON post_counter_deltas TO tenantry_worker;
