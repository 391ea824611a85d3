-- Platform-wide defaults that every tenant inherits: GET /v1/tenant shows
-- them overlaid with the tenant's own settings (`effective_settings`). One
-- row. Global, like `tenants`: not behind row-level security, since it
-- belongs to no tenant.
CREATE TABLE platform_settings (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    settings   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO platform_settings (id) VALUES (true);

GRANT SELECT, UPDATE ON platform_settings TO tenantry_app;
