//! Another tenant's object is a 404 on every route that takes an id, and never appears in lists.

use serde_json::{Value, json};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn tenant_b_cannot_see_or_touch_tenant_a() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let a_agent = app.create_agent(&a, "ann@a.test", "admin").await;
    let a_keys: Value = app.get("/api/v1/api-keys", &a.api_key).await.json().await.unwrap();
    let a_key_id = a_keys["items"][0]["id"].as_str().unwrap().to_owned();

    for path in [format!("/api/v1/agents/{}", a_agent.id), format!("/api/v1/api-keys/{a_key_id}")] {
        assert_error(app.get(&path, &b.api_key).await, 404, "not_found").await;
    }
    let revoke = app.post(&format!("/api/v1/api-keys/{a_key_id}/revoke"), &b.api_key, json!({})).await;
    assert_error(revoke, 404, "not_found").await;
    assert_eq!(app.get("/api/v1/me", &a.api_key).await.status(), 200, "A's key survived B's attempt");

    let b_agents: Value = app.get("/api/v1/agents", &b.api_key).await.json().await.unwrap();
    assert_eq!(b_agents["items"], json!([]));
    let b_keys: Value = app.get("/api/v1/api-keys", &b.api_key).await.json().await.unwrap();
    assert!(b_keys["items"].as_array().unwrap().iter().all(|k| k["tenant_id"] == b.id.to_string()));
    let b_me: Value = app.get("/api/v1/me", &b.api_key).await.json().await.unwrap();
    assert_eq!(b_me["tenant"]["slug"], "tenant-b");
}

#[tokio::test]
async fn an_agent_session_is_confined_to_its_tenant() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let a_agent = app.create_agent(&a, "ann@a.test", "agent").await;
    let b_admin = app.create_agent(&b, "bob@b.test", "admin").await;
    let (client, _) = app.session_client(&b, &b_admin).await;
    let response = client.get(app.url(&format!("/api/v1/agents/{}", a_agent.id))).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    let list: Value = client.get(app.url("/api/v1/agents")).send().await.unwrap().json().await.unwrap();
    assert!(list["items"].as_array().unwrap().iter().all(|agent| agent["email"] == "bob@b.test"));
}

#[tokio::test]
async fn logging_into_another_workspace_with_the_same_email_fails() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    app.create_tenant("tenant-b").await;
    let agent = app.create_agent(&a, "ann@a.test", "agent").await;
    let response = app.login("tenant-b", agent.email, agent.password).await;
    assert_error(response, 401, "invalid_credentials").await;
}
