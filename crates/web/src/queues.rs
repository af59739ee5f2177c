//! `/queues`: the admins' queue view — per lane what waits, runs, retries and failed, the
//! failed, dead and unknown messages with their reasons, and replay (one, or all of a kind after
//! the count is shown). Reads and acts through communications' queue API; a non-admin gets a 403.

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use communications::queues::{self, ProblemFilter};
use kernel::auth::Caller;
use serde::Deserialize;
use serde_json::json;

use crate::{Web, i18n, pages};

const KINDS: [&str; 3] = ["failed", "dead", "unknown"];

#[derive(Debug, Deserialize)]
pub struct QueueParams {
    pub status: Option<String>,
}

pub async fn page(
    State(web): State<Web>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Query(params): Query<QueueParams>,
) -> Response {
    let Some(Extension(caller)) = caller.filter(|Extension(c)| c.agent_id().is_some()) else {
        return Redirect::to("/login").into_response();
    };
    if !caller.is_admin() {
        return (StatusCode::FORBIDDEN, "only admins see the queues").into_response();
    }
    let lang = i18n::language(&headers);
    let kind = params.status.filter(|s| KINDS.contains(&s.as_str())).unwrap_or_else(|| "failed".to_owned());
    let state = axum::extract::State(web.communications.clone());
    let overview = match queues::queue_overview(state.clone(), caller).await {
        Ok(kernel::extract::Json(overview)) => overview,
        Err(error) => return error.into_response(),
    };
    let filter = ProblemFilter { status: kind.clone(), lane: None, channel: None, since: None, reason_contains: None };
    let list = match queues::queue_messages(state, caller, kernel::extract::Query(filter)).await {
        Ok(kernel::extract::Json(list)) => list,
        Err(error) => return error.into_response(),
    };
    pages::render(
        &web,
        "queues.html",
        json!({ "lang": lang, "t": i18n::strings(lang), "overview": overview, "list": list, "kind": kind, "kinds": KINDS }),
    )
}
