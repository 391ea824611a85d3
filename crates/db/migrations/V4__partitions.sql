-- Retention for range-partitioned tables (see crates/db/src/partitions.rs):
-- partitions ending more than keep_months months before this month are
-- detached and dropped by the maintenance worker. No row: kept forever.
CREATE TABLE tenantry_partition_retention (
    parent      text PRIMARY KEY,
    keep_months integer NOT NULL CHECK (keep_months >= 1)
);
