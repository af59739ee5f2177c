use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn readyz_is_ready_when_database_is_migrated() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert_eq!(body["migrations"], "current");
}

#[tokio::test]
async fn readyz_is_unavailable_when_a_migration_is_missing() {
    let app = spawn_app().await;
    sqlx::query(
        "DELETE FROM public._sqlx_migrations WHERE version = (SELECT max(version) FROM public._sqlx_migrations)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.unwrap()["migrations"], "pending");
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_database_is_unreachable() {
    let app = spawn_app().await;
    app.pool.close().await;
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.unwrap()["database"], "unreachable");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("metrics").await;
    app.get("/api/v1/me", &tenant.api_key).await;
    app.client.get(app.url("/api/v1/agents/not-a-uuid")).bearer_auth(&tenant.api_key).send().await.unwrap();

    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"http_requests_total{route="/api/v1/me",method="GET",status="200"}"#), "{text}");
    assert!(text.contains(r#"http_requests_total{route="/api/v1/agents/{id}",method="GET",status="404"}"#), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket{"), "latency histogram missing: {text}");
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/openapi.json", "get"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/me", "get"),
        ("/api/v1/agents", "get"),
        ("/api/v1/agents", "post"),
        ("/api/v1/agents/{id}", "get"),
        ("/api/v1/api-keys", "get"),
        ("/api/v1/api-keys", "post"),
        ("/api/v1/api-keys/{id}", "get"),
        ("/api/v1/api-keys/{id}/revoke", "post"),
        ("/api/v1/channel-accounts", "get"),
        ("/api/v1/channel-accounts", "post"),
        ("/api/v1/channel-accounts/{id}", "get"),
        ("/api/v1/channel-accounts/{id}", "patch"),
        ("/api/v1/channel-accounts/{id}/verify", "post"),
        ("/api/v1/channel-accounts/{id}/suspend", "post"),
        ("/api/v1/channel-accounts/{id}/reactivate", "post"),
        ("/api/v1/channel-accounts/{id}/revoke", "post"),
        ("/api/v1/channel-accounts/{id}/test-message", "post"),
        ("/api/v1/channel-accounts/{id}/providers", "post"),
        ("/api/v1/channel-accounts/{id}/providers/{provider_id}", "patch"),
        ("/api/v1/channel-accounts/{id}/providers/{provider_id}", "delete"),
        ("/api/webhooks/meta/{tenant_id}", "get"),
        ("/api/v1/messages", "get"),
        ("/api/v1/messages", "post"),
        ("/api/v1/messages/{id}", "get"),
        ("/api/v1/messages/{id}/cancel", "post"),
        ("/api/v1/messages/{id}/approve", "post"),
        ("/api/v1/messages/{id}/media", "get"),
        ("/api/v1/events", "post"),
        ("/api/v1/trigger-rules", "get"),
        ("/api/v1/trigger-rules", "post"),
        ("/api/v1/trigger-rules/{id}", "get"),
        ("/api/v1/trigger-rules/{id}", "put"),
        ("/api/v1/trigger-rules/{id}", "delete"),
        ("/api/v1/cron-triggers", "get"),
        ("/api/v1/cron-triggers", "post"),
        ("/api/v1/cron-triggers/{id}", "get"),
        ("/api/v1/cron-triggers/{id}", "put"),
        ("/api/v1/cron-triggers/{id}", "delete"),
        ("/api/v1/messages/{id}/reject", "post"),
        ("/api/webhooks/meta", "get"),
        ("/api/webhooks/meta", "post"),
        ("/api/webhooks/meta/{tenant_id}", "post"),
        ("/api/webhooks/aws/sns", "post"),
        ("/api/webhooks/twilio/{tenant_id}/{kind}", "post"),
        ("/api/v1/templates", "get"),
        ("/api/v1/templates", "post"),
        ("/api/v1/templates/{id}", "get"),
        ("/api/v1/templates/{id}", "patch"),
        ("/api/v1/templates/{id}", "delete"),
        ("/api/v1/templates/{id}/preview", "post"),
        ("/api/v1/conversations", "get"),
        ("/api/v1/conversations/{id}", "get"),
        ("/api/v1/conversations/{id}/claim", "post"),
        ("/api/v1/conversations/{id}/release", "post"),
        ("/api/v1/conversations/{id}/snooze", "post"),
        ("/api/v1/conversations/{id}/resolve", "post"),
        ("/api/v1/conversations/{id}/reopen", "post"),
        ("/api/v1/conversations/{id}/read", "post"),
        ("/api/v1/conversations/summary", "get"),
        ("/api/v1/conversations/{id}/messages", "post"),
        ("/api/v1/stream", "get"),
        ("/api/v1/conversations/{id}/assign", "post"),
        ("/api/v1/conversations/{id}/link", "put"),
        ("/api/v1/conversations/{id}/messages", "get"),
        ("/api/v1/conversations/search", "get"),
        ("/api/v1/conversations/{id}/participants", "get"),
        ("/api/v1/conversations/{id}/participants/{contact_id}", "put"),
        ("/api/v1/contacts", "get"),
        ("/api/v1/contacts/{id}", "get"),
        ("/api/v1/contacts/{id}", "patch"),
        ("/api/v1/contacts/{id}/merge", "post"),
        ("/api/v1/labels", "get"),
        ("/api/v1/labels", "post"),
        ("/api/v1/labels/{id}", "delete"),
        ("/api/v1/conversations/{id}/labels", "put"),
        ("/api/v1/conversations/{id}/notes", "get"),
        ("/api/v1/conversations/{id}/notes", "post"),
        ("/api/v1/messaging-policy", "get"),
        ("/api/v1/messaging-policy", "patch"),
        ("/api/v1/suppressions", "get"),
        ("/api/v1/suppressions", "post"),
        ("/api/v1/suppressions/{channel}/{address}", "delete"),
        ("/api/v1/consent-events", "get"),
        ("/api/v1/queues", "get"),
        ("/api/v1/queues/messages", "get"),
        ("/api/v1/queues/replay", "post"),
        ("/api/v1/messages/{id}/replay", "post"),
        ("/api/v1/canned-responses", "get"),
        ("/api/v1/canned-responses", "post"),
        ("/api/v1/canned-responses/{id}", "patch"),
        ("/api/v1/canned-responses/{id}", "delete"),
        ("/api/webchat/{channel_id}/session", "post"),
        ("/api/webchat/{channel_id}/messages", "post"),
        ("/api/webchat/{channel_id}/seen", "post"),
        ("/api/webchat/{channel_id}/stream", "get"),
        ("/api/v1/resources", "get"),
        ("/api/v1/resources", "post"),
        ("/api/v1/resources/{id}", "get"),
        ("/api/v1/resources/{id}", "patch"),
        ("/api/v1/resources/{id}", "delete"),
        ("/api/v1/resources/{id}/working-hours", "put"),
        ("/api/v1/resources/{id}/exceptions", "get"),
        ("/api/v1/resources/{id}/exceptions", "post"),
        ("/api/v1/resources/{id}/exceptions/{exception_id}", "delete"),
        ("/api/v1/services", "get"),
        ("/api/v1/services", "post"),
        ("/api/v1/services/{id}", "get"),
        ("/api/v1/services/{id}", "patch"),
        ("/api/v1/services/{id}", "delete"),
        ("/api/v1/surcharges", "get"),
        ("/api/v1/surcharges", "post"),
        ("/api/v1/surcharges/{id}", "delete"),
        ("/api/v1/availability", "get"),
        ("/api/v1/quotes", "get"),
        ("/api/v1/reservations", "post"),
        ("/api/v1/reservations/{id}", "get"),
        ("/api/v1/reservations/{id}/confirm", "post"),
        ("/api/v1/appointments", "get"),
        ("/api/v1/appointments", "post"),
        ("/api/v1/appointments/{id}", "get"),
        ("/api/v1/appointments/{id}/cancel", "post"),
        ("/api/v1/appointments/{id}/reschedule", "post"),
        ("/api/v1/calendar-connections", "get"),
        ("/api/v1/calendar-connections", "post"),
        ("/api/v1/calendar-connections/{id}", "delete"),
        ("/api/v1/calendar-connections/{id}/sync", "post"),
        ("/api/webhooks/google-calendar", "post"),
        ("/api/webhooks/jobber", "post"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "the document has operations this test does not know: {:?}", paths.keys());
}
