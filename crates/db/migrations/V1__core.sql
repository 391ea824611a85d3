-- The core schema: tenants, users, members, posts, likes, comments.
--
-- Tenant tables lead every key and index with tenant_id, have row-level
-- security enabled AND forced (so even the table owner is filtered), and a
-- policy that admits only the tenants named by the transaction-local setting
-- `tenantry.tenant_ids`. With no setting, the policy sees nothing.

-- The runtime role: owns nothing, cannot bypass RLS, cannot log in. The
-- server's connections switch to it per transaction with
-- set_config('role', 'tenantry_app', true). It is a cluster-wide object, so
-- two databases migrating at once may race to create it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_app') THEN
        CREATE ROLE tenantry_app NOLOGIN NOBYPASSRLS NOSUPERUSER NOINHERIT;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'tenantry_app', 'MEMBER') THEN
        EXECUTE format('GRANT tenantry_app TO %I', current_user);
    END IF;
END
$$;

-- The allowed tenant set of the current transaction, or NULL (sees nothing).
-- Policies call it as `(SELECT tenantry_allowed_tenants())::uuid[]` (the cast makes
-- `= ANY` take an array expression rather than a subquery) so PostgreSQL
-- evaluates it once per query as an init plan, not once per row.
CREATE FUNCTION tenantry_allowed_tenants() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('tenantry.tenant_ids', true), '')::uuid[] $$;

CREATE TABLE tenants (
    id            uuid PRIMARY KEY,
    slug          text NOT NULL UNIQUE,
    name          text NOT NULL,
    domain        text UNIQUE,
    tier          text NOT NULL,
    status        text NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'suspended', 'deleted')),
    join_policy   text NOT NULL DEFAULT 'invite' CHECK (join_policy IN ('open', 'invite')),
    owner_user_id uuid NOT NULL,
    settings      jsonb NOT NULL DEFAULT '{}',
    features      jsonb NOT NULL DEFAULT '{}',
    limits        jsonb NOT NULL DEFAULT '{}',
    -- Kept incrementally in the transaction that adds or removes a member,
    -- so member counts never need a scan of memberships.
    member_count  bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id           uuid PRIMARY KEY,
    email        text,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id             uuid NOT NULL REFERENCES users (id),
    role                text NOT NULL CHECK (role IN ('owner', 'admin', 'moderator', 'member')),
    interests           jsonb NOT NULL DEFAULT '[]',
    notification_prefs  jsonb NOT NULL DEFAULT '{}',
    display_in_feed     boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
-- Keyset listing of members: (tenant_id, user_id) is the primary key.

CREATE TABLE posts (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    author_id     uuid NOT NULL REFERENCES users (id),
    content       text NOT NULL,
    like_count    integer NOT NULL DEFAULT 0,
    comment_count integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- The list query walks this index backwards from the cursor and stops at LIMIT.
CREATE INDEX posts_tenant_newest ON posts (tenant_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE post_likes (
    tenant_id  uuid NOT NULL,
    post_id    uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, post_id, user_id),
    FOREIGN KEY (tenant_id, post_id) REFERENCES posts (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE comments (
    tenant_id  uuid NOT NULL,
    id         uuid NOT NULL,
    post_id    uuid NOT NULL,
    author_id  uuid NOT NULL REFERENCES users (id),
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, post_id) REFERENCES posts (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX comments_by_post ON comments (tenant_id, post_id, created_at, id)
    WHERE deleted_at IS NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['memberships', 'posts', 'post_likes', 'comments'] LOOP
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

-- Global tables: read by tenant resolution and authentication, written by the
-- admin API and user provisioning. They hold no tenant's content.
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants TO tenantry_app;
GRANT SELECT, INSERT, UPDATE ON users TO tenantry_app;
GRANT EXECUTE ON FUNCTION tenantry_allowed_tenants() TO tenantry_app;
