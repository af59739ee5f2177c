//! A conversation's thread in the order written, search in German and English, admin
//! reassignment, and the business context: one link at most, inherited from the trigger rule's
//! message the customer answered, shown with the entity's newest row from Hasura events.

use std::time::{Duration, Instant};

use chrono::{Duration as Span, Utc};
use cpaas_sim::InboundSpec;
use serde_json::{Value, json};

use crate::delivery::whatsapp;
use crate::helpers::{assert_error, spawn_app_with_sim};

/// A Meta text message with the given provider id and time, signed as Meta signs it.
fn meta_text(id: &str, text: &str, at: chrono::DateTime<Utc>) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ann"}, "wa_id": "4915112345678"}],
        "messages": [{"from": "4915112345678", "id": id, "timestamp": at.timestamp().to_string(), "type": "text", "text": {"body": text}}]
    }}]}]})
}

#[tokio::test]
async fn a_thread_is_in_the_order_written_even_when_webhooks_arrive_late_and_search_finds_german_and_english() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let now = Utc::now();
    // The later message's webhook comes first; the earlier one arrives twice.
    app.post_meta_signed(&tenant, meta_text("wamid.B", "Zweite Nachricht: die Buchungen", now).to_string()).await;
    app.post_meta_signed(
        &tenant,
        meta_text("wamid.A", "First: I booked two seats", now - Span::minutes(5)).to_string(),
    )
    .await;
    app.post_meta_signed(
        &tenant,
        meta_text("wamid.A", "First: I booked two seats", now - Span::minutes(5)).to_string(),
    )
    .await;
    let id = app.newest_conversation(&tenant, 2).await;
    let thread: Value =
        app.get(&format!("/api/v1/conversations/{id}/messages"), &tenant.api_key).await.json().await.unwrap();
    let items = thread["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "a duplicate is stored once: {thread}");
    assert_eq!(items[0]["provider_message_id"], "wamid.B", "newest written first");
    assert_eq!(items[1]["provider_message_id"], "wamid.A");
    assert_eq!(items[0]["direction"], "inbound");
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    let last = chrono::DateTime::parse_from_rfc3339(conversation["last_message_at"].as_str().unwrap()).unwrap();
    assert_eq!(last.timestamp(), now.timestamp(), "activity is the newest message's time");
    let page: Value =
        app.get(&format!("/api/v1/conversations/{id}/messages?limit=1"), &tenant.api_key).await.json().await.unwrap();
    let older: Value = app
        .get(
            &format!("/api/v1/conversations/{id}/messages?limit=1&cursor={}", page["next_cursor"].as_str().unwrap()),
            &tenant.api_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(older["items"][0]["provider_message_id"], "wamid.A", "{older}");

    let search = |q: &str| {
        let path = format!("/api/v1/conversations/search?q={}", urlencode(q));
        let app = &app;
        let key = tenant.api_key.clone();
        async move { app.get(&path, &key).await.json::<Value>().await.unwrap() }
    };
    let german = search("Buchung").await;
    assert_eq!(german["items"][0]["message_id"], items[0]["id"], "German stemming: {german}");
    let english = search("booking").await;
    assert_eq!(english["items"][0]["message_id"], items[1]["id"], "English stemming: {english}");
    assert_eq!(english["items"][0]["conversation_id"], id.as_str());
    assert_eq!(search("\"two seats\"").await["items"].as_array().unwrap().len(), 1);
    assert_eq!(search("nothinglikethis").await["items"].as_array().unwrap().len(), 0);
    let other = app.create_tenant("other").await;
    let theirs: Value = app.get("/api/v1/conversations/search?q=booking", &other.api_key).await.json().await.unwrap();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 0, "another tenant finds nothing");
    let empty = app.get("/api/v1/conversations/search?q=%20", &tenant.api_key).await;
    assert_eq!(assert_error(empty, 422, "validation_failed").await["error"]["field"], "q");
    let bad_cursor = app.get(&format!("/api/v1/conversations/{id}/messages?cursor=nope"), &tenant.api_key).await;
    assert_eq!(assert_error(bad_cursor, 422, "validation_failed").await["error"]["field"], "cursor");
    let foreign = app.get(&format!("/api/v1/conversations/{id}/messages"), &other.api_key).await;
    assert_error(foreign, 404, "not_found").await;
}

fn urlencode(text: &str) -> String {
    let url = reqwest::Url::parse_with_params("http://x/", [("q", text)]).unwrap();
    url.query().unwrap().trim_start_matches("q=").to_owned()
}

#[tokio::test]
async fn an_admin_reassigns_to_an_agent_of_the_workspace_only() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Hi".into(),
    })
    .await
    .unwrap();
    let id = app.newest_conversation(&tenant, 1).await;
    let a = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let b = app.create_agent(&tenant, "b@alpine.example", "agent").await;
    let (client_a, csrf_a) = app.session_client(&tenant, &a).await;
    let path = format!("/api/v1/conversations/{id}/assign");
    let by_agent = client_a
        .post(app.url(&path))
        .header("x-csrf-token", csrf_a)
        .json(&json!({"agent_id": a.id}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_agent.status(), 403, "agents claim; only admins assign");
    let assigned: Value = app.post(&path, &tenant.api_key, json!({"agent_id": b.id})).await.json().await.unwrap();
    assert_eq!(assigned["assignee_id"], b.id.as_str());
    let other = app.create_tenant("other").await;
    let stranger = app.create_agent(&other, "x@other.example", "agent").await;
    let refused = app.post(&path, &tenant.api_key, json!({"agent_id": stranger.id})).await;
    assert_eq!(assert_error(refused, 422, "validation_failed").await["error"]["field"], "agent_id");
    let unassigned: Value = app.post(&path, &tenant.api_key, json!({"agent_id": null})).await.json().await.unwrap();
    assert_eq!(unassigned["assignee_id"], Value::Null);
    assert_error(app.post(&path, &other.api_key, json!({"agent_id": null})).await, 404, "not_found").await;
}

/// A Hasura event on the bookings table, as Hasura posts it.
fn booking_event(event_id: &str, booking: &str, status: &str, phone: &str, at: chrono::DateTime<Utc>) -> Value {
    json!({
        "id": event_id,
        "created_at": at.to_rfc3339(),
        "trigger": {"name": "booking_changed"},
        "table": {"schema": "commerce", "name": "bookings"},
        "event": {"op": "UPDATE", "session_variables": {"x-hasura-role": "admin"},
                  "data": {"old": null, "new": {"id": booking, "status": status, "phone": phone}}}
    })
}

#[tokio::test]
async fn a_conversation_answering_a_booking_message_is_about_that_booking_and_shows_its_newest_row() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let template = json!({"name": "confirmation", "default_locale": "en", "variants": [
        {"channel": "whatsapp", "locale": "en", "body": {"text": "Booking {{ data.new.id }} is {{ data.new.status }}."}}]});
    assert_eq!(app.post("/api/v1/templates", &tenant.api_key, template).await.status(), 201);
    let rule = json!({"name": "Confirm bookings", "event": "booking_changed", "template_name": "confirmation",
                      "channels": ["whatsapp"], "audience": [{"phone": "data.new.phone"}]});
    let created = app.post("/api/v1/trigger-rules", &tenant.api_key, rule).await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let now = Utc::now();
    let event = booking_event("evt-1", "B-42", "confirmed", "+4915112345678", now - Span::minutes(2));
    assert!(app.post("/api/v1/events", &tenant.api_key, event).await.status().is_success());
    // The customer answers the confirmation: the new conversation is about booking B-42.
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Can I bring a bike?".into(),
    })
    .await
    .unwrap();
    let id = app.newest_conversation(&tenant, 1).await;
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(conversation["link"], json!({"kind": "booking", "id": "B-42"}), "{conversation}");
    assert_eq!(conversation["context"]["row"]["status"], "confirmed");
    assert_eq!(conversation["context"]["source"], "commerce.bookings");

    // A newer event updates the sidebar; an older one arriving late does not.
    let newer = booking_event("evt-2", "B-42", "rebooked", "+4915112345678", now);
    app.post("/api/v1/events", &tenant.api_key, newer).await;
    let stale = booking_event("evt-0", "B-42", "pending", "+4915112345678", now - Span::hours(1));
    app.post("/api/v1/events", &tenant.api_key, stale).await;
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(conversation["context"]["row"]["status"], "rebooked");
    let by_booking: Value =
        app.get("/api/v1/conversations?booking_id=B-42", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(by_booking["items"][0]["id"], id.as_str());

    // Set through the API: one entity at most, enforced by the database as well.
    let path = format!("/api/v1/conversations/{id}/link");
    let two = app.put(&path, &tenant.api_key, json!({"booking_id": "B-1", "invoice_id": "I-1"})).await;
    assert_eq!(assert_error(two, 422, "validation_failed").await["error"]["field"], "invoice_id");
    let invoice: Value = app.put(&path, &tenant.api_key, json!({"invoice_id": "I-9"})).await.json().await.unwrap();
    assert_eq!(invoice["link"], json!({"kind": "invoice", "id": "I-9"}));
    assert_eq!(invoice["context"], Value::Null, "no event told us about I-9");
    let violated = sqlx::query("UPDATE communications.conversations SET booking_id = 'B-1' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await;
    assert!(violated.is_err(), "the CHECK constraint holds a conversation to one link");
    let cleared: Value = app.put(&path, &tenant.api_key, json!({})).await.json().await.unwrap();
    assert_eq!(cleared["link"], Value::Null);
    let other = app.create_tenant("other").await;
    assert_error(app.put(&path, &other.api_key, json!({})).await, 404, "not_found").await;
}

#[tokio::test]
async fn search_pages_newest_first_through_frequent_and_rare_words_in_a_long_history() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Hi".into(),
    })
    .await
    .unwrap();
    let conversation: uuid::Uuid = app.newest_conversation(&tenant, 1).await.parse().unwrap();
    // 2,500 older messages about luggage (one with a unique reference), then 2,000 newer ones
    // about tickets: the newest window holds no luggage at all.
    let ids: Vec<uuid::Uuid> = (0..4500).map(|_| uuid::Uuid::now_v7()).collect();
    let texts: Vec<String> = (0..4500)
        .map(|n| match n {
            42 => "Gepäck ref42x1".to_owned(),
            n if n < 2500 => format!("Gepäck {n}"),
            n => format!("ticket {n}"),
        })
        .collect();
    sqlx::query(
        "INSERT INTO communications.messages (id, tenant_id, conversation_id, direction, channel, recipient, content, status)
         SELECT id, $1, $2, 'inbound', 'whatsapp', '+49', jsonb_build_object('body', text), 'received'
         FROM unnest($3::uuid[], $4::text[]) AS t(id, text)",
    )
    .bind(tenant.id)
    .bind(conversation)
    .bind(&ids)
    .bind(&texts)
    .execute(&app.pool)
    .await
    .unwrap();
    let search = |query: String| {
        let (app, key) = (&app, tenant.api_key.clone());
        async move { app.get(&format!("/api/v1/conversations/search?{query}"), &key).await.json::<Value>().await.unwrap() }
    };
    let first: Value = search("q=Gep%C3%A4ck&limit=25".into()).await;
    let found: Vec<&str> = first["items"].as_array().unwrap().iter().map(|h| h["snippet"].as_str().unwrap()).collect();
    let expected: Vec<String> = (2475..2500).rev().map(|n| format!("Gepäck {n}")).collect();
    assert_eq!(found, expected, "the newest 25 matches, walking back past the newest window");
    let second: Value =
        search(format!("q=Gep%C3%A4ck&limit=25&cursor={}", first["next_cursor"].as_str().unwrap())).await;
    assert_eq!(second["items"][0]["snippet"], "Gepäck 2474", "the next page continues where the first ended");
    let rare: Value = search("q=ref42x1".into()).await;
    assert_eq!(rare["items"].as_array().unwrap().len(), 1, "{rare}");
    assert_eq!(rare["items"][0]["message_id"], ids[42].to_string(), "an old rare word through the index");
    let newest: Value = search("q=ticket&limit=3".into()).await;
    assert_eq!(newest["items"][0]["snippet"], "ticket 4499");
}

/// A message's words are written by triggers (a generated column cost every dispatcher
/// statement): on insert into a conversation, and when any writer moves a message into one or
/// changes its content; a notification outside conversations has none.
#[tokio::test]
async fn a_message_moved_into_a_conversation_or_edited_is_found_by_its_current_words() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: "Hi".into(),
    })
    .await
    .unwrap();
    let conversation: uuid::Uuid = app.newest_conversation(&tenant, 1).await.parse().unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO communications.messages (id, tenant_id, direction, channel, recipient, content, status)
         VALUES ($1, $2, 'outbound', 'whatsapp', '+49', '{\"body\": \"Fahrräder\"}', 'sent')",
    )
    .bind(id)
    .bind(tenant.id)
    .execute(&app.pool)
    .await
    .unwrap();
    let words = |id: uuid::Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("SELECT search::text FROM communications.messages WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(words(id).await, None, "a notification outside conversations has no words");
    let search = |q: &'static str| {
        let (app, key) = (&app, tenant.api_key.clone());
        async move {
            let found: Value =
                app.get(&format!("/api/v1/conversations/search?q={q}"), &key).await.json().await.unwrap();
            found["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["message_id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // A writer that does not set the words itself.
    sqlx::query("UPDATE communications.messages SET conversation_id = $2 WHERE id = $1")
        .bind(id)
        .bind(conversation)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(search("Fahrrad").await, vec![id.to_string()], "moved into a conversation");
    sqlx::query("UPDATE communications.messages SET content = '{\"body\": \"Skier\"}' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert!(search("Fahrrad").await.is_empty(), "old words are gone");
    assert_eq!(search("Skier").await, vec![id.to_string()], "edited content");
    sqlx::query("UPDATE communications.messages SET status = 'delivered' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(search("Skier").await, vec![id.to_string()], "other updates leave the words alone");
}

#[tokio::test]
async fn participants_carry_roles_and_attributes() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    for from in ["4915112345678", "4915199999999"] {
        sim.post_inbound(InboundSpec::Meta {
            phone_number_id: "106540352242922".into(),
            from: from.into(),
            text: "Hi".into(),
        })
        .await
        .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let conversations = loop {
        let page: Value = app.get("/api/v1/conversations", &tenant.api_key).await.json().await.unwrap();
        if page["items"].as_array().unwrap().len() == 2 {
            break page;
        }
        assert!(Instant::now() < deadline, "two conversations: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (first, second) = (&conversations["items"][1], &conversations["items"][0]);
    let id = first["id"].as_str().unwrap();
    let path = format!("/api/v1/conversations/{id}/participants");
    let people: Value = app.get(&path, &tenant.api_key).await.json().await.unwrap();
    assert_eq!(people[0]["role"], "customer", "{people}");
    assert_eq!(people[0]["contact_id"], first["contact_id"]);
    let seeker = format!("{path}/{}", first["contact_id"].as_str().unwrap());
    let set: Value = app
        .put(&seeker, &tenant.api_key, json!({"role": "seeker", "attributes": {"listing": "L-7"}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(set[0]["role"], "seeker");
    assert_eq!(set[0]["attributes"]["listing"], "L-7");
    let building = format!("{path}/{}", second["contact_id"].as_str().unwrap());
    let both: Value =
        app.put(&building, &tenant.api_key, json!({"role": "building_contact"})).await.json().await.unwrap();
    let roles: Vec<&str> = both.as_array().unwrap().iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["seeker", "building_contact"]);
    let bad = app.put(&seeker, &tenant.api_key, json!({"role": "Seeker!"})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "role");
    let bad = app.put(&seeker, &tenant.api_key, json!({"role": "seeker", "attributes": [1]})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "attributes");
    let stranger = format!("{path}/{}", uuid::Uuid::now_v7());
    assert_error(app.put(&stranger, &tenant.api_key, json!({"role": "seeker"})).await, 404, "not_found").await;
    let other = app.create_tenant("other").await;
    assert_error(app.get(&path, &other.api_key).await, 404, "not_found").await;
    assert_error(app.put(&seeker, &other.api_key, json!({"role": "seeker"})).await, 404, "not_found").await;
}
