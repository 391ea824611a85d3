-- Community events created per day, kept incrementally by the statement
-- that creates the event (GET /v1/stats/daily).
ALTER TABLE tenant_daily_stats ADD COLUMN events bigint NOT NULL DEFAULT 0;
