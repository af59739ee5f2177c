//! Labels on conversations, private notes, canned responses; bad input and tenant isolation.

use reqwest::{Client, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::conversations::with_conversation;
use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with_sim};

async fn json_of(response: Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> Response {
    app.client.patch(app.url(path)).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn agent_post(app: &TestApp, (client, csrf): &(Client, String), path: &str, body: Value) -> Response {
    client.post(app.url(path)).header("x-csrf-token", csrf).json(&body).send().await.unwrap()
}

async fn field_of(response: Response, status: u16, code: &str) -> Value {
    assert_error(response, status, code).await["error"]["field"].clone()
}

/// The label payloads of the conversation's `conversation.updated` changes, oldest first.
async fn label_changes(app: &TestApp, conversation: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT payload->'labels' FROM communications.changes
         WHERE conversation_id = $1 AND kind = 'conversation.updated' AND payload ? 'labels' ORDER BY id",
    )
    .bind(Uuid::parse_str(conversation).unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn labels_are_created_set_replaced_and_deleted_with_every_change_recorded() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, conversation) = with_conversation(&app, &sim, "alpine").await;
    let key = &tenant.api_key;
    let vip = json_of(app.post("/api/v1/labels", key, json!({"name": " VIP ", "color": "#FF8800"})).await).await;
    assert_eq!(vip["name"], "VIP");
    assert_eq!(vip["color"], "#ff8800");
    let billing = json_of(app.post("/api/v1/labels", key, json!({"name": "billing"})).await).await;
    assert_eq!(billing["color"], Value::Null);
    assert_eq!(field_of(app.post("/api/v1/labels", key, json!({"name": "vip"})).await, 409, "conflict").await, "name");
    for (body, field) in [
        (json!({"name": "Red", "color": "red"}), "color"),
        (json!({"name": "Red", "color": "#ff00000"}), "color"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(51)}), "name"),
        (json!({"name": "a\u{0}b"}), "name"),
        (json!({"name": "Red", "colour": "#ff0000"}), "colour"),
    ] {
        let refused = app.post("/api/v1/labels", key, body.clone()).await;
        assert_eq!(field_of(refused, 422, "validation_failed").await, field, "{body}");
    }
    let listed = json_of(app.get("/api/v1/labels", key).await).await;
    let names: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["billing", "VIP"], "by name, any case");

    let path = format!("/api/v1/conversations/{conversation}/labels");
    let set = json_of(app.put(&path, key, json!({"labels": [vip["id"], billing["id"], vip["id"]]})).await).await;
    let ids = |body: &Value| -> Vec<String> {
        body["labels"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
    };
    let (vip_id, billing_id) = (vip["id"].as_str().unwrap().to_owned(), billing["id"].as_str().unwrap().to_owned());
    assert_eq!(ids(&set), [billing_id.clone(), vip_id.clone()]);
    let replaced = json_of(app.put(&path, key, json!({"labels": [billing["id"]]})).await).await;
    assert_eq!(ids(&replaced), [billing_id.as_str()]);
    let same = json_of(app.put(&path, key, json!({"labels": [billing["id"]]})).await).await;
    assert_eq!(ids(&same), [billing_id.as_str()]);
    assert_eq!(
        label_changes(&app, &conversation).await,
        [json!([billing_id, vip_id]), json!([billing_id])],
        "one change per change; an identical set changes nothing"
    );
    let unknown = app.put(&path, key, json!({"labels": [billing["id"], Uuid::now_v7()]})).await;
    assert_eq!(field_of(unknown, 422, "validation_failed").await, "labels");
    let other = app.create_tenant("bergbahn").await;
    let theirs = json_of(app.post("/api/v1/labels", &other.api_key, json!({"name": "Theirs"})).await).await;
    let foreign = app.put(&path, key, json!({"labels": [theirs["id"]]})).await;
    assert_eq!(field_of(foreign, 422, "validation_failed").await, "labels", "another tenant's label is unknown");
    let not_ids = app.put(&path, key, json!({"labels": ["vip"]})).await;
    assert_eq!(field_of(not_ids, 422, "validation_failed").await, "labels[0]");
    assert_eq!(
        ids(&json_of(app.put(&path, key, json!({"labels": [billing["id"]]})).await).await),
        [billing_id.as_str()]
    );

    let deleted = app.delete(&format!("/api/v1/labels/{billing_id}"), key).await;
    assert_eq!(deleted.status(), 204);
    let changes = label_changes(&app, &conversation).await;
    assert_eq!(changes.last(), Some(&json!([])), "the conversation lost it: {changes:?}");
    assert_eq!(json_of(app.put(&path, key, json!({"labels": []})).await).await["labels"], json!([]));
    assert_error(app.delete(&format!("/api/v1/labels/{billing_id}"), key).await, 404, "not_found").await;
    // The name is free again.
    assert_eq!(app.post("/api/v1/labels", key, json!({"name": "Billing"})).await.status(), 201);
}

#[tokio::test]
async fn notes_are_private_listed_oldest_first_and_never_in_the_thread() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, conversation) = with_conversation(&app, &sim, "alpine").await;
    let key = &tenant.api_key;
    let path = format!("/api/v1/conversations/{conversation}/notes");
    let by_key = app.post(&path, key, json!({"text": "Secret: refund approved by finance"})).await;
    assert_eq!(by_key.status(), 201);
    let by_key: Value = by_key.json().await.unwrap();
    assert_eq!(by_key["author"], "api key");
    assert_eq!(by_key["author_agent_id"], Value::Null);
    let agent = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let session = app.session_client(&tenant, &agent).await;
    let by_agent = json_of(agent_post(&app, &session, &path, json!({"text": "Called the customer"})).await).await;
    assert_eq!(by_agent["author"], "agent");
    assert_eq!(by_agent["author_agent_id"], agent.id.as_str());
    let long = "ü".repeat(10_000);
    assert_eq!(app.post(&path, key, json!({ "text": long })).await.status(), 201, "10000 characters, not bytes");

    let listed = json_of(app.get(&path, key).await).await;
    let texts: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|n| n["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Secret: refund approved by finance", "Called the customer", long.as_str()], "oldest first");
    let first = json_of(app.get(&format!("{path}?limit=2"), key).await).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = json_of(app.get(&format!("{path}?limit=2&cursor={cursor}"), key).await).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_cursor").is_none());

    let thread = app.get(&format!("/api/v1/messages?conversation_id={conversation}"), key).await.text().await.unwrap();
    assert!(thread.contains("Hello"), "{thread}");
    assert!(!thread.contains("Secret") && !thread.contains("Called the customer"), "notes are not messages: {thread}");
    let all = app.get("/api/v1/messages", key).await.text().await.unwrap();
    assert!(!all.contains("Secret"));
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM communications.changes WHERE conversation_id = $1 AND kind = 'note.created'",
    )
    .bind(Uuid::parse_str(&conversation).unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kinds.len(), 3);

    for (body, field) in [
        (json!({"text": ""}), "text"),
        (json!({"text": "  \n "}), "text"),
        (json!({"text": "x".repeat(10_001)}), "text"),
        (json!({"text": "a\u{0}b"}), "text"),
        (json!({}), "text"),
        (json!({"text": "x", "private": false}), "private"),
    ] {
        let refused = app.post(&path, key, body.clone()).await;
        assert_eq!(field_of(refused, 422, "validation_failed").await, field, "{body}");
    }
    let unknown = app.post(&format!("/api/v1/conversations/{}/notes", Uuid::now_v7()), key, json!({"text": "x"})).await;
    assert_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn canned_responses_are_created_searched_edited_and_deleted_with_unique_short_codes() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let key = &tenant.api_key;
    let greet = json_of(
        app.post("/api/v1/canned-responses", key, json!({"short_code": "greet", "text": "Hello! How can we help?"}))
            .await,
    )
    .await;
    json_of(app.post("/api/v1/canned-responses", key, json!({"short_code": "greet-de", "text": "Grüezi!"})).await)
        .await;
    json_of(
        app.post(
            "/api/v1/canned-responses",
            key,
            json!({"short_code": "refund_policy", "text": "Refunds take 5 days."}),
        )
        .await,
    )
    .await;
    let taken = app.post("/api/v1/canned-responses", key, json!({"short_code": "greet", "text": "Hi"})).await;
    assert_eq!(field_of(taken, 409, "conflict").await, "short_code");
    for (body, field) in [
        (json!({"short_code": "Greet", "text": "x"}), "short_code"),
        (json!({"short_code": "with space", "text": "x"}), "short_code"),
        (json!({"short_code": "", "text": "x"}), "short_code"),
        (json!({"short_code": "a".repeat(51), "text": "x"}), "short_code"),
        (json!({"short_code": "ok", "text": ""}), "text"),
        (json!({"short_code": "ok", "text": "x".repeat(4001)}), "text"),
        (json!({"short_code": "ok", "text": "a\u{0}"}), "text"),
        (json!({"short_code": "ok"}), "text"),
    ] {
        let refused = app.post("/api/v1/canned-responses", key, body.clone()).await;
        assert_eq!(field_of(refused, 422, "validation_failed").await, field, "{body}");
    }

    let codes = |body: Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|c| c["short_code"].as_str().unwrap().to_owned()).collect()
    };
    let search = |q: &'static str| {
        let request = app.client.get(app.url("/api/v1/canned-responses")).query(&[("q", q)]).bearer_auth(key);
        async move { json_of(request.send().await.unwrap()).await }
    };
    assert_eq!(
        codes(json_of(app.get("/api/v1/canned-responses", key).await).await),
        ["greet", "greet-de", "refund_policy"]
    );
    assert_eq!(codes(search("gre").await), ["greet", "greet-de"], "short code prefix");
    assert_eq!(codes(search("/gre").await), ["greet", "greet-de"], "as typed in the composer");
    assert_eq!(codes(search("5 DAYS").await), ["refund_policy"], "text, any case");
    assert_eq!(codes(search("refund_").await), ["refund_policy"]);
    assert!(codes(search("_").await).is_empty(), "LIKE characters are literal: no code starts with _");
    let first = json_of(app.get("/api/v1/canned-responses?limit=2", key).await).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(codes(first), ["greet", "greet-de"]);
    let rest = json_of(app.get(&format!("/api/v1/canned-responses?limit=2&cursor={cursor}"), key).await).await;
    assert_eq!(codes(rest), ["refund_policy"]);

    let path = format!("/api/v1/canned-responses/{}", greet["id"].as_str().unwrap());
    let edited = json_of(patch(&app, &path, key, json!({"text": "Hello there!"})).await).await;
    assert_eq!((edited["short_code"].as_str(), edited["text"].as_str()), (Some("greet"), Some("Hello there!")));
    let renamed = json_of(patch(&app, &path, key, json!({"short_code": "hello"})).await).await;
    assert_eq!(renamed["short_code"], "hello");
    assert_eq!(
        field_of(patch(&app, &path, key, json!({"short_code": "greet-de"})).await, 409, "conflict").await,
        "short_code"
    );
    assert_eq!(
        field_of(patch(&app, &path, key, json!({"shortcode": "x"})).await, 422, "validation_failed").await,
        "shortcode"
    );
    assert_eq!(app.delete(&path, key).await.status(), 204);
    assert_error(app.delete(&path, key).await, 404, "not_found").await;
    assert_error(patch(&app, &path, key, json!({"text": "x"})).await, 404, "not_found").await;
    // The short code is free again.
    assert_eq!(
        app.post("/api/v1/canned-responses", key, json!({"short_code": "greet", "text": "Hi"})).await.status(),
        201
    );
}

#[tokio::test]
async fn another_tenants_labels_notes_canned_responses_and_conversations_are_not_found() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, conversation) = with_conversation(&app, &sim, "alpine").await;
    let key = &tenant.api_key;
    let other = app.create_tenant("bergbahn").await;
    let label = json_of(app.post("/api/v1/labels", key, json!({"name": "VIP"})).await).await;
    let label_id = label["id"].as_str().unwrap();
    let labels = format!("/api/v1/conversations/{conversation}/labels");
    json_of(app.put(&labels, key, json!({"labels": [label_id]})).await).await;
    let notes = format!("/api/v1/conversations/{conversation}/notes");
    json_of(app.post(&notes, key, json!({"text": "Private"})).await).await;
    let canned =
        json_of(app.post("/api/v1/canned-responses", key, json!({"short_code": "hi", "text": "Hi"})).await).await;
    let canned = format!("/api/v1/canned-responses/{}", canned["id"].as_str().unwrap());

    let theirs = &other.api_key;
    assert_eq!(json_of(app.get("/api/v1/labels", theirs).await).await["items"], json!([]));
    assert_eq!(json_of(app.get("/api/v1/canned-responses", theirs).await).await["items"], json!([]));
    // The same name is free in another workspace.
    assert_eq!(app.post("/api/v1/labels", theirs, json!({"name": "VIP"})).await.status(), 201);
    assert_error(app.delete(&format!("/api/v1/labels/{label_id}"), theirs).await, 404, "not_found").await;
    assert_error(app.put(&labels, theirs, json!({"labels": []})).await, 404, "not_found").await;
    assert_error(app.get(&notes, theirs).await, 404, "not_found").await;
    assert_error(app.post(&notes, theirs, json!({"text": "Mine"})).await, 404, "not_found").await;
    assert_error(patch(&app, &canned, theirs, json!({"text": "Mine"})).await, 404, "not_found").await;
    assert_error(app.delete(&canned, theirs).await, 404, "not_found").await;

    // Nothing of theirs changed.
    let still = json_of(app.put(&labels, key, json!({"labels": [label_id]})).await).await;
    assert_eq!(still["labels"][0]["id"], label_id);
    let listed = json_of(app.get(&notes, key).await).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        json_of(app.get("/api/v1/canned-responses?q=hi", key).await).await["items"].as_array().map(Vec::len),
        Some(1)
    );
}
