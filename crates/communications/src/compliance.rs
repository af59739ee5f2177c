//! Consent as the domain's rule, per messaging endpoint (tenant, channel, address), whatever the
//! provider: opt-out and opt-in keywords, suppressions checked before anything is accepted, and
//! an audit row for every change (`communications.consent_events`).
//!
//! - Keywords (single words, any case, blanks around ignored — "STOP PLEASE" is not one): STOP,
//!   STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT suppress the sender for the tenant;
//!   START, YES, UNSTOP lift it; HELP and INFO get the tenant's help text (the dialogue worker
//!   sends it). Applied in the inbound webhook's transaction, so an opt-out is durable before
//!   the provider gets its 200.
//! - Twilio's 21610 ("unsubscribed recipient") on a send or a status callback suppresses too.
//! - `http.rs`-style routes here: suppressions (list, add, lift) and the consent history.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::Communications;
use crate::messages::model::Channel;

/// What a one-word inbound text means for consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
    Help,
}

pub const OPT_OUT: [&str; 8] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"];
pub const OPT_IN: [&str; 3] = ["START", "YES", "UNSTOP"];
pub const HELP: [&str; 2] = ["HELP", "INFO"];

/// The keyword `body` is, if it is exactly one (trailing punctuation allowed: "Stop.").
pub fn classify(body: &str) -> Option<Keyword> {
    let word = body.trim().trim_end_matches(['.', '!']).trim();
    if word.is_empty() || word.contains(char::is_whitespace) {
        return None;
    }
    let word = word.to_uppercase();
    if OPT_OUT.contains(&word.as_str()) {
        Some(Keyword::OptOut)
    } else if OPT_IN.contains(&word.as_str()) {
        Some(Keyword::OptIn)
    } else if HELP.contains(&word.as_str()) {
        Some(Keyword::Help)
    } else {
        None
    }
}

/// Who changed consent.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// The contact wrote this keyword.
    Keyword(&'a str),
    /// The provider refused a send with this code (Twilio 21610).
    Provider(&'a str),
    /// An operator key or agent through the API.
    Api(&'a str),
}

impl Source<'_> {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Self::Keyword(word) => ("keyword", word),
            Self::Provider(code) => ("provider", code),
            Self::Api(actor) => ("api", actor),
        }
    }
}

/// Suppresses `address` on `channel` for the tenant and records why; repeating it keeps the
/// first reason's row and adds an audit row.
pub async fn opt_out(
    tx: &mut PgConnection,
    tenant: Uuid,
    channel: Channel,
    address: &str,
    source: Source<'_>,
    message: Option<Uuid>,
) -> Result<(), ApiError> {
    let (kind, detail) = source.parts();
    let reason = match source {
        Source::Keyword(word) => format!("opted out by replying {}", word.trim().to_uppercase()),
        Source::Provider(code) => format!("the provider reports an unsubscribed recipient ({code})"),
        Source::Api(actor) => format!("opted out through the API by {actor}"),
    };
    crate::messages::repository::suppress(&mut *tx, tenant, channel, address, &reason).await?;
    audit(tx, tenant, channel, address, "opt_out", kind, detail, message).await?;
    metrics::counter!("consent_changes_total", "action" => "opt_out", "source" => kind).increment(1);
    Ok(())
}

/// Lifts the suppression of `address` on `channel` (if any) and records the opt-in.
pub async fn opt_in(
    tx: &mut PgConnection,
    tenant: Uuid,
    channel: Channel,
    address: &str,
    source: Source<'_>,
    message: Option<Uuid>,
) -> Result<bool, ApiError> {
    let (kind, detail) = source.parts();
    let lifted = sqlx::query!(
        "DELETE FROM communications.suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3",
        tenant,
        channel.as_str(),
        address.to_lowercase(),
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    audit(tx, tenant, channel, address, "opt_in", kind, detail, message).await?;
    metrics::counter!("consent_changes_total", "action" => "opt_in", "source" => kind).increment(1);
    Ok(lifted)
}

#[allow(clippy::too_many_arguments)]
async fn audit(
    tx: &mut PgConnection,
    tenant: Uuid,
    channel: Channel,
    address: &str,
    action: &str,
    source: &str,
    detail: &str,
    message: Option<Uuid>,
) -> Result<(), ApiError> {
    sqlx::query!(
        r#"INSERT INTO communications.consent_events (id, tenant_id, channel, address, action, source, detail, message_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        Uuid::now_v7(),
        tenant,
        channel.as_str(),
        address,
        action,
        source,
        detail,
        message,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Why each of `endpoints` (tenant, channel, address) is suppressed; those that are not are absent.
pub(crate) async fn suppressions_of(
    tx: &mut PgConnection,
    endpoints: &[(Uuid, Channel, String)],
) -> Result<HashMap<(Uuid, Channel, String), String>, ApiError> {
    if endpoints.is_empty() {
        return Ok(HashMap::new());
    }
    let tenants: Vec<Uuid> = endpoints.iter().map(|e| e.0).collect();
    let channels: Vec<String> = endpoints.iter().map(|e| e.1.as_str().to_owned()).collect();
    let addresses: Vec<String> = endpoints.iter().map(|e| e.2.to_lowercase()).collect();
    let rows = sqlx::query!(
        r#"SELECT s.tenant_id, s.channel, s.address, s.reason
           FROM communications.suppressions s
           JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS e (tenant_id, channel, address)
             ON s.tenant_id = e.tenant_id AND s.channel = e.channel AND s.address = e.address"#,
        &tenants,
        &channels,
        &addresses,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Channel::parse(&r.channel).map(|channel| ((r.tenant_id, channel, r.address), r.reason)))
        .collect())
}

/// What an inbound SMS text means for consent, applied in the webhook's transaction: opt-outs
/// and opt-ins take effect, and an active dialogue stops at an opt-out. Answers the keyword.
pub(crate) async fn on_inbound_text(
    tx: &mut PgConnection,
    tenant: Uuid,
    conversation: Uuid,
    message: Uuid,
    from: &str,
    body: &str,
) -> Result<Option<Keyword>, ApiError> {
    let keyword = classify(body);
    match keyword {
        Some(Keyword::OptOut) => {
            opt_out(tx, tenant, Channel::Sms, from, Source::Keyword(body.trim()), Some(message)).await?;
            crate::dialogue::stop(tx, conversation, "stopped").await?;
        }
        Some(Keyword::OptIn) => {
            opt_in(tx, tenant, Channel::Sms, from, Source::Keyword(body.trim()), Some(message)).await?;
        }
        Some(Keyword::Help) | None => {}
    }
    Ok(keyword)
}

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new()
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(lift_suppression))
        .routes(routes!(consent_history))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionView {
    pub channel: Channel,
    pub address: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuppressionList {
    pub items: Vec<SuppressionView>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointFilter {
    pub channel: Option<Channel>,
    /// Exact address (E.164 phone, lower-case email).
    pub address: Option<String>,
}

/// The tenant's suppressed addresses, newest first (at most 500).
#[utoipa::path(
    get, path = "/api/v1/suppressions", tag = "compliance", params(EndpointFilter),
    responses((status = 200, body = SuppressionList))
)]
pub async fn list_suppressions(
    State(module): State<Communications>,
    caller: Caller,
    Query(filter): Query<EndpointFilter>,
) -> Result<Json<SuppressionList>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT channel, address, reason, created_at FROM communications.suppressions
           WHERE tenant_id = $1 AND ($2::text IS NULL OR channel = $2) AND ($3::text IS NULL OR address = $3)
           ORDER BY created_at DESC LIMIT 500"#,
        caller.tenant_id.0,
        filter.channel.map(Channel::as_str),
        filter.address,
    )
    .fetch_all(&module.pool)
    .await?;
    let items = rows
        .into_iter()
        .filter_map(|r| {
            Channel::parse(&r.channel).map(|channel| SuppressionView {
                channel,
                address: r.address,
                reason: r.reason,
                created_at: r.created_at,
            })
        })
        .collect();
    Ok(Json(SuppressionList { items }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionInput {
    pub channel: Channel,
    pub address: String,
}

fn endpoint(channel: Channel, address: &str) -> Result<String, ApiError> {
    match channel {
        Channel::Sms | Channel::Whatsapp => crate::channels::validate::e164("address", address.trim()),
        Channel::Email if address.contains('@') => Ok(address.trim().to_lowercase()),
        Channel::Email => Err(ApiError::validation("address", "is not an email address")),
        Channel::Webchat => Err(ApiError::validation("channel", "webchat visitors cannot be suppressed")),
    }
}

/// Who acted, for audit trails: an agent by id, or an operator key.
pub(crate) fn actor(caller: &Caller) -> String {
    match caller.agent_id() {
        Some(agent) => format!("agent {}", agent.0),
        None => "an operator key".to_owned(),
    }
}

/// Suppresses an address (the contact asked by other means): audited as `api`.
#[utoipa::path(
    post, path = "/api/v1/suppressions", tag = "compliance", request_body = SuppressionInput,
    responses((status = 201, body = SuppressionView), (status = 422, body = ErrorBody))
)]
pub async fn add_suppression(
    State(module): State<Communications>,
    caller: Caller,
    Json(input): Json<SuppressionInput>,
) -> Result<(StatusCode, Json<SuppressionView>), ApiError> {
    let address = endpoint(input.channel, &input.address)?;
    let tenant = caller.tenant_id.0;
    let who = actor(&caller);
    let mut tx = module.pool.begin().await?;
    opt_out(&mut tx, tenant, input.channel, &address, Source::Api(&who), None).await?;
    let row = sqlx::query!(
        "SELECT reason, created_at FROM communications.suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3",
        tenant,
        input.channel.as_str(),
        address,
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let view = SuppressionView { channel: input.channel, address, reason: row.reason, created_at: row.created_at };
    Ok((StatusCode::CREATED, Json(view)))
}

/// Lifts a suppression (the contact opted in again by other means): audited as `api`.
#[utoipa::path(
    delete, path = "/api/v1/suppressions/{channel}/{address}", tag = "compliance",
    params(("channel" = String, Path), ("address" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn lift_suppression(
    State(module): State<Communications>,
    caller: Caller,
    Path((channel, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let channel = Channel::parse(&channel).ok_or_else(|| ApiError::validation("channel", "unknown channel"))?;
    let address = endpoint(channel, &address)?;
    let who = actor(&caller);
    let mut tx = module.pool.begin().await?;
    if !opt_in(&mut tx, caller.tenant_id.0, channel, &address, Source::Api(&who), None).await? {
        return Err(ApiError::NotFound("suppression"));
    }
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentEventView {
    pub id: Uuid,
    pub channel: Channel,
    pub address: String,
    /// opt_out or opt_in.
    pub action: String,
    /// keyword, provider or api.
    pub source: String,
    /// The keyword, the provider's code or who.
    pub detail: String,
    pub message_id: Option<Uuid>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentHistory {
    pub items: Vec<ConsentEventView>,
}

/// Every consent change of the tenant (or of one address), newest first (at most 500).
#[utoipa::path(
    get, path = "/api/v1/consent-events", tag = "compliance", params(EndpointFilter),
    responses((status = 200, body = ConsentHistory))
)]
pub async fn consent_history(
    State(module): State<Communications>,
    caller: Caller,
    Query(filter): Query<EndpointFilter>,
) -> Result<Json<ConsentHistory>, ApiError> {
    let rows = sqlx::query!(
        r#"SELECT id, channel, address, action, source, detail, message_id, occurred_at
           FROM communications.consent_events
           WHERE tenant_id = $1 AND ($2::text IS NULL OR channel = $2) AND ($3::text IS NULL OR address = $3)
           ORDER BY occurred_at DESC, id DESC LIMIT 500"#,
        caller.tenant_id.0,
        filter.channel.map(Channel::as_str),
        filter.address,
    )
    .fetch_all(&module.pool)
    .await?;
    let items = rows
        .into_iter()
        .filter_map(|r| {
            Channel::parse(&r.channel).map(|channel| ConsentEventView {
                id: r.id,
                channel,
                address: r.address,
                action: r.action,
                source: r.source,
                detail: r.detail,
                message_id: r.message_id,
                occurred_at: r.occurred_at,
            })
        })
        .collect();
    Ok(Json(ConsentHistory { items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_single_words_in_any_case() {
        for word in OPT_OUT {
            assert_eq!(classify(word), Some(Keyword::OptOut), "{word}");
            assert_eq!(classify(&format!("  {}\n", word.to_lowercase())), Some(Keyword::OptOut), "{word}");
        }
        for word in OPT_IN {
            assert_eq!(classify(&word.to_lowercase()), Some(Keyword::OptIn), "{word}");
        }
        assert_eq!(classify("Help"), Some(Keyword::Help));
        assert_eq!(classify("info"), Some(Keyword::Help));
        assert_eq!(classify("Stop."), Some(Keyword::OptOut));
        assert_eq!(classify("STOP PLEASE"), None);
        assert_eq!(classify("OPT OUT"), None, "Twilio does not take it with a space");
        assert_eq!(classify("2"), None);
        assert_eq!(classify(""), None);
    }
}
