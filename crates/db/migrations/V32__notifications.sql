-- Announcements and the notifications they fan out to.
CREATE TABLE announcements (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id         uuid NOT NULL,
    author_id  uuid NOT NULL REFERENCES users (id),
    title      text NOT NULL,
    message    text NOT NULL,
    job_id     uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE notifications (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    id              uuid NOT NULL,
    announcement_id uuid,
    title           text NOT NULL,
    message         text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    PRIMARY KEY (tenant_id, user_id, id),
    FOREIGN KEY (tenant_id, announcement_id) REFERENCES announcements (tenant_id, id)
        ON DELETE CASCADE
);
-- Exactly once per member and announcement, however often a fan-out chunk
-- is retried: the fan-out inserts with ON CONFLICT DO NOTHING against this.
CREATE UNIQUE INDEX notifications_once ON notifications (tenant_id, user_id, announcement_id)
    WHERE announcement_id IS NOT NULL;
-- A user's list, newest first; the unread list only walks unread rows.
CREATE INDEX notifications_newest ON notifications (tenant_id, user_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread ON notifications (tenant_id, user_id, created_at DESC, id DESC)
    WHERE read_at IS NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['announcements', 'notifications'] LOOP
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
