-- Cells: the tenant -> cell directory (API.md, "Cells").
--
-- In the control database (DATABASE_URL, the cell `main`) the `cell` column
-- says which database holds a tenant's rows. It is read with the rest of
-- the tenant's record, which the server caches, so routing a request to its
-- cell costs no extra round trip. In any other cell the `tenants` table holds
-- a copy of the registry row of each tenant placed there: the tenant tables'
-- foreign keys and the quota counters (member_count, post_count,
-- storage_bytes, updated in the same transaction as the writes they count)
-- need it. Every database has the same schema, so the column exists in
-- every cell; a copy carries the name of the cell it lives in.
ALTER TABLE tenants ADD COLUMN cell text NOT NULL DEFAULT 'main';

-- Placement counts tenants per cell (least loaded first) and
-- GET /v1/admin/cells lists them: one index range per cell.
CREATE INDEX tenants_by_cell ON tenants (cell) WHERE status <> 'deleted';
