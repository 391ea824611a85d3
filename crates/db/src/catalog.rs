//! The tenant tables and their isolation, read from the catalog.
//!
//! Which tables hold tenants' rows is never written down by hand: it is
//! every table with a `tenant_id` column, as `tenantry_tenant_tables()` (V52)
//! reads it from the catalog. The purge, the RLS checks and the plan tests
//! enumerate tables from here, so a table added by a later migration is
//! purged and checked without anyone remembering to list it; [`gaps`] names
//! the ones whose isolation is missing or not the standard one.

use std::fmt;

/// The tenant tables, children before the tables their foreign keys
/// reference (the order a purge deletes in), partitioned tables by their
/// parent. Each name is quoted as SQL needs it (`regclass` output).
pub const TENANT_TABLES: &str =
    "SELECT tbl::text FROM tenantry_tenant_tables() ORDER BY depth, tbl::text";

/// The tenant tables, in [`TENANT_TABLES`] order.
pub async fn tenant_tables(
    client: &tokio_postgres::Client,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client.query(TENANT_TABLES, &[]).await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// What is wrong with a table's isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Row-level security is not enabled: the app role sees every row.
    NotEnabled,
    /// Row-level security is not forced: the owner is not filtered.
    NotForced,
    /// Enabled with no policy: nobody sees a row (a table added and never
    /// given its policy).
    NoPolicy,
    /// A tenant table without the standard `tenant_isolation` policy (or
    /// with a different one under that name).
    NotTenantPolicy,
    /// The app role lacks SELECT, INSERT or DELETE on a tenant table (the
    /// purge deletes as the app role).
    MissingGrant,
    /// The app role holds a grant on this partition: a way past the
    /// parent's policy, which partitions do not inherit.
    PartitionReachable(String),
    /// No index of a tenant table leads with `tenant_id`: every tenant's
    /// query would scan the others' rows.
    NoTenantIndex,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotEnabled => f.write_str("row-level security is not enabled"),
            Self::NotForced => f.write_str("row-level security is not forced"),
            Self::NoPolicy => f.write_str("no policy"),
            Self::NotTenantPolicy => f.write_str("not the standard tenant_isolation policy"),
            Self::MissingGrant => f.write_str("the app role lacks SELECT, INSERT or DELETE"),
            Self::PartitionReachable(p) => write!(f, "the app role can reach partition {p}"),
            Self::NoTenantIndex => f.write_str("no index leads with tenant_id"),
        }
    }
}

/// A table whose isolation is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub table: String,
    pub problem: Problem,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.table, self.problem)
    }
}

/// The policy every tenant table has, as PostgreSQL prints it back
/// (`tenantry_isolate` creates it).
const TENANT_POLICY: &str =
    "(tenant_id = ANY (( SELECT tenantry_allowed_tenants() AS tenantry_allowed_tenants)::uuid[]))";

/// Every table of the schema with a `tenant_id` column (partitions through
/// their parent) must have row-level security enabled and forced, a policy,
/// and no partition the app role can reach directly. The tenant tables (all
/// but those keyed by user, see V52) must also have the standard tenant
/// policy, the app role's grants and an index leading with `tenant_id`.
const GAPS: &str = "
    WITH tenant AS (SELECT tbl::oid AS oid FROM tenantry_tenant_tables()),
    keyed AS (
        SELECT c.oid, c.oid::regclass::text AS name, c.relrowsecurity, c.relforcerowsecurity,
               c.oid IN (SELECT oid FROM tenant) AS is_tenant
        FROM pg_class c
        JOIN pg_attribute a
          ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE c.relnamespace = current_schema()::regnamespace
          AND c.relkind IN ('r', 'p')
          AND NOT c.relispartition
    )
    SELECT k.name, g.problem, g.detail
    FROM keyed k
    CROSS JOIN LATERAL (
        SELECT 'not_enabled' AS problem, NULL::text AS detail WHERE NOT k.relrowsecurity
        UNION ALL
        SELECT 'not_forced', NULL WHERE NOT k.relforcerowsecurity
        UNION ALL
        SELECT 'no_policy', NULL
        WHERE NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = k.oid)
        UNION ALL
        SELECT 'not_tenant_policy', NULL
        WHERE k.is_tenant AND NOT EXISTS (
            SELECT 1 FROM pg_policy p
            WHERE p.polrelid = k.oid AND p.polname = 'tenant_isolation'
              AND p.polcmd = '*' AND p.polpermissive AND p.polroles = '{0}'
              AND pg_get_expr(p.polqual, p.polrelid) = $1
              AND pg_get_expr(p.polwithcheck, p.polrelid) = $1)
        UNION ALL
        SELECT 'missing_grant', NULL
        WHERE k.is_tenant AND NOT (
            has_table_privilege('tenantry_app', k.oid, 'SELECT')
            AND has_table_privilege('tenantry_app', k.oid, 'INSERT')
            AND has_table_privilege('tenantry_app', k.oid, 'DELETE'))
        UNION ALL
        SELECT 'partition_reachable', t.relid::regclass::text
        FROM pg_partition_tree(k.oid) t
        WHERE t.relid <> k.oid
          AND has_table_privilege('tenantry_app', t.relid, 'SELECT, INSERT, UPDATE, DELETE')
        UNION ALL
        SELECT 'no_tenant_index', NULL
        WHERE k.is_tenant AND NOT EXISTS (
            SELECT 1 FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = k.oid AND a.attname = 'tenant_id')
    ) g
    ORDER BY k.name, g.problem, g.detail";

/// Every gap in the isolation of the tables with a `tenant_id` column; none
/// in a correctly migrated database.
pub async fn gaps(client: &tokio_postgres::Client) -> Result<Vec<Gap>, tokio_postgres::Error> {
    let rows = client.query(GAPS, &[&TENANT_POLICY]).await?;
    rows.iter()
        .map(|r| {
            let table: String = r.try_get(0)?;
            let problem: &str = r.try_get(1)?;
            let detail: Option<String> = r.try_get(2)?;
            let problem = match problem {
                "not_enabled" => Problem::NotEnabled,
                "not_forced" => Problem::NotForced,
                "no_policy" => Problem::NoPolicy,
                "not_tenant_policy" => Problem::NotTenantPolicy,
                "missing_grant" => Problem::MissingGrant,
                "partition_reachable" => Problem::PartitionReachable(detail.unwrap_or_default()),
                "no_tenant_index" => Problem::NoTenantIndex,
                other => unreachable!("a problem the query names: {other}"),
            };
            Ok(Gap { table, problem })
        })
        .collect()
}
