//! Quotes from local rules: the service's price plus the surcharges whose weekdays and local
//! time window contain the appointment's start (in the resource's time zone). No vendor call.

use axum::extract::State;
use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, Query};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::services::{self, ServiceView, SurchargeView};
use crate::{Fulfillment, resources};

pub fn router() -> OpenApiRouter<Fulfillment> {
    OpenApiRouter::new().routes(routes!(quote))
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuoteLine {
    pub name: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Quote {
    pub service_id: Uuid,
    pub start: DateTime<Utc>,
    pub base_cents: i64,
    pub surcharges: Vec<QuoteLine>,
    pub total_cents: i64,
    pub currency: String,
}

/// The price of `service` starting at `start`, judged in `tz`.
pub fn compute(service: &ServiceView, rules: &[SurchargeView], tz: Tz, start: DateTime<Utc>) -> Quote {
    let local = start.with_timezone(&tz);
    let weekday = local.weekday().number_from_monday() as i16;
    let minute = (local.hour() * 60 + local.minute()) as u16;
    let mut lines = Vec::new();
    for rule in rules.iter().filter(|r| r.service_id.is_none_or(|s| s == service.id)) {
        let Some(window) = crate::schedule::Window::parse(&rule.starts, &rule.ends) else { continue };
        if rule.weekdays.contains(&weekday) && window.starts <= minute && minute < window.ends {
            let amount = match (rule.percent, rule.amount_cents) {
                (Some(percent), _) => service.price_cents * i64::from(percent) / 100,
                (None, Some(amount)) => amount,
                (None, None) => 0,
            };
            lines.push(QuoteLine { name: rule.name.clone(), amount_cents: amount });
        }
    }
    let total = service.price_cents + lines.iter().map(|l| l.amount_cents).sum::<i64>();
    Quote {
        service_id: service.id,
        start,
        base_cents: service.price_cents,
        surcharges: lines,
        total_cents: total,
        currency: service.currency.clone(),
    }
}

pub(crate) async fn price(
    db: &sqlx::PgPool,
    tenant: Uuid,
    service: &ServiceView,
    tz: &Tz,
    start: DateTime<Utc>,
) -> Result<Quote, ApiError> {
    let rules = services::surcharges(db, tenant).await?;
    Ok(compute(service, &rules, *tz, start))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuoteParams {
    pub service_id: Option<Uuid>,
    pub resource_id: Option<Uuid>,
    pub start: Option<DateTime<Utc>>,
}

/// What a slot would cost.
#[utoipa::path(
    get, path = "/api/v1/quotes", tag = "fulfillment", params(QuoteParams),
    responses((status = 200, body = Quote), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn quote(
    State(module): State<Fulfillment>,
    caller: Caller,
    Query(params): Query<QuoteParams>,
) -> Result<Json<Quote>, ApiError> {
    let tenant = caller.tenant_id.0;
    let service_id = params.service_id.ok_or_else(|| ApiError::validation("service_id", "is required"))?;
    let resource_id = params.resource_id.ok_or_else(|| ApiError::validation("resource_id", "is required"))?;
    let start = params.start.ok_or_else(|| ApiError::validation("start", "is required"))?;
    let service = services::find(&module.pool, tenant, service_id).await?;
    let day = start.date_naive();
    let resource = resources::bookable(&module.pool, tenant, resource_id, day, day).await?;
    Ok(Json(price(&module.pool, tenant, &service, &resource.schedule.tz, start).await?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn service() -> ServiceView {
        ServiceView {
            id: Uuid::now_v7(),
            name: "Boiler service".into(),
            duration_minutes: 60,
            buffer_before_minutes: 0,
            buffer_after_minutes: 0,
            price_cents: 10_000,
            currency: "EUR".into(),
            active: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn rule(
        name: &str,
        weekdays: Vec<i16>,
        starts: &str,
        ends: &str,
        percent: Option<i32>,
        amount: Option<i64>,
    ) -> SurchargeView {
        SurchargeView {
            id: Uuid::now_v7(),
            service_id: None,
            name: name.into(),
            weekdays,
            starts: starts.into(),
            ends: ends.into(),
            percent,
            amount_cents: amount,
        }
    }

    #[test]
    fn surcharges_apply_by_local_weekday_and_time() {
        let rules = [
            rule("Saturday", vec![6], "00:00", "24:00", Some(25), None),
            rule("Evening", vec![1, 2, 3, 4, 5], "18:00", "24:00", None, Some(3_000)),
        ];
        let berlin = chrono_tz::Europe::Berlin;
        // Saturday 5 December 2026, 10:00 in Berlin.
        let saturday = DateTime::parse_from_rfc3339("2026-12-05T09:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(compute(&service(), &rules, berlin, saturday).total_cents, 12_500);
        // Friday 4 December, 18:30 Berlin = 17:30 UTC: an evening in Berlin, not in UTC.
        let friday = DateTime::parse_from_rfc3339("2026-12-04T17:30:00Z").unwrap().with_timezone(&Utc);
        let quote = compute(&service(), &rules, berlin, friday);
        assert_eq!((quote.total_cents, quote.surcharges.len()), (13_000, 1));
        assert_eq!(compute(&service(), &rules, chrono_tz::UTC, friday).total_cents, 10_000);
    }
}
