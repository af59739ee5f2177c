//! A tenant's messaging policy: quiet hours and their time zone, the HELP answer, what a missed
//! call does (forwarding, the auto-reply) and how the SMS booking dialogue books. One row per
//! tenant; a tenant without one has the defaults below.
//!
//! - `quiet.rs`: the quiet-hours window and the next allowed minute across daylight saving.
//! - `http.rs`: `GET` and `PATCH /api/v1/messaging-policy` (a JSON merge patch).

pub mod http;
pub mod quiet;

use chrono::NaiveTime;
use chrono_tz::Tz;
use kernel::error::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

pub use quiet::QuietHours;

/// What a missed call does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MissedCallPolicy {
    /// Answer missed calls with an SMS.
    pub enabled: bool,
    /// The business's phone (E.164) an incoming call rings; none: calls are refused (busy) and
    /// count as missed at once.
    pub forward_to: Option<String>,
    /// How long the forwarded call rings (5 to 60 s).
    pub dial_timeout_secs: u32,
    /// An answered call shorter than this still counts as missed (0 to 60 s; voicemail that
    /// picked up and hung up, a caller who gave up at once).
    pub short_call_secs: u32,
    /// A template (SMS variant) for the auto-reply; variables `slots` (the proposals as text),
    /// `business`. None: `text`.
    pub template: Option<String>,
    /// The auto-reply when no template is named; `{slots}` is replaced by the proposals.
    pub text: String,
    /// What the caller hears before the line closes (none: silence).
    pub say: Option<String>,
}

impl Default for MissedCallPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            forward_to: None,
            dial_timeout_secs: 20,
            short_call_secs: 5,
            template: None,
            text: "Sorry we missed your call! {slots}".to_owned(),
            say: Some("Sorry we missed your call. We are sending you a text message now.".to_owned()),
        }
    }
}

/// How the SMS dialogue books.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BookingPolicy {
    /// Offer slots in the auto-reply and book from the answer.
    pub enabled: bool,
    /// The service booked (fulfillment's id); none: the tenant's oldest active service.
    pub service_id: Option<Uuid>,
    /// How many slots to offer (1 to 9).
    pub slots: u8,
    /// Ask "reply YES" before booking a chosen slot (it is held meanwhile).
    pub confirm: bool,
    /// The earliest slot offered starts this long after now (0 to 10080 minutes).
    pub lead_minutes: u32,
    /// Once booked, ask for the visit's address (home services; Jobber needs one).
    pub ask_address: bool,
}

impl Default for BookingPolicy {
    fn default() -> Self {
        Self { enabled: true, service_id: None, slots: 3, confirm: false, lead_minutes: 60, ask_address: true }
    }
}

/// The API's view and input of the policy (a merge patch applies to this shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyView {
    /// IANA zone for quiet hours when the contact has none.
    pub time_zone: String,
    /// Local `HH:MM` start and end; null: no quiet hours.
    pub quiet_hours: Option<QuietHoursView>,
    /// Whether transactional messages (the urgent lane) wait for quiet hours to end too.
    pub quiet_hours_transactional: bool,
    /// The answer to HELP / INFO.
    pub help_text: String,
    pub missed_call: MissedCallPolicy,
    pub booking: BookingPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursView {
    pub start: String,
    pub end: String,
}

/// The policy, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub time_zone: Tz,
    pub quiet_hours: Option<QuietHours>,
    pub quiet_transactional: bool,
    pub help_text: String,
    pub missed_call: MissedCallPolicy,
    pub booking: BookingPolicy,
}

pub const DEFAULT_HELP: &str = "Reply STOP to stop receiving messages, START to receive them again.";

impl Default for Policy {
    fn default() -> Self {
        Self {
            time_zone: Tz::UTC,
            quiet_hours: Some(QuietHours { start: hm(21, 0), end: hm(8, 0) }),
            quiet_transactional: false,
            help_text: DEFAULT_HELP.to_owned(),
            missed_call: MissedCallPolicy::default(),
            booking: BookingPolicy::default(),
        }
    }
}

fn hm(hour: u32, minute: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or_default()
}

impl Policy {
    pub fn view(&self) -> PolicyView {
        PolicyView {
            time_zone: self.time_zone.name().to_owned(),
            quiet_hours: self.quiet_hours.map(|q| QuietHoursView {
                start: q.start.format("%H:%M").to_string(),
                end: q.end.format("%H:%M").to_string(),
            }),
            quiet_hours_transactional: self.quiet_transactional,
            help_text: self.help_text.clone(),
            missed_call: self.missed_call.clone(),
            booking: self.booking.clone(),
        }
    }

    /// Checks a view and makes it a policy; errors name the field.
    pub fn parse(view: PolicyView) -> Result<Self, ApiError> {
        let time_zone: Tz =
            view.time_zone.parse().map_err(|_| ApiError::validation("time_zone", "must be an IANA zone name"))?;
        let time = |field: &str, text: &str| {
            NaiveTime::parse_from_str(text, "%H:%M")
                .map_err(|_| ApiError::validation(field, "must be a local time HH:MM"))
        };
        let quiet_hours = match &view.quiet_hours {
            Some(q) => {
                Some(QuietHours { start: time("quiet_hours.start", &q.start)?, end: time("quiet_hours.end", &q.end)? })
            }
            None => None,
        };
        let help_text = view.help_text.trim().to_owned();
        if help_text.is_empty() || help_text.chars().count() > 320 {
            return Err(ApiError::validation("help_text", "must be 1 to 320 characters"));
        }
        let call = &view.missed_call;
        if let Some(number) = &call.forward_to {
            crate::channels::validate::e164("missed_call.forward_to", number)?;
        }
        if !(5..=60).contains(&call.dial_timeout_secs) {
            return Err(ApiError::validation("missed_call.dial_timeout_secs", "must be 5 to 60"));
        }
        if call.short_call_secs > 60 {
            return Err(ApiError::validation("missed_call.short_call_secs", "must be 0 to 60"));
        }
        if call.text.trim().is_empty() || call.text.chars().count() > 640 {
            return Err(ApiError::validation("missed_call.text", "must be 1 to 640 characters"));
        }
        if call.say.as_ref().is_some_and(|say| say.chars().count() > 500) {
            return Err(ApiError::validation("missed_call.say", "must be at most 500 characters"));
        }
        if call.template.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ApiError::validation("missed_call.template", "must name a template"));
        }
        let booking = &view.booking;
        if !(1..=9).contains(&booking.slots) {
            return Err(ApiError::validation("booking.slots", "must be 1 to 9"));
        }
        if booking.lead_minutes > 10_080 {
            return Err(ApiError::validation("booking.lead_minutes", "must be 0 to 10080"));
        }
        Ok(Self {
            time_zone,
            quiet_hours,
            quiet_transactional: view.quiet_hours_transactional,
            help_text,
            missed_call: view.missed_call,
            booking: view.booking,
        })
    }
}

/// The tenant's policy (the defaults when it has none).
pub async fn load(db: impl PgExecutor<'_>, tenant: Uuid) -> Result<Policy, ApiError> {
    let row = sqlx::query!(
        r#"SELECT time_zone, quiet_start, quiet_end, quiet_transactional, help_text, missed_call, booking
           FROM communications.messaging_policies WHERE tenant_id = $1"#,
        tenant,
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(Policy::default()) };
    Ok(Policy {
        time_zone: row.time_zone.parse().unwrap_or(Tz::UTC),
        quiet_hours: match (row.quiet_start, row.quiet_end) {
            (Some(start), Some(end)) => Some(QuietHours { start, end }),
            _ => None,
        },
        quiet_transactional: row.quiet_transactional,
        help_text: row.help_text.unwrap_or_else(|| DEFAULT_HELP.to_owned()),
        missed_call: serde_json::from_value(row.missed_call).unwrap_or_default(),
        booking: serde_json::from_value(row.booking).unwrap_or_default(),
    })
}

/// A tenant's quiet-hours settings, as the accept path needs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct QuietPolicy {
    pub time_zone: Tz,
    pub quiet: Option<QuietHours>,
    /// Transactional messages wait too.
    pub transactional: bool,
}

/// How long a process keeps a tenant's quiet-hours settings: a change made through another
/// process applies within this time (this process's own changes at once).
const QUIET_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

type QuietCache = std::sync::Mutex<std::collections::HashMap<Uuid, (std::time::Instant, QuietPolicy)>>;

fn quiet_cache() -> &'static QuietCache {
    static CACHE: std::sync::OnceLock<QuietCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Quiet hours of several tenants at once (the accept path's batch), cached briefly: tenants
/// without a row have the defaults.
pub(crate) async fn quiet_hours_of(
    db: impl PgExecutor<'_>,
    tenants: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, QuietPolicy>, ApiError> {
    let now = std::time::Instant::now();
    let mut found = std::collections::HashMap::new();
    let mut missing = Vec::new();
    if let Ok(cache) = quiet_cache().lock() {
        for tenant in tenants {
            match cache.get(tenant) {
                Some((at, policy)) if now.duration_since(*at) < QUIET_CACHE_TTL => {
                    found.insert(*tenant, *policy);
                }
                _ => missing.push(*tenant),
            }
        }
    } else {
        missing.extend_from_slice(tenants);
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let rows = sqlx::query!(
        r#"SELECT tenant_id, time_zone, quiet_start, quiet_end, quiet_transactional
           FROM communications.messaging_policies WHERE tenant_id = ANY($1)"#,
        &missing,
    )
    .fetch_all(db)
    .await?;
    let default = Policy::default();
    let mut loaded: std::collections::HashMap<Uuid, QuietPolicy> = missing
        .iter()
        .map(|tenant| {
            let policy = QuietPolicy {
                time_zone: default.time_zone,
                quiet: default.quiet_hours,
                transactional: default.quiet_transactional,
            };
            (*tenant, policy)
        })
        .collect();
    for row in rows {
        let quiet = match (row.quiet_start, row.quiet_end) {
            (Some(start), Some(end)) => Some(QuietHours { start, end }),
            _ => None,
        };
        let policy = QuietPolicy {
            time_zone: row.time_zone.parse().unwrap_or(Tz::UTC),
            quiet,
            transactional: row.quiet_transactional,
        };
        loaded.insert(row.tenant_id, policy);
    }
    if let Ok(mut cache) = quiet_cache().lock() {
        if cache.len() > 10_000 {
            cache.clear();
        }
        for (tenant, policy) in &loaded {
            cache.insert(*tenant, (now, *policy));
        }
    }
    found.extend(loaded);
    Ok(found)
}

/// Forgets the cached settings of `tenant` (its policy just changed in this process).
pub(crate) fn forget_cached(tenant: Uuid) {
    if let Ok(mut cache) = quiet_cache().lock() {
        cache.remove(&tenant);
    }
}

/// Stores the tenant's policy.
pub async fn save(db: impl PgExecutor<'_>, tenant: Uuid, policy: &Policy) -> Result<(), ApiError> {
    sqlx::query!(
        r#"INSERT INTO communications.messaging_policies
               (tenant_id, time_zone, quiet_start, quiet_end, quiet_transactional, help_text, missed_call, booking)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (tenant_id) DO UPDATE SET time_zone = $2, quiet_start = $3, quiet_end = $4,
               quiet_transactional = $5, help_text = $6, missed_call = $7, booking = $8, updated_at = now()"#,
        tenant,
        policy.time_zone.name(),
        policy.quiet_hours.map(|q| q.start),
        policy.quiet_hours.map(|q| q.end),
        policy.quiet_transactional,
        policy.help_text,
        serde_json::to_value(&policy.missed_call).map_err(ApiError::internal)?,
        serde_json::to_value(&policy.booking).map_err(ApiError::internal)?,
    )
    .execute(db)
    .await?;
    forget_cached(tenant);
    Ok(())
}
