//! Journeys and their activities.
//!
//! `journey_activities` is range-partitioned by month on `start_datetime`
//! (partitions made ahead by [`crate::partitions`]' maintenance), so every
//! read of activities carries a `start_datetime` range: the caller's
//! `from`/`to`, or by default the span of the journey's activities that the
//! journey row keeps, which prunes every partition outside it.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::json::Jsonb;
use crate::{DbError, Keyset, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub is_public: bool,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub locations: Value,
    pub first_activity_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const JOURNEY_COLUMNS: &str = "id, owner_id, title, description, status, is_public, start_date, \
     end_date, locations, first_activity_at, last_activity_at, created_at, updated_at";

impl Journey {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            status: row.try_get("status")?,
            is_public: row.try_get("is_public")?,
            start_date: row.try_get("start_date")?,
            end_date: row.try_get("end_date")?,
            locations: row.try_get::<_, Jsonb>("locations")?.0,
            first_activity_at: row.try_get("first_activity_at")?,
            last_activity_at: row.try_get("last_activity_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    pub fn keyset(&self) -> Keyset {
        Keyset {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// A journey's fields, already validated: a new journey's, or an edited
/// one's (the caller merges the patch into the locked row and validates the
/// result).
#[derive(Debug, Clone)]
pub struct NewJourney {
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub is_public: bool,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub locations: Value,
}

pub async fn create_and_commit(
    tx: Tx,
    tenant: Uuid,
    owner: Uuid,
    new: &NewJourney,
) -> Result<Journey, DbError> {
    let sql = format!(
        "INSERT INTO journeys (tenant_id, id, owner_id, title, description, status, is_public,
                               start_date, end_date, locations)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {JOURNEY_COLUMNS}"
    );
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &tenant,
                &crate::new_id(),
                &owner,
                &new.title,
                &new.description,
                &new.status,
                &new.is_public,
                &new.start_date,
                &new.end_date,
                &new.locations,
            ],
        )
        .await?;
    rows.first()
        .map(Journey::from_row)
        .transpose()?
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("journey insert returned no row")))
}

/// A page of `owner`'s journeys, newest first, that `viewer` may see (all of
/// them for the owner, the public ones for anyone else), if `viewer` is a
/// member; the viewer's role (`None`: not a member) and the page, committed
/// in one round trip. Walks `journeys_tenant_owner`.
pub async fn list_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    viewer: Uuid,
    owner: Uuid,
    after: Option<Keyset>,
    limit: i64,
) -> Result<(Option<tenantry_core::Role>, Vec<Journey>), DbError> {
    let keyset = if after.is_some() {
        "AND (created_at, id) < ($5, $6)"
    } else {
        ""
    };
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3)
         SELECT r.role AS caller_role, j.* FROM r LEFT JOIN LATERAL (
             SELECT {JOURNEY_COLUMNS} FROM journeys
             WHERE tenant_id = $1 AND owner_id = $4 AND (is_public OR owner_id = $3) {keyset}
             ORDER BY created_at DESC, id DESC LIMIT $2
         ) j ON true"
    );
    let rows = match after {
        None => {
            tx.query_and_commit(&sql, &[&tenant, &limit, &viewer, &owner])
                .await?
        }
        Some(k) => {
            tx.query_and_commit(
                &sql,
                &[&tenant, &limit, &viewer, &owner, &k.created_at, &k.id],
            )
            .await?
        }
    };
    let Some(first) = rows.first() else {
        return Ok((None, Vec::new()));
    };
    let role = tenantry_core::Role::parse(first.try_get("caller_role")?)
        .map_err(|e| DbError::Other(e.into()))?;
    let journeys = rows
        .iter()
        .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("id"), Ok(None)))
        .map(Journey::from_row)
        .collect::<Result<_, _>>()?;
    Ok((Some(role), journeys))
}

/// A journey `viewer` may see (public, or theirs), if `viewer` is a member.
/// `(None, None)`: not a member; `(Some(role), None)`: no such journey for
/// this viewer (a private journey of someone else reads as missing).
pub async fn get_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    viewer: Uuid,
    id: Uuid,
) -> Result<(Option<tenantry_core::Role>, Option<Journey>), DbError> {
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3)
         SELECT r.role AS caller_role, j.* FROM r LEFT JOIN LATERAL (
             SELECT {JOURNEY_COLUMNS} FROM journeys
             WHERE tenant_id = $1 AND id = $2 AND (is_public OR owner_id = $3)
         ) j ON true"
    );
    let rows = tx.query_and_commit(&sql, &[&tenant, &id, &viewer]).await?;
    let Some(row) = rows.first() else {
        return Ok((None, None));
    };
    let role = tenantry_core::Role::parse(row.try_get("caller_role")?)
        .map_err(|e| DbError::Other(e.into()))?;
    let journey = row
        .try_get::<_, Option<Uuid>>("id")?
        .is_some()
        .then(|| Journey::from_row(row))
        .transpose()?;
    Ok((Some(role), journey))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub id: Uuid,
    pub journey_id: Uuid,
    pub title: String,
    pub notes: Option<String>,
    pub location: Option<Value>,
    pub start_datetime: DateTime<Utc>,
    pub end_datetime: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const ACTIVITY_COLUMNS: &str =
    "id, journey_id, title, notes, location, start_datetime, end_datetime, created_at";

impl Activity {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.try_get("id")?,
            journey_id: row.try_get("journey_id")?,
            title: row.try_get("title")?,
            notes: row.try_get("notes")?,
            location: row.try_get::<_, Option<Jsonb>>("location")?.map(|j| j.0),
            start_datetime: row.try_get("start_datetime")?,
            end_datetime: row.try_get("end_datetime")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// The keyset of a journey's activity list: `(start_datetime, id)`.
    pub fn keyset(&self) -> (DateTime<Utc>, Uuid) {
        (self.start_datetime, self.id)
    }
}

#[derive(Debug, Clone)]
pub struct NewActivity {
    pub title: String,
    pub notes: Option<String>,
    pub location: Option<Value>,
    pub start_datetime: DateTime<Utc>,
    pub end_datetime: Option<DateTime<Utc>>,
}

/// What adding an activity found.
#[derive(Debug)]
pub enum Added {
    NotAMember,
    /// No journey the caller may see.
    NoSuchJourney,
    /// The journey is visible (public) but not the caller's.
    NotTheOwner,
    Added(Activity),
}

/// Adds an activity to `owner`'s journey and widens the journey's activity
/// span, in one statement, and commits. The membership and ownership checks
/// ride in the same statement.
pub async fn add_activity_and_commit(
    tx: Tx,
    tenant: Uuid,
    journey: Uuid,
    user: Uuid,
    new: &NewActivity,
) -> Result<Added, DbError> {
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3),
         j AS (
             SELECT id, owner_id FROM journeys
             WHERE tenant_id = $1 AND id = $2 AND (is_public OR owner_id = $3)
               AND EXISTS (SELECT 1 FROM r)
         ),
         widened AS (
             UPDATE journeys SET first_activity_at = least(first_activity_at, $6),
                                 last_activity_at = greatest(last_activity_at, $6),
                                 updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND owner_id = $3 AND EXISTS (SELECT 1 FROM r)
             RETURNING id
         ),
         a AS (
             INSERT INTO journey_activities (tenant_id, journey_id, id, title, notes, location,
                                             start_datetime, end_datetime)
             SELECT $1, id, $4, $5, $7, $8, $6, $9 FROM widened
             RETURNING {ACTIVITY_COLUMNS}
         )
         SELECT EXISTS (SELECT 1 FROM r) AS member, EXISTS (SELECT 1 FROM j) AS visible,
                a.* FROM (SELECT 1) one LEFT JOIN a ON true"
    );
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &tenant,
                &journey,
                &user,
                &crate::new_id(),
                &new.title,
                &new.start_datetime,
                &new.notes,
                &new.location,
                &new.end_datetime,
            ],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("add activity returned no row")))?;
    Ok(if !row.try_get::<_, bool>("member")? {
        Added::NotAMember
    } else if row.try_get::<_, Option<Uuid>>("id")?.is_some() {
        Added::Added(Activity::from_row(row)?)
    } else if row.try_get::<_, bool>("visible")? {
        Added::NotTheOwner
    } else {
        Added::NoSuchJourney
    })
}

/// Which activities of a journey to list.
#[derive(Debug, Clone, Copy)]
pub struct ActivityQuery {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The SQL of a page of a journey's activities, as
/// [`list_activities_for_member_and_commit`] sends it: `$1` tenant, `$2`
/// journey, `$3` viewer, `$4` from (nullable), `$5` to (nullable), `$6`
/// limit, then the keyset if `after`. The `start_datetime` range is the
/// caller's, or the journey's activity span (an init plan), so PostgreSQL
/// prunes every partition outside it at run time.
pub fn activities_sql(after: bool) -> String {
    let keyset = if after {
        "AND (start_datetime, id) > ($7, $8)"
    } else {
        ""
    };
    format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3),
         j AS (
             SELECT first_activity_at, last_activity_at FROM journeys
             WHERE tenant_id = $1 AND id = $2 AND (is_public OR owner_id = $3)
         )
         SELECT r.role AS caller_role, EXISTS (SELECT 1 FROM j) AS visible, a.*
         FROM r LEFT JOIN LATERAL (
             SELECT {ACTIVITY_COLUMNS} FROM journey_activities
             WHERE tenant_id = $1 AND journey_id = $2
               AND start_datetime >= coalesce($4::timestamptz, (SELECT first_activity_at FROM j))
               AND start_datetime < coalesce($5::timestamptz,
                                             (SELECT last_activity_at FROM j) + interval '1 microsecond')
               {keyset}
             ORDER BY start_datetime, id LIMIT $6
         ) a ON true"
    )
}

/// What a read of a journey's activities found.
#[derive(Debug)]
pub enum ActivitiesPage {
    NotAMember,
    NoSuchJourney,
    Page(Vec<Activity>),
}

/// A page of a journey's activities, earliest first, with the membership and
/// the journey's visibility checked in the same statement; commits in one
/// round trip.
pub async fn list_activities_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    journey: Uuid,
    viewer: Uuid,
    q: ActivityQuery,
) -> Result<ActivitiesPage, DbError> {
    let sql = activities_sql(q.after.is_some());
    let mut params: Vec<&(dyn ToSql + Sync)> =
        vec![&tenant, &journey, &viewer, &q.from, &q.to, &q.limit];
    if let Some((at, id)) = &q.after {
        params.push(at);
        params.push(id);
    }
    let rows = tx.query_and_commit(&sql, &params).await?;
    let Some(first) = rows.first() else {
        return Ok(ActivitiesPage::NotAMember);
    };
    if !first.try_get::<_, bool>("visible")? {
        return Ok(ActivitiesPage::NoSuchJourney);
    }
    Ok(ActivitiesPage::Page(
        rows.iter()
            .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("id"), Ok(None)))
            .map(Activity::from_row)
            .collect::<Result<_, _>>()?,
    ))
}

/// Reads a journey `viewer` may see (public, or theirs) and locks it until
/// the transaction ends, so the edit that follows sees no concurrent one.
pub async fn get_for_update(
    tx: &mut Tx,
    tenant: Uuid,
    viewer: Uuid,
    id: Uuid,
) -> Result<Option<Journey>, DbError> {
    let sql = format!(
        "SELECT {JOURNEY_COLUMNS} FROM journeys
         WHERE tenant_id = $1 AND id = $2 AND (is_public OR owner_id = $3)
         FOR UPDATE"
    );
    tx.query_opt(&sql, &[&tenant, &id, &viewer])
        .await?
        .as_ref()
        .map(Journey::from_row)
        .transpose()
}

/// Writes an edited journey and commits.
pub async fn update_and_commit(
    tx: Tx,
    tenant: Uuid,
    id: Uuid,
    edit: &NewJourney,
) -> Result<Option<Journey>, DbError> {
    let sql = format!(
        "UPDATE journeys SET title = $3, description = $4, status = $5, is_public = $6,
                             start_date = $7, end_date = $8, locations = $9, updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING {JOURNEY_COLUMNS}"
    );
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &tenant,
                &id,
                &edit.title,
                &edit.description,
                &edit.status,
                &edit.is_public,
                &edit.start_date,
                &edit.end_date,
                &edit.locations,
            ],
        )
        .await?;
    rows.first().map(Journey::from_row).transpose()
}

/// The SQL that reads one activity of a journey and locks it, as
/// [`get_activity_for_update`] sends it: `$1` tenant, `$2` journey, `$3`
/// activity, `$4`..=`$5` the journey's activity span. The activity's id
/// alone does not say which month holds it; the span bounds the partition
/// key, so only the months the journey's activities lie in are read (pruned
/// when planning, or at executor start-up for a generic plan).
pub fn activity_for_update_sql() -> String {
    format!(
        "SELECT {ACTIVITY_COLUMNS} FROM journey_activities
         WHERE tenant_id = $1 AND journey_id = $2 AND id = $3
           AND start_datetime >= $4 AND start_datetime <= $5
         FOR UPDATE"
    )
}

/// The activity `id` of `journey`, locked until the transaction ends;
/// `None` if the journey has no such activity. Lock the journey first
/// ([`get_for_update`]): its span is the partition range searched.
pub async fn get_activity_for_update(
    tx: &mut Tx,
    tenant: Uuid,
    journey: &Journey,
    id: Uuid,
) -> Result<Option<Activity>, DbError> {
    // No span: the journey has no activities at all.
    let (Some(first), Some(last)) = (journey.first_activity_at, journey.last_activity_at) else {
        return Ok(None);
    };
    let row = tx
        .query_opt(
            &activity_for_update_sql(),
            &[&tenant, &journey.id, &id, &first, &last],
        )
        .await?;
    row.as_ref().map(Activity::from_row).transpose()
}

/// The SQL of an activity's edit, as [`update_activity`] sends it: `$1`
/// tenant, `$2` activity, `$3` its current `start_datetime` (the partition
/// key: one partition is read), then the new title, notes, location, start
/// and end. A new start in another month moves the row to that month's
/// partition.
pub fn update_activity_sql() -> String {
    format!(
        "UPDATE journey_activities
         SET title = $4, notes = $5, location = $6, start_datetime = $7, end_datetime = $8
         WHERE tenant_id = $1 AND id = $2 AND start_datetime = $3
         RETURNING {ACTIVITY_COLUMNS}"
    )
}

/// The SQL that recomputes a journey's activity span after an activity
/// moved: `$1` tenant, `$2` journey, `$3`..=`$4` a range holding every one
/// of its activities (the old span widened by the new start). Each bound is
/// the first entry of `journey_activities_by_journey` in that range, so
/// it reads one index entry per end, and only the range's partitions.
pub fn respan_sql() -> String {
    "UPDATE journeys
     SET first_activity_at = (SELECT min(start_datetime) FROM journey_activities
                              WHERE tenant_id = $1 AND journey_id = $2
                                AND start_datetime >= $3 AND start_datetime <= $4),
         last_activity_at = (SELECT max(start_datetime) FROM journey_activities
                             WHERE tenant_id = $1 AND journey_id = $2
                               AND start_datetime >= $3 AND start_datetime <= $4),
         updated_at = now()
     WHERE tenant_id = $1 AND id = $2"
        .to_owned()
}

/// Writes an edited activity of `journey` (locked by [`get_for_update`]),
/// and when its start moved, the journey's activity span: widened to the
/// new start and narrowed if the activity was the first or last, so list
/// reads keep pruning to exactly the months that hold activities.
pub async fn update_activity(
    tx: &mut Tx,
    tenant: Uuid,
    journey: &Journey,
    current: &Activity,
    edit: &NewActivity,
) -> Result<Activity, DbError> {
    let row = tx
        .query_opt(
            &update_activity_sql(),
            &[
                &tenant,
                &current.id,
                &current.start_datetime,
                &edit.title,
                &edit.notes,
                &edit.location,
                &edit.start_datetime,
                &edit.end_datetime,
            ],
        )
        .await?
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("the locked activity was not updated")))?;
    if edit.start_datetime != current.start_datetime {
        let first = journey
            .first_activity_at
            .map_or(edit.start_datetime, |f| f.min(edit.start_datetime));
        let last = journey
            .last_activity_at
            .map_or(edit.start_datetime, |l| l.max(edit.start_datetime));
        tx.execute(&respan_sql(), &[&tenant, &journey.id, &first, &last])
            .await?;
    }
    Activity::from_row(&row)
}
