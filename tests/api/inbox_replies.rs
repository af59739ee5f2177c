//! Unread counts per agent, agents' replies (WhatsApp's 24-hour window, statuses back into the
//! thread) and email threading both ways.

use std::time::{Duration, Instant};

use cpaas_sim::InboundSpec;
use reqwest::Client;
use serde_json::{Value, json};

use crate::delivery::{auto_callbacks, email, wait_for, whatsapp};
use crate::helpers::{TestApp, assert_error, spawn_app_with_sim, spawn_app_with_sim_config};

const WA_FROM: &str = "4915112345678";

async fn inbound_whatsapp(sim: &cpaas_sim::SimHandle, text: &str) {
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: WA_FROM.into(),
        text: text.into(),
    })
    .await
    .unwrap();
}

type Session = (Client, String);

async fn get_as(app: &TestApp, (client, _): &Session, path: &str) -> Value {
    let response = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn post_as(app: &TestApp, (client, csrf): &Session, path: &str, body: Value) -> reqwest::Response {
    client.post(app.url(path)).header("x-csrf-token", csrf).json(&body).send().await.unwrap()
}

fn unread_of(page: &Value, id: &str) -> i64 {
    page["items"].as_array().unwrap().iter().find(|c| c["id"] == id).map_or(0, |c| c["unread_count"].as_i64().unwrap())
}

#[tokio::test]
async fn each_agent_has_exact_unread_counts_and_a_badge() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let a = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let b = app.create_agent(&tenant, "b@alpine.example", "agent").await;
    let (sa, sb) = (app.session_client(&tenant, &a).await, app.session_client(&tenant, &b).await);
    inbound_whatsapp(&sim, "one").await;
    inbound_whatsapp(&sim, "two").await;
    let id = app.newest_conversation(&tenant, 2).await;

    let list_a = get_as(&app, &sa, "/api/v1/conversations").await;
    assert_eq!(unread_of(&list_a, &id), 2, "{list_a}");
    let summary = get_as(&app, &sa, "/api/v1/conversations/summary").await;
    assert_eq!(summary, json!({"unread": 1, "mine": 0, "unassigned": 1}));

    let read: Value =
        post_as(&app, &sa, &format!("/api/v1/conversations/{id}/read"), json!({})).await.json().await.unwrap();
    assert_eq!(read["unread_count"], 0, "{read}");
    assert_eq!(unread_of(&get_as(&app, &sa, "/api/v1/conversations").await, &id), 0);
    assert_eq!(unread_of(&get_as(&app, &sb, "/api/v1/conversations").await, &id), 2, "B has read nothing");
    let only_unread = get_as(&app, &sa, "/api/v1/conversations?unread=true").await;
    assert_eq!(only_unread["items"].as_array().unwrap().len(), 0, "{only_unread}");
    assert_eq!(get_as(&app, &sb, "/api/v1/conversations?unread=true").await["items"][0]["id"], id.as_str());

    inbound_whatsapp(&sim, "three").await;
    app.newest_conversation(&tenant, 3).await;
    assert_eq!(unread_of(&get_as(&app, &sa, "/api/v1/conversations").await, &id), 1);
    assert_eq!(unread_of(&get_as(&app, &sb, "/api/v1/conversations").await, &id), 3);

    // B reads through the first message only; a cursor never moves back.
    let thread: Value = app
        .get(&format!("/api/v1/messages?conversation_id={id}&limit=100"), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    let mut inbound: Vec<&Value> = thread["items"].as_array().unwrap().iter().collect();
    inbound.sort_by_key(|m| m["id"].as_str().unwrap().to_owned());
    let first = inbound[0]["id"].as_str().unwrap();
    let through = post_as(&app, &sb, &format!("/api/v1/conversations/{id}/read"), json!({"message_id": first})).await;
    assert_eq!(through.json::<Value>().await.unwrap()["unread_count"], 2);
    post_as(&app, &sb, &format!("/api/v1/conversations/{id}/read"), json!({})).await;
    let back = post_as(&app, &sb, &format!("/api/v1/conversations/{id}/read"), json!({"message_id": first})).await;
    assert_eq!(back.json::<Value>().await.unwrap()["unread_count"], 0, "never moves back");

    assert_eq!(post_as(&app, &sa, &format!("/api/v1/conversations/{id}/claim"), json!({})).await.status(), 200);
    let summary = get_as(&app, &sa, "/api/v1/conversations/summary").await;
    assert_eq!(summary, json!({"unread": 1, "mine": 1, "unassigned": 0}));
    let summary_b = get_as(&app, &sb, "/api/v1/conversations/summary").await;
    assert_eq!(summary_b, json!({"unread": 0, "mine": 0, "unassigned": 0}));
    // Resolved conversations leave the badge.
    post_as(&app, &sa, &format!("/api/v1/conversations/{id}/resolve"), json!({})).await;
    assert_eq!(get_as(&app, &sa, "/api/v1/conversations/summary").await["unread"], 0);

    // Bad input names the field; an operator key has no read cursor; another tenant's is 404.
    let stranger = uuid::Uuid::now_v7();
    let bad = post_as(&app, &sa, &format!("/api/v1/conversations/{id}/read"), json!({"message_id": stranger})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "message_id");
    let by_key = app.post(&format!("/api/v1/conversations/{id}/read"), &tenant.api_key, json!({})).await;
    assert_eq!(assert_error(by_key, 422, "validation_failed").await["error"]["field"], "agent");
    let other = app.create_tenant("other").await;
    let agent = app.create_agent(&other, "x@other.example", "agent").await;
    let so = app.session_client(&other, &agent).await;
    assert_eq!(post_as(&app, &so, &format!("/api/v1/conversations/{id}/read"), json!({})).await.status(), 404);
}

#[tokio::test]
async fn an_agents_reply_goes_out_on_the_conversation_channel_and_its_statuses_come_back() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let a = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let session = app.session_client(&tenant, &a).await;
    inbound_whatsapp(&sim, "Is my seat booked?").await;
    let id = app.newest_conversation(&tenant, 1).await;

    let path = format!("/api/v1/conversations/{id}/messages");
    let accepted = post_as(&app, &session, &path, json!({"content": {"text": "Yes, seat 12A."}})).await;
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    let message = wait_for(&app, &tenant, accepted["id"].as_str().unwrap(), "read").await;
    assert_eq!(message["conversation_id"], id.as_str());
    assert_eq!(message["metadata"]["author_agent_id"], a.id.as_str());
    let sent = sim.ledger().into_iter().find(|entry| entry.provider == "meta" && entry.operation == "send_message");
    let sent = sent.expect("the reply reached Meta");
    assert_eq!(sent.body["text"]["body"], "Yes, seat 12A.");
    assert_eq!(sent.body["to"], format!("+{WA_FROM}"));
    // Sent by the process that stored it, handed over after the commit: no job.
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE convert_from(job, 'UTF8')::jsonb->>'message_id' = $1",
    )
    .bind(accepted["id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(jobs, 0, "an agent's reply goes without a job");
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT payload->>'status' FROM communications.changes
         WHERE message_id = $1::uuid AND kind = 'message.status_changed' ORDER BY xid, id",
    )
    .bind(accepted["id"].as_str().unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(statuses.last().map(String::as_str), Some("read"), "statuses reach the stream: {statuses:?}");

    // A double click with an Idempotency-Key sends once.
    let twice: Vec<Value> = futures_join(&session, &app, &path).await;
    assert_eq!(twice[0]["id"], twice[1]["id"], "the repeat answers the first reply");
    let replies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications.messages WHERE conversation_id = $1::uuid AND content->>'text' = 'Once only'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(replies, 1);
    let other_body = session
        .0
        .post(app.url(&path))
        .header("x-csrf-token", &session.1)
        .header("idempotency-key", "click-1")
        .json(&json!({"content": {"text": "Something else"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(other_body, 422, "validation_failed").await["error"]["field"], "Idempotency-Key");

    // 25 hours after the customer's last message, free text is refused and a template asked for.
    sqlx::query(
        "UPDATE communications.conversations SET last_inbound_at = now() - interval '25 hours' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let late = post_as(&app, &session, &path, json!({"content": {"text": "Still there?"}})).await;
    let body = assert_error(late, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "content.text");
    assert!(body["error"]["message"].as_str().unwrap().contains("template"), "{body}");
    let templated = post_as(&app, &session, &path, json!({"content": {"template": {"name": "nope"}}})).await;
    let body = assert_error(templated, 422, "validation_failed").await;
    assert_ne!(body["error"]["field"], "content.text", "a template is not held to the window: {body}");

    // Bad input and isolation.
    let unknown = post_as(&app, &session, &path, json!({"content": {"text": "x"}, "cc": "y"})).await;
    assert_eq!(unknown.status(), 422);
    let nul = post_as(&app, &session, &path, json!({"content": {"text": "a\u{0}b"}})).await;
    assert!(nul.status().is_client_error(), "NUL is refused: {}", nul.status());
    let other = app.create_tenant("other").await;
    let foreign = app.post(&path, &other.api_key, json!({"content": {"text": "hi"}})).await;
    assert_error(foreign, 404, "not_found").await;
    let smuggled = app
        .post(
            "/api/v1/messages",
            &other.api_key,
            json!({"to": {"phone": "+4915112345678"}, "channels": "sms", "content": {"text": "x"}, "conversation_id": id}),
        )
        .await;
    assert_eq!(assert_error(smuggled, 422, "validation_failed").await["error"]["field"], "conversation_id");
}

/// The same reply sent twice at once with one Idempotency-Key.
async fn futures_join(session: &Session, app: &TestApp, path: &str) -> Vec<Value> {
    let send = || {
        session
            .0
            .post(app.url(path))
            .header("x-csrf-token", &session.1)
            .header("idempotency-key", "click-1")
            .json(&json!({"content": {"text": "Once only"}}))
            .send()
    };
    let (a, b) = tokio::join!(send(), send());
    let mut answers = Vec::new();
    for response in [a.unwrap(), b.unwrap()] {
        assert_eq!(response.status(), 202);
        answers.push(response.json().await.unwrap());
    }
    answers
}

#[tokio::test]
async fn email_replies_thread_in_the_customers_client_and_their_answers_join_the_conversation() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    email(&app, &tenant).await;
    let inbound = |subject: &str, in_reply_to: Option<String>| InboundSpec::SesInbound {
        from: "Ann.Customer@Example.org".into(),
        to: "support@mail.alpine.example".into(),
        subject: subject.into(),
        text: "Where is my ticket?".into(),
        in_reply_to,
    };
    sim.post_inbound(inbound("Ticket", None)).await.unwrap();
    let id = app.newest_conversation(&tenant, 1).await;
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(conversation["channel"], "email");
    let contact: String = sqlx::query_scalar(
        "SELECT value FROM communications.contact_identifiers WHERE contact_id = $1::uuid AND kind = 'email'",
    )
    .bind(conversation["contact_id"].as_str().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(contact, "ann.customer@example.org", "lower-cased");
    let customer_message_id: String = sqlx::query_scalar(
        "SELECT content->>'message_id' FROM communications.messages WHERE conversation_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();

    let reply = app
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            &tenant.api_key,
            json!({"content": {"text": "Attached."}}),
        )
        .await;
    assert_eq!(reply.status(), 202);
    let reply: Value = reply.json().await.unwrap();
    let sent = wait_for(&app, &tenant, reply["id"].as_str().unwrap(), "sent").await;
    assert_eq!(sent["content"]["subject"], "Re: Ticket");
    let mail = sim.ledger().into_iter().find(|entry| entry.operation == "SendEmail").expect("the reply reached SES");
    let raw = mail.body["Content"]["Raw"]["Data"].as_str().expect("raw MIME").to_owned();
    let parent = format!("<{}>", customer_message_id.trim_matches(['<', '>']));
    assert!(raw.contains(&format!("In-Reply-To: {parent}\r\n")), "{raw}");
    assert!(raw.contains(&format!("References: {parent}\r\n")), "{raw}");

    // The customer answers our mail after the conversation was resolved: it opens again.
    app.post(&format!("/api/v1/conversations/{id}/resolve"), &tenant.api_key, json!({})).await;
    let ours = format!("{}@email.amazonses.com", sent["provider_message_id"].as_str().unwrap());
    sim.post_inbound(inbound("Re: Ticket", Some(ours))).await.unwrap();
    let joined = app.newest_conversation(&tenant, 2).await;
    assert_eq!(joined, id, "the answer joins the conversation of the mail it answers");
    let now: Value = app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(now["status"], "open");

    // A colleague of the customer answers the same mail from another address: one thread, two
    // participants.
    let ours = format!("{}@email.amazonses.com", sent["provider_message_id"].as_str().unwrap());
    sim.post_inbound(InboundSpec::SesInbound {
        from: "bob@example.org".into(),
        to: "support@mail.alpine.example".into(),
        subject: "Re: Ticket".into(),
        text: "I travel with Ann.".into(),
        in_reply_to: Some(ours),
    })
    .await
    .unwrap();
    assert_eq!(app.newest_conversation(&tenant, 3).await, id);
    let people: Value =
        app.get(&format!("/api/v1/conversations/{id}/participants"), &tenant.api_key).await.json().await.unwrap();
    let roles: Vec<&str> = people.as_array().unwrap().iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["customer", "participant"], "{people}");
}

#[tokio::test]
async fn mail_that_arrived_before_its_domain_was_configured_becomes_a_conversation_once_it_is() {
    let (app, sim) = spawn_app_with_sim(|settings| settings.dispatch.poll_interval_ms = 50).await;
    let tenant = app.create_tenant("alpine").await;
    sim.post_inbound(InboundSpec::SesInbound {
        from: "ann@example.org".into(),
        to: "support@mail.alpine.example".into(),
        subject: "Early".into(),
        text: "Before you were set up".into(),
        in_reply_to: None,
    })
    .await
    .unwrap();
    let outcome = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT outcome FROM communications.webhook_envelopes WHERE provider = 'sns' ORDER BY received_at DESC LIMIT 1",
        )
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    };
    assert_eq!(outcome().await.as_deref(), Some("stored"), "no tenant sends from that domain yet");
    email(&app, &tenant).await;
    let id = app.newest_conversation(&tenant, 1).await;
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(conversation["channel"], "email");
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome().await.as_deref() != Some("applied") {
        assert!(Instant::now() < deadline, "the envelope was not marked applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
