-- Recent traffic per tenant, so a starting node warms its cache with the
-- busiest tenants first. Flushed by every node in one set-based UPDATE a
-- minute (halved, then the node's new requests added: an exponential decay
-- over flushes). Read only at start, ordered by tier then traffic: no index.
ALTER TABLE tenants ADD COLUMN recent_requests bigint NOT NULL DEFAULT 0;
