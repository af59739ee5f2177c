//! Every kind of inbound message Meta and Twilio send lands in its conversation's thread as
//! what it is, and the media among them download through `GET /api/v1/messages/{id}/media` with
//! the tenant's credentials — a redirect to storage followed without them.

use std::time::{Duration, Instant};

use cpaas_sim::{FailureKind, FailureRule, InboundSpec, SimHandle, media_bytes};
use serde_json::{Value, json};

use crate::delivery::{sms, whatsapp};
use crate::helpers::{TestApp, TestTenant, assert_error, sim_twilio_sms, spawn_app_with_sim};

const META_NUMBER: &str = "106540352242922";
const CUSTOMER: &str = "4915112345678";

/// Posts one inbound message in Meta's notification envelope, signed as the sim's app signs.
async fn post_meta_message(app: &TestApp, tenant: &TestTenant, message: Value) {
    let body = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": META_NUMBER},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": CUSTOMER}],
            "messages": [message],
        }}]}],
    })
    .to_string();
    app.post_meta_signed(tenant, body).await;
}

/// A message of type `kind` from the customer, `seq` seconds into the test's timeline.
fn message(seq: i64, kind: &str, object: Value) -> Value {
    json!({"from": CUSTOMER, "id": format!("wamid.kinds{seq}"), "timestamp": (1_760_000_000 + seq).to_string(),
           "type": kind, kind: object})
}

/// The tenant's thread with `count` or more messages, oldest first, waiting for webhooks.
async fn thread(app: &TestApp, tenant: &TestTenant, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let conversations: Value = app.get("/api/v1/conversations", &tenant.api_key).await.json().await.unwrap();
        if let Some(id) = conversations["items"].get(0).and_then(|c| c["id"].as_str()) {
            let page: Value = app
                .get(&format!("/api/v1/conversations/{id}/messages?limit=50"), &tenant.api_key)
                .await
                .json()
                .await
                .unwrap();
            let mut items = page["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= count {
                items.reverse();
                return items;
            }
        }
        assert!(Instant::now() < deadline, "no thread of {count} messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_meta_inbound_kind_lands_in_the_thread_as_what_it_is() {
    let (app, _sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let messages = [
        message(1, "text", json!({"body": "Where is my bus?"})),
        message(
            2,
            "image",
            json!({"id": "1479537139650973", "mime_type": "image/jpeg", "sha256": "abc", "caption": "The bus stop"}),
        ),
        message(
            3,
            "document",
            json!({"id": "1479537139650974", "mime_type": "application/pdf", "sha256": "def", "filename": "ticket.pdf"}),
        ),
        message(
            4,
            "interactive",
            json!({"type": "button_reply", "button_reply": {"id": "confirm", "title": "Yes, confirm"}}),
        ),
        message(
            5,
            "interactive",
            json!({"type": "list_reply", "list_reply": {"id": "slot-0930", "title": "09:30", "description": "Tuesday morning"}}),
        ),
        message(
            6,
            "location",
            json!({"latitude": 47.37, "longitude": 8.54, "name": "Zürich HB", "address": "Bahnhofplatz"}),
        ),
        message(
            7,
            "contacts",
            json!([{"name": {"formatted_name": "Ann Lee", "first_name": "Ann"},
                                       "phones": [{"phone": "+41 79 123 45 67", "type": "CELL", "wa_id": "41791234567"}],
                                       "emails": [{"email": "ann@example.org", "type": "HOME"}]}]),
        ),
        message(8, "reaction", json!({"message_id": "wamid.kinds1", "emoji": "\u{1F44D}"})),
        message(9, "reaction", json!({"message_id": "wamid.kinds1", "emoji": ""})),
    ];
    for message in messages {
        post_meta_message(&app, &tenant, message).await;
    }
    let items = thread(&app, &tenant, 9).await;
    let contents: Vec<&Value> = items.iter().map(|m| &m["content"]).collect();
    assert!(items.iter().all(|m| m["direction"] == "inbound" && m["channel"] == "whatsapp"), "{items:#?}");
    assert_eq!(*contents[0], json!({"type": "text", "body": "Where is my bus?"}));
    assert_eq!(
        *contents[1],
        json!({"type": "media", "kind": "image", "media_id": "1479537139650973", "url": null, "mime_type": "image/jpeg",
               "caption": "The bus stop", "filename": null})
    );
    assert_eq!(contents[2]["kind"], "document");
    assert_eq!(contents[2]["filename"], "ticket.pdf");
    assert_eq!(*contents[3], json!({"type": "button_reply", "id": "confirm", "title": "Yes, confirm"}));
    assert_eq!(
        *contents[4],
        json!({"type": "list_reply", "id": "slot-0930", "title": "09:30", "description": "Tuesday morning"})
    );
    assert_eq!(
        *contents[5],
        json!({"type": "location", "latitude": 47.37, "longitude": 8.54, "name": "Zürich HB", "address": "Bahnhofplatz"})
    );
    assert_eq!(
        *contents[6],
        json!({"type": "contacts", "contacts": [{"name": "Ann Lee",
               "phones": [{"phone": "+41 79 123 45 67", "wa_id": "41791234567"}], "emails": ["ann@example.org"]}]})
    );
    assert_eq!(*contents[7], json!({"type": "reaction", "emoji": "\u{1F44D}", "message_id": "wamid.kinds1"}));
    assert_eq!(*contents[8], json!({"type": "reaction", "emoji": null, "message_id": "wamid.kinds1"}));

    // The live stream's previews say what happened in words.
    let previews: Vec<String> =
        sqlx::query_scalar("SELECT payload->>'preview' FROM communications.changes WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant.id)
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(&previews[previews.len() - 3..], ["[contact] Ann Lee", "reacted \u{1F44D}", "removed a reaction"]);
}

/// The id of the tenant's newest inbound message, once there are `count`.
async fn inbound_ids(app: &TestApp, tenant: &TestTenant, count: usize) -> Vec<(String, Value)> {
    thread(app, tenant, count)
        .await
        .into_iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["content"].clone()))
        .collect()
}

async fn download(app: &TestApp, tenant: &TestTenant, id: &str, query: &str) -> reqwest::Response {
    app.get(&format!("/api/v1/messages/{id}/media{query}"), &tenant.api_key).await
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn ledger(sim: &SimHandle, provider: &str, operation: &str) -> Vec<cpaas_sim::LedgerEntry> {
    sim.ledger().into_iter().filter(|e| e.provider == provider && e.operation == operation).collect()
}

#[tokio::test]
async fn meta_media_download_with_the_tenants_token_and_nothing_else_does() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let media = |from: &str, kind: &str, mime_type: &str, filename: Option<&str>| InboundSpec::MetaMedia {
        phone_number_id: META_NUMBER.into(),
        from: from.into(),
        kind: kind.into(),
        caption: Some("Our bus".into()),
        mime_type: mime_type.into(),
        filename: filename.map(str::to_owned),
    };
    sim.post_inbound(media(CUSTOMER, "image", "image/jpeg", None)).await.unwrap();
    let [(image, content)] = <[_; 1]>::try_from(inbound_ids(&app, &tenant, 1).await).unwrap();
    assert_eq!(content["caption"], "Our bus");
    let media_id = content["media_id"].as_str().unwrap().to_owned();

    let response = download(&app, &tenant, &image, "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "image/jpeg");
    assert_eq!(header(&response, "content-disposition"), "attachment");
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "cache-control"), "private, max-age=300");
    assert_eq!(response.bytes().await.unwrap().to_vec(), media_bytes(&media_id));
    let lookups = ledger(&sim, "meta", "get_media");
    assert_eq!(lookups.len(), 1);
    assert!(lookups[0].path.ends_with(&format!("/{media_id}")), "{lookups:?}");
    assert_eq!(ledger(&sim, "meta", "download_media")[0].body["authorization"], true, "Meta's CDN wants the token");

    // A document keeps its name, cleaned for the header.
    sim.post_inbound(media(CUSTOMER, "document", "application/pdf", Some("Fahrplan 2025/26 \"neu\".pdf")))
        .await
        .unwrap();
    let document = inbound_ids(&app, &tenant, 2).await.pop().unwrap().0;
    let response = download(&app, &tenant, &document, "?index=0").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/pdf");
    assert_eq!(
        header(&response, "content-disposition"),
        "attachment; filename=\"26 _neu_.pdf\"; filename*=UTF-8''26%20%22neu%22.pdf"
    );

    // Another workspace does not see the message at all.
    let other = app.create_tenant("other").await;
    assert_error(download(&app, &other, &image, "").await, 404, "not_found").await;
    // One medium: index 1 is out of range.
    let error = assert_error(download(&app, &tenant, &image, "?index=1").await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "index");
    // A text message has no media; an unknown id is no message.
    post_meta_message(&app, &tenant, message(1, "text", json!({"body": "and a text"}))).await;
    let text = inbound_ids(&app, &tenant, 3).await.into_iter().find(|(_, c)| c["type"] == "text").unwrap().0;
    let error = assert_error(download(&app, &tenant, &text, "").await, 404, "not_found").await;
    assert!(error["error"]["message"].as_str().unwrap().contains("media"), "{error}");
    assert_error(download(&app, &tenant, &uuid::Uuid::now_v7().to_string(), "").await, 404, "not_found").await;

    // Meta failing is a 502 that names it.
    sim.add_failure(FailureRule {
        provider: Some("meta".into()),
        recipient: Some(CUSTOMER.into()),
        kind: FailureKind::ServerError,
        probability: 1.0,
        remaining: Some(1),
    });
    let error = assert_error(download(&app, &tenant, &image, "").await, 502, "provider_unavailable").await;
    let text = error["error"]["message"].as_str().unwrap();
    assert!(text.contains("meta") && text.contains("500"), "{error}");
    assert_eq!(download(&app, &tenant, &image, "").await.status(), 200, "the next try works");
}

#[tokio::test]
async fn twilio_mms_media_follow_the_storage_redirect_without_credentials() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    sms(&app, &tenant).await;
    let account_sid = sim_twilio_sms()["config"]["account_sid"].as_str().unwrap().to_owned();
    sim.post_inbound(InboundSpec::TwilioMms {
        account_sid: account_sid.clone(),
        // The number's webhook URL carries our tenant id where the sim puts the id.
        webhook_id: Some(tenant.id.to_string()),
        from: "+4915112345678".into(),
        to: "+15005550006".into(),
        body: "Photos of the damage".into(),
        media: vec!["image/png".into(), "video/mp4".into()],
    })
    .await
    .unwrap();
    let items = inbound_ids(&app, &tenant, 2).await;
    assert_eq!(items[0].1["caption"], "Photos of the damage");
    assert_eq!((items[0].1["kind"].as_str(), items[1].1["kind"].as_str()), (Some("image"), Some("video")));
    for ((id, content), content_type) in items.iter().zip(["image/png", "video/mp4"]) {
        let url = content["url"].as_str().unwrap();
        assert!(url.contains(&format!("/2010-04-01/Accounts/{account_sid}/Messages/MM")), "{url}");
        let media_sid = url.rsplit('/').next().unwrap();
        let response = download(&app, &tenant, id, "").await;
        assert_eq!(response.status(), 200, "{content}");
        assert_eq!(header(&response, "content-type"), content_type);
        assert_eq!(header(&response, "content-disposition"), "attachment");
        assert_eq!(response.bytes().await.unwrap().to_vec(), media_bytes(media_sid));
    }
    // The media resource got the account's Basic credentials; the storage it redirected to did
    // not (it is on the same host here, so only our own rule kept them back).
    let resources = ledger(&sim, "twilio", "fetch_media");
    assert_eq!(resources.iter().map(|e| e.outcome.as_str()).collect::<Vec<_>>(), ["redirected", "redirected"]);
    let storage = ledger(&sim, "twilio", "download_media");
    assert_eq!(storage.len(), 2);
    assert!(storage.iter().all(|e| e.body["authorization"] == false && e.outcome == "accepted"), "{storage:#?}");

    let error = assert_error(download(&app, &tenant, &items[1].0, "?index=2").await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "index");
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: Some("+4915112345678".into()),
        kind: FailureKind::ServerError,
        probability: 1.0,
        remaining: None,
    });
    let error = assert_error(download(&app, &tenant, &items[0].0, "").await, 502, "provider_unavailable").await;
    assert!(error["error"]["message"].as_str().unwrap().contains("twilio"), "{error}");
}
