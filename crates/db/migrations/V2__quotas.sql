-- Usage counted for quotas, kept in the same transaction as the write they
-- guard: a conditional UPDATE of the tenant's row both checks and counts, and
-- its row lock serialises racing writers, so the last free slot is taken
-- exactly once.
ALTER TABLE tenants
    ADD COLUMN post_count    bigint NOT NULL DEFAULT 0,
    ADD COLUMN storage_bytes bigint NOT NULL DEFAULT 0;

UPDATE tenants t SET
    post_count = (SELECT count(*) FROM posts p WHERE p.tenant_id = t.id AND p.deleted_at IS NULL),
    storage_bytes = (SELECT coalesce(sum(octet_length(p.content)), 0) FROM posts p
                     WHERE p.tenant_id = t.id AND p.deleted_at IS NULL);
