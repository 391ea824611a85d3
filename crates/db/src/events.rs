//! Events: create, list upcoming, edit, cancel.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::origin::Origin;
use crate::{DbError, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub created_by: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub start_date: DateTime<Utc>,
    pub end_date: Option<DateTime<Utc>>,
    pub location_name: Option<String>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub origin: Option<Origin>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const EVENT_COLUMNS: &str = "id, created_by, title, description, start_date, end_date, \
     location_name, cancelled_at, origin_tenant_id, origin_id, shared_by, created_at, updated_at";

impl Event {
    pub(crate) fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(Self {
            id: row.try_get("id")?,
            created_by: row.try_get("created_by")?,
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            start_date: row.try_get("start_date")?,
            end_date: row.try_get("end_date")?,
            location_name: row.try_get("location_name")?,
            cancelled_at: row.try_get("cancelled_at")?,
            origin: Origin::from_row(row, crate::columns::position(row, "origin_tenant_id"))?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// The keyset of the upcoming list: `(start_date, id)`.
    pub fn keyset(&self) -> (DateTime<Utc>, Uuid) {
        (self.start_date, self.id)
    }
}

/// A new event's fields, already validated.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub title: String,
    pub description: Option<String>,
    pub start_date: DateTime<Utc>,
    pub end_date: Option<DateTime<Utc>>,
    pub location_name: Option<String>,
}

pub async fn create(tx: Tx, tenant: Uuid, creator: Uuid, new: &NewEvent) -> Result<Event, DbError> {
    let sql = format!(
        "WITH e AS (
             INSERT INTO events (tenant_id, id, created_by, title, description, start_date,
                                 end_date, location_name)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING {EVENT_COLUMNS}
         ),
         -- Counted in the day's statistics in the same statement.
         counted AS (
             INSERT INTO tenant_daily_stats AS s (tenant_id, day, events)
             SELECT $1, (now() AT TIME ZONE 'UTC')::date, count(*) FROM e
             ON CONFLICT (tenant_id, day) DO UPDATE SET events = s.events + excluded.events
         )
         SELECT * FROM e"
    );
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &tenant,
                &crate::new_id(),
                &creator,
                &new.title,
                &new.description,
                &new.start_date,
                &new.end_date,
                &new.location_name,
            ],
        )
        .await?;
    rows.first()
        .map(Event::from_row)
        .transpose()?
        .ok_or_else(|| DbError::Other(anyhow::anyhow!("event insert returned no row")))
}

/// Which upcoming events to list.
#[derive(Debug, Clone, Copy)]
pub struct UpcomingQuery {
    /// Events starting at or after this (the caller's "now" by default).
    pub from: DateTime<Utc>,
    /// Events starting before this, if set.
    pub to: Option<DateTime<Utc>>,
    /// The `(start_date, id)` of the last event already returned.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// The SQL of a page of upcoming events with the caller's role (no row for a
/// non-member), as [`list_upcoming_for_member_and_commit`] sends it:
/// `$1` tenant, `$2` limit, `$3` user, `$4` from, then `$5` to if `to`, then
/// the keyset if `after`. It walks `events_tenant_upcoming` from `from` (or
/// the keyset) ascending and stops at LIMIT.
pub fn upcoming_sql(to: bool, after: bool) -> String {
    let mut n = 4;
    let mut conditions = String::new();
    if to {
        n += 1;
        conditions.push_str(&format!(" AND start_date < ${n}"));
    }
    if after {
        conditions.push_str(&format!(" AND (start_date, id) > (${}, ${})", n + 1, n + 2));
    }
    format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3)
         SELECT r.role AS caller_role, e.* FROM r LEFT JOIN LATERAL (
             SELECT {EVENT_COLUMNS} FROM events
             WHERE tenant_id = $1 AND cancelled_at IS NULL AND start_date >= $4{conditions}
             ORDER BY start_date, id LIMIT $2
         ) e ON true"
    )
}

/// Upcoming events, soonest first, if `user` is a member; the caller's role
/// (`None`: not a member) and the page, committed in one round trip.
pub async fn list_upcoming_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    q: UpcomingQuery,
) -> Result<(Option<tenantry_core::Role>, Vec<Event>), DbError> {
    let sql = upcoming_sql(q.to.is_some(), q.after.is_some());
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &q.limit, &user, &q.from];
    if let Some(to) = &q.to {
        params.push(to);
    }
    if let Some((at, id)) = &q.after {
        params.push(at);
        params.push(id);
    }
    let rows = tx.query_and_commit(&sql, &params).await?;
    let Some(first) = rows.first() else {
        return Ok((None, Vec::new()));
    };
    let role = tenantry_core::Role::parse(first.try_get("caller_role")?)
        .map_err(|e| DbError::Other(e.into()))?;
    let events = rows
        .iter()
        .filter(|r| !matches!(r.try_get::<_, Option<Uuid>>("id"), Ok(None)))
        .map(Event::from_row)
        .collect::<Result<_, _>>()?;
    Ok((Some(role), events))
}

/// One event (cancelled ones too), if `user` is a member, and commits.
/// `(None, None)`: not a member; `(Some(role), None)`: no such event.
pub async fn get_for_member_and_commit(
    tx: Tx,
    tenant: Uuid,
    user: Uuid,
    id: Uuid,
) -> Result<(Option<tenantry_core::Role>, Option<Event>), DbError> {
    let sql = format!(
        "WITH r AS (SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $3)
         SELECT r.role AS caller_role, e.* FROM r LEFT JOIN LATERAL (
             SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id = $2
         ) e ON true"
    );
    let rows = tx.query_and_commit(&sql, &[&tenant, &id, &user]).await?;
    let Some(row) = rows.first() else {
        return Ok((None, None));
    };
    let role = tenantry_core::Role::parse(row.try_get("caller_role")?)
        .map_err(|e| DbError::Other(e.into()))?;
    let event = row
        .try_get::<_, Option<Uuid>>("id")?
        .is_some()
        .then(|| Event::from_row(row))
        .transpose()?;
    Ok((Some(role), event))
}

/// Reads an event that is not cancelled and locks it until the transaction
/// ends, so the edit or cancellation that follows sees no concurrent change.
pub async fn get_for_update(tx: &mut Tx, tenant: Uuid, id: Uuid) -> Result<Option<Event>, DbError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE tenant_id = $1 AND id = $2 AND cancelled_at IS NULL FOR UPDATE"
    );
    tx.query_opt(&sql, &[&tenant, &id])
        .await?
        .as_ref()
        .map(Event::from_row)
        .transpose()
}

/// An edit: `None` leaves a field as it is; `Some(None)` clears an optional
/// one.
#[derive(Debug, Clone, Default)]
pub struct EventPatch {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<Option<DateTime<Utc>>>,
    pub location_name: Option<Option<String>>,
}

/// Applies `patch` to an event that is not cancelled, and commits. The
/// CHECK on the dates refuses an end before the start (a conflict).
pub async fn update_and_commit(
    tx: Tx,
    tenant: Uuid,
    id: Uuid,
    patch: &EventPatch,
) -> Result<Option<Event>, DbError> {
    let sql = format!(
        "UPDATE events SET
             title = coalesce($3, title),
             description = CASE WHEN $4 THEN $5 ELSE description END,
             start_date = coalesce($6, start_date),
             end_date = CASE WHEN $7 THEN $8 ELSE end_date END,
             location_name = CASE WHEN $9 THEN $10 ELSE location_name END,
             updated_at = now()
         WHERE tenant_id = $1 AND id = $2 AND cancelled_at IS NULL
         RETURNING {EVENT_COLUMNS}"
    );
    let description = patch.description.clone().flatten();
    let end_date = patch.end_date.flatten();
    let location = patch.location_name.clone().flatten();
    let rows = tx
        .query_and_commit(
            &sql,
            &[
                &tenant,
                &id,
                &patch.title,
                &patch.description.is_some(),
                &description,
                &patch.start_date,
                &patch.end_date.is_some(),
                &end_date,
                &patch.location_name.is_some(),
                &location,
            ],
        )
        .await?;
    rows.first().map(Event::from_row).transpose()
}

/// Cancels an event (it leaves every upcoming list and the search) and
/// commits. False if it was not there or already cancelled.
pub async fn cancel_and_commit(tx: Tx, tenant: Uuid, id: Uuid) -> Result<bool, DbError> {
    let rows = tx
        .query_and_commit(
            "UPDATE events SET cancelled_at = now(), updated_at = now()
             WHERE tenant_id = $1 AND id = $2 AND cancelled_at IS NULL
             RETURNING id",
            &[&tenant, &id],
        )
        .await?;
    Ok(!rows.is_empty())
}
