//! Jobber's GraphQL endpoint, `POST /api/graphql`: Bearer access tokens from `oauth.rs`, the
//! required `X-JOBBER-GRAPHQL-VERSION` header, JSON bodies only, and the query-cost budget
//! (a leaky bucket per app and account) reported in `extensions.cost` of every answer, with
//! `THROTTLED` when a query costs more than is available (docs/providers/jobber.md).
//!
//! The sim does not parse GraphQL in full: it reads the operation type and the first root
//! field (aliases allowed), and that field's arguments, which must be variables
//! (`visitCreate(jobId: $jobId, input: $input)`): the adapter passes everything as variables,
//! and a literal argument is refused so that a test notices the difference. The answer's
//! payload always has every field the operations in `jobber_store.rs` can give, whatever the
//! selection set asked for.
//!
//! Costs are the sim's own fixed numbers per operation ([`requested_cost`]); real Jobber
//! computes them from the selection set (fields 1, connections × `first`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::failures::{FailureKind, pick_failure};
use crate::ledger::NewEntry;
use crate::oauth::Vendor;
use crate::{SimState, TIMEOUT_HOLD, jobber_webhooks};

/// The query-cost budget of one app on one account.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobberCost {
    /// Points when full (Jobber: 10 000).
    pub maximum_available: u32,
    /// Points restored per second (Jobber: 500).
    pub restore_rate: u32,
}

impl Default for JobberCost {
    fn default() -> Self {
        Self { maximum_available: 10_000, restore_rate: 500 }
    }
}

/// The leaky bucket: what is available now, restored continuously since the last look.
#[derive(Debug)]
pub(crate) struct CostBucket {
    available: f64,
    at: Instant,
}

impl CostBucket {
    pub(crate) fn full(cost: JobberCost) -> Self {
        Self { available: f64::from(cost.maximum_available), at: Instant::now() }
    }

    fn refill(&mut self, cost: JobberCost) -> u32 {
        let restored = self.at.elapsed().as_secs_f64() * f64::from(cost.restore_rate);
        self.available = (self.available + restored).min(f64::from(cost.maximum_available));
        self.at = Instant::now();
        self.available.floor() as u32
    }

    /// Takes `requested` points if they are available: `Ok(left)` or `Err(available)`.
    fn take(&mut self, cost: JobberCost, requested: u32) -> Result<u32, u32> {
        let available = self.refill(cost);
        if requested > available {
            return Err(available);
        }
        self.available -= f64::from(requested);
        Ok(self.available.floor() as u32)
    }
}

/// The sim's cost of each operation it answers.
pub(crate) fn requested_cost(field: &str) -> u32 {
    match field {
        "visit" => 5,
        "visitDelete" => 10,
        "jobCreate" => 15,
        _ => 12,
    }
}

fn cost_extension(cost: JobberCost, requested: u32, actual: u32, available: u32) -> Value {
    json!({"cost": {
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": {
            "maximumAvailable": cost.maximum_available,
            "currentlyAvailable": available,
            "restoreRate": cost.restore_rate,
        },
    }})
}

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/api/graphql", post(graphql))
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Operation {
    pub mutation: bool,
    pub field: String,
    /// Argument name → variable name.
    pub arguments: Vec<(String, String)>,
}

fn skip_ws(chars: &[char], mut at: usize) -> usize {
    while at < chars.len() && (chars[at].is_whitespace() || chars[at] == ',') {
        at += 1;
    }
    at
}

fn name(chars: &[char], at: usize) -> (String, usize) {
    let end = (at..chars.len()).find(|&i| !(chars[i].is_alphanumeric() || chars[i] == '_')).unwrap_or(chars.len());
    (chars[at..end].iter().collect(), end)
}

/// The operation type, first root field and its variable arguments of a GraphQL document.
pub(crate) fn parse_operation(query: &str) -> Result<Operation, String> {
    let text: String =
        query.lines().map(|line| line.split('#').next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let chars: Vec<char> = text.chars().collect();
    let open = chars.iter().position(|&c| c == '{').ok_or("Expected a selection set")?;
    let header: String = chars[..open].iter().collect();
    let mutation = match header.split_whitespace().next() {
        None | Some("query") => false,
        Some("mutation") => true,
        Some(other) => return Err(format!("Unsupported operation type '{other}'")),
    };
    let mut at = skip_ws(&chars, open + 1);
    let (mut field, next) = name(&chars, at);
    at = skip_ws(&chars, next);
    if chars.get(at) == Some(&':') {
        let (aliased, next) = name(&chars, skip_ws(&chars, at + 1));
        field = aliased;
        at = skip_ws(&chars, next);
    }
    if field.is_empty() {
        return Err("Expected a field".to_owned());
    }
    let mut arguments = Vec::new();
    if chars.get(at) == Some(&'(') {
        at += 1;
        loop {
            at = skip_ws(&chars, at);
            match chars.get(at) {
                Some(')') => break,
                None => return Err("Unterminated argument list".to_owned()),
                _ => {}
            }
            let (argument, next) = name(&chars, at);
            at = skip_ws(&chars, next);
            if argument.is_empty() || chars.get(at) != Some(&':') {
                return Err(format!("Expected an argument of '{field}'"));
            }
            at = skip_ws(&chars, at + 1);
            if chars.get(at) != Some(&'$') {
                return Err(format!("The simulator needs argument '{argument}' of '{field}' as a variable"));
            }
            let (variable, next) = name(&chars, at + 1);
            arguments.push((argument, variable));
            at = next;
        }
    }
    Ok(Operation { mutation, field, arguments })
}

const MUTATIONS: &[&str] =
    &["clientCreate", "propertyCreate", "jobCreate", "visitCreate", "visitEditSchedule", "visitDelete"];
const QUERIES: &[&str] = &["visit"];

fn graphql_errors(status: StatusCode, messages: &[&str]) -> Response {
    let errors: Vec<Value> = messages.iter().map(|m| json!({"message": m})).collect();
    (status, axum::Json(json!({"errors": errors}))).into_response()
}

/// Why a request never reached GraphQL: `(outcome for the ledger, response)`.
fn refuse_before_graphql(state: &SimState, headers: &HeaderMap) -> Option<(String, Response)> {
    if state.tokens().check(Vendor::Jobber, headers).is_err() {
        let body = json!({"error": "invalid_request", "error_description": "Invalid Token Error"});
        return Some(("error:401".to_owned(), (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()));
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        let response = graphql_errors(StatusCode::BAD_REQUEST, &["Requests must be sent as application/json"]);
        return Some(("error:content_type".to_owned(), response));
    }
    let version = headers.get("x-jobber-graphql-version").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if chrono::NaiveDate::parse_from_str(version, "%Y-%m-%d").is_err() {
        let response =
            graphql_errors(StatusCode::BAD_REQUEST, &["The X-JOBBER-GRAPHQL-VERSION header must name an API version"]);
        return Some(("error:version".to_owned(), response));
    }
    None
}

async fn graphql(State(state): State<Arc<SimState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let query = body.get("query").and_then(Value::as_str).unwrap_or_default();
    let operation = parse_operation(query);
    let operation_name: &'static str = match &operation {
        Ok(op) => MUTATIONS.iter().chain(QUERIES).find(|known| **known == op.field).copied().unwrap_or("graphql"),
        Err(_) => "graphql",
    };
    let record = |outcome: &str, item: Option<String>| {
        state.ledger().record(NewEntry {
            provider: "jobber",
            operation: operation_name,
            method: "POST",
            path: "/api/graphql".to_owned(),
            recipient: None,
            provider_message_id: item,
            body: body.clone(),
            outcome: outcome.to_owned(),
        });
    };
    let applies = |kind| {
        matches!(
            kind,
            FailureKind::RateLimited
                | FailureKind::ServerError
                | FailureKind::Timeout
                | FailureKind::AuthFailed
                | FailureKind::LostAnswer
        )
    };
    let mut lose_answer = false;
    match pick_failure(&state, "jobber", None, applies) {
        Some(FailureKind::LostAnswer) => lose_answer = true,
        Some(FailureKind::RateLimited) => {
            record("error:429", None);
            return graphql_errors(StatusCode::TOO_MANY_REQUESTS, &["Too Many Requests"]);
        }
        Some(FailureKind::AuthFailed) => {
            record("error:401", None);
            let body = json!({"error": "invalid_request", "error_description": "Invalid Token Error"});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        Some(kind) => {
            if kind == FailureKind::Timeout {
                record("timeout", None);
                tokio::time::sleep(TIMEOUT_HOLD).await;
            } else {
                record("error:500", None);
            }
            return graphql_errors(StatusCode::INTERNAL_SERVER_ERROR, &["Internal server error"]);
        }
        None => {}
    }
    if let Some((outcome, response)) = refuse_before_graphql(&state, &headers) {
        record(&outcome, None);
        return response;
    }
    let cost = state.config.jobber_cost;
    let operation = match operation {
        Ok(op)
            if (op.mutation && MUTATIONS.contains(&op.field.as_str()))
                || (!op.mutation && QUERIES.contains(&op.field.as_str())) =>
        {
            op
        }
        Ok(op) => {
            record("error:undefinedField", None);
            let type_name = if op.mutation { "Mutation" } else { "Query" };
            let message = format!("Field '{}' doesn't exist on type '{type_name}'", op.field);
            return graphql_reply(&message, cost, &state);
        }
        Err(message) => {
            record("error:parse", None);
            return graphql_reply(&message, cost, &state);
        }
    };
    let requested = requested_cost(&operation.field);
    let taken = state.jobber_bucket().take(cost, requested);
    let available = match taken {
        Ok(left) => left,
        Err(available) => {
            record("error:THROTTLED", None);
            let reply = json!({
                "errors": [{"message": "Throttled", "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://developer.getjobber.com/docs/using_jobbers_api/api_rate_limits",
                }}],
                "extensions": cost_extension(cost, requested, 0, available),
            });
            return (StatusCode::OK, axum::Json(reply)).into_response();
        }
    };
    let variables = body.get("variables").and_then(Value::as_object).cloned().unwrap_or_default();
    let arguments: Map<String, Value> = operation
        .arguments
        .iter()
        .map(|(argument, variable)| (argument.clone(), variables.get(variable).cloned().unwrap_or(Value::Null)))
        .collect();
    let result = state.jobber().execute(&operation.field, &arguments);
    let mut extensions = cost_extension(cost, requested, requested, available);
    let version = headers.get("x-jobber-graphql-version").and_then(|v| v.to_str().ok()).unwrap_or_default();
    extensions["versioning"] = json!({"version": version});
    let reply = match result {
        Ok((payload, changes)) => {
            let item = changes.first().map(|(_, id)| id.clone());
            let user_errors = payload.get("userErrors").and_then(Value::as_array).is_some_and(|e| !e.is_empty());
            record(
                if user_errors {
                    "accepted:user_errors"
                } else if lose_answer {
                    "accepted:answer_lost"
                } else {
                    "accepted"
                },
                item,
            );
            jobber_webhooks::post_changes(&state, changes);
            json!({"data": {operation.field.clone(): payload}, "extensions": extensions})
        }
        Err(errors) => {
            record("error:variables", None);
            json!({"errors": errors, "extensions": extensions})
        }
    };
    if lose_answer {
        tokio::time::sleep(TIMEOUT_HOLD).await;
    }
    (StatusCode::OK, axum::Json(reply)).into_response()
}

/// A GraphQL-level error: HTTP 200, `errors`, nothing charged.
fn graphql_reply(message: &str, cost: JobberCost, state: &SimState) -> Response {
    let available = state.jobber_bucket().refill(cost);
    let reply = json!({"errors": [{"message": message}], "extensions": cost_extension(cost, 0, 0, available)});
    (StatusCode::OK, axum::Json(reply)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_root_field_and_its_variables_are_read() {
        let query = "mutation CreateVisit($jobId: EncodedId!, $input: VisitCreateInput!) {\n  # a comment {\n  made: visitCreate(jobId: $jobId, input: $input) { createdVisits { id } userErrors { message path } }\n}";
        let op = parse_operation(query).unwrap();
        assert!(op.mutation);
        assert_eq!(op.field, "visitCreate");
        assert_eq!(op.arguments, vec![("jobId".into(), "jobId".into()), ("input".into(), "input".into())]);
        let query = parse_operation("query V($id: EncodedId!) { visit(id: $id) { id } }").unwrap();
        assert!(!query.mutation);
        assert_eq!(query.arguments, vec![("id".into(), "id".into())]);
        assert!(parse_operation("mutation { visitDelete(visitIds: [\"x\"]) { visits { id } } }").is_err());
    }

    #[test]
    fn the_bucket_throttles_and_restores() {
        let cost = JobberCost { maximum_available: 20, restore_rate: 1000 };
        let mut bucket = CostBucket::full(cost);
        assert_eq!(bucket.take(cost, 12), Ok(8));
        assert!(bucket.take(cost, 12).unwrap_err() < 12);
        bucket.at -= std::time::Duration::from_millis(50);
        assert_eq!(bucket.take(cost, 12), Ok(8), "restored to the maximum, not beyond");
    }
}
