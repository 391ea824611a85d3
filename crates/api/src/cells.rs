//! Cells: tenants placed across PostgreSQL databases (API.md, "Cells").
//!
//! `DATABASE_URL` is the control database and the cell `main`: it keeps the
//! registry (`tenants`), the users and the directory (`tenants.cell`, V140).
//! `TENANTRY_CELLS="name=url,..."` adds databases, each with the full schema
//! (migrated at start), its own pool, fair share, job workers, analytics
//! collector and maintenance. A tenant's rows live in exactly one cell; a
//! cell's `tenants` table holds a copy of the registry row of each tenant
//! placed there (for the tenant tables' foreign keys and the quota counters
//! its writes keep in the same transaction), and its `users` table the users
//! seen there (for foreign keys and member profiles).
//!
//! A request finds its cell in the tenant's cached record, so routing costs
//! no round trip; without `TENANTRY_CELLS` there is one cell, `main`, whose
//! database, share and collector are the server's own, and nothing about a
//! request changes.

use std::sync::{Arc, Mutex};

use tenantry_db::Db;
use tenantry_db::tenants::{CellLoad, MAIN_CELL};
use tenantry_fairness::share::DbShare;
use tenantry_jobs::ingest::{self, Collector, Ingest, IngestConfig};
use tokio::sync::Notify;

pub use tenantry_db::tenants::MAIN_CELL as MAIN;

/// One cell: a PostgreSQL database holding some tenants' rows.
pub struct Cell {
    pub name: String,
    /// The cell's primary.
    pub db: Db,
    /// The cell's fair share of database work; `None` for `main`, whose
    /// share is `AppState::fairness.db_share` (which configuration may
    /// replace).
    share: Option<Arc<DbShare>>,
    /// Where the analytics of the cell's tenants are group-committed;
    /// `None` for `main` (`AppState::batch.ingest`).
    ingest: Option<Ingest>,
    /// The collector behind `ingest`, taken once when the workers start.
    collector: Mutex<Option<Collector>>,
    /// Wakes the cell's job workers (its NOTIFY listener rings it).
    pub wake: Arc<Notify>,
}

impl Cell {
    /// The cell `main` of a server whose own database is `db`.
    fn main(db: &Db) -> Self {
        Self {
            name: MAIN_CELL.to_owned(),
            db: db.clone(),
            share: None,
            ingest: None,
            collector: Mutex::new(None),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Another cell, with its own share of `share_capacity` operations at
    /// once and its own analytics collector.
    fn other(name: String, db: Db, share_capacity: usize, ingest: IngestConfig) -> Self {
        let (handle, collector) = ingest::channel(db.clone(), ingest);
        Self {
            name,
            db,
            share: Some(DbShare::new(
                u32::try_from(share_capacity.max(1)).unwrap_or(u32::MAX),
            )),
            ingest: Some(handle),
            collector: Mutex::new(Some(collector)),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn is_main(&self) -> bool {
        self.name == MAIN_CELL
    }

    /// The cell's own share (`None` for `main`).
    pub fn own_share(&self) -> Option<&Arc<DbShare>> {
        self.share.as_ref()
    }

    /// The cell's own analytics handle (`None` for `main`).
    pub fn own_ingest(&self) -> Option<&Ingest> {
        self.ingest.as_ref()
    }

    /// The collector to run, once.
    pub fn take_collector(&self) -> Option<Collector> {
        self.collector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Every cell of the server, `main` first, then in `TENANTRY_CELLS` order.
pub struct Cells {
    list: Vec<Arc<Cell>>,
}

impl Cells {
    /// One cell, `main`, on `db`: a server without `TENANTRY_CELLS`.
    pub fn single(db: &Db) -> Self {
        Self {
            list: vec![Arc::new(Cell::main(db))],
        }
    }

    /// `main` on `db` and the `extra` cells, each with a share of
    /// `share_capacity` and a collector configured as `ingest`.
    pub fn new(
        db: &Db,
        extra: Vec<(String, Db)>,
        share_capacity: usize,
        ingest: IngestConfig,
    ) -> Self {
        let mut list = vec![Arc::new(Cell::main(db))];
        for (name, cell_db) in extra {
            list.push(Arc::new(Cell::other(
                name,
                cell_db,
                share_capacity,
                ingest.clone(),
            )));
        }
        Self { list }
    }

    /// The cell called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Cell>> {
        self.list.iter().find(|c| c.name == name)
    }

    /// Every cell, `main` first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cell>> {
        self.list.iter()
    }

    /// The cells beside `main`.
    pub fn others(&self) -> impl Iterator<Item = &Arc<Cell>> {
        self.list.iter().filter(|c| !c.is_main())
    }

    /// Whether `main` is the only cell (no `TENANTRY_CELLS`).
    pub fn is_single(&self) -> bool {
        self.list.len() == 1
    }

    /// Where a new tenant goes: the cell with the fewest tenants (`loads`:
    /// from the directory; a cell absent has none), the first configured on
    /// a tie, leaving out the cells a dedicated tenant has to itself while
    /// another cell is left.
    pub fn least_loaded(&self, loads: &[CellLoad]) -> &Arc<Cell> {
        let load = |c: &Cell| loads.iter().find(|l| l.cell == c.name);
        let open = |c: &&Arc<Cell>| !load(c).is_some_and(|l| l.dedicated);
        let tenants = |c: &&Arc<Cell>| load(c).map_or(0, |l| l.tenants);
        self.list
            .iter()
            .filter(open)
            .min_by_key(tenants)
            .or_else(|| self.list.iter().min_by_key(tenants))
            .expect("there is always the cell main")
    }

    /// Where a tenant in `current` gets a cell of its own: one holding no
    /// tenant, the first configured; `None` when every other cell is taken.
    pub fn empty_cell(&self, current: &str, loads: &[CellLoad]) -> Option<&Arc<Cell>> {
        self.list
            .iter()
            .find(|c| c.name != current && !loads.iter().any(|l| l.cell == c.name && l.tenants > 0))
    }
}

/// Parses `TENANTRY_CELLS`: `name=url` pairs separated by commas. A name is
/// 1–32 of `a-z`, `0-9`, `-`, `_`, not `main` (the control database), each
/// named once. A URL is a `postgres://` URL or a libpq `key=value` string
/// (split at its first `=` only); it cannot hold a comma.
pub fn parse(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut cells: Vec<(String, String)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            anyhow::bail!("TENANTRY_CELLS: {part:?} is not name=url");
        };
        let (name, url) = (name.trim(), url.trim());
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            anyhow::bail!(
                "TENANTRY_CELLS: cell name {name:?} must be 1-32 of a-z, 0-9, '-' and '_'"
            );
        }
        if name == MAIN_CELL {
            anyhow::bail!("TENANTRY_CELLS: `main` is the control database (DATABASE_URL)");
        }
        if url.is_empty() {
            anyhow::bail!("TENANTRY_CELLS: cell {name:?} has no URL");
        }
        if cells.iter().any(|(n, _)| n == name) {
            anyhow::bail!("TENANTRY_CELLS: cell {name:?} is named twice");
        }
        cells.push((name.to_owned(), url.to_owned()));
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn cells_parse_as_name_url_pairs_and_bad_names_are_refused() {
        let cells = parse("eu=postgres://a/b?x=1, us-2=postgres://c/d").expect("valid");
        assert_eq!(
            cells,
            vec![
                ("eu".to_owned(), "postgres://a/b?x=1".to_owned()),
                ("us-2".to_owned(), "postgres://c/d".to_owned())
            ]
        );
        assert!(parse("").expect("valid").is_empty());
        assert!(parse("main=postgres://x").is_err());
        assert!(parse("EU=postgres://x").is_err());
        assert!(parse("eu=postgres://x,eu=postgres://y").is_err());
        assert!(parse("eu").is_err());
        assert!(parse("eu=").is_err());
    }
}
