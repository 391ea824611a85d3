-- `Idempotency-Key` on POST /v1/announcements: the key an announcement was
-- created with, so a retry answers the same announcement instead of
-- announcing twice. Kept on the announcement itself (not only on its
-- fan-out job, whose row may be pruned once done), so the key holds for as
-- long as the announcement exists. Keys are per tenant.
ALTER TABLE announcements ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX announcements_idempotency ON announcements (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
