//! The change log behind the live stream: appending changes, reading them in stream order, and
//! trimming what is past the retention.
//!
//! A change's position is (transaction id, change id) and only changes of transactions older
//! than every running one are read (see the migration `inbox_unread_stream`): a change that
//! becomes visible later always sorts after everything read before, so a reader that remembers
//! its last position never skips one.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

/// A place in the stream; its text form `<xid>-<id>` is the SSE event id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub xid: i64,
    pub id: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.xid, self.id)
    }
}

impl FromStr for Position {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (xid, id) = text.trim().split_once('-').ok_or(())?;
        let position = Position { xid: xid.parse().map_err(|_| ())?, id: id.parse().map_err(|_| ())? };
        if position.xid < 0 || position.id < 0 { Err(()) } else { Ok(position) }
    }
}

/// One change as streams see it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The position as text: the SSE event id.
    pub id: String,
    #[serde(skip)]
    pub position: Position,
    #[serde(skip)]
    pub tenant_id: Uuid,
    /// Only this agent's streams get it (a read cursor moved); `None`: the whole tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Uuid>,
    pub kind: String,
    pub conversation_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub payload: Value,
    pub at: DateTime<Utc>,
}

/// Appends a change in the writer's transaction; streams see it once that commits (and a
/// [`ChangeFeed::signal`](super::stream::ChangeFeed::signal) after the commit brings it at once).
pub async fn append(
    tx: &mut PgConnection,
    tenant: Uuid,
    kind: &str,
    conversation: Option<Uuid>,
    message: Option<Uuid>,
    agent: Option<Uuid>,
    payload: Value,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"INSERT INTO communications.changes (tenant_id, kind, conversation_id, message_id, agent_id, payload)
           VALUES ($1, $2, $3, $4, $5, $6)"#,
        tenant,
        kind,
        conversation,
        message,
        agent,
        payload,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

struct Row {
    xid: i64,
    id: i64,
    tenant_id: Uuid,
    agent_id: Option<Uuid>,
    kind: String,
    conversation_id: Option<Uuid>,
    message_id: Option<Uuid>,
    payload: Value,
    created_at: DateTime<Utc>,
}

impl From<Row> for Change {
    fn from(row: Row) -> Self {
        let position = Position { xid: row.xid, id: row.id };
        Change {
            id: position.to_string(),
            position,
            tenant_id: row.tenant_id,
            agent_id: row.agent_id,
            kind: row.kind,
            conversation_id: row.conversation_id,
            message_id: row.message_id,
            payload: row.payload,
            at: row.created_at,
        }
    }
}

/// Up to `limit` changes of every tenant after `after`, in stream order; and whether committed
/// changes beyond them wait for an older transaction to end (read again shortly).
pub async fn read_all(db: &mut PgConnection, after: Position, limit: i64) -> Result<(Vec<Change>, bool), ApiError> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT xid::text::bigint AS "xid!", id, tenant_id, agent_id, kind, conversation_id, message_id, payload, created_at
           FROM communications.changes
           WHERE (xid, id) > ($1::text::xid8, $2) AND xid < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY xid, id LIMIT $3"#,
        after.xid.to_string(),
        after.id,
        limit,
    )
    .fetch_all(&mut *db)
    .await?;
    let held_back = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM communications.changes
                          WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())) AS "held!""#,
    )
    .fetch_one(&mut *db)
    .await?;
    Ok((rows.into_iter().map(Change::from).collect(), held_back))
}

/// Up to `limit` changes of `tenant` after `after`, in stream order (a stream catching up).
pub async fn read_tenant(
    db: impl PgExecutor<'_>,
    tenant: Uuid,
    after: Position,
    limit: i64,
) -> Result<Vec<Change>, ApiError> {
    let rows = sqlx::query_as!(
        Row,
        r#"SELECT xid::text::bigint AS "xid!", id, tenant_id, agent_id, kind, conversation_id, message_id, payload, created_at
           FROM communications.changes
           WHERE tenant_id = $1 AND (xid, id) > ($2::text::xid8, $3)
             AND xid < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY xid, id LIMIT $4"#,
        tenant,
        after.xid.to_string(),
        after.id,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Change::from).collect())
}

/// The position of the newest change every reader can see now (or of the trimmed log's end): a
/// stream starts after it.
pub async fn head(db: &PgPool) -> Result<Position, ApiError> {
    let row = sqlx::query!(
        r#"SELECT xid::text::bigint AS "xid!", id FROM communications.changes
           WHERE xid < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY xid DESC, id DESC LIMIT 1"#,
    )
    .fetch_optional(db)
    .await?;
    let newest = row.map(|row| Position { xid: row.xid, id: row.id }).unwrap_or_default();
    Ok(newest.max(horizon(db).await?))
}

/// The newest position trimmed from the log: resuming from before it would miss changes.
pub async fn horizon(db: impl PgExecutor<'_>) -> Result<Position, ApiError> {
    let row = sqlx::query!(r#"SELECT xid::text::bigint AS "xid!", id FROM communications.change_horizon"#)
        .fetch_optional(db)
        .await?;
    Ok(row.map(|row| Position { xid: row.xid, id: row.id }).unwrap_or_default())
}

/// Deletes up to 10 000 changes written before `before` and moves the horizon past them;
/// returns how many.
pub async fn trim(db: impl PgExecutor<'_>, before: DateTime<Utc>) -> Result<u64, ApiError> {
    let row = sqlx::query!(
        r#"WITH gone AS (
               DELETE FROM communications.changes WHERE id IN
                   (SELECT id FROM communications.changes WHERE created_at < $1 ORDER BY id LIMIT 10000)
               RETURNING xid, id),
           newest AS (SELECT xid, id FROM gone ORDER BY xid DESC, id DESC LIMIT 1),
           moved AS (
               INSERT INTO communications.change_horizon (xid, id) SELECT xid, id FROM newest
               ON CONFLICT (singleton) DO UPDATE SET xid = EXCLUDED.xid, id = EXCLUDED.id
               WHERE (change_horizon.xid, change_horizon.id) < (EXCLUDED.xid, EXCLUDED.id))
           SELECT count(*) AS "count!" FROM gone"#,
        before,
    )
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(row.count).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_transaction_then_change_and_round_trip_as_text() {
        let a = Position { xid: 10, id: 99 };
        let b = Position { xid: 11, id: 3 };
        assert!(a < b);
        assert_eq!("10-99".parse::<Position>(), Ok(a));
        assert_eq!(b.to_string().parse::<Position>(), Ok(b));
        for bad in ["", "10", "x-1", "1-", "-1-2", "1-2-3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}
