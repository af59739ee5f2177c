//! `GET /api/v1/messaging-policy` and `PATCH` (a JSON merge patch, RFC 7386: name only what
//! changes; `null` clears, e.g. `{"quiet_hours": null}` turns quiet hours off). Admins and
//! operator keys change it; agents read it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::{Json, parse_json};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Policy, PolicyView};
use crate::Communications;

pub fn router() -> OpenApiRouter<Communications> {
    OpenApiRouter::new().routes(routes!(get_policy, patch_policy))
}

#[utoipa::path(
    get, path = "/api/v1/messaging-policy", tag = "compliance",
    responses((status = 200, body = PolicyView))
)]
pub async fn get_policy(State(module): State<Communications>, caller: Caller) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(super::load(&module.pool, caller.tenant_id.0).await?.view()))
}

/// Changes the policy with a JSON merge patch; the result is checked as a whole (422 naming the
/// field) and stored.
#[utoipa::path(
    patch, path = "/api/v1/messaging-policy", tag = "compliance", request_body = Object,
    responses((status = 200, body = PolicyView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn patch_policy(
    State(module): State<Communications>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PolicyView>, ApiError> {
    caller.require_admin()?;
    kernel::extract::require_json(&headers)?;
    let patch: Value = parse_json(&body)?;
    if !patch.is_object() {
        return Err(ApiError::validation("body", "must be a JSON object (a merge patch)"));
    }
    let mut tx = module.pool.begin().await?;
    // One writer at a time per tenant: two patches of different fields both land.
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended('messaging_policy:' || $1::uuid::text, 0))",
        caller.tenant_id.0
    )
    .execute(&mut *tx)
    .await?;
    let current = super::load(&mut *tx, caller.tenant_id.0).await?;
    let mut document = serde_json::to_value(current.view()).map_err(ApiError::internal)?;
    merge(&mut document, &patch);
    let view: PolicyView = serde_path_to_error::deserialize(document).map_err(|error| {
        let path = error.path().to_string();
        ApiError::validation(if path == "." { "body".to_owned() } else { path }, error.inner().to_string())
    })?;
    let policy = Policy::parse(view)?;
    super::save(&mut *tx, caller.tenant_id.0, &policy).await?;
    tx.commit().await?;
    // Forgotten again after the commit: a send in between may have cached the old settings.
    super::forget_cached(caller.tenant_id.0);
    Ok(Json(policy.view()))
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(target) = target else { return };
    for (key, value) in patch {
        if value.is_null() {
            // Optional fields take null as "none"; the shape check says if one may not.
            target.insert(key.clone(), Value::Null);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_merges_and_clears() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "q": {"start": "21:00"}});
        super::merge(&mut doc, &json!({"a": 5, "b": {"d": 4}, "q": null}));
        assert_eq!(doc, json!({"a": 5, "b": {"c": 2, "d": 4}, "q": null}));
    }
}
