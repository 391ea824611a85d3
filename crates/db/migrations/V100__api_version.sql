-- API versions: each tenant is pinned to the API version its requests get
-- when they name none (`Tenantry-Version`). A new tenant is pinned to the
-- newest version by the application; tenants that existed before versions
-- did are pinned to the first one, the shape they were built against.
ALTER TABLE tenants ADD COLUMN api_version text NOT NULL DEFAULT '2026-11-01'
    CHECK (api_version ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$');
