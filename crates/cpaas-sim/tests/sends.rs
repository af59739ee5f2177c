#![allow(clippy::unwrap_used)]
//! Send success shapes, ledger entries and failure injection, over real HTTP.

mod common;

use std::time::Duration;

use common::*;
use cpaas_sim::{FailureKind, FailureRule, SimConfig, Simulator};
use serde_json::Value;

fn rule(provider: &str, kind: FailureKind) -> FailureRule {
    FailureRule { provider: Some(provider.to_owned()), recipient: None, kind, probability: 1.0, remaining: Some(1) }
}

#[tokio::test]
async fn meta_send_success_shape_and_ledger() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let response = meta_send(&sim, "+49 151 2345678").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["contacts"][0]["input"], "+49 151 2345678");
    assert_eq!(body["contacts"][0]["wa_id"], "491512345678");
    let id = body["messages"][0]["id"].as_str().unwrap();
    assert!(id.starts_with("wamid."));

    let ledger = sim.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(
        (entry.provider.as_str(), entry.operation.as_str(), entry.outcome.as_str()),
        ("meta", "send_message", "accepted")
    );
    assert_eq!(entry.path, "/v21.0/1122334455667/messages");
    assert_eq!(entry.provider_message_id.as_deref(), Some(id));
    assert_eq!(entry.body["text"]["body"], "Hi ä");

    // No token → 190/401; a broken body → 100/400.
    let url = format!("{}/v21.0/1122334455667/messages", sim.base_url());
    let response =
        client().post(&url).json(&serde_json::json!({"messaging_product": "whatsapp"})).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], 190);
    let response = client()
        .post(&url)
        .bearer_auth("t")
        .json(&serde_json::json!({"messaging_product": "whatsapp", "to": "1", "type": "text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], 100);
    assert!(error["error"]["message"].as_str().unwrap().starts_with("(#100)"));
    let outcomes: Vec<String> = sim.ledger().into_iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, ["accepted", "error:190", "error:100"]);
    sim.clear_ledger();
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn ses_send_success_shape_and_raw_mime_in_ledger() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let response = ses_send(&sim, "user@example.org").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-amzn-requestid"));
    let id = response.json::<Value>().await.unwrap()["MessageId"].as_str().unwrap().to_owned();
    assert!(id.ends_with("-000000"));

    let mime = "From: a@example.com\r\nTo: Raw.User@Example.org\r\nSubject: Raw\r\n\r\nHello\r\n";
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(mime);
    let response = client()
        .post(format!("{}/v2/email/outbound-emails", sim.base_url()))
        .header("authorization", "AWS4-HMAC-SHA256 x")
        .json(&serde_json::json!({"Content": {"Raw": {"Data": data}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ledger = sim.ledger();
    assert_eq!(ledger[0].recipient.as_deref(), Some("user@example.org"));
    assert_eq!(ledger[0].operation, "SendEmail");
    assert_eq!(ledger[1].recipient.as_deref(), Some("Raw.User@Example.org"));
    assert_eq!(ledger[1].body["Content"]["Raw"]["Data"], mime);

    // No Authorization header → 403; two content kinds → BadRequestException.
    let response = client()
        .post(format!("{}/v2/email/outbound-emails", sim.base_url()))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = client()
        .post(format!("{}/v2/email/outbound-emails", sim.base_url()))
        .header("authorization", "x")
        .json(&serde_json::json!({"FromEmailAddress": "a@b.c", "Content": {"Simple": {}, "Raw": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-amzn-errortype"], "BadRequestException");
}

#[tokio::test]
async fn sns_publish_and_number_checks_speak_query_xml() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let response = sns_publish(&sim, "+4915112345678").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-amzn-requestid"));
    let xml = response.text().await.unwrap();
    assert!(
        xml.contains("<PublishResponse") && xml.contains("<PublishResult>") && xml.contains("<RequestId>"),
        "{xml}"
    );
    let entry = &sim.ledger()[0];
    assert_eq!((entry.operation.as_str(), entry.outcome.as_str()), ("Publish", "accepted"));
    assert!(xml.contains(&format!("<MessageId>{}</MessageId>", entry.provider_message_id.as_deref().unwrap())));
    assert_eq!(entry.body["MessageAttributes.entry.1.Value.StringValue"], "Transactional");

    let response = sns_publish(&sim, "+1555").await;
    assert_eq!(response.status(), 400);
    let xml = response.text().await.unwrap();
    assert!(xml.contains("<Code>InvalidParameter</Code>") && xml.contains("<Type>Sender</Type>"), "{xml}");

    let form = [("Action", "ListOriginationNumbers"), ("Version", "2010-03-31")];
    let xml = client()
        .post(format!("{}/", sim.base_url()))
        .header("authorization", "x")
        .form(&form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(xml.contains("<ListOriginationNumbersResult>") && xml.contains("<member>SMS</member>"), "{xml}");

    let check = |number: &'static str| {
        let sim = sim.clone();
        async move {
            let form = [("Action", "CheckIfPhoneNumberIsOptedOut"), ("Version", "2010-03-31"), ("phoneNumber", number)];
            client()
                .post(format!("{}/", sim.base_url()))
                .header("authorization", "x")
                .form(&form)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(check("+4915112345678").await.contains("<isOptedOut>false</isOptedOut>"));
    sim.add_failure(FailureRule { recipient: Some("+4915112345678".into()), ..rule("sns", FailureKind::OptedOut) });
    assert!(check("+4915112345678").await.contains("<isOptedOut>true</isOptedOut>"));
    // Real SNS accepts a publish to an opted-out number and drops it.
    let response = sns_publish(&sim, "+4915112345678").await;
    assert_eq!(response.status(), 200);
    assert_eq!(sim.ledger().last().unwrap().outcome, "dropped:opted_out");
    assert!(check("+4915112345678").await.contains("<isOptedOut>true</isOptedOut>"));
}

#[tokio::test]
async fn twilio_send_success_shape_auth_and_account() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let response = twilio_send(&sim, "+15558675310").await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let sid = body["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["num_segments"], "1");
    assert_eq!(body["account_sid"], TWILIO_SID);
    let entry = &sim.ledger()[0];
    assert_eq!((entry.operation.as_str(), entry.outcome.as_str()), ("create_message", "accepted"));
    assert_eq!(entry.body["Body"], "Hello");

    let url = format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url());
    let response =
        client().post(&url).basic_auth(TWILIO_SID, Some("wrong")).form(&[("To", "+15558675310")]).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!((error["code"].as_u64(), error["status"].as_u64()), (Some(20003), Some(401)));

    let account = client()
        .get(format!("{}/2010-04-01/Accounts/{TWILIO_SID}.json", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), 200);
    assert_eq!(account.json::<Value>().await.unwrap()["status"], "active");
    assert_eq!(sim.ledger().last().unwrap().operation, "get_account");
}

struct Expectation {
    status: u16,
    outcome: &'static str,
}

fn expected(provider: &str, kind: FailureKind) -> Option<Expectation> {
    use FailureKind::*;
    let e = |status, outcome| Some(Expectation { status, outcome });
    match (provider, kind) {
        ("meta", RateLimited) => e(400, "error:130429"),
        ("meta", ServerError) => e(500, "error:131000"),
        ("meta", InvalidRecipient) => e(400, "error:100"),
        ("meta", OptedOut) => e(400, "error:131026"),
        ("meta", AuthFailed) => e(401, "error:190"),
        ("meta", AccountSuspended) => e(403, "error:368"),
        ("meta", ReEngagementRequired) => e(400, "error:131047"),
        ("meta", Undeliverable) => e(200, "accepted:undeliverable"),
        ("meta", MessageRejected) => e(400, "error:131026"),
        ("ses", RateLimited) => e(429, "error:TooManyRequestsException"),
        ("ses", ServerError) => e(500, "error:InternalServiceErrorException"),
        ("ses", InvalidRecipient | OptedOut | MessageRejected) => e(400, "error:MessageRejected"),
        ("ses", AuthFailed) => e(403, "error:UnrecognizedClientException"),
        ("ses", AccountSuspended) => e(400, "error:AccountSuspendedException"),
        ("ses", Undeliverable) => e(200, "accepted:undeliverable"),
        ("sns", RateLimited) => e(400, "error:Throttling"),
        ("sns", ServerError) => e(500, "error:InternalError"),
        ("sns", InvalidRecipient | MessageRejected) => e(400, "error:InvalidParameter"),
        ("sns", OptedOut) => e(200, "dropped:opted_out"),
        ("sns", AuthFailed | AccountSuspended) => e(403, "error:AuthorizationError"),
        ("sns", Undeliverable) => e(200, "accepted:undeliverable"),
        ("twilio", RateLimited) => e(429, "error:20429"),
        ("twilio", ServerError) => e(500, "error:20500"),
        ("twilio", InvalidRecipient) => e(400, "error:21211"),
        ("twilio", OptedOut) => e(400, "error:21610"),
        ("twilio", AuthFailed | AccountSuspended) => e(401, "error:20003"),
        ("twilio", Undeliverable) => e(201, "accepted:undeliverable"),
        ("twilio", MessageRejected) => e(201, "accepted:rejected"),
        // ReEngagementRequired is not matched outside Meta: the send succeeds.
        (_, ReEngagementRequired) => None,
        _ => unreachable!("{provider} {kind:?}"),
    }
}

async fn send(sim: &cpaas_sim::SimHandle, provider: &str) -> reqwest::Response {
    match provider {
        "meta" => meta_send(sim, "+491512345678").await,
        "ses" => ses_send(sim, "user@example.org").await,
        "sns" => sns_publish(sim, "+491512345678").await,
        _ => twilio_send(sim, "+491512345678").await,
    }
}

#[tokio::test]
async fn every_failure_kind_maps_to_the_providers_error() {
    use FailureKind::*;
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let kinds = [
        RateLimited,
        ServerError,
        InvalidRecipient,
        OptedOut,
        AuthFailed,
        AccountSuspended,
        ReEngagementRequired,
        Undeliverable,
        MessageRejected,
    ];
    for provider in ["meta", "ses", "sns", "twilio"] {
        for kind in kinds {
            sim.clear_ledger();
            sim.clear_failures();
            sim.add_failure(rule(provider, kind));
            let response = send(&sim, provider).await;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            let entry = sim.ledger().pop().unwrap();
            let Some(want) = expected(provider, kind) else {
                assert!(status < 300, "{provider} {kind:?}: {status} {text}");
                assert!(entry.outcome.starts_with("accepted"), "{provider} {kind:?}: {}", entry.outcome);
                continue;
            };
            assert_eq!(status, want.status, "{provider} {kind:?}: {text}");
            assert_eq!(entry.outcome, want.outcome, "{provider} {kind:?}");
            let code = want.outcome.strip_prefix("error:");
            assert_eq!(entry.provider_message_id.is_none(), code.is_some(), "{provider} {kind:?}");
            let Some(code) = code else { continue };
            match provider {
                "meta" => {
                    let body: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(body["error"]["code"].to_string(), code, "{text}");
                    assert!(body["error"]["fbtrace_id"].is_string());
                }
                "ses" => {
                    assert_eq!(headers["x-amzn-errortype"], code);
                    let body: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(body["__type"], code);
                    assert!(body["message"].is_string());
                }
                "sns" => {
                    assert!(text.contains(&format!("<Code>{code}</Code>")) && text.contains("<ErrorResponse"), "{text}")
                }
                _ => {
                    let body: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(body["code"].to_string(), code);
                    assert_eq!(body["status"].as_u64(), Some(u64::from(status)));
                    assert!(body["more_info"].as_str().unwrap().ends_with(code));
                }
            }
            // remaining: Some(1) is consumed; the next send succeeds.
            assert!(send(&sim, provider).await.status().is_success(), "{provider} {kind:?} rule not consumed");
        }
    }
}

#[tokio::test]
async fn rules_honour_recipient_probability_and_remaining() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_failure(FailureRule {
        provider: None,
        recipient: Some("+49 151 2345678".into()),
        kind: FailureKind::RateLimited,
        probability: 1.0,
        remaining: Some(2),
    });
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: None,
        kind: FailureKind::ServerError,
        probability: 0.0,
        remaining: None,
    });
    assert_eq!(twilio_send(&sim, "+15550001111").await.status(), 201, "other recipient, probability 0");
    assert_eq!(twilio_send(&sim, "+491512345678").await.status(), 429);
    assert_eq!(meta_send(&sim, "491512345678").await.status(), 400);
    assert_eq!(twilio_send(&sim, "+491512345678").await.status(), 201, "remaining exhausted");

    // Probability 0.5 over many sends fires sometimes, not always.
    sim.clear_failures();
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: None,
        kind: FailureKind::ServerError,
        probability: 0.5,
        remaining: None,
    });
    let mut failed = 0;
    for _ in 0..60 {
        if twilio_send(&sim, "+15550001111").await.status() == 500 {
            failed += 1;
        }
    }
    assert!((5..=55).contains(&failed), "{failed} of 60 failed at p=0.5");
}

#[tokio::test]
async fn timeout_records_the_request_and_holds_the_response() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.add_failure(rule("twilio", FailureKind::Timeout));
    let result = client()
        .post(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .form(&[("To", "+15558675310"), ("From", "+15005550006"), ("Body", "x")])
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    let entry = &sim.ledger()[0];
    assert_eq!(entry.outcome, "timeout");
    assert!(entry.provider_message_id.is_none());
}

#[tokio::test]
async fn control_surface_over_http() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let base = sim.base_url();
    let rule = serde_json::json!({"provider": "twilio", "recipient": null, "kind": "opted_out", "probability": 1.0, "remaining": 1});
    assert_eq!(client().post(format!("{base}/sim/failures")).json(&rule).send().await.unwrap().status(), 204);
    assert_eq!(twilio_send(&sim, "+15558675310").await.status(), 400);
    let ledger: Vec<Value> = client().get(format!("{base}/sim/ledger")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ledger[0]["outcome"], "error:21610");
    assert_eq!(client().delete(format!("{base}/sim/ledger")).send().await.unwrap().status(), 204);
    assert!(sim.ledger().is_empty());
    assert_eq!(client().delete(format!("{base}/sim/failures")).send().await.unwrap().status(), 204);
    let pem = client().get(sim.sns_signing_cert_url()).send().await.unwrap().text().await.unwrap();
    assert_eq!(pem, sim.sns_certificate_pem());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    // No webhook_base: asking for callbacks fails clearly instead of pretending.
    let id = twilio_send(&sim, "+15558675310").await.json::<Value>().await.unwrap()["sid"].as_str().unwrap().to_owned();
    let response = client()
        .post(format!("{base}/sim/callbacks"))
        .json(&serde_json::json!({"provider_message_id": id, "statuses": ["delivered"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
}
