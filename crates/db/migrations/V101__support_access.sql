-- Support access (API.md, "Platform controls"): the platform admin registers
-- support agents; a tenant's owner or admins grant one of them access to
-- their tenant for a while, with a reason, and can extend or revoke it.

-- Who may be granted access: a platform list, not a tenant table.
CREATE TABLE support_agents (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, DELETE ON support_agents TO tenantry_app;

-- A tenant's grants. Never deleted by the application (revoking sets
-- revoked_at): they are the record of who was let in, why and until when.
CREATE TABLE support_grants (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    agent_user_id uuid NOT NULL REFERENCES users (id),
    scope         text NOT NULL CHECK (scope IN ('read', 'write')),
    reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    granted_by    uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- The tenant's grants, newest first.
CREATE INDEX support_grants_tenant_newest ON support_grants (tenant_id, created_at DESC, id DESC);

SELECT tenantry_isolate('support_grants');
