-- Online moves of a tenant from one database (cell) to another (issue 19),
-- see crates/db/src/moving.rs.
--
-- The changes made while a move copies are caught by a change log that
-- Tenantry writes itself, not by logical replication: a publication with a
-- row filter needs `wal_level = logical`, which takes a restart of the
-- server to turn on (and costs WAL volume for every tenant), where a change
-- log works on any PostgreSQL as it is deployed. The capture triggers exist
-- only while a move of the tenant runs (created per move, with a `WHEN`
-- clause on the tenant's id, evaluated without calling any function), so a
-- tenant that is not moving pays nothing.
--
-- Neither table has a `tenant_id` column on purpose (like tenant_exports,
-- V70): a table with one is a tenant table, exported, moved and purged with
-- the tenant. These are the move's own bookkeeping, in the source database.

-- One row per move, in the source database: where it is, so a move that
-- stopped (a crash, kill -9, a dropped future) is resumed or rolled back.
-- phase: copying (snapshot going into the target, all or nothing) →
-- catching_up (the snapshot is in the target; the log is being applied) →
-- flipping (writes fenced and caught up; the caller switches the directory)
-- → flipped (the target serves; the old copy is to be purged) → done.
-- aborted: rolled back, the source serves as before.
CREATE TABLE tenant_moves (
    id              uuid PRIMARY KEY,
    of_tenant       uuid NOT NULL,
    -- The target database as it names itself (`database@host:port`), so a
    -- resumed move cannot continue into another database.
    target          text NOT NULL,
    phase           text NOT NULL DEFAULT 'copying'
                    CHECK (phase IN ('copying', 'catching_up', 'flipping', 'flipped', 'done', 'aborted')),
    rows_copied     bigint NOT NULL DEFAULT 0,
    changes_applied bigint NOT NULL DEFAULT 0,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
-- At most one unfinished move per tenant.
CREATE UNIQUE INDEX tenant_moves_active ON tenant_moves (of_tenant)
    WHERE phase NOT IN ('done', 'aborted');

-- The change log: (table, primary key) of every row of a moving tenant
-- inserted, updated or deleted since the move began. The catch-up re-reads
-- each logged row by key from the source and writes what it finds (or
-- deletes it from the target when it is gone), so the log needs no values
-- and the order of changes to one row does not matter.
CREATE TABLE tenant_changes (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    of_tenant uuid NOT NULL,
    tbl       text NOT NULL,
    key       jsonb NOT NULL
);
CREATE INDEX tenant_changes_by_tenant ON tenant_changes (of_tenant, seq);

-- The capture trigger: TG_ARGV = (table as SQL names it, tenant id, key
-- column...). Runs as the schema owner (SECURITY DEFINER): the app role
-- writes tenant rows but has no access to the log. An update records the old
-- key too when the key changed.
CREATE FUNCTION tenantry_move_capture() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    cols text[] := TG_ARGV[2:];
    new_key jsonb;
    old_key jsonb;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        SELECT coalesce(jsonb_object_agg(c, to_jsonb(NEW) -> c), '{}') INTO new_key FROM unnest(cols) c;
        INSERT INTO tenant_changes (of_tenant, tbl, key) VALUES (TG_ARGV[1]::uuid, TG_ARGV[0], new_key);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        SELECT coalesce(jsonb_object_agg(c, to_jsonb(OLD) -> c), '{}') INTO old_key FROM unnest(cols) c;
        IF new_key IS DISTINCT FROM old_key THEN
            INSERT INTO tenant_changes (of_tenant, tbl, key) VALUES (TG_ARGV[1]::uuid, TG_ARGV[0], old_key);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION tenantry_move_capture() FROM PUBLIC;

-- The fence in the database: from the final catch-up on, a write of the
-- moving tenant to the source fails (serialization failure: retried, never
-- acknowledged) instead of landing in the copy about to be purged. Creating
-- it waits for the writes in flight on each table, which the catch-up then
-- sees. The purge passes by setting tenantry.move_purge for its transaction.
CREATE FUNCTION tenantry_move_frozen() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tenantry.move_purge', true) = 'on' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'tenant % is moving to another database; try again', TG_ARGV[0]
        USING ERRCODE = 'serialization_failure';
END
$$;
