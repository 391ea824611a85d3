//! `GET /v1/admin/db/advisors`: what is wrong or wasteful in the schema and
//! its use, every finding in one shape (after Supabase's splinter:
//! `{name, level, title, detail, remediation, object}`).
//!
//! PostgreSQL's own lints: unused, duplicate and invalid indexes, foreign
//! keys no index leads with, tables whose dead tuples pile up. Tenantry's:
//! a table with `tenant_id` that is not isolated as a tenant table (row-level
//! security forced, the tenant policy, an index leading with `tenant_id`:
//! [`tenantry_db::catalog::gaps`], the check the test suite holds the
//! migrations to), and a policy that calls a setting lookup per row instead
//! of once per query (not wrapped in `(SELECT ...)`, so PostgreSQL cannot
//! make it an init plan).

use serde::Serialize;
use tenantry_db::DbError;
use tenantry_db::catalog::{Gap, Problem};

use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One finding.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// The lint, stable: `unused_index`, `duplicate_index`, `invalid_index`,
    /// `unindexed_foreign_key`, `dead_tuples`,
    /// `tenant_table_without_forced_rls`, `tenant_table_without_tenant_index`,
    /// `tenant_table_isolation`, `policy_per_row_setting`.
    pub name: &'static str,
    pub level: Level,
    pub title: String,
    pub detail: String,
    pub remediation: String,
    /// The table, index, constraint or policy concerned.
    pub object: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Findings {
    /// Errors first, then warnings, then information.
    pub items: Vec<Finding>,
}

/// Dead tuples past which a table is reported (and past this share of its
/// live rows).
const DEAD_MIN: i64 = 1_000;
const DEAD_RATIO: f64 = 0.2;

/// PostgreSQL's lints, one row each: `(name, object, tbl, n1, n2, other)`.
/// Partitions are left out (their indexes and keys are their parent's). An
/// index dropped while this reads (the old half of a `REINDEX CONCURRENTLY`,
/// which the statistics views' snapshot still lists) has no size:
/// `pg_relation_size` answers NULL for it, and it is left out.
const LINTS_SQL: &str = "
WITH idx AS (
    SELECT i.*, ic.relname, t.relnamespace
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    WHERE t.relnamespace = current_schema()::regnamespace AND NOT t.relispartition
)
SELECT * FROM (
SELECT 'unused_index' AS name, s.indexrelid::regclass::text AS object,
       s.relid::regclass::text AS tbl, pg_relation_size(s.indexrelid) AS n1, 0::int8 AS n2,
       NULL::text AS other
FROM pg_stat_user_indexes s JOIN idx i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = s.indexrelid)
UNION ALL
SELECT 'duplicate_index',
       CASE WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = b.indexrelid)
            THEN a.indexrelid ELSE b.indexrelid END::regclass::text,
       a.indrelid::regclass::text, pg_relation_size(b.indexrelid), 0,
       CASE WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = b.indexrelid)
            THEN b.indexrelid ELSE a.indexrelid END::regclass::text
FROM idx a JOIN idx b
  ON b.indrelid = a.indrelid AND b.indexrelid > a.indexrelid
 AND (SELECT relam FROM pg_class WHERE oid = a.indexrelid)
     = (SELECT relam FROM pg_class WHERE oid = b.indexrelid)
 AND a.indkey::text = b.indkey::text AND a.indclass::text = b.indclass::text
 AND a.indcollation::text = b.indcollation::text
 AND coalesce(pg_get_expr(a.indexprs, a.indrelid), '') = coalesce(pg_get_expr(b.indexprs, b.indrelid), '')
 AND coalesce(pg_get_expr(a.indpred, a.indrelid), '') = coalesce(pg_get_expr(b.indpred, b.indrelid), '')
UNION ALL
SELECT 'invalid_index', i.indexrelid::regclass::text, i.indrelid::regclass::text,
       pg_relation_size(i.indexrelid), 0, NULL
FROM idx i
WHERE NOT i.indisvalid
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                  WHERE p.index_relid = i.indexrelid)
UNION ALL
SELECT 'unindexed_foreign_key', k.conname, k.conrelid::regclass::text, 0, 0,
       (SELECT string_agg(a.attname, ', ' ORDER BY u.n)
          FROM unnest(k.conkey) WITH ORDINALITY u(attnum, n)
          JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE k.contype = 'f' AND c.relnamespace = current_schema()::regnamespace
  AND NOT c.relispartition
  AND NOT EXISTS (
      SELECT 1 FROM pg_index i
      WHERE i.indrelid = k.conrelid AND i.indpred IS NULL
        AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] @> k.conkey
        AND (i.indkey::int2[])[0:cardinality(k.conkey) - 1] <@ k.conkey)
UNION ALL
SELECT 'dead_tuples', s.relid::regclass::text, s.relid::regclass::text, s.n_dead_tup,
       s.n_live_tup, NULL
FROM pg_stat_user_tables s
WHERE s.n_dead_tup >= $1 AND s.n_dead_tup > $2::float8 * s.n_live_tup
) lint
WHERE n1 IS NOT NULL";

/// Every row-level security policy of the schema, as PostgreSQL prints it.
const POLICIES_SQL: &str = "
SELECT p.polrelid::regclass::text AS tbl, p.polname AS name,
       pg_get_expr(p.polqual, p.polrelid) AS qual,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expr
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = current_schema()::regnamespace";

/// Runs every lint.
pub async fn findings(state: &AppState) -> Result<Findings, DbError> {
    let (lints, policies, gaps) = super::platform_read(&state.db, |conn| async move {
        let result = async {
            futures::try_join!(
                conn.query(LINTS_SQL, &[&DEAD_MIN, &DEAD_RATIO]),
                conn.query(POLICIES_SQL, &[]),
                tenantry_db::catalog::gaps(&conn),
            )
        }
        .await;
        (conn, result)
    })
    .await?;
    let mut items: Vec<Finding> = lints.iter().map(lint).collect();
    items.extend(gaps.iter().map(gap));
    for row in &policies {
        let table: String = row.get("tbl");
        let name: String = row.get("name");
        let mut calls: Vec<&'static str> = Vec::new();
        for expr in [row.get::<_, Option<String>>("qual"), row.get("check_expr")]
            .into_iter()
            .flatten()
        {
            for call in per_row_calls(&expr) {
                if !calls.contains(&call) {
                    calls.push(call);
                }
            }
        }
        if !calls.is_empty() {
            items.push(Finding {
                name: "policy_per_row_setting",
                level: Level::Warn,
                title: "A row-level security policy looks up a setting for every row".into(),
                detail: format!(
                    "policy {name} on {table} calls {} outside a scalar subquery, so \
                     PostgreSQL evaluates it once per row it filters rather than once per query",
                    calls.join(", ")
                ),
                remediation: format!(
                    "wrap each call in a subquery so it becomes an init plan, e.g. \
                     `(SELECT {}(...))`; `tenantry_isolate('{table}')` recreates the standard \
                     tenant policy",
                    calls[0]
                ),
                object: format!("{table}.{name}"),
            });
        }
    }
    items.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| a.name.cmp(b.name))
            .then_with(|| a.object.cmp(&b.object))
    });
    Ok(Findings { items })
}

fn lint(row: &tokio_postgres::Row) -> Finding {
    let name: &str = row.get("name");
    let object: String = row.get("object");
    let table: String = row.get("tbl");
    let (n1, n2): (i64, i64) = (row.get("n1"), row.get("n2"));
    let other: Option<String> = row.get("other");
    let other = other.unwrap_or_default();
    match name {
        "unused_index" => Finding {
            name: "unused_index",
            level: Level::Info,
            title: "An index no query has used".into(),
            detail: format!(
                "{object} on {table} ({n1} bytes) has not been scanned since the statistics were \
                 last reset; it still costs every write"
            ),
            remediation: format!(
                "if the statistics cover a representative period, DROP INDEX CONCURRENTLY {object}"
            ),
            object,
        },
        "duplicate_index" => Finding {
            name: "duplicate_index",
            level: Level::Warn,
            title: "Two indexes with the same definition".into(),
            detail: format!(
                "{object} on {table} indexes exactly what {other} does ({n1} bytes maintained \
                 twice on every write)"
            ),
            remediation: format!("DROP INDEX CONCURRENTLY {object}"),
            object,
        },
        "invalid_index" => Finding {
            name: "invalid_index",
            level: Level::Error,
            title: "An invalid index".into(),
            detail: format!(
                "{object} on {table} is invalid (a CREATE INDEX CONCURRENTLY or REINDEX that \
                 failed): every write maintains it, no query uses it"
            ),
            remediation: format!(
                "POST /v1/admin/db/reindex {{\"tables\": [\"{table}\"]}} rebuilds it \
                 concurrently, or DROP INDEX CONCURRENTLY {object}"
            ),
            object,
        },
        "unindexed_foreign_key" => Finding {
            name: "unindexed_foreign_key",
            level: Level::Warn,
            title: "A foreign key no index leads with".into(),
            detail: format!(
                "{object} on {table} ({other}) has no index leading with its columns: a delete \
                 or key update of the referenced row scans {table}"
            ),
            remediation: format!(
                "CREATE INDEX CONCURRENTLY ON {table} ({other}) (with tenant_id first on a \
                 tenant table)"
            ),
            object: format!("{table}.{object}"),
        },
        _ => Finding {
            name: "dead_tuples",
            level: Level::Warn,
            title: "Dead tuples pile up".into(),
            detail: format!(
                "{table} holds {n1} dead tuples for {n2} live ones: scans step over them and the \
                 table and its indexes grow"
            ),
            remediation: format!(
                "POST /v1/admin/db/vacuum {{\"tables\": [\"{table}\"]}}, and check \
                 long_transactions in /v1/admin/db/health (an old transaction holds vacuum back) \
                 and autovacuum's settings"
            ),
            object,
        },
    }
}

fn gap(gap: &Gap) -> Finding {
    let table = gap.table.clone();
    let isolate = format!("in a migration: SELECT tenantry_isolate('{table}')");
    match &gap.problem {
        Problem::NotEnabled | Problem::NotForced => Finding {
            name: "tenant_table_without_forced_rls",
            level: Level::Error,
            title: "A tenant table without forced row-level security".into(),
            detail: format!(
                "{table} has a tenant_id column but {}: a query that forgets its tenant filter \
                 reads every tenant's rows",
                gap.problem
            ),
            remediation: isolate,
            object: table,
        },
        Problem::NoTenantIndex => Finding {
            name: "tenant_table_without_tenant_index",
            level: Level::Error,
            title: "A tenant table with no index leading with tenant_id".into(),
            detail: format!(
                "no index of {table} leads with tenant_id: every tenant's query on it reads the \
                 other tenants' rows"
            ),
            remediation: format!(
                "CREATE INDEX CONCURRENTLY ON {table} (tenant_id, ...), or make tenant_id lead \
                 its primary key"
            ),
            object: table,
        },
        other => Finding {
            name: "tenant_table_isolation",
            level: Level::Error,
            title: "A tenant table not isolated the standard way".into(),
            detail: format!("{table}: {other}"),
            remediation: isolate,
            object: table,
        },
    }
}

/// Lookups that must be evaluated once per query, not once per row.
const SETTING_LOOKUPS: &[&str] = &[
    "current_setting",
    "tenantry_allowed_tenants",
    "tenantry_current_user_id",
    "auth.uid",
    "auth.jwt",
];

/// The [`SETTING_LOOKUPS`] that `expr` (a policy expression as PostgreSQL
/// prints it) calls outside any `(SELECT ...)`.
pub fn per_row_calls(expr: &str) -> Vec<&'static str> {
    let bytes = expr.as_bytes();
    // For each open parenthesis: does it open a subquery?
    let mut groups: Vec<bool> = Vec::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                // A string literal: skip to its end ('' is an escaped quote).
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'(' => {
                let rest = expr[i + 1..].trim_start();
                let select = rest.len() >= 6 && rest[..6].eq_ignore_ascii_case("select");
                groups.push(select);
            }
            b')' => {
                groups.pop();
            }
            _ => {
                let starts_word = i == 0 || !is_ident(bytes[i - 1]);
                if starts_word && !groups.contains(&true) {
                    for &name in SETTING_LOOKUPS {
                        let end = i + name.len();
                        if expr.len() > end
                            && expr[i..end].eq_ignore_ascii_case(name)
                            && bytes[end] == b'('
                            && !found.contains(&name)
                        {
                            found.push(name);
                        }
                    }
                }
            }
        }
        i += 1;
    }
    found
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

#[cfg(test)]
mod tests {
    use super::per_row_calls;

    #[test]
    fn a_lookup_wrapped_in_a_subquery_is_once_per_query() {
        assert!(
            per_row_calls(
                "(tenant_id = ANY (( SELECT tenantry_allowed_tenants() AS \
                 tenantry_allowed_tenants)::uuid[]))"
            )
            .is_empty()
        );
        assert!(
            per_row_calls(
                "(tenant_id = (( SELECT current_setting('tenantry.tenant_id'::text) AS x))::uuid)"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_bare_lookup_is_per_row() {
        assert_eq!(
            per_row_calls("(tenant_id = (current_setting('tenantry.tenant_id'::text))::uuid)"),
            ["current_setting"]
        );
        assert_eq!(
            per_row_calls("(user_id = tenantry_current_user_id())"),
            ["tenantry_current_user_id"]
        );
        // A name inside a string literal is not a call.
        assert!(per_row_calls("(note = 'current_setting(x)'::text)").is_empty());
        // Nor is a longer name that ends like one.
        assert!(per_row_calls("(x = my_current_setting('a'))").is_empty());
    }
}
