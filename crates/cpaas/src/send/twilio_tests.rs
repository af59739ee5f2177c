#![allow(clippy::unwrap_used)]

use super::*;
use crate::send::test_server::{Canned, serve_once};
use crate::{MediaKind, Recipient, TemplateContent};
use uuid::Uuid;

fn command(content: Content) -> SendMessageCommand {
    SendMessageCommand {
        correlation_id: "msg_1".into(),
        tenant_id: Uuid::nil(),
        recipient: Recipient::Phone("+15558675310".into()),
        content,
    }
}

fn config() -> TwilioConfig {
    TwilioConfig {
        base_url: "https://api.twilio.com/".into(),
        account_sid: "ACe808b673a9ec8700fe049815e199bc06".into(),
        auth_token: SecretString::from("twilio-auth-token"),
        from: Some("+15017122661".into()),
        messaging_service_sid: None,
        status_callback_url: Some("https://hooks.example.com/twilio/status".into()),
    }
}

fn from() -> Sender {
    Sender::From("+15017122661".into())
}

#[test]
fn url_is_the_account_messages_resource() {
    assert_eq!(
        messages_url(&config()).unwrap(),
        "https://api.twilio.com/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages.json"
    );
    let mut bad = config();
    bad.account_sid = "AC/../x".into();
    assert!(messages_url(&bad).is_err());
}

#[test]
fn text_form_matches_the_documented_request() {
    let form = build_form(
        &command(Content::Text { body: "Your code is 123456".into() }),
        &from(),
        Some("https://hooks.example.com/twilio/status"),
    )
    .unwrap();
    assert_eq!(
        form,
        vec![
            ("To", "+15558675310".to_owned()),
            ("From", "+15017122661".to_owned()),
            ("Body", "Your code is 123456".to_owned()),
            (
                "StatusCallback",
                "https://hooks.example.com/twilio/status?correlation_id=msg_1#rc=5&rp=all&ct=2000&rt=5000".to_owned()
            ),
        ]
    );
    // And it encodes as the notes show (`+` → %2B).
    let encoded = serde_urlencoded_like(&form);
    assert!(encoded.starts_with("To=%2B15558675310&From=%2B15017122661&Body=Your+code+is+123456"), "{encoded}");
}

fn serde_urlencoded_like(form: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

#[test]
fn messaging_service_wins_over_from() {
    let mut cfg = config();
    cfg.messaging_service_sid = Some("MG9752274e9e519418a7406176694466fa".into());
    assert_eq!(sender(&cfg).unwrap(), Sender::MessagingService("MG9752274e9e519418a7406176694466fa".into()));
    let form = build_form(&command(Content::Text { body: "x".into() }), &sender(&cfg).unwrap(), None).unwrap();
    assert_eq!(form[1], ("MessagingServiceSid", "MG9752274e9e519418a7406176694466fa".to_owned()));
    assert!(form.iter().all(|(k, _)| *k != "From" && *k != "StatusCallback"));
    cfg.messaging_service_sid = None;
    cfg.from = None;
    assert!(sender(&cfg).is_err());
}

#[test]
fn media_becomes_media_url_with_caption_as_body() {
    let media = Content::Media {
        kind: MediaKind::Image,
        url: "https://e.example/a.jpg".into(),
        caption: Some("Look".into()),
        filename: None,
    };
    let form = build_form(&command(media), &from(), None).unwrap();
    assert_eq!(form[2..], [("Body", "Look".to_owned()), ("MediaUrl", "https://e.example/a.jpg".to_owned())]);
    let media =
        Content::Media { kind: MediaKind::Image, url: "https://e.example/a.jpg".into(), caption: None, filename: None };
    assert!(build_form(&command(media), &from(), None).unwrap().iter().all(|(k, _)| *k != "Body"));
}

#[test]
fn templates_emails_and_non_phone_recipients_are_unsupported() {
    let template = Content::Template(TemplateContent {
        name: "t".into(),
        language: "en".into(),
        body_parameters: vec![],
        components: None,
    });
    let email = Content::Email { subject: "s".into(), text: None, html: None, attachments: vec![], in_reply_to: None };
    for content in [template, email] {
        let err = build_form(&command(content), &from(), None).unwrap_err();
        assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"), "{err:?}");
    }
    let mut cmd = command(Content::Text { body: "x".into() });
    cmd.recipient = Recipient::WhatsappId("15558675310".into());
    assert!(
        matches!(build_form(&cmd, &from(), None), Err(SendError::Permanent { ref code, .. }) if code == "unsupported_content")
    );
}

#[test]
fn receipt_is_the_sid_of_the_201_body() {
    let body =
        r#"{"sid": "SMc270985b65f443d9af000abb1ee3b588", "status": "queued", "num_segments": "1", "error_code": null}"#;
    assert_eq!(parse_sid(body).as_deref(), Some("SMc270985b65f443d9af000abb1ee3b588"));
    for unusable in [r#"{"sid": ""}"#, r#"{"sid": 5}"#, r#"{"sid": null}"#, r#"{"status": "queued"}"#, "[]", "not json"]
    {
        assert_eq!(parse_sid(unusable), None, "{unusable}");
    }
    assert_eq!(parse_sid(r#"{"uri": "/x", "sid": "SM\u0031"}"#).as_deref(), Some("SM1"), "an escaped sid is read too");
    let response = ProviderResponse { status: 201, retry_after: None, body: body.into() };
    assert_eq!(receipt_from_response(&response).unwrap().provider_message_id, "SMc270985b65f443d9af000abb1ee3b588");
    let response = ProviderResponse { status: 201, retry_after: None, body: "{}".into() };
    assert!(matches!(receipt_from_response(&response), Err(SendError::Unknown { .. })));
}

#[test]
fn real_error_bodies_from_the_notes() {
    let not_mobile = r#"{"code": 21614, "message": "To number: +41799894492, is not a mobile number", "more_info": "https://www.twilio.com/docs/errors/21614", "status": 400}"#;
    assert_eq!(
        classify_error(400, not_mobile, None),
        SendError::Permanent { code: "21614".into(), reason: "To number: +41799894492, is not a mobile number".into() }
    );
    let auth =
        r#"{"code":20003,"message":"Authenticate","more_info":"http://www.twilio.com/docs/errors/20003","status":401}"#;
    assert_eq!(
        classify_error(401, auth, None),
        SendError::TenantBlocked { code: "20003".into(), reason: "Authenticate".into() }
    );
}

#[test]
fn too_many_requests_honours_retry_after() {
    let body = r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#;
    assert_eq!(
        classify_error(429, body, Some(Duration::from_secs(2))),
        SendError::RateLimited { reason: "20429: Too Many Requests".into(), retry_after: Some(Duration::from_secs(2)) }
    );
}

#[test]
fn the_whole_code_table() {
    let cases: &[(i64, u16, &str)] = &[
        (20429, 429, "rate"),
        (21611, 400, "rate"),
        (20003, 401, "blocked"),
        (20005, 401, "blocked"),
        (20404, 404, "blocked"),
        (21212, 400, "blocked"),
        (21603, 400, "blocked"),
        (21606, 400, "blocked"),
        (21705, 400, "blocked"),
        (30002, 400, "blocked"),
        (21211, 400, "permanent"),
        (21408, 400, "permanent"),
        (21602, 400, "permanent"),
        (21604, 400, "permanent"),
        (21608, 400, "permanent"),
        (21610, 400, "permanent"),
        (21612, 400, "permanent"),
        (21614, 400, "permanent"),
        (21617, 400, "permanent"),
        (21619, 400, "permanent"),
        (21620, 400, "permanent"),
        (30004, 400, "permanent"),
        (30005, 400, "permanent"),
        (30006, 400, "permanent"),
        (30007, 400, "permanent"),
        (30003, 400, "retry"),
        (30008, 400, "retry"),
        (20500, 500, "retry"),
        (20503, 503, "retry"),
    ];
    for &(code, status, expected) in cases {
        let body = format!(
            r#"{{"code":{code},"message":"m","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
        );
        let class = crate::send::test_class::class_of(&classify_error(status, &body, None), &code.to_string());
        assert_eq!(class, expected, "code {code}");
    }
}

#[test]
fn unknown_codes_and_bodies_fall_back_on_the_status() {
    assert!(
        matches!(classify_error(400, r#"{"code":"21999","message":"new"}"#, None), SendError::Permanent { ref code, .. } if code == "21999")
    );
    assert!(matches!(classify_error(500, "", None), SendError::Retryable { .. }));
    assert!(
        matches!(classify_error(403, "<html/>", None), SendError::TenantBlocked { ref code, .. } if code == "http_403")
    );
}

#[test]
fn debug_output_hides_the_token() {
    let adapter = TwilioAdapter::new(&config(), &reqwest::Client::new(), &SendOptions::default()).unwrap();
    assert!(!format!("{adapter:?}").contains("twilio-auth-token"));
}

#[test]
fn a_configured_fragment_is_kept_and_the_correlation_goes_before_it() {
    assert_eq!(
        with_correlation("https://h.example/cb?t=1#rc=2&rp=ct", "m"),
        "https://h.example/cb?t=1&correlation_id=m#rc=2&rp=ct"
    );
}

#[test]
fn twilio_statuses_map_to_ours() {
    let cases = [
        ("accepted", DeliveryStatus::Sent),
        ("scheduled", DeliveryStatus::Sent),
        ("queued", DeliveryStatus::Sent),
        ("sending", DeliveryStatus::Sent),
        ("sent", DeliveryStatus::Sent),
        ("delivered", DeliveryStatus::Delivered),
        ("read", DeliveryStatus::Read),
        ("failed", DeliveryStatus::Failed),
        ("undelivered", DeliveryStatus::Failed),
        ("canceled", DeliveryStatus::Failed),
    ];
    for (twilio, ours) in cases {
        assert_eq!(delivery_status(twilio), ours, "{twilio}");
    }
}

/// A Message resource as the list and fetch return it (shape from Twilio's docs, notes §1.4).
fn resource(sid: &str, direction: &str, body: &str, created: &str, sent: Option<&str>, status: &str) -> Value {
    serde_json::json!({
        "account_sid": "ACe808b673a9ec8700fe049815e199bc06", "api_version": "2010-04-01", "body": body,
        "date_created": created, "date_sent": sent, "date_updated": created, "direction": direction,
        "error_code": if status == "undelivered" { serde_json::json!(30003) } else { Value::Null },
        "error_message": null, "from": "+15017122661", "messaging_service_sid": null, "num_media": "0",
        "num_segments": "1", "price": null, "price_unit": "USD", "sid": sid, "status": status, "to": "+15558675310",
        "uri": format!("/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages/{sid}.json"),
    })
}

fn probe(body: &str, since: &str) -> SentProbe {
    SentProbe {
        recipient: Recipient::Phone("+15558675310".into()),
        body: Some(body.into()),
        correlation_id: "msg_1".into(),
        since: DateTime::parse_from_rfc3339(since).unwrap().with_timezone(&Utc),
    }
}

fn adapter_at(base: &str, timeout: Duration) -> TwilioAdapter {
    let mut cfg = config();
    cfg.base_url = base.into();
    let options = SendOptions { request_timeout: timeout, ..SendOptions::default() };
    TwilioAdapter::new(&cfg, &crate::send::build_http_client(&options).unwrap(), &options).unwrap()
}

#[tokio::test]
async fn find_sent_keeps_our_messages_with_the_body_until_older_ones() {
    let page = serde_json::json!({
        "first_page_uri": "/x", "previous_page_uri": null, "page": 0, "page_size": 100, "start": 0, "end": 5,
        "uri": "/x", "next_page_uri": "/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages.json?Page=1",
        "messages": [
            resource("SM5", "outbound-api", "code 1", "Fri, 24 May 2019 17:45:10 +0000", None, "queued"),
            resource("SM4", "inbound", "code 1", "Fri, 24 May 2019 17:45:05 +0000", Some("Fri, 24 May 2019 17:45:05 +0000"), "received"),
            resource("SM3", "outbound-api", "other", "Fri, 24 May 2019 17:45:00 +0000", Some("Fri, 24 May 2019 17:45:01 +0000"), "sent"),
            resource("SM2", "outbound-api", "code 1", "Fri, 24 May 2019 17:44:30 +0000", Some("Fri, 24 May 2019 17:44:59 +0000"), "undelivered"),
            // Created before the window, sent inside it: not ours to claim.
            resource("SM1", "outbound-api", "code 1", "Fri, 24 May 2019 17:40:00 +0000", Some("Fri, 24 May 2019 17:44:40 +0000"), "delivered"),
            resource("SM0", "outbound-api", "code 1", "Fri, 24 May 2019 17:40:00 +0000", Some("Fri, 24 May 2019 17:40:01 +0000"), "delivered"),
        ],
    });
    let (url, server) = serve_once(Canned::new(200, "application/json", page.to_string())).await;
    let found = adapter_at(&url, Duration::from_secs(5)).find_sent(&probe("code 1", "2019-05-24T17:45:20Z")).await;
    let request = server.await.unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.path,
        "/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages.json?To=%2B15558675310&From=%2B15017122661&PageSize=100"
    );
    assert!(request.header("authorization").unwrap().starts_with("Basic "));
    let found = found.unwrap();
    let ids: Vec<&str> = found.iter().map(|m| m.provider_message_id.as_str()).collect();
    assert_eq!(ids, ["SM2", "SM5"], "oldest first; the next page is not read past older messages");
    assert_eq!((found[0].status, found[0].error_code.as_deref()), (DeliveryStatus::Failed, Some("30003")));
    assert_eq!((found[1].status, found[1].error_code.as_deref()), (DeliveryStatus::Sent, None));
    assert_eq!(found[1].created_at, DateTime::parse_from_rfc3339("2019-05-24T17:45:10Z").unwrap().with_timezone(&Utc));
}

#[tokio::test]
async fn lookups_fail_like_sends() {
    let auth = r#"{"code":20003,"message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#;
    let (url, _server) = serve_once(Canned::new(401, "application/json", auth)).await;
    let err = adapter_at(&url, Duration::from_secs(5)).find_sent(&probe("x", "2019-05-24T17:45:20Z")).await;
    assert!(matches!(err, Err(SendError::TenantBlocked { ref code, .. }) if code == "20003"), "{err:?}");

    let (url, _server) = serve_once(Canned::new(200, "application/json", "{}").delayed(Duration::from_secs(3))).await;
    let err = adapter_at(&url, Duration::from_millis(300)).fetch_status("SM1").await;
    assert!(matches!(err, Err(SendError::Unknown { .. })), "{err:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = adapter_at(&format!("http://{closed}"), Duration::from_secs(5)).fetch_status("SM1").await;
    assert!(matches!(err, Err(SendError::Retryable { .. })), "{err:?}");

    let (url, _server) = serve_once(Canned::new(200, "application/json", "<html/>")).await;
    let err = adapter_at(&url, Duration::from_secs(5)).find_sent(&probe("x", "2019-05-24T17:45:20Z")).await;
    assert!(matches!(err, Err(SendError::Unknown { .. })), "{err:?}");
    let err = adapter_at("http://127.0.0.1:9", Duration::from_secs(5)).fetch_status("SM/../x").await;
    assert!(matches!(err, Err(SendError::Permanent { ref code, .. }) if code == "invalid_message_id"), "{err:?}");
}

#[tokio::test]
async fn fetch_status_reads_one_message_and_none_for_unknown_sids() {
    let body = resource("SM9", "outbound-api", "x", "Fri, 24 May 2019 17:18:27 +0000", None, "undelivered").to_string();
    let (url, server) = serve_once(Canned::new(200, "application/json", body)).await;
    let found = adapter_at(&url, Duration::from_secs(5)).fetch_status("SM9").await.unwrap().unwrap();
    assert_eq!(server.await.unwrap().path, "/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages/SM9.json");
    assert_eq!((found.status, found.error_code.as_deref()), (DeliveryStatus::Failed, Some("30003")));
    let missing = r#"{"code":20404,"message":"The requested resource was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404}"#;
    let (url, _server) = serve_once(Canned::new(404, "application/json", missing)).await;
    assert_eq!(adapter_at(&url, Duration::from_secs(5)).fetch_status("SM9").await.unwrap(), None);
}

#[tokio::test]
async fn against_the_simulator_sends_are_found_paged_and_their_callbacks_verify() {
    use axum::extract::{Request, State};
    use std::sync::Mutex;

    // A receiver that checks signatures the way our server does: over the URL it was called on.
    type Seen = std::sync::Arc<Mutex<Vec<Result<(), crate::webhooks::WebhookError>>>>;
    async fn receive(State((base, seen)): State<(String, Seen)>, request: Request) -> &'static str {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let url = format!("{base}{}", parts.uri.path_and_query().unwrap());
        let signature = parts.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
        let params = crate::webhooks::twilio::parse_form(&body);
        seen.lock().unwrap().push(crate::webhooks::twilio::verify_signature(
            b"twilio-auth-token",
            &url,
            &params,
            signature,
        ));
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let app = axum::Router::new().fallback(receive).with_state((base.clone(), seen.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let sim_config =
        cpaas_sim::SimConfig { twilio_auth_token: "twilio-auth-token".into(), ..cpaas_sim::SimConfig::default() };
    let sim = cpaas_sim::Simulator::start(sim_config).await.unwrap();
    let mut cfg = config();
    cfg.base_url = sim.base_url();
    cfg.status_callback_url = Some(format!("{base}/api/webhooks/twilio/status"));
    let adapter = TwilioAdapter::new(&cfg, &reqwest::Client::new(), &SendOptions::default()).unwrap();
    let since = Utc::now();
    let text = |body: &str| command(Content::Text { body: body.into() });
    let mut sent = Vec::new();
    // More than a page: the lookup follows next_page_uri.
    for _ in 0..(LOOKUP_PAGE_SIZE + 2) {
        sent.push(adapter.send(&text("Your code is 1")).await.unwrap().provider_message_id);
    }
    adapter.send(&text("Something else")).await.unwrap();
    let mut probe = probe("Your code is 1", "2000-01-01T00:00:00Z");
    probe.since = since;
    let found = adapter.find_sent(&probe).await.unwrap();
    let found_ids: Vec<String> = found.iter().map(|m| m.provider_message_id.clone()).collect();
    assert_eq!(found_ids, sent, "all of them, oldest first");
    assert!(found.iter().all(|m| m.status == DeliveryStatus::Sent));
    let lists = sim.ledger().iter().filter(|e| e.operation == "list_messages").count();
    assert_eq!(lists, 2);

    sim.post_status_callbacks(&sent[0], &[cpaas_sim::CallbackStatus::Sent, cpaas_sim::CallbackStatus::Delivered])
        .await
        .unwrap();
    let now = adapter.fetch_status(&sent[0]).await.unwrap().unwrap();
    assert_eq!((now.status, now.error_code), (DeliveryStatus::Delivered, None));
    assert_eq!(adapter.fetch_status(&format!("SM{}", "0".repeat(32))).await.unwrap(), None);
    // The callbacks carried our override fragment; the signature still verifies without it.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(Result::is_ok), "{seen:?}");
}
