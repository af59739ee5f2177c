//! Cron triggers: a named event with a fixed payload, emitted on a schedule.
//!
//! Like Hasura's cron triggers, each firing is an event (`data.scheduled_time`, `data.payload`)
//! that trigger rules on the cron trigger's name turn into messages. Every serve and worker
//! process polls for due triggers; a row lock (`SKIP LOCKED`) lets one process take each, and the
//! event id `cron:<trigger id>:<scheduled time>` makes a firing count once even if a process dies
//! between emitting it and advancing the schedule. A trigger that was due several times while
//! nothing ran fires once, for its latest missed time, rather than in a burst.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use kernel::error::ApiError;
use kernel::ids::TenantId;
use kernel::pagination::PageRequest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::event::cron_event;
use crate::Communications;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CronTrigger {
    pub id: Uuid,
    /// The event name it emits; trigger rules match on it.
    pub name: String,
    /// Five fields, UTC: minute hour day-of-month month day-of-week, e.g. `0 9 * * MON-FRI`.
    pub schedule: String,
    pub payload: Value,
    pub enabled: bool,
    pub next_run_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CronInput {
    pub name: String,
    pub schedule: String,
    /// Passed to the rules as `data.payload`; an object.
    pub payload: Option<Value>,
    pub enabled: Option<bool>,
}

/// A parsed five-field cron expression, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct CronSchedule(cron::Schedule);

impl CronSchedule {
    /// Standard five-field cron (what Hasura and crontab take), for API input; the seconds field
    /// the `cron` crate expects is fixed at zero.
    pub fn parse(expression: &str) -> Result<Self, ApiError> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ApiError::validation(
                "schedule",
                "must have five fields: minute hour day-of-month month day-of-week (UTC)",
            ));
        }
        Self::from_fields(&fields).map_err(|message| ApiError::validation("schedule", message))
    }

    /// For configuration: five fields, or six with seconds first (`*/5 * * * * *`: every 5 s).
    pub fn parse_config(expression: &str) -> Result<Self, String> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        match fields.len() {
            5 => Self::from_fields(&fields),
            6 => Self::compile(&fields.join(" ")),
            _ => Err("must have five fields, or six with seconds first".to_owned()),
        }
    }

    fn from_fields(five: &[&str]) -> Result<Self, String> {
        Self::compile(&format!("0 {}", five.join(" ")))
    }

    fn compile(six: &str) -> Result<Self, String> {
        let schedule =
            cron::Schedule::from_str(six).map_err(|error| format!("is not a valid cron expression: {error}"))?;
        let parsed = Self(schedule);
        if parsed.next_after(Utc::now()).is_none() {
            return Err("never fires".to_owned());
        }
        Ok(parsed)
    }

    /// The first scheduled time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.after(&after).next()
    }

    /// Sleeps until the next scheduled time (forever if there is none).
    pub async fn sleep_until_next(&self) {
        match self.next_after(Utc::now()) {
            Some(at) => tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await,
            None => std::future::pending().await,
        }
    }
}

/// A checked [`CronInput`], as stored.
#[derive(Debug)]
pub struct CronDefinition {
    name: String,
    /// The expression with its whitespace normalised.
    schedule: String,
    payload: Value,
    enabled: bool,
    /// The first run from now.
    next_run_at: DateTime<Utc>,
}

impl CronInput {
    pub fn validate(&self) -> Result<CronDefinition, ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ApiError::validation("name", "must be 1-200 characters"));
        }
        if self.payload.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(ApiError::validation("payload", "must be a JSON object"));
        }
        let next_run_at = CronSchedule::parse(&self.schedule)?
            .next_after(Utc::now())
            .ok_or_else(|| ApiError::validation("schedule", "never fires"))?;
        Ok(CronDefinition {
            name: name.to_owned(),
            schedule: self.schedule.split_whitespace().collect::<Vec<_>>().join(" "),
            payload: self.payload.clone().unwrap_or_else(|| serde_json::json!({})),
            enabled: self.enabled.unwrap_or(true),
            next_run_at,
        })
    }
}

fn unique_name(error: sqlx::Error) -> ApiError {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::conflict(Some("name"), "a cron trigger with this name exists")
        }
        other => other.into(),
    }
}

pub async fn insert(db: impl PgExecutor<'_>, tenant: TenantId, cron: &CronDefinition) -> Result<CronTrigger, ApiError> {
    sqlx::query_as!(
        CronTrigger,
        r#"INSERT INTO communications.cron_triggers (id, tenant_id, name, schedule, payload, enabled, next_run_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING id, name, schedule, payload, enabled, next_run_at, last_run_at, created_at, updated_at"#,
        Uuid::now_v7(),
        tenant.0,
        cron.name,
        cron.schedule,
        cron.payload,
        cron.enabled,
        cron.next_run_at,
    )
    .fetch_one(db)
    .await
    .map_err(unique_name)
}

/// Replaces a trigger as a whole; its next run is computed afresh from the new schedule.
pub async fn replace(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Uuid,
    cron: &CronDefinition,
) -> Result<CronTrigger, ApiError> {
    sqlx::query_as!(
        CronTrigger,
        r#"UPDATE communications.cron_triggers
           SET name = $3, schedule = $4, payload = $5, enabled = $6, next_run_at = $7, updated_at = now()
           WHERE tenant_id = $1 AND id = $2
           RETURNING id, name, schedule, payload, enabled, next_run_at, last_run_at, created_at, updated_at"#,
        tenant.0,
        id,
        cron.name,
        cron.schedule,
        cron.payload,
        cron.enabled,
        cron.next_run_at,
    )
    .fetch_optional(db)
    .await
    .map_err(unique_name)?
    .ok_or(ApiError::NotFound("cron trigger"))
}

pub async fn find(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<CronTrigger, ApiError> {
    sqlx::query_as!(
        CronTrigger,
        r#"SELECT id, name, schedule, payload, enabled, next_run_at, last_run_at, created_at, updated_at
           FROM communications.cron_triggers WHERE tenant_id = $1 AND id = $2"#,
        tenant.0,
        id,
    )
    .fetch_optional(db)
    .await?
    .ok_or(ApiError::NotFound("cron trigger"))
}

pub async fn list(db: impl PgExecutor<'_>, tenant: TenantId, page: PageRequest) -> Result<Vec<CronTrigger>, ApiError> {
    Ok(sqlx::query_as!(
        CronTrigger,
        r#"SELECT id, name, schedule, payload, enabled, next_run_at, last_run_at, created_at, updated_at
           FROM communications.cron_triggers
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"#,
        tenant.0,
        page.after,
        page.fetch_limit(),
    )
    .fetch_all(db)
    .await?)
}

pub async fn delete(db: impl PgExecutor<'_>, tenant: TenantId, id: Uuid) -> Result<(), ApiError> {
    let deleted =
        sqlx::query!("DELETE FROM communications.cron_triggers WHERE tenant_id = $1 AND id = $2", tenant.0, id)
            .execute(db)
            .await?
            .rows_affected();
    if deleted == 0 { Err(ApiError::NotFound("cron trigger")) } else { Ok(()) }
}

struct Due {
    id: Uuid,
    tenant_id: Uuid,
    name: String,
    schedule: String,
    payload: Value,
    next_run_at: DateTime<Utc>,
}

impl Communications {
    /// Fires every cron trigger that is due (any tenant); returns how many fired.
    pub async fn fire_due_cron_triggers(&self) -> Result<usize, ApiError> {
        let mut fired = 0;
        // One trigger per transaction, so a slow or failing one does not hold the others.
        while self.fire_next_due().await? {
            fired += 1;
        }
        Ok(fired)
    }

    async fn fire_next_due(&self) -> Result<bool, ApiError> {
        let mut tx = self.pool.begin().await?;
        let due = sqlx::query_as!(
            Due,
            r#"SELECT id, tenant_id, name, schedule, payload, next_run_at FROM communications.cron_triggers
               WHERE enabled AND next_run_at <= now() ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED"#
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(due) = due else { return Ok(false) };
        let now = Utc::now();
        let schedule = CronSchedule::parse(&due.schedule)?;
        // The latest time that was due: after downtime it fires once, not once per missed time.
        let mut fire_at = due.next_run_at;
        while let Some(later) = schedule.next_after(fire_at).filter(|t| *t <= now) {
            fire_at = later;
        }
        let event =
            cron_event(format!("cron:{}:{}", due.id, fire_at.timestamp()), due.name.clone(), fire_at, due.payload);
        // Emitted in its own transaction, idempotent by event id: if this process dies before
        // the schedule advances, the next one finds the event processed and just advances it.
        // A failure (the database, say) leaves the schedule where it is: the next poll retries.
        let outcome = self.ingest_event(TenantId(due.tenant_id), event).await?;
        tracing::info!(
            tenant_id = %due.tenant_id, cron_trigger_id = %due.id, name = %due.name, scheduled_time = %fire_at,
            messages = outcome.messages.len(), skipped = outcome.skipped.len(), duplicate = outcome.duplicate,
            "cron trigger fired"
        );
        let next = schedule.next_after(now.max(fire_at));
        sqlx::query!(
            r#"UPDATE communications.cron_triggers
               SET last_run_at = $2, next_run_at = coalesce($3, next_run_at), enabled = enabled AND $3 IS NOT NULL
               WHERE id = $1"#,
            due.id,
            fire_at,
            next,
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Polls for due cron triggers until the task is aborted.
pub async fn run(module: Communications, poll: std::time::Duration) {
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = module.fire_due_cron_triggers().await {
            tracing::warn!(%error, "firing cron triggers failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute_in_utc() {
        let daily = CronSchedule::parse("0 6 * * MON-FRI").unwrap();
        // Friday 07:00 → Monday 06:00.
        assert_eq!(daily.next_after(at("2026-11-20T07:00:00Z")), Some(at("2026-11-23T06:00:00Z")));
        assert_eq!(daily.next_after(at("2026-11-23T05:59:59Z")), Some(at("2026-11-23T06:00:00Z")));
        assert_eq!(daily.next_after(at("2026-11-23T06:00:00Z")), Some(at("2026-11-24T06:00:00Z")), "strictly after");
    }

    #[test]
    fn configuration_may_add_seconds_but_the_api_may_not() {
        let every_second = CronSchedule::parse_config("* * * * * *").unwrap();
        assert_eq!(every_second.next_after(at("2026-11-22T10:00:00Z")), Some(at("2026-11-22T10:00:01Z")));
        let minutely = CronSchedule::parse_config("*/5 * * * *").unwrap();
        assert_eq!(minutely.next_after(at("2026-11-22T10:01:30Z")), Some(at("2026-11-22T10:05:00Z")));
        assert!(CronSchedule::parse("* * * * * *").is_err());
        for bad in ["", "* * * *", "61 * * * *", "0 0 30 2 *", "0 0 * * * * * *", "every minute"] {
            assert!(CronSchedule::parse_config(bad).is_err(), "{bad}");
        }
    }
}
