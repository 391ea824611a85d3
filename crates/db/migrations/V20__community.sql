-- Communities at scale: events, journeys with monthly-partitioned activities,
-- a per-user directory of memberships (for /v1/me/communities and the
-- cross-community feed), shared content and full-text search.
--
-- Every tenant table below leads its primary key and indexes with
-- tenant_id, has row-level security enabled and forced with the policy form
-- of V1, and is granted to tenantry_app as V1 does.

-- Full-text search indexes combine tenant_id (a btree-able scalar) with the
-- tsvector in one GIN index, which needs btree_gin. Where the extension
-- cannot be created (no privilege, not installed) the migration still
-- applies and falls back to a GIN index on the tsvector alone (search then
-- filters by tenant after the index), and says so.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS btree_gin;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'btree_gin unavailable (%): search indexes fall back to GIN on the tsvector alone', SQLERRM;
END
$$;

-- Row-level security lets only LEAKPROOF operators of a query become index
-- conditions under the policy (a non-leakproof one must not see rows the
-- policy has not admitted yet). The text match `tsvector @@ tsquery`
-- (ts_match_vq) is not marked leakproof, so under RLS the GIN index would
-- answer only the tenant equality and every row of the tenant would be
-- matched one by one. ts_match_vq returns a boolean and raises no error
-- that depends on the row it reads, so it is marked leakproof here. That
-- needs a superuser; without one the migration still applies, and search
-- works, scanning the tenant's rows instead (a warning says so).
DO $$
BEGIN
    ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'cannot mark ts_match_vq LEAKPROOF (%): search under row-level security will not use the text index', SQLERRM;
END
$$;

-- Creates a search index on (tenant_id, tsv) when btree_gin exists, else on
-- tsv alone. The predicate says `tsv IS NOT NULL` (true of every row: the
-- vector of a non-null text is never null) so that only a query that matches
-- on tsv may use the index: `tsv @@ q` implies it (@@ is strict), a plain
-- list does not. Without it the planner takes the GIN index for a bare
-- `tenant_id = x` (btree_gin answers equality too) and reads every row of
-- the tenant through a bitmap, then sorts: measured on 100 tenants x 200
-- events, the events feed took 30 s that way against 2 ms on its btree.
CREATE FUNCTION pg_temp.tenantry_search_index(name text, tbl text, pred text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gin') THEN
        EXECUTE format('CREATE INDEX %I ON %I USING gin (tenant_id, tsv) WHERE %s AND tsv IS NOT NULL',
                       name, tbl, pred);
    ELSE
        EXECUTE format('CREATE INDEX %I ON %I USING gin (tsv) WHERE %s AND tsv IS NOT NULL',
                       name, tbl, pred);
    END IF;
END
$$;

-- Posts: where a shared post came from (a snapshot of the origin's content
-- lives in the target tenant, so every list and the feed show it without a
-- cross-tenant join), and the search vector.
ALTER TABLE posts
    ADD COLUMN origin_tenant_id uuid,
    ADD COLUMN origin_id        uuid,
    ADD COLUMN shared_by        uuid REFERENCES users (id),
    ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED;
-- A share is idempotent per (target tenant, original content).
-- (A deleted copy does not count: sharing again makes a new one.)
CREATE UNIQUE INDEX posts_tenant_origin ON posts (tenant_id, origin_tenant_id, origin_id)
    WHERE origin_id IS NOT NULL AND deleted_at IS NULL;
SELECT pg_temp.tenantry_search_index('posts_tenant_search', 'posts', 'deleted_at IS NULL');

CREATE TABLE events (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               uuid NOT NULL,
    created_by       uuid NOT NULL REFERENCES users (id),
    title            text NOT NULL,
    description      text,
    start_date       timestamptz NOT NULL,
    end_date         timestamptz,
    location_name    text,
    cancelled_at     timestamptz,
    origin_tenant_id uuid,
    origin_id        uuid,
    shared_by        uuid REFERENCES users (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    tsv tsvector GENERATED ALWAYS AS (
        to_tsvector('english', title || ' ' || coalesce(description, '') || ' '
                               || coalesce(location_name, ''))
    ) STORED,
    PRIMARY KEY (tenant_id, id),
    CHECK (end_date IS NULL OR end_date >= start_date)
);
-- Upcoming events: walked from `start_date >= now()` ascending, stopping at
-- LIMIT. The predicate cannot hold now() (not immutable), so the partial
-- index keeps what never comes back: cancelled events.
CREATE INDEX events_tenant_upcoming ON events (tenant_id, start_date, id)
    WHERE cancelled_at IS NULL;
CREATE UNIQUE INDEX events_tenant_origin ON events (tenant_id, origin_tenant_id, origin_id)
    WHERE origin_id IS NOT NULL AND cancelled_at IS NULL;
SELECT pg_temp.tenantry_search_index('events_tenant_search', 'events', 'cancelled_at IS NULL');

CREATE TABLE journeys (
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                uuid NOT NULL,
    owner_id          uuid NOT NULL REFERENCES users (id),
    title             text NOT NULL,
    description       text,
    status            text NOT NULL DEFAULT 'planned'
                      CHECK (status IN ('planned', 'active', 'completed', 'cancelled')),
    is_public         boolean NOT NULL DEFAULT false,
    start_date        date,
    end_date          date,
    locations         jsonb NOT NULL DEFAULT '[]',
    -- The span of the journey's activities, kept by the statement that adds
    -- one: a list of activities without from/to reads only the partitions of
    -- this span (run-time pruning), never every month.
    first_activity_at timestamptz,
    last_activity_at  timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (end_date IS NULL OR start_date IS NULL OR end_date >= start_date)
);
CREATE INDEX journeys_tenant_owner ON journeys (tenant_id, owner_id, created_at DESC, id DESC);

-- Range-partitioned by month on start_datetime. Monthly partitions
-- (`journey_activities_pYYYYMM`) are created ahead by the server's partition
-- maintenance (tenantry_db::partitions); the default partition catches a row
-- outside them, so an insert never fails, and maintenance moves it out and
-- reports it. The primary key must hold the partition column.
CREATE TABLE journey_activities (
    tenant_id      uuid NOT NULL,
    journey_id     uuid NOT NULL,
    id             uuid NOT NULL,
    title          text NOT NULL,
    notes          text,
    location       jsonb,
    start_datetime timestamptz NOT NULL,
    end_datetime   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id, start_datetime),
    FOREIGN KEY (tenant_id, journey_id) REFERENCES journeys (tenant_id, id) ON DELETE CASCADE,
    CHECK (end_datetime IS NULL OR end_datetime >= start_datetime)
) PARTITION BY RANGE (start_datetime);
CREATE TABLE journey_activities_default PARTITION OF journey_activities DEFAULT;
CREATE INDEX journey_activities_by_journey
    ON journey_activities (tenant_id, journey_id, start_datetime, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'journeys', 'journey_activities'] LOOP
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

-- A user's communities, keyed by user: the directory that
-- /v1/me/communities and the feed read without touching any tenant's
-- memberships (memberships is keyed by tenant, so "every tenant of this
-- user" would otherwise scan every tenant's members). Global like `users`
-- (holds no content, only who belongs where), read only by the user's own
-- id from a verified token. Kept exactly in step with memberships by a
-- trigger in the same transaction; the app role may only read it.
CREATE TABLE user_communities (
    user_id         uuid NOT NULL REFERENCES users (id),
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    role            text NOT NULL,
    display_in_feed boolean NOT NULL,
    joined_at       timestamptz NOT NULL,
    PRIMARY KEY (user_id, tenant_id)
);

-- SECURITY DEFINER: the trigger writes as the schema owner, so the app role
-- needs (and has) no write grant on the directory.
CREATE FUNCTION tenantry_sync_user_communities() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM user_communities WHERE user_id = OLD.user_id AND tenant_id = OLD.tenant_id;
        RETURN OLD;
    END IF;
    INSERT INTO user_communities (user_id, tenant_id, role, display_in_feed, joined_at)
    VALUES (NEW.user_id, NEW.tenant_id, NEW.role, NEW.display_in_feed, NEW.created_at)
    ON CONFLICT (user_id, tenant_id) DO UPDATE
        SET role = EXCLUDED.role, display_in_feed = EXCLUDED.display_in_feed;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION tenantry_sync_user_communities() FROM PUBLIC;

CREATE TRIGGER memberships_directory
    AFTER INSERT OR UPDATE OF role, display_in_feed OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION tenantry_sync_user_communities();

INSERT INTO user_communities (user_id, tenant_id, role, display_in_feed, joined_at)
SELECT user_id, tenant_id, role, display_in_feed, created_at FROM memberships;

GRANT SELECT ON user_communities TO tenantry_app;

DROP FUNCTION pg_temp.tenantry_search_index(text, text, text);
