//! The contacts API: search, edit, merge (identifiers, conversations and messages move, a pointer
//! and an audit row remain, two open conversations fold into one), and tenant isolation.

use std::time::{Duration, Instant};

use cpaas_sim::{InboundSpec, SimHandle};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::delivery::{send, whatsapp};
use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app_with_sim};

const META_NUMBER: &str = "106540352242922";

async fn post_meta(sim: &SimHandle, from: &str, text: &str) {
    sim.post_inbound(InboundSpec::Meta { phone_number_id: META_NUMBER.into(), from: from.into(), text: text.into() })
        .await
        .unwrap();
}

/// Waits until the tenant has `count` inbound messages stored.
async fn wait_for_inbound(app: &TestApp, tenant: &TestTenant, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM communications.messages WHERE tenant_id = $1 AND direction = 'inbound'
               AND conversation_id IS NOT NULL",
        )
        .bind(tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if stored >= count {
            return;
        }
        assert!(Instant::now() < deadline, "{stored} of {count} inbound messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// The ids of a search's contacts, in order.
async fn search(app: &TestApp, tenant: &TestTenant, q: &str) -> Vec<String> {
    let response = app.client.get(app.url("/api/v1/contacts")).query(&[("q", q)]).bearer_auth(&tenant.api_key);
    let page = json_of(response.send().await.unwrap()).await;
    page["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
}

/// The one contact a phone number search finds.
async fn contact_with(app: &TestApp, tenant: &TestTenant, digits: &str) -> String {
    let found = search(app, tenant, digits).await;
    assert_eq!(found.len(), 1, "{digits}: {found:?}");
    found[0].clone()
}

#[tokio::test]
async fn contacts_are_searched_by_name_phone_and_email_newest_first_page_by_page() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Hello").await;
    wait_for_inbound(&app, &tenant, 1).await;
    post_meta(&sim, "4917600000001", "Hi").await;
    wait_for_inbound(&app, &tenant, 2).await;
    let body = json!({"to": {"phone": "+4915199999999", "email": "Anna.Berg@Example.com"}, "channels": "whatsapp",
                      "content": {"text": "Welcome"}});
    send(&app, &tenant, body).await;
    let anna = contact_with(&app, &tenant, "4915199999999").await;
    let renamed = json_of(
        patch(&app, &format!("/api/v1/contacts/{anna}"), &tenant.api_key, json!({"display_name": "Anna Berg"})).await,
    )
    .await;
    assert_eq!(renamed["display_name"], "Anna Berg");

    let first = contact_with(&app, &tenant, "4915112345678").await;
    let second = contact_with(&app, &tenant, "+49 176 0000 0001").await;
    assert_eq!(search(&app, &tenant, "anna").await, [anna.as_str()], "name, any case");
    assert_eq!(search(&app, &tenant, "BERG").await, [anna.as_str()]);
    assert_eq!(search(&app, &tenant, "sim user").await, [second.clone(), first.clone()], "profile names, newest first");
    assert_eq!(search(&app, &tenant, "+49 151").await, [anna.clone(), first.clone()], "phone digits");
    assert_eq!(search(&app, &tenant, "anna.berg@EXAMPLE.com").await, [anna.as_str()], "email, lower-cased");
    assert_eq!(search(&app, &tenant, "example.com").await, [anna.as_str()]);
    assert!(search(&app, &tenant, "%").await.is_empty(), "LIKE characters are literal");
    assert!(search(&app, &tenant, "Anna 1").await.is_empty(), "a name query does not match digits alone");

    let mut seen = Vec::new();
    let mut path = "/api/v1/contacts?limit=1".to_owned();
    loop {
        let page = json_of(app.get(&path, &tenant.api_key).await).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
        seen.push(page["items"][0]["id"].as_str().unwrap().to_owned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/contacts?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [anna.clone(), second, first], "every contact once, newest first");

    let detail = json_of(app.get(&format!("/api/v1/contacts/{anna}"), &tenant.api_key).await).await;
    let identifiers = detail["identifiers"].as_array().unwrap();
    assert!(identifiers.contains(&json!({"kind": "email", "value": "anna.berg@example.com"})), "{detail}");
    assert!(identifiers.contains(&json!({"kind": "phone", "value": "+4915199999999"})), "{detail}");
    let limit = app.get("/api/v1/contacts?limit=0", &tenant.api_key).await;
    assert_eq!(assert_error(limit, 422, "validation_failed").await["error"]["field"], "limit");
}

#[tokio::test]
async fn a_contact_is_edited_and_bad_input_names_the_field() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Hello").await;
    wait_for_inbound(&app, &tenant, 1).await;
    let id = contact_with(&app, &tenant, "4915112345678").await;
    let path = format!("/api/v1/contacts/{id}");

    let edited = json_of(
        patch(&app, &path, &tenant.api_key, json!({"display_name": "  Jonas Weber ", "external_id": "crm:person/42"}))
            .await,
    )
    .await;
    assert_eq!(edited["display_name"], "Jonas Weber");
    assert_eq!(edited["external_id"], "crm:person/42");
    assert_eq!(edited["conversations"].as_array().unwrap().len(), 1, "{edited}");
    assert_eq!(edited["conversations"][0]["channel"], "whatsapp");
    assert_eq!(edited["conversations"][0]["status"], "open");

    let cleared = json_of(patch(&app, &path, &tenant.api_key, json!({"external_id": null})).await).await;
    assert_eq!(cleared["external_id"], Value::Null);
    assert_eq!(cleared["display_name"], "Jonas Weber", "what is not sent stays");

    for (body, field) in [
        (json!({"display_name": "Jo\u{0}nas"}), "display_name"),
        (json!({"external_id": "x".repeat(201)}), "external_id"),
        (json!({"display_name": "   "}), "display_name"),
        (json!({"display_name": "a\nb"}), "display_name"),
        (json!({"display_name": 7}), "display_name"),
        (json!({"nickname": "Jo"}), "nickname"),
    ] {
        let refused = patch(&app, &path, &tenant.api_key, body.clone()).await;
        let error = assert_error(refused, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let unchanged = json_of(app.get(&path, &tenant.api_key).await).await;
    assert_eq!(unchanged["display_name"], "Jonas Weber");
    assert_eq!(
        json_of(patch(&app, &path, &tenant.api_key, json!({"external_id": "y".repeat(200)})).await).await["external_id"],
        "y".repeat(200)
    );
}

#[tokio::test]
async fn a_merge_moves_identifiers_conversations_and_messages_keeps_a_pointer_and_is_audited() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Hello").await;
    wait_for_inbound(&app, &tenant, 1).await;
    let merged = contact_with(&app, &tenant, "4915112345678").await;
    let body = json!({"to": {"phone": "+4917600000001", "email": "jonas@example.com"}, "channels": "whatsapp",
                      "content": {"text": "Welcome"}});
    send(&app, &tenant, body).await;
    let survivor = contact_with(&app, &tenant, "4917600000001").await;
    let conversation =
        json_of(app.get(&format!("/api/v1/contacts/{merged}"), &tenant.api_key).await).await["conversations"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();

    let agent = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let session = app.session_client(&tenant, &agent).await;
    let merge_path = format!("/api/v1/contacts/{merged}/merge");
    let answer = json_of(agent_post(&app, &session, &merge_path, json!({"into": survivor})).await).await;
    assert_eq!(answer["id"], survivor.as_str(), "answers the survivor: {answer}");
    assert_eq!(answer["display_name"], "Sim User 5678", "the survivor had no name: it takes the merged one's");
    let identifiers: Vec<&str> =
        answer["identifiers"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap()).collect();
    assert_eq!(identifiers, ["jonas@example.com", "+4915112345678", "+4917600000001"], "{answer}");
    assert_eq!(answer["conversations"][0]["id"], conversation.as_str());

    let pointer = json_of(app.get(&format!("/api/v1/contacts/{merged}"), &tenant.api_key).await).await;
    assert_eq!(pointer["merged_into"], survivor.as_str());
    assert!(pointer["merged_at"].is_string());
    assert_eq!(pointer["identifiers"], json!([]));
    assert_eq!(pointer["conversations"], json!([]));
    let listed = json_of(app.get("/api/v1/contacts", &tenant.api_key).await).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "merged contacts are not listed: {listed}");
    let moved = json_of(app.get(&format!("/api/v1/conversations/{conversation}"), &tenant.api_key).await).await;
    assert_eq!(moved["contact_id"], survivor.as_str());
    let strays: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.messages WHERE contact_id = $1")
        .bind(Uuid::parse_str(&merged).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(strays, 0, "every message belongs to the survivor");
    let change: Value = sqlx::query_scalar(
        "SELECT payload FROM communications.changes WHERE conversation_id = $1 AND kind = 'conversation.updated'",
    )
    .bind(Uuid::parse_str(&conversation).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(change["contact_id"], survivor.as_str());

    let audit = || async {
        sqlx::query_as::<_, (Uuid, Uuid, Option<Uuid>, Option<Uuid>)>(
            "SELECT merged_id, survivor_id, agent_id, api_key_id FROM communications.contact_merges WHERE tenant_id = $1",
        )
        .bind(tenant.id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
    };
    let rows = audit().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.to_string(), merged);
    assert_eq!(rows[0].1.to_string(), survivor);
    assert_eq!(rows[0].2.map(|a| a.to_string()), Some(agent.id.clone()), "by the agent");
    assert_eq!(rows[0].3, None);

    let again = json_of(app.post(&merge_path, &tenant.api_key, json!({"into": survivor})).await).await;
    assert_eq!(again["id"], survivor.as_str(), "repeating is harmless");
    assert_eq!(audit().await.len(), 1, "and audits nothing new");

    let itself =
        app.post(&format!("/api/v1/contacts/{survivor}/merge"), &tenant.api_key, json!({"into": survivor})).await;
    assert_eq!(assert_error(itself, 422, "validation_failed").await["error"]["field"], "into");
    send(&app, &tenant, json!({"to": {"phone": "+4915000000003"}, "channels": "whatsapp", "content": {"text": "x"}}))
        .await;
    let third = contact_with(&app, &tenant, "4915000000003").await;
    let chained = app.post(&format!("/api/v1/contacts/{third}/merge"), &tenant.api_key, json!({"into": merged})).await;
    assert_eq!(assert_error(chained, 422, "validation_failed").await["error"]["field"], "into");
    let elsewhere = app.post(&merge_path, &tenant.api_key, json!({"into": third})).await;
    assert_error(elsewhere, 409, "conflict").await;
    let edit_pointer =
        patch(&app, &format!("/api/v1/contacts/{merged}"), &tenant.api_key, json!({"display_name": "X"})).await;
    assert_error(edit_pointer, 409, "conflict").await;

    // The merged contact's number now belongs to the survivor: its next message lands there.
    post_meta(&sim, "4915112345678", "Me again").await;
    wait_for_inbound(&app, &tenant, 2).await;
    let threads =
        json_of(app.get(&format!("/api/v1/conversations?contact_id={survivor}"), &tenant.api_key).await).await;
    assert_eq!(threads["items"].as_array().unwrap().len(), 1, "{threads}");
    assert_eq!(threads["items"][0]["id"], conversation.as_str());
    let none = json_of(app.get(&format!("/api/v1/conversations?contact_id={merged}"), &tenant.api_key).await).await;
    assert_eq!(none["items"], json!([]));
    assert_eq!(search(&app, &tenant, "4915112345678").await, [survivor.as_str()]);
}

#[tokio::test]
async fn merging_two_open_whatsapp_conversations_folds_the_messages_into_the_survivors() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "First from the old number").await;
    wait_for_inbound(&app, &tenant, 1).await;
    post_meta(&sim, "4915112345678", "Second from the old number").await;
    wait_for_inbound(&app, &tenant, 2).await;
    post_meta(&sim, "4917600000001", "Hello from the new number").await;
    wait_for_inbound(&app, &tenant, 3).await;
    let merged = contact_with(&app, &tenant, "4915112345678").await;
    let survivor = contact_with(&app, &tenant, "4917600000001").await;
    let conversation_of = |contact: String| {
        let app = &app;
        let key = tenant.api_key.clone();
        async move {
            let detail = json_of(app.get(&format!("/api/v1/contacts/{contact}"), &key).await).await;
            detail["conversations"][0]["id"].as_str().unwrap().to_owned()
        }
    };
    let (emptied, kept) = (conversation_of(merged.clone()).await, conversation_of(survivor.clone()).await);
    assert_ne!(emptied, kept);
    let note = app
        .post(&format!("/api/v1/conversations/{emptied}/notes"), &tenant.api_key, json!({"text": "Wants a refund"}))
        .await;
    assert_eq!(note.status(), 201);
    let label = json_of(app.post("/api/v1/labels", &tenant.api_key, json!({"name": "Refund"})).await).await;
    let labelled = app
        .put(&format!("/api/v1/conversations/{emptied}/labels"), &tenant.api_key, json!({"labels": [label["id"]]}))
        .await;
    assert_eq!(labelled.status(), 200);

    let answer = json_of(
        app.post(&format!("/api/v1/contacts/{merged}/merge"), &tenant.api_key, json!({"into": survivor})).await,
    )
    .await;
    let conversations = answer["conversations"].as_array().unwrap();
    assert_eq!(conversations.len(), 2, "{answer}");
    let status_of = |id: &str| conversations.iter().find(|c| c["id"] == id).unwrap()["status"].clone();
    assert_eq!(status_of(&kept), "open");
    assert_eq!(status_of(&emptied), "resolved");

    let thread = json_of(app.get(&format!("/api/v1/messages?conversation_id={kept}"), &tenant.api_key).await).await;
    let mut texts: Vec<&str> =
        thread["items"].as_array().unwrap().iter().map(|m| m["content"]["body"].as_str().unwrap()).collect();
    texts.sort();
    assert_eq!(texts, ["First from the old number", "Hello from the new number", "Second from the old number"]);
    let left = json_of(app.get(&format!("/api/v1/messages?conversation_id={emptied}"), &tenant.api_key).await).await;
    assert_eq!(left["items"], json!([]), "nothing left behind, nothing lost");
    let pointer: Option<Uuid> =
        sqlx::query_scalar("SELECT merged_into_conversation FROM communications.conversations WHERE id = $1")
            .bind(Uuid::parse_str(&emptied).unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(pointer.map(|p| p.to_string()), Some(kept.clone()));
    let notes = json_of(app.get(&format!("/api/v1/conversations/{kept}/notes"), &tenant.api_key).await).await;
    assert_eq!(notes["items"][0]["text"], "Wants a refund", "notes follow the messages");
    let labels: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.conversation_labels WHERE conversation_id = $1")
            .bind(Uuid::parse_str(&kept).unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(labels, 1, "and so do labels");
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT conversation_id FROM communications.changes WHERE tenant_id = $1 AND kind = 'conversation.updated'
           AND (payload ? 'contact_id' OR payload ? 'merged_conversation_id') ORDER BY id",
    )
    .bind(tenant.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let changed: Vec<String> = changed.iter().map(Uuid::to_string).collect();
    assert!(changed.contains(&emptied) && changed.contains(&kept), "{changed:?}");

    let by: (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("SELECT agent_id, api_key_id FROM communications.contact_merges WHERE tenant_id = $1")
            .bind(tenant.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(by.0.is_none() && by.1.is_some(), "by the API key: {by:?}");

    // The next message from either number goes to the one open conversation.
    post_meta(&sim, "4915112345678", "Third from the old number").await;
    wait_for_inbound(&app, &tenant, 4).await;
    let thread = json_of(app.get(&format!("/api/v1/messages?conversation_id={kept}"), &tenant.api_key).await).await;
    assert_eq!(thread["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn another_tenants_contacts_are_not_found_on_every_contact_route() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    let other = app.create_tenant("bergbahn").await;
    whatsapp(&app, &tenant).await;
    post_meta(&sim, "4915112345678", "Hello").await;
    wait_for_inbound(&app, &tenant, 1).await;
    let theirs = contact_with(&app, &tenant, "4915112345678").await;
    send(&app, &tenant, json!({"to": {"phone": "+4917600000001"}, "channels": "whatsapp", "content": {"text": "x"}}))
        .await;
    let second = contact_with(&app, &tenant, "4917600000001").await;

    assert!(search(&app, &other, "4915112345678").await.is_empty());
    assert!(search(&app, &other, "").await.is_empty());
    let path = format!("/api/v1/contacts/{theirs}");
    assert_error(app.get(&path, &other.api_key).await, 404, "not_found").await;
    assert_error(patch(&app, &path, &other.api_key, json!({"display_name": "Mine"})).await, 404, "not_found").await;
    let merge = app.post(&format!("{path}/merge"), &other.api_key, json!({"into": second})).await;
    assert_error(merge, 404, "not_found").await;
    // Into another tenant's contact: not found either, and nothing moved.
    let foreign = Uuid::now_v7();
    sqlx::query("INSERT INTO communications.contacts (id, tenant_id) VALUES ($1, $2)")
        .bind(foreign)
        .bind(other.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let into_theirs = app.post(&format!("{path}/merge"), &tenant.api_key, json!({"into": foreign})).await;
    assert_error(into_theirs, 404, "not_found").await;
    let from_theirs =
        app.post(&format!("/api/v1/contacts/{foreign}/merge"), &tenant.api_key, json!({"into": theirs})).await;
    assert_error(from_theirs, 404, "not_found").await;
    let still = json_of(app.get(&path, &tenant.api_key).await).await;
    assert_eq!(still["merged_into"], Value::Null);
    assert_error(app.get(&format!("/api/v1/contacts/{}", Uuid::now_v7()), &tenant.api_key).await, 404, "not_found")
        .await;
    let unauthenticated = app.client.get(app.url("/api/v1/contacts")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn opposite_concurrent_merges_have_one_winner_and_no_deadlock() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    for (n, from) in ["4915112345678", "4917600000001"].into_iter().enumerate() {
        post_meta(&sim, from, "Hello").await;
        wait_for_inbound(&app, &tenant, n as i64 + 1).await;
    }
    let a = contact_with(&app, &tenant, "4915112345678").await;
    let b = contact_with(&app, &tenant, "4917600000001").await;
    let mut merges = tokio::task::JoinSet::new();
    for n in 0..10 {
        let (from, into) = if n % 2 == 0 { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
        let request = app
            .client
            .post(app.url(&format!("/api/v1/contacts/{from}/merge")))
            .bearer_auth(&tenant.api_key)
            .json(&json!({ "into": into }));
        merges.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let statuses = merges.join_all().await;
    assert!(statuses.iter().all(|s| [200, 409, 422].contains(s)), "{statuses:?}");
    let merges: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.contact_merges WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(merges, 1, "one merge happened: {statuses:?}");
    let listed = json_of(app.get("/api/v1/contacts", &tenant.api_key).await).await;
    let survivor = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let threads = json_of(app.get(&format!("/api/v1/messages?contact_id={survivor}"), &tenant.api_key).await).await;
    assert_eq!(threads["items"].as_array().unwrap().len(), 2, "both messages are the survivor's: {threads}");
}
