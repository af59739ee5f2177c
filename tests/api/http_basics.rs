use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{PASSWORD, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let app = spawn_app().await;
    assert_error(app.client.get(app.url("/no/such/route")).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.client.get(app.url("/api/v1/nothing")).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.client.delete(app.url("/healthz")).send().await.unwrap(), 405, "method_not_allowed").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_nothing_is_stored() {
    let app = spawn_app_with(|s| s.http.body_limit_bytes = 1024).await;
    let tenant = app.create_tenant("acme").await;
    let body = json!({"email": "a@acme.test", "name": "x".repeat(2000), "role": "agent", "password": PASSWORD});
    assert_error(app.post("/api/v1/agents", &tenant.api_key, body).await, 413, "payload_too_large").await;
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM identity.agents").fetch_one(&app.pool).await.unwrap();
    assert_eq!(agents, 0);
    // Just under the limit is fine.
    let body = json!({"email": "a@acme.test", "name": "x".repeat(100), "role": "agent", "password": PASSWORD});
    assert_eq!(app.post("/api/v1/agents", &tenant.api_key, body).await.status(), 201);
}

#[tokio::test]
async fn request_ids_are_generated_echoed_or_replaced() {
    let app = spawn_app().await;
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let echoed = app.client.get(app.url("/healthz")).header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-abc-123");

    let on_error = app.client.get(app.url("/nope")).header("x-request-id", "trace-err-1").send().await.unwrap();
    assert_eq!(on_error.headers()["x-request-id"], "trace-err-1");

    let too_long = "x".repeat(500);
    let replaced = app.client.get(app.url("/healthz")).header("x-request-id", &too_long).send().await.unwrap();
    let id = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "an unacceptable id is replaced: {id}");
}

#[tokio::test]
async fn a_request_that_stalls_gets_408() {
    let app = spawn_app_with(|s| s.http.request_timeout_secs = 1).await;
    let tenant = app.create_tenant("acme").await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/v1/agents HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"email\":",
        tenant.api_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            response.extend_from_slice(&buffer[..n]);
            if n == 0 || String::from_utf8_lossy(&response).contains("}}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server answered before the client gave up");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
}

#[tokio::test]
async fn an_internal_failure_is_a_json_500_without_details() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    // The database goes away under the app: authentication cannot be checked.
    app.pool.close().await;
    let response = app.get("/api/v1/me", &tenant.api_key).await;
    let body = assert_error(response, 500, "internal").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(message, "internal error", "no database details leak to the client");
}
