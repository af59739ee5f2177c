//! Jobber (GraphQL, docs/providers/jobber.md): an appointment becomes a visit on a job of its
//! own, at a property of the customer's client.
//!
//! Jobber's model is client → property → job → visit. [`Jobber::create`] makes whatever of
//! those the [`JobberLink`] does not name yet, in that order, and writes each new id into the
//! link as soon as Jobber answers it, so a failure half-way leaves the progress in the link and
//! the next `create` resumes there. Jobber has no idempotency keys: only a creation whose
//! answer is lost (a timeout after the request left) can be made twice on retry.
//!
//! Every request is `POST {graphql_url}` with `Authorization: Bearer`, the required
//! `X-JOBBER-GRAPHQL-VERSION` header and a JSON body whose arguments are all variables.
//!
//! ## Times
//!
//! Visits take `LocalDateTimeAttributes {date, time, timezone}`, a wall-clock time in a named
//! zone. This crate has no time-zone database, so it sends the instant as UTC wall-clock time
//! with `timezone: "UTC"`: the visit is at the right instant and Jobber shows it in the
//! account's zone. (Sending the local time would need the zone's rules here.)
//!
//! ## Errors
//!
//! | answer | `SyncError` |
//! |---|---|
//! | no connection, no answer in time, 5xx, 408; GraphQL error "Service temporarily unavailable" | `Retryable` |
//! | 401 | refresh (rotating the refresh token), try once more; then `Unauthorized` |
//! | GraphQL error code `THROTTLED` | `RateLimited`, `retry_after` = (requested − available) / restoreRate |
//! | HTTP 429 (2 500 requests per 5 minutes) | `RateLimited`, `Retry-After` if sent |
//! | "…disconnected this app…", "…hidden due to permissions", "This account is not active" | `Unauthorized` |
//! | other GraphQL errors, `userErrors` of a mutation, other 4xx | `Permanent` |

mod cost;
mod webhook;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use webhook::{JobberWebhook, WebhookError, verify_webhook};

use crate::credentials::{Session, TokenEndpoint};
use crate::http::{Failure, retry_after, server_error, transport_error};
use crate::{CalendarEvent, Credentials, ExternalRef, Outcome, SyncError};
use cost::{Budget, Cost};

/// The API version we were written against (the header is required).
pub const DEFAULT_API_VERSION: &str = "2025-04-16";

#[derive(Clone, Debug)]
pub struct JobberConfig {
    /// `https://api.getjobber.com/api/graphql` (`{sim}/api/graphql` in tests).
    pub graphql_url: String,
    /// `https://api.getjobber.com/api/oauth/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// `X-JOBBER-GRAPHQL-VERSION`.
    pub api_version: String,
    pub timeout: Duration,
}

impl JobberConfig {
    /// Jobber's production endpoints.
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        Self {
            graphql_url: "https://api.getjobber.com/api/graphql".to_owned(),
            token_url: "https://api.getjobber.com/api/oauth/token".to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            timeout: Duration::from_secs(20),
        }
    }
}

/// The appointment's customer, as Jobber's client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Where the visit happens (Jobber requires a property address); without one the event's
    /// `location` is used as the street.
    pub address: Option<PostalAddress>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostalAddress {
    pub street1: String,
    pub street2: Option<String>,
    pub city: Option<String>,
    pub province: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// What Jobber has made for one appointment. Persist it after every `create`, whatever the
/// outcome. `client` and `property` belong to the customer: fill them in from an earlier link
/// of the same customer to reuse Jobber's client instead of making another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobberLink {
    pub client: Option<ExternalRef>,
    pub property: Option<ExternalRef>,
    pub job: Option<ExternalRef>,
    pub visit: Option<ExternalRef>,
}

/// A visit's schedule as Jobber has it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitTimes {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The Jobber adapter for one connected account: the query-cost budget it tracks is per app
/// and account, so use one per account (credentials still come per call).
#[derive(Debug)]
pub struct Jobber {
    config: JobberConfig,
    http: reqwest::Client,
    endpoint: TokenEndpoint,
    budget: Mutex<Budget>,
}

const CLIENT_CREATE: &str = "mutation ClientCreate($input: ClientCreateInput!) { clientCreate(input: $input) { client { id } userErrors { message path } } }";
const PROPERTY_CREATE: &str = "mutation PropertyCreate($clientId: EncodedId!, $input: PropertyCreateInput!) { propertyCreate(clientId: $clientId, input: $input) { properties { id } userErrors { message path } } }";
const JOB_CREATE: &str = "mutation JobCreate($input: JobCreateAttributes!) { jobCreate(input: $input) { job { id jobNumber } userErrors { message path } } }";
const VISIT_CREATE: &str = "mutation VisitCreate($jobId: EncodedId!, $input: VisitCreateInput!) { visitCreate(jobId: $jobId, input: $input) { createdVisits { id startAt endAt } userErrors { message path } } }";
const VISIT_EDIT_SCHEDULE: &str = "mutation VisitEditSchedule($id: EncodedId!, $input: VisitEditScheduleInput!) { visitEditSchedule(id: $id, input: $input) { visit { id startAt endAt } userErrors { message path } } }";
const VISIT_DELETE: &str = "mutation VisitDelete($visitIds: [EncodedId!]!) { visitDelete(visitIds: $visitIds) { visits { id } userErrors { message path } } }";
const VISIT: &str = "query Visit($id: EncodedId!) { visit(id: $id) { id startAt endAt } }";

/// `{date, time, timezone}` for an instant (see "Times" above).
fn local_date_time(at: DateTime<Utc>) -> Value {
    json!({"date": at.format("%Y-%m-%d").to_string(), "time": at.format("%H:%M:%S").to_string(), "timezone": "UTC"})
}

/// A GraphQL `errors[]` answer, as the table above.
fn graphql_error(errors: &[Value], body: &Value) -> SyncError {
    if errors.iter().any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED")) {
        let wait = Cost::read(body).map(|c| c.throttled_wait());
        return SyncError::RateLimited { retry_after: wait };
    }
    let message = errors.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect::<Vec<_>>().join("; ");
    if message.contains("disconnected this app") || message.contains("hidden due to permissions") {
        return SyncError::Unauthorized { reason: message };
    }
    if message.contains("temporarily unavailable") {
        return SyncError::retryable(message);
    }
    SyncError::permanent("graphql", message)
}

/// A mutation's payload, or its `userErrors` as `Permanent`.
fn checked(payload: Value) -> Result<Value, SyncError> {
    let errors = payload.get("userErrors").and_then(Value::as_array).cloned().unwrap_or_default();
    if errors.is_empty() {
        return Ok(payload);
    }
    let message = errors.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect::<Vec<_>>().join("; ");
    Err(SyncError::permanent("user_error", message))
}

fn id_at(payload: &Value, pointer: &str, what: &str) -> Result<ExternalRef, SyncError> {
    payload
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(|id| ExternalRef(id.to_owned()))
        .ok_or_else(|| SyncError::retryable(format!("Jobber answered no {what} id")))
}

/// Leaves out the fields we have no value for, rather than sending nulls.
fn object(fields: &[(&str, Option<Value>)]) -> Value {
    let map: Map<String, Value> = fields.iter().filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v))).collect();
    Value::Object(map)
}

impl Jobber {
    pub fn new(config: JobberConfig) -> Self {
        let http = reqwest::Client::builder().timeout(config.timeout).build().unwrap_or_default();
        let endpoint = TokenEndpoint {
            url: config.token_url.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        };
        Self { config, http, endpoint, budget: Mutex::default() }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One GraphQL request; the payload of its root field `operation`.
    async fn graphql(
        &self,
        token: String,
        operation: &'static str,
        query: &str,
        variables: &Value,
    ) -> Result<Value, Failure> {
        if let Some(wait) = self.budget().hold_off(operation) {
            return Err(SyncError::RateLimited { retry_after: Some(wait) }.into());
        }
        let response = self
            .http
            .post(&self.config.graphql_url)
            .bearer_auth(token)
            .header("X-JOBBER-GRAPHQL-VERSION", &self.config.api_version)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(|e| transport_error(&e))?;
        match status {
            StatusCode::UNAUTHORIZED => return Err(Failure::AccessRefused),
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(SyncError::RateLimited { retry_after: retry_after(&headers) }.into());
            }
            s if s == StatusCode::REQUEST_TIMEOUT || s.is_server_error() => {
                return Err(server_error(status, &headers, &text).into());
            }
            s if !s.is_success() => {
                let excerpt: String = text.chars().take(200).collect();
                return Err(SyncError::permanent(format!("http_{}", s.as_u16()), excerpt).into());
            }
            _ => {}
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| SyncError::retryable(format!("Jobber answered unreadable JSON: {e}")))?;
        if let Some(cost) = Cost::read(&body) {
            self.budget().observe(operation, cost);
        }
        if let Some(errors) = body.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty()) {
            return Err(graphql_error(errors, &body).into());
        }
        if let Some(message) = body.pointer("/error/message").and_then(Value::as_str) {
            return Err(SyncError::Unauthorized { reason: message.to_owned() }.into());
        }
        Ok(body.pointer(&format!("/data/{operation}")).cloned().unwrap_or(Value::Null))
    }

    async fn run(
        &self,
        session: &mut Session<'_>,
        operation: &'static str,
        query: &str,
        variables: Value,
    ) -> Result<Value, SyncError> {
        let variables = &variables;
        session.call(|token| self.graphql(token, operation, query, variables)).await
    }

    /// Makes what `link` lacks of client, property, job and visit for the appointment, writing
    /// each id into `link` as it is made. Persist `link` afterwards whatever the result.
    pub async fn create(
        &self,
        credentials: &mut Credentials,
        link: &mut JobberLink,
        customer: &Customer,
        event: &CalendarEvent,
    ) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = self.create_missing(&mut session, link, customer, event).await;
        session.finish(result)
    }

    async fn create_missing(
        &self,
        session: &mut Session<'_>,
        link: &mut JobberLink,
        customer: &Customer,
        event: &CalendarEvent,
    ) -> Result<(), SyncError> {
        let address = customer
            .address
            .clone()
            .or_else(|| event.location.clone().map(|street1| PostalAddress { street1, ..PostalAddress::default() }));
        if link.property.is_none() && address.is_none() {
            return Err(SyncError::permanent("address_required", "Jobber needs an address for the visit's property"));
        }
        if link.client.is_none() {
            let payload =
                self.run(session, "clientCreate", CLIENT_CREATE, json!({"input": client_input(customer)})).await?;
            link.client = Some(id_at(&checked(payload)?, "/client/id", "client")?);
        }
        if let (None, Some(client), Some(address)) = (&link.property, &link.client, &address) {
            let variables =
                json!({"clientId": client.as_str(), "input": {"properties": [{"address": address_input(address)}]}});
            let payload = self.run(session, "propertyCreate", PROPERTY_CREATE, variables).await?;
            link.property = Some(id_at(&checked(payload)?, "/properties/0/id", "property")?);
        }
        if let (None, Some(property)) = (&link.job, &link.property) {
            let input = object(&[
                ("propertyId", Some(json!(property.as_str()))),
                ("title", Some(json!(event.title))),
                ("instructions", event.description.clone().map(Value::String)),
                ("invoicing", Some(json!({"invoicingType": "FIXED_PRICE", "invoicingSchedule": "ON_COMPLETION"}))),
                // The visit is made next, with an explicit time and zone.
                ("scheduling", Some(json!({"createVisits": false, "notifyTeam": false}))),
            ]);
            let payload = self.run(session, "jobCreate", JOB_CREATE, json!({"input": input})).await?;
            link.job = Some(id_at(&checked(payload)?, "/job/id", "job")?);
        }
        if let (None, Some(job)) = (&link.visit, &link.job) {
            let visit = object(&[
                ("title", Some(json!(event.title))),
                ("instructions", event.description.clone().map(Value::String)),
                ("schedule", Some(schedule(event))),
            ]);
            let variables = json!({"jobId": job.as_str(), "input": {"visits": [visit]}});
            let payload = self.run(session, "visitCreate", VISIT_CREATE, variables).await?;
            link.visit = Some(id_at(&checked(payload)?, "/createdVisits/0/id", "visit")?);
        }
        Ok(())
    }

    /// Moves the visit to the event's start and end (idempotent).
    pub async fn reschedule(
        &self,
        credentials: &mut Credentials,
        link: &JobberLink,
        event: &CalendarEvent,
    ) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let visit =
                link.visit.as_ref().ok_or_else(|| SyncError::permanent("not_created", "the link names no visit"))?;
            let input = json!({"startAt": local_date_time(event.start), "endAt": local_date_time(event.end)});
            let variables = json!({"id": visit.as_str(), "input": input});
            checked(self.run(&mut session, "visitEditSchedule", VISIT_EDIT_SCHEDULE, variables).await?).map(|_| ())
        }
        .await;
        session.finish(result)
    }

    /// Deletes the visit (the job stays, empty, in Jobber's records) and clears `link.visit`.
    /// A visit already gone is success: when Jobber refuses the delete, the visit is looked up
    /// and a `null` (not found) counts as done.
    pub async fn cancel(&self, credentials: &mut Credentials, link: &mut JobberLink) -> Outcome<()> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = async {
            let Some(visit) = link.visit.clone() else { return Ok(()) };
            let variables = json!({"visitIds": [visit.as_str()]});
            let deleted = self.run(&mut session, "visitDelete", VISIT_DELETE, variables).await.and_then(checked);
            match deleted {
                Ok(_) => {}
                Err(SyncError::Permanent { code, reason }) if code == "user_error" => {
                    if self.find_visit(&mut session, &visit).await?.is_some() {
                        return Err(SyncError::Permanent { code, reason });
                    }
                }
                Err(other) => return Err(other),
            }
            link.visit = None;
            Ok(())
        }
        .await;
        session.finish(result)
    }

    /// The visit's schedule as Jobber has it (after a webhook named it); `None` if it is gone.
    pub async fn visit(&self, credentials: &mut Credentials, visit: &ExternalRef) -> Outcome<Option<VisitTimes>> {
        let mut session = Session::new(&self.http, &self.endpoint, credentials);
        let result = self.find_visit(&mut session, visit).await;
        session.finish(result)
    }

    async fn find_visit(
        &self,
        session: &mut Session<'_>,
        visit: &ExternalRef,
    ) -> Result<Option<VisitTimes>, SyncError> {
        let payload = self.run(session, "visit", VISIT, json!({"id": visit.as_str()})).await?;
        if payload.is_null() {
            return Ok(None);
        }
        let time = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        match (time("startAt"), time("endAt")) {
            (Some(start), Some(end)) => Ok(Some(VisitTimes { start, end })),
            // Both null: an unscheduled visit, which none of ours is.
            _ => Err(SyncError::permanent("unscheduled", "the visit has no start and end")),
        }
    }
}

fn schedule(event: &CalendarEvent) -> Value {
    // notifyTeam false: a sync must not message the crew on every change.
    json!({"startAt": local_date_time(event.start), "endAt": local_date_time(event.end), "notifyTeam": false})
}

fn client_input(customer: &Customer) -> Value {
    let text = |v: &Option<String>| v.clone().map(Value::String);
    object(&[
        ("firstName", text(&customer.first_name)),
        ("lastName", text(&customer.last_name)),
        ("companyName", text(&customer.company_name)),
        ("emails", customer.email.clone().map(|a| json!([{"description": "MAIN", "primary": true, "address": a}]))),
        ("phones", customer.phone.clone().map(|n| json!([{"description": "MAIN", "primary": true, "number": n}]))),
    ])
}

fn address_input(address: &PostalAddress) -> Value {
    let text = |v: &Option<String>| v.clone().map(Value::String);
    object(&[
        ("street1", Some(json!(address.street1))),
        ("street2", text(&address.street2)),
        ("city", text(&address.city)),
        ("province", text(&address.province)),
        ("postalCode", text(&address.postal_code)),
        ("country", text(&address.country)),
    ])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn graphql_errors_are_classified() {
        let throttled = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 1500, "actualQueryCost": 0,
                "throttleStatus": {"maximumAvailable": 10000, "currentlyAvailable": 500, "restoreRate": 500}}}});
        let errors = throttled["errors"].as_array().unwrap();
        assert_eq!(
            graphql_error(errors, &throttled),
            SyncError::RateLimited { retry_after: Some(Duration::from_secs(2)) }
        );
        let gone = [json!({"message": "User has disconnected this app from their account. Please delete this token"})];
        assert!(matches!(graphql_error(&gone, &Value::Null), SyncError::Unauthorized { .. }));
        let down = [json!({"message": "Service temporarily unavailable"})];
        assert!(matches!(graphql_error(&down, &Value::Null), SyncError::Retryable { .. }));
        let bad = [json!({"message": "Variable $id of type EncodedId! was provided invalid value"})];
        assert!(matches!(graphql_error(&bad, &Value::Null), SyncError::Permanent { .. }));
    }

    #[test]
    fn user_errors_are_permanent() {
        assert!(checked(json!({"visit": {"id": "x"}, "userErrors": []})).is_ok());
        let refused = checked(json!({"visit": null, "userErrors": [{"message": "Visit not found", "path": ["id"]}]}));
        assert_eq!(refused.unwrap_err(), SyncError::permanent("user_error", "Visit not found"));
    }

    #[test]
    fn times_go_as_utc_wall_clock() {
        let at: DateTime<Utc> = "2030-03-30T23:30:00Z".parse().unwrap();
        assert_eq!(local_date_time(at), json!({"date": "2030-03-30", "time": "23:30:00", "timezone": "UTC"}));
    }

    #[test]
    fn absent_customer_fields_are_left_out() {
        let customer =
            Customer { first_name: Some("Ann".into()), phone: Some("+15550100".into()), ..Customer::default() };
        let input = client_input(&customer);
        assert_eq!(input["firstName"], "Ann");
        assert!(input.get("lastName").is_none());
        assert_eq!(input["phones"][0]["number"], "+15550100");
    }
}
