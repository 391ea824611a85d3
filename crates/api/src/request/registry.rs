//! The tenant registry: tenants by id, slug and custom domain, from the
//! cache, so naming a tenant normally costs no database work.

use std::sync::Arc;
use std::time::Duration;

use tenantry_cache::{Cache, PLATFORM};
use tenantry_db::Db;
use tenantry_db::tenants::{self, Lookup, Tenant};
use uuid::Uuid;

use crate::config::PLATFORM_STATEMENT_TIMEOUT_MS;
use crate::problem::ApiError;

/// How long a tenant, a membership or a name's tenant is kept. Every change
/// bumps the tenant's generation and is announced to the other nodes, so
/// this only bounds staleness when an announcement is lost without the
/// channel dropping (a node dying between its commit and its announcement).
pub const METADATA_TTL: Duration = Duration::from_secs(300);
/// How long "no tenant has this slug or domain" is kept: short, so a new
/// tenant is found quickly even if its announcement is lost, and long
/// enough that a flood of made-up names costs nothing.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Tenants by slug, domain and id, from the cache (namespaces `names:slug`,
/// `names:domain` under the platform, and `tenant` under each tenant), with
/// negative entries so floods of unknown names cost nothing.
pub struct TenantRegistry {
    db: Db,
    cache: Arc<Cache>,
    /// The databases of the cells beside `main` (see [`crate::cells`]):
    /// a tenant placed in one keeps its counters (members, posts, bytes)
    /// there.
    cells: arc_swap::ArcSwap<Vec<(String, Db)>>,
}

impl TenantRegistry {
    pub fn new(db: Db, cache: Arc<Cache>) -> Self {
        Self {
            db,
            cache,
            cells: arc_swap::ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Sets the cells beside `main` whose tenants' counters are read there.
    pub fn set_cells(&self, cells: Vec<(String, Db)>) {
        self.cells.store(Arc::new(cells));
    }

    /// The cells beside `main`, as set.
    pub fn cells(&self) -> Vec<(String, Db)> {
        self.cells.load().as_ref().clone()
    }

    /// The tenant with `id` (not deleted).
    pub async fn by_id(&self, id: Uuid) -> Result<Option<Arc<Tenant>>, ApiError> {
        let db = &self.db;
        let found = self
            .cache
            .get_or_load(id, "tenant", "", METADATA_TTL, || async {
                let found =
                    tenants::find(db, Lookup::Id(id), PLATFORM_STATEMENT_TIMEOUT_MS).await?;
                let found = match found {
                    Some(t) if t.cell != tenants::MAIN_CELL => Some(self.with_counters(t).await?),
                    other => other,
                };
                Ok::<_, tenantry_db::DbError>(found.map(Arc::new))
            })
            .await
            .map_err(|e| ApiError::from(unshare(e)))?;
        Ok(found.as_ref().clone())
    }

    /// `tenant` (of a cell beside `main`) with the counters its cell keeps.
    /// A cell this server does not know leaves the registry's counters.
    pub async fn with_counters(&self, mut tenant: Tenant) -> Result<Tenant, tenantry_db::DbError> {
        let cells = self.cells.load();
        let Some((_, cell_db)) = cells.iter().find(|(n, _)| *n == tenant.cell) else {
            return Ok(tenant);
        };
        if let Some((members, posts, bytes)) =
            tenants::counters(cell_db, tenant.id, PLATFORM_STATEMENT_TIMEOUT_MS).await?
        {
            tenant.member_count = members;
            tenant.post_count = posts;
            tenant.storage_bytes = bytes;
        }
        Ok(tenant)
    }

    async fn by_name(&self, lookup: Lookup<'_>) -> Result<Option<Arc<Tenant>>, ApiError> {
        let (ns, name) = match lookup {
            Lookup::Slug(s) => ("names:slug", s),
            Lookup::Domain(d) => ("names:domain", d),
            Lookup::Id(id) => return self.by_id(id).await,
        };
        let db = &self.db;
        let (id, _) = self
            .cache
            .get_or_load_ttl(PLATFORM, ns, name, || async {
                let found = tenants::find(db, lookup, PLATFORM_STATEMENT_TIMEOUT_MS).await?;
                let ttl = if found.is_some() {
                    METADATA_TTL
                } else {
                    NEGATIVE_TTL
                };
                Ok::<_, tenantry_db::DbError>((found.map(|t| t.id), ttl))
            })
            .await
            .map_err(|e| ApiError::from(unshare(e)))?;
        let Some(id) = *id else { return Ok(None) };
        let tenant = self.by_id(id).await?;
        let names = |t: &Tenant| match lookup {
            Lookup::Slug(s) => t.slug == s,
            Lookup::Domain(d) => t.domain.as_deref() == Some(d),
            Lookup::Id(_) => true,
        };
        match tenant {
            Some(t) if names(&t) => Ok(Some(t)),
            // The name moved (a deleted tenant's slug reused, a domain
            // changed) and the announcement is still on its way: ask the
            // database.
            _ => Ok(tenants::find(db, lookup, PLATFORM_STATEMENT_TIMEOUT_MS)
                .await?
                .map(Arc::new)),
        }
    }

    pub async fn by_slug(&self, slug: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        self.by_name(Lookup::Slug(slug)).await
    }

    pub async fn by_domain(&self, domain: &str) -> Result<Option<Arc<Tenant>>, ApiError> {
        self.by_name(Lookup::Domain(domain)).await
    }

    /// Forgets everything cached about tenant `id` (its record, its
    /// memberships, its lists) and every name's tenant, on every node. O(1):
    /// two generations move.
    pub async fn invalidate(&self, _before: Option<&Tenant>, id: Uuid) {
        self.cache.bump_tenant(id).await;
        self.cache.bump_list(PLATFORM, "names").await;
    }

    /// Forgets what is cached about a tenant changed in place from `before`
    /// to `after` (a `PATCH`): its record, memberships and lists, on every
    /// node. Names map to ids, so they move only if its slug or domain did
    /// (a name it takes may have been looked up and found unknown). Every
    /// name's move would send every caller of every tenant on every node,
    /// memoized under the platform's epoch, to be resolved again.
    pub async fn changed(&self, before: &Tenant, after: &Tenant) {
        self.cache.bump_tenant(after.id).await;
        if before.slug != after.slug || before.domain != after.domain {
            self.cache.bump_list(PLATFORM, "names").await;
        }
    }

    /// Forgets negative entries for a slug or domain that now exists.
    pub async fn created(&self, _tenant: &Tenant) {
        self.cache.bump_list(PLATFORM, "names").await;
    }
}

/// moka shares one loader error between concurrent waiters.
pub(crate) fn unshare(err: Arc<tenantry_db::DbError>) -> tenantry_db::DbError {
    match Arc::try_unwrap(err) {
        Ok(e) => e,
        Err(shared) => match &*shared {
            tenantry_db::DbError::Timeout => tenantry_db::DbError::Timeout,
            tenantry_db::DbError::Unavailable(s) => tenantry_db::DbError::Unavailable(s.clone()),
            tenantry_db::DbError::Busy(s) => tenantry_db::DbError::Busy(s.clone()),
            other => tenantry_db::DbError::Other(anyhow::anyhow!("{other}")),
        },
    }
}
