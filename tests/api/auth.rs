use reqwest::Client;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_error, spawn_app, spawn_app_with};

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn login_sets_an_httponly_lax_session_cookie_and_me_knows_the_agent() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "Ann@Acme.test", "admin").await;
    let client = Client::builder().cookie_store(true).build().unwrap();
    let response = client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"workspace": "acme", "email": "ann@acme.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookies = set_cookies(&response);
    let session = cookies.iter().find(|c| c.starts_with("sb_session=")).expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Path=/"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "plain HTTP by default: {session}");
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("sb_csrf=")).expect("csrf cookie");
    assert!(!csrf_cookie.contains("HttpOnly"), "the UI script reads it");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["agent"]["id"], agent.id.as_str());
    assert!(body["agent"].get("password_hash").is_none());

    let me: Value = client.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["actor"]["type"], "agent");
    assert_eq!(me["actor"]["agent"]["email"], "ann@acme.test");
    assert_eq!(me["actor"]["csrf_token"], body["csrf_token"]);
}

#[tokio::test]
async fn cookies_are_secure_when_configured_for_tls() {
    let app = spawn_app_with(|s| s.auth.secure_cookies = true).await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    let response = app.login("acme", agent.email, PASSWORD).await;
    for cookie in set_cookies(&response) {
        assert!(cookie.contains("; Secure"), "{cookie}");
    }
}

#[tokio::test]
async fn wrong_password_unknown_email_and_unknown_workspace_look_the_same() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    app.create_agent(&tenant, "ann@acme.test", "agent").await;
    let mut messages = Vec::new();
    for (workspace, email, password) in [
        ("acme", "ann@acme.test", "wrong password!!"),
        ("acme", "nobody@acme.test", PASSWORD),
        ("nowhere", "ann@acme.test", PASSWORD),
    ] {
        let response = app.login(workspace, email, password).await;
        let body = assert_error(response, 401, "invalid_credentials").await;
        messages.push(body["error"]["message"].as_str().unwrap().to_owned());
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "{messages:?}");
}

#[tokio::test]
async fn logout_needs_csrf_then_ends_the_session() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;

    let without = client.post(app.url("/api/v1/auth/logout")).send().await.unwrap();
    assert_error(without, 403, "forbidden").await;
    assert_eq!(client.get(app.url("/api/v1/me")).send().await.unwrap().status(), 200, "still logged in");

    let response = client.post(app.url("/api/v1/auth/logout")).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert!(set_cookies(&response).iter().any(|c| c.starts_with("sb_session=;") && c.contains("Max-Age=0")));
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM identity.sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sessions, 0, "the server-side session is gone");
    assert_error(client.get(app.url("/api/v1/me")).send().await.unwrap(), 401, "unauthenticated").await;
}

#[tokio::test]
async fn a_stolen_cookie_is_useless_after_logout() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    let response = app.login("acme", agent.email, PASSWORD).await;
    let session = set_cookies(&response).into_iter().find(|c| c.starts_with("sb_session=")).unwrap();
    let pair = session.split(';').next().unwrap().to_owned();
    let csrf = response.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
    let me = || app.client.get(app.url("/api/v1/me")).header("cookie", pair.clone()).send();
    assert_eq!(me().await.unwrap().status(), 200);
    app.client
        .post(app.url("/api/v1/auth/logout"))
        .header("cookie", pair.clone())
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(me().await.unwrap().status(), 401);
}

#[tokio::test]
async fn an_expired_session_is_401() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    let (client, _) = app.session_client(&tenant, &agent).await;
    assert_eq!(client.get(app.url("/api/v1/me")).send().await.unwrap().status(), 200);
    sqlx::query("UPDATE identity.sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_error(client.get(app.url("/api/v1/me")).send().await.unwrap(), 401, "unauthenticated").await;
}

#[tokio::test]
async fn session_lifetime_follows_configuration() {
    let app = spawn_app_with(|s| s.auth.session_ttl_secs = 600).await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    app.session_client(&tenant, &agent).await;
    let seconds: f64 =
        sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM expires_at - created_at)::float8 FROM identity.sessions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!((599.0..=601.0).contains(&seconds), "{seconds}");
}

#[tokio::test]
async fn cookie_authenticated_writes_need_the_csrf_token() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let admin = app.create_agent(&tenant, "admin@acme.test", "admin").await;
    let (client, csrf) = app.session_client(&tenant, &admin).await;
    let body = json!({"email": "new@acme.test", "name": "New", "role": "agent", "password": PASSWORD});

    let missing = client.post(app.url("/api/v1/agents")).json(&body).send().await.unwrap();
    assert_error(missing, 403, "forbidden").await;
    let wrong =
        client.post(app.url("/api/v1/agents")).header("x-csrf-token", "0".repeat(64)).json(&body).send().await.unwrap();
    assert_error(wrong, 403, "forbidden").await;
    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM identity.agents").fetch_one(&app.pool).await.unwrap();
    assert_eq!(agents, 1, "nothing was created without the token");

    let right = client.post(app.url("/api/v1/agents")).header("x-csrf-token", &csrf).json(&body).send().await.unwrap();
    assert_eq!(right.status(), 201);
    assert_eq!(client.get(app.url("/api/v1/agents")).send().await.unwrap().status(), 200, "reads need no token");
}

#[tokio::test]
async fn repeated_failures_lock_the_account_even_for_the_right_password() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    for _ in 0..5 {
        assert_eq!(app.login("acme", &agent.email, "not the password").await.status(), 401);
    }
    let locked = app.login("acme", &agent.email, PASSWORD).await;
    let retry_after: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_error(locked, 429, "too_many_requests").await;

    // Once the failures leave the window, the right password works again.
    sqlx::query("UPDATE identity.login_failures SET failed_at = failed_at - interval '16 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.login("acme", &agent.email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_successful_login_forgives_earlier_failures() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    for _ in 0..4 {
        app.login("acme", &agent.email, "not the password").await;
    }
    assert_eq!(app.login("acme", &agent.email, PASSWORD).await.status(), 200);
    for _ in 0..4 {
        assert_eq!(app.login("acme", &agent.email, "not the password").await.status(), 401, "the count started again");
    }
}

#[tokio::test]
async fn many_failures_from_one_address_throttle_it_across_accounts() {
    let app = spawn_app_with(|s| s.auth.login_max_failures_per_ip = 3).await;
    let tenant = app.create_tenant("acme").await;
    let agent = app.create_agent(&tenant, "ann@acme.test", "agent").await;
    for n in 0..3 {
        let response = app.login("acme", format!("guess{n}@acme.test"), "x").await;
        assert_eq!(response.status(), 401);
    }
    let response = app.login("acme", agent.email, PASSWORD).await;
    assert_error(response, 429, "too_many_requests").await;
}
