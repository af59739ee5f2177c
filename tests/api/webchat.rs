//! The webchat channel over HTTP: a visitor's session and token, their messages landing in the
//! inbox, an agent's answer reaching the visitor's stream and its ticks following the visitor's
//! receipts; what a stranger cannot do (forged tokens, foreign origins, another tenant); rate
//! limits per visitor and per address; the widget's frame and script.

use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app};
use crate::stream::SseClient;

const WAIT: Duration = Duration::from_secs(10);
const ALLOWED: &str = "https://alpine.example";

async fn webchat(app: &TestApp, tenant: &TestTenant) -> String {
    let body = json!({"channel_type": "webchat", "display_name": "Alpine Tours",
                      "config": {"allowed_origins": [ALLOWED], "greeting": "Grüß Gott!"}});
    app.active_channel(tenant, body).await["id"].as_str().unwrap().to_owned()
}

async fn session(app: &TestApp, channel: &str, token: Option<&str>) -> Value {
    let response = app
        .client
        .post(app.url(&format!("/api/webchat/{channel}/session")))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn say(app: &TestApp, channel: &str, token: &str, text: &str, client_id: &str) -> Response {
    app.client
        .post(app.url(&format!("/api/webchat/{channel}/messages")))
        .bearer_auth(token)
        .json(&json!({ "text": text, "client_id": client_id, "name": "Vera Visitor", "email": "vera@example.org",
                        "page": "https://alpine.example/tours" }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_visitor_writes_and_an_agents_answer_reaches_them_live_with_ticks_from_their_receipts() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let channel = webchat(&app, &tenant).await;

    let first = session(&app, &channel, None).await;
    assert_eq!(first["channel_name"], "Alpine Tours");
    assert_eq!(first["greeting"], "Grüß Gott!");
    assert_eq!(first["messages"], json!([]));
    let token = first["token"].as_str().unwrap().to_owned();
    let stream_url = app.url(&format!("/api/webchat/{channel}/stream?token={token}"));
    let mut stream = SseClient::connect(&app.client, &stream_url, None).await;

    let sent = say(&app, &channel, &token, "Is the 9:15 bus <b>on time</b>?", "c-1").await;
    assert_eq!(sent.status(), 202);
    let sent: Value = sent.json().await.unwrap();
    assert_eq!((sent["from"].as_str(), sent["client_id"].as_str()), (Some("visitor"), Some("c-1")));
    // The widget retrying after a lost answer stores nothing new.
    let again: Value =
        say(&app, &channel, &token, "Is the 9:15 bus <b>on time</b>?", "c-1").await.json().await.unwrap();
    assert_eq!(again["id"], sent["id"]);

    // In the inbox like any channel: named by the visitor, text as written.
    let list: Value = app.get("/api/v1/conversations?channel=webchat", &tenant.api_key).await.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["contact_name"], "Vera Visitor");
    assert_eq!(items[0]["inbound_count"].as_i64().unwrap_or(1), 1);
    let conversation = items[0]["id"].as_str().unwrap().to_owned();
    let thread: Value =
        app.get(&format!("/api/v1/conversations/{conversation}/messages"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(thread["items"].as_array().unwrap().len(), 1, "{thread}");
    assert_eq!(thread["items"][0]["content"]["body"], "Is the 9:15 bus <b>on time</b>?");
    let participants: (Value,) = sqlx::query_as(
        "SELECT attributes FROM communications.conversation_participants WHERE conversation_id = $1::uuid",
    )
    .bind(&conversation)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(participants.0["email_given"], "vera@example.org", "kept for agents, not an identifier");

    let own = stream.until("message", WAIT).await;
    assert_eq!(own.last().unwrap().data["id"], sent["id"], "the visitor's other tabs see it too");

    // The agent answers; Switchboard delivers it to the visitor's stream at once.
    let reply = app
        .post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            &tenant.api_key,
            json!({"content": {"text": "Yes — it leaves at 9:15 sharp."}}),
        )
        .await;
    assert_eq!(reply.status(), 202);
    let reply: Value = reply.json().await.unwrap();
    assert_eq!(reply["status"], "sent");
    let answer = stream.until("message", WAIT).await.pop().unwrap().data;
    assert_eq!(answer["id"], reply["id"]);
    assert_eq!(
        (answer["from"].as_str(), answer["text"].as_str()),
        (Some("agent"), Some("Yes — it leaves at 9:15 sharp."))
    );

    // The widget's receipts move the agent's ticks: delivered, then read, never back.
    let seen = |status: &'static str| {
        let (app, channel, token, id) = (&app, &channel, &token, reply["id"].clone());
        async move {
            let response = app
                .client
                .post(app.url(&format!("/api/webchat/{channel}/seen")))
                .bearer_auth(token)
                .json(&json!({"up_to": id, "status": status}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["updated"].as_i64().unwrap()
        }
    };
    assert_eq!(seen("delivered").await, 1);
    assert_eq!(seen("read").await, 1);
    assert_eq!(seen("delivered").await, 0, "a status never moves back");
    let message: Value = app
        .get(&format!("/api/v1/messages/{}", reply["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(message["status"], "read", "{message}");

    // A returning visitor (the token kept in the browser) gets the conversation back.
    let back = session(&app, &channel, Some(&token)).await;
    assert_eq!(back["visitor_id"], first["visitor_id"]);
    let texts: Vec<&str> = back["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["Is the 9:15 bus <b>on time</b>?", "Yes — it leaves at 9:15 sharp."]);
    // Private notes never reach the visitor.
    let note = app
        .post(&format!("/api/v1/conversations/{conversation}/notes"), &tenant.api_key, json!({"text": "VIP, be nice"}))
        .await;
    assert!(note.status().is_success(), "{}", note.text().await.unwrap());
    let back = session(&app, &channel, Some(&token)).await;
    assert_eq!(back["messages"].as_array().unwrap().len(), 2, "{back}");
    assert!(stream.next(Duration::from_millis(700)).await.is_none(), "a note is not a message to the visitor");
}

#[tokio::test]
async fn strangers_get_nothing_forged_tokens_foreign_origins_other_tenants_and_bad_input() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let channel = webchat(&app, &tenant).await;
    let other = app.create_tenant("rival").await;
    let other_channel = webchat(&app, &other).await;
    let token = session(&app, &channel, None).await["token"].as_str().unwrap().to_owned();
    let rival_token = session(&app, &other_channel, None).await["token"].as_str().unwrap().to_owned();

    let post = |token: Option<String>, body: Value| {
        let request = app.client.post(app.url(&format!("/api/webchat/{channel}/messages"))).json(&body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let hello = json!({"text": "hello", "client_id": "x1"});
    assert_error(post(None, hello.clone()).await.unwrap(), 401, "unauthenticated").await;
    assert_error(post(Some(rival_token.clone()), hello.clone()).await.unwrap(), 401, "invalid_credentials").await;
    let mut tampered = token.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    assert_error(
        post(Some(String::from_utf8(tampered).unwrap()), hello.clone()).await.unwrap(),
        401,
        "invalid_credentials",
    )
    .await;
    // A stranger's token from another tenant's channel opens nothing there either: a new visitor.
    let fresh = session(&app, &channel, Some(&rival_token)).await;
    assert_eq!(fresh["messages"], json!([]));

    // Bad input names the field.
    for (body, field) in [
        (json!({"text": "  ", "client_id": "x"}), "text"),
        (json!({"text": "x".repeat(4097), "client_id": "x"}), "text"),
        (json!({"text": "hi", "client_id": "no spaces"}), "client_id"),
        (json!({"text": "hi", "client_id": "x", "email": "not-an-email"}), "email"),
        (json!({"text": "hi", "client_id": "x", "name": "a\nb"}), "name"),
        (json!({"text": "hi", "client_id": "x", "page": "javascript:alert(1)"}), "page"),
    ] {
        let error = assert_error(post(Some(token.clone()), body).await.unwrap(), 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{error}");
    }

    // Browsers on pages the operator did not list are refused; listed pages and our own frame pass.
    let from = |origin: &str| {
        app.client
            .post(app.url(&format!("/api/webchat/{channel}/session")))
            .header("origin", origin)
            .json(&json!({}))
            .send()
    };
    assert_error(from("https://evil.example").await.unwrap(), 403, "forbidden").await;
    assert_eq!(from(ALLOWED).await.unwrap().status(), 200);
    assert_eq!(from(&app.address).await.unwrap().status(), 200);

    // Unknown, suspended, or not webchat: no chat at all.
    assert_error(
        app.client
            .post(app.url(&format!("/api/webchat/{}/session", uuid::Uuid::now_v7())))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let suspended =
        app.post(&format!("/api/v1/channel-accounts/{other_channel}/suspend"), &other.api_key, json!({})).await;
    assert_eq!(suspended.status(), 200);
    assert_error(
        app.client
            .post(app.url(&format!("/api/webchat/{other_channel}/session")))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    // The visitor's conversation is the tenant's alone.
    assert_eq!(post(Some(token.clone()), hello).await.unwrap().status(), 202);
    let mine: Value = app.get("/api/v1/conversations?channel=webchat", &tenant.api_key).await.json().await.unwrap();
    let id = mine["items"][0]["id"].as_str().unwrap().to_owned();
    assert_error(app.get(&format!("/api/v1/conversations/{id}"), &other.api_key).await, 404, "not_found").await;
    let rivals: Value = app.get("/api/v1/conversations?channel=webchat", &other.api_key).await.json().await.unwrap();
    assert_eq!(rivals["items"], json!([]));

    // The send API does not deliver webchat: answers are written in the conversation.
    let refused = app
        .post(
            "/api/v1/messages",
            &tenant.api_key,
            json!({"to": {"phone": "+4915112345678"}, "channels": ["webchat"],
                                                           "content": {"text": "hi"}}),
        )
        .await;
    assert_eq!(refused.status(), 422, "{}", refused.text().await.unwrap());
}

#[tokio::test]
async fn visitors_are_limited_per_visitor_and_per_address() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let channel = webchat(&app, &tenant).await;
    let token = session(&app, &channel, None).await["token"].as_str().unwrap().to_owned();
    for n in 0..8 {
        assert_eq!(say(&app, &channel, &token, "hi", &format!("a{n}")).await.status(), 202, "message {n}");
    }
    let limited = say(&app, &channel, &token, "hi", "a8").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_some());
    let body = assert_error(limited, 429, "too_many_requests").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("too quickly"), "{body}");

    // New visitors from the same address share its budget (30 at once): 8 so far.
    let mut accepted = 8;
    let mut refused = None;
    'visitors: for v in 0..5 {
        let token = session(&app, &channel, None).await["token"].as_str().unwrap().to_owned();
        for n in 0..8 {
            let response = say(&app, &channel, &token, "hi", &format!("v{v}m{n}")).await;
            if response.status() == 429 {
                refused = Some(assert_error(response, 429, "too_many_requests").await);
                break 'visitors;
            }
            assert_eq!(response.status(), 202);
            accepted += 1;
        }
    }
    let refused = refused.expect("the address's budget ran out");
    assert!(refused["error"]["message"].as_str().unwrap().contains("address"), "{refused}");
    assert!((30..=31).contains(&accepted), "{accepted} accepted from one address");
}

#[tokio::test]
async fn the_widget_script_and_frame_are_served_only_to_allowed_sites_and_operators_edit_the_origins() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let channel = webchat(&app, &tenant).await;

    let script = app.client.get(app.url("/webchat.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.text().await.unwrap().contains("/frame"));

    let frame = |referer: Option<&str>| {
        let request = app.client.get(app.url(&format!("/webchat/{channel}/frame")));
        match referer {
            Some(referer) => request.header("referer", referer),
            None => request,
        }
        .send()
    };
    let shown = frame(Some("https://alpine.example/tours")).await.unwrap();
    assert_eq!(shown.status(), 200);
    let csp = shown.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("frame-ancestors 'self' https://alpine.example"), "{csp}");
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = shown.text().await.unwrap();
    assert!(html.contains("Alpine Tours") && html.contains("Grüß Gott!"), "{html}");
    assert_eq!(frame(Some("https://evil.example/")).await.unwrap().status(), 403);
    assert_eq!(frame(None).await.unwrap().status(), 200, "the CSP still binds browsers without a Referer");
    assert_eq!(app.client.get(app.url("/webchat/not-a-channel/frame")).send().await.unwrap().status(), 404);

    // The operator lists the origins; anything that is not an origin is refused by name.
    let patch = |config: Value| {
        app.client
            .patch(app.url(&format!("/api/v1/channel-accounts/{channel}")))
            .bearer_auth(&tenant.api_key)
            .json(&json!({ "config": config }))
            .send()
    };
    let refused = patch(json!({"allowed_origins": ["https://shop.example/path"]})).await.unwrap();
    let error = assert_error(refused, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "config.allowed_origins[0]");
    let updated = patch(json!({"allowed_origins": ["HTTPS://Shop.Example/"]})).await.unwrap();
    assert_eq!(updated.status(), 200, "{}", updated.text().await.unwrap());
    let shown = frame(Some("https://shop.example/basket")).await.unwrap();
    assert_eq!(shown.status(), 200);
    assert!(
        shown.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'self' https://shop.example")
    );
    assert_eq!(frame(Some("https://alpine.example/tours")).await.unwrap().status(), 403, "no longer listed");
}
