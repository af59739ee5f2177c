use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_valid_key_reaches_me() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let response = app.get("/api/v1/me", &tenant.api_key).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tenant"]["slug"], "acme");
    assert_eq!(body["actor"]["type"], "api_key");
    assert_eq!(body["actor"]["api_key"]["prefix"], &tenant.api_key[..12]);
}

#[tokio::test]
async fn missing_wrong_and_malformed_keys_are_401() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let no_key = app.client.get(app.url("/api/v1/me")).send().await.unwrap();
    assert_error(no_key, 401, "unauthenticated").await;

    let mut wrong = tenant.api_key.clone();
    wrong.replace_range(20..24, "0000");
    assert_error(app.get("/api/v1/me", &wrong).await, 401, "invalid_credentials").await;

    let basic =
        app.client.get(app.url("/api/v1/me")).header("authorization", "Basic Zm9vOmJhcg==").send().await.unwrap();
    assert_error(basic, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn created_key_is_shown_once_and_stored_only_as_a_digest() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let response = app.post("/api/v1/api-keys", &tenant.api_key, json!({"name": "backoffice"})).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["api_key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sbk_") && secret.len() == 68, "256-bit key: {secret}");
    assert_eq!(created["prefix"], &secret[..12]);

    let shown = app.get(&format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap()), &tenant.api_key).await;
    let shown: Value = shown.json().await.unwrap();
    assert!(shown.get("api_key").is_none(), "a stored key is never shown again: {shown}");

    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM identity.api_keys WHERE prefix = $1")
        .bind(&secret[..12])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32, "a SHA-256 digest");
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM identity.api_keys t")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(!dump.contains(&secret[12..]), "the secret part of a key is not in the database");

    assert_eq!(app.get("/api/v1/me", &secret).await.status(), 200, "the new key works");
}

#[tokio::test]
async fn a_revoked_key_is_401_and_revoking_again_changes_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let created: Value = app.post("/api/v1/api-keys", &tenant.api_key, json!({})).await.json().await.unwrap();
    let (id, secret) = (created["id"].as_str().unwrap(), created["api_key"].as_str().unwrap());
    assert_eq!(app.get("/api/v1/me", secret).await.status(), 200);

    let revoked = app.post(&format!("/api/v1/api-keys/{id}/revoke"), &tenant.api_key, json!({})).await;
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await.unwrap();
    assert!(revoked["revoked_at"].is_string());

    assert_error(app.get("/api/v1/me", secret).await, 401, "invalid_credentials").await;
    let again: Value =
        app.post(&format!("/api/v1/api-keys/{id}/revoke"), &tenant.api_key, json!({})).await.json().await.unwrap();
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    assert_eq!(app.get("/api/v1/me", &tenant.api_key).await.status(), 200, "other keys keep working");
}

#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_at_once() {
    // Each process keeps the keys it authenticated; a revocation made elsewhere (another
    // process, an operator in psql) reaches it through a notification, not its 30 s expiry.
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let created: Value = app.post("/api/v1/api-keys", &tenant.api_key, json!({})).await.json().await.unwrap();
    let (id, secret) = (created["id"].as_str().unwrap(), created["api_key"].as_str().unwrap());
    assert_eq!(app.get("/api/v1/me", secret).await.status(), 200);
    // The first request started the listener; once it listens, the next read is kept.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.get("/api/v1/me", secret).await.status(), 200);
    assert_eq!(app.get("/api/v1/me", secret).await.status(), 200);

    sqlx::query("UPDATE identity.api_keys SET revoked_at = now() WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let revoked = std::time::Instant::now();
    loop {
        let status = app.get("/api/v1/me", secret).await.status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(revoked.elapsed().as_secs() < 3, "a revoked key still worked 3 s later");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.get("/api/v1/me", &tenant.api_key).await.status(), 200, "other keys keep working");
}

#[tokio::test]
async fn concurrent_requests_with_many_keys_each_get_their_own_answer() {
    // Keys presented together are looked up in one statement; each request still gets its own
    // tenant, and a revoked or unknown key its own 401.
    let app = spawn_app().await;
    let alpha = app.create_tenant("alpha").await;
    let beta = app.create_tenant("beta").await;
    let created: Value = app.post("/api/v1/api-keys", &alpha.api_key, json!({})).await.json().await.unwrap();
    let revoked = created["api_key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap();
    app.post(&format!("/api/v1/api-keys/{id}/revoke"), &alpha.api_key, json!({})).await;
    let unknown = format!("sbk_{}", "0".repeat(64));
    let cases: Vec<(String, Option<&str>)> = (0..60)
        .map(|n| match n % 4 {
            0 => (alpha.api_key.clone(), Some("alpha")),
            1 => (beta.api_key.clone(), Some("beta")),
            2 => (revoked.clone(), None),
            _ => (unknown.clone(), None),
        })
        .collect();
    let requests: Vec<_> = cases
        .iter()
        .map(|(key, _)| {
            let (client, url, key) = (app.client.clone(), app.url("/api/v1/me"), key.clone());
            tokio::spawn(async move {
                let response = client.get(url).bearer_auth(key).send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for ((_, expected), request) in cases.iter().zip(requests) {
        let (status, body) = request.await.unwrap();
        match expected {
            Some(slug) => {
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["tenant"]["slug"], *slug);
            }
            None => {
                assert_eq!(status, 401, "{body}");
                assert_eq!(body["error"]["code"], "invalid_credentials");
            }
        }
    }
}

#[tokio::test]
async fn last_used_time_is_recorded() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let before: Value = app.get("/api/v1/api-keys", &tenant.api_key).await.json().await.unwrap();
    // The listing request itself authenticated with the key, so it is already marked used.
    let used = before["items"][0]["last_used_at"].as_str().expect("last_used_at set").to_owned();
    let parsed = chrono::DateTime::parse_from_rfc3339(&used).unwrap();
    assert!((chrono::Utc::now() - parsed.to_utc()).num_seconds() < 30);
}

#[tokio::test]
async fn listing_keys_is_paginated() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    for _ in 0..2 {
        app.post("/api/v1/api-keys", &tenant.api_key, json!({})).await;
    }
    let first: Value = app.get("/api/v1/api-keys?limit=2", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value =
        app.get(&format!("/api/v1/api-keys?limit=2&cursor={cursor}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second.get("next_cursor").is_none());
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);

    let bad = app.get("/api/v1/api-keys?limit=0", &tenant.api_key).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "limit");
    let bad = app.get("/api/v1/api-keys?limit=ten", &tenant.api_key).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "limit");
}

#[tokio::test]
async fn agents_without_admin_role_cannot_manage_keys() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "agent@acme.test", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    let list = client.get(app.url("/api/v1/api-keys")).send().await.unwrap();
    assert_error(list, 403, "forbidden").await;
    let create =
        client.post(app.url("/api/v1/api-keys")).header("x-csrf-token", csrf).json(&json!({})).send().await.unwrap();
    assert_error(create, 403, "forbidden").await;
}
