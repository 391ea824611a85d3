-- How many partitions and buffers finding an activity to edit costs, with
-- and without its journey's activity span (PATCH /v1/journeys/{id}/
-- activities/{activity_id}). Run against a database migrated by
-- `tenantry migrate` (partitions last month .. 12 ahead):
--   psql "$DATABASE_URL" -f scripts/bench/activity-edit.sql
-- Everything runs in one transaction that is rolled back.
BEGIN;
INSERT INTO users (id) VALUES ('00000000-0000-0000-0000-0000000000e1');
INSERT INTO tenants (id, slug, name, tier, owner_user_id)
    VALUES ('e0000000-0000-0000-0000-000000000001', 'activity-edit-bench', 'Bench', 'free',
            '00000000-0000-0000-0000-0000000000e1');
-- 1,000 journeys with 100 activities each over 13 months, and the edited
-- journey: two activities in the month after next.
INSERT INTO journeys (tenant_id, id, owner_id, title, is_public)
    SELECT 'e0000000-0000-0000-0000-000000000001', gen_random_uuid(),
           '00000000-0000-0000-0000-0000000000e1', 'j' || n, true
    FROM generate_series(1, 1000) n;
INSERT INTO journey_activities (tenant_id, journey_id, id, title, start_datetime)
    SELECT j.tenant_id, j.id, gen_random_uuid(), 'a',
           date_trunc('month', now()) - interval '1 month' + (n * 3.9 || ' days')::interval
    FROM journeys j, generate_series(1, 100) n
    WHERE j.tenant_id = 'e0000000-0000-0000-0000-000000000001';
INSERT INTO journeys (tenant_id, id, owner_id, title, is_public, first_activity_at, last_activity_at)
    VALUES ('e0000000-0000-0000-0000-000000000001', 'e2000000-0000-0000-0000-000000000001',
            '00000000-0000-0000-0000-0000000000e1', 'edited', true,
            date_trunc('month', now()) + interval '2 months 1 day',
            date_trunc('month', now()) + interval '2 months 10 days');
INSERT INTO journey_activities (tenant_id, journey_id, id, title, start_datetime)
    VALUES ('e0000000-0000-0000-0000-000000000001', 'e2000000-0000-0000-0000-000000000001',
            'e3000000-0000-0000-0000-000000000001', 'first',
            date_trunc('month', now()) + interval '2 months 1 day'),
           ('e0000000-0000-0000-0000-000000000001', 'e2000000-0000-0000-0000-000000000001',
            gen_random_uuid(), 'last', date_trunc('month', now()) + interval '2 months 10 days');
ANALYZE journeys, journey_activities;
\echo '--- by id alone: every partition is probed'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF)
SELECT id FROM journey_activities
WHERE tenant_id = 'e0000000-0000-0000-0000-000000000001'
  AND journey_id = 'e2000000-0000-0000-0000-000000000001'
  AND id = 'e3000000-0000-0000-0000-000000000001'
FOR UPDATE;
\echo '--- within the journey span (what the server sends): one partition'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF)
SELECT id FROM journey_activities
WHERE tenant_id = 'e0000000-0000-0000-0000-000000000001'
  AND journey_id = 'e2000000-0000-0000-0000-000000000001'
  AND id = 'e3000000-0000-0000-0000-000000000001'
  AND start_datetime >= date_trunc('month', now()) + interval '2 months 1 day'
  AND start_datetime <= date_trunc('month', now()) + interval '2 months 10 days'
FOR UPDATE;
ROLLBACK;
