//! Verification flows against the provider simulator: Embedded Signup, SES DKIM, SNS and Twilio.

use cpaas_sim::SimHandle;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app_with, spawn_app_with_sim};

const SIM_TWILIO_TOKEN: &str = "sim-twilio-auth-token";

async fn app_with_sim() -> (TestApp, SimHandle) {
    spawn_app_with_sim(|_| {}).await
}

async fn create(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    let response = app.post("/api/v1/channel-accounts", &tenant.api_key, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn verify(app: &TestApp, tenant: &TestTenant, account: &Value) -> reqwest::Response {
    app.post(
        &format!("/api/v1/channel-accounts/{}/verify", account["id"].as_str().unwrap()),
        &tenant.api_key,
        json!({}),
    )
    .await
}

/// The module as the CLI's `platform-provider set` uses it, on the test's database.
fn platform_admin(app: &TestApp) -> communications::Communications {
    let keyring = crate::helpers::test_settings("postgres://unused").secrets.keyring().unwrap();
    communications::Communications::new(app.pool.clone(), std::sync::Arc::new(keyring))
}

/// A WhatsApp account from Embedded Signup with this code.
async fn signed_up_whatsapp(app: &TestApp, tenant: &TestTenant, code: &str) -> Value {
    let config = json!({"phone_number_id": "1065", "waba_id": "1022", "signup_code": code});
    create(app, tenant, json!({"channel_type": "whatsapp", "display_name": "WA", "config": config})).await
}

fn operations(sim: &SimHandle) -> Vec<String> {
    sim.ledger().into_iter().map(|entry| entry.operation).collect()
}

#[tokio::test]
async fn whatsapp_embedded_signup_exchanges_the_code_subscribes_and_activates() {
    let (app, sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(
        &app,
        &tenant,
        json!({"channel_type": "whatsapp", "display_name": "Alpine WhatsApp",
               "config": {"phone_number_id": "106540352242922", "waba_id": "102290129340398", "signup_code": "AQBx-code", "pin": "123456"}}),
    )
    .await;
    let response = verify(&app, &tenant, &account).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let verified: Value = response.json().await.unwrap();
    assert_eq!(verified["status"], "active");
    let facts = &verified["verification"];
    for field in ["display_phone_number", "verified_name", "quality_rating", "messaging_limit_tier"] {
        assert!(facts[field].is_string(), "{field} missing: {facts}");
    }
    let webhook_url = format!("{}/api/webhooks/meta/{}", app.address, tenant.id);
    assert_eq!(facts["webhook_url"], webhook_url.as_str());
    assert_eq!(verified["sender"], facts["display_phone_number"]);

    // The code was spent for a token, which is kept (masked) instead of the code.
    let secrets = &verified["providers"][0]["secrets"];
    assert!(secrets.get("signup_code").is_none() && secrets["access_token"].is_string(), "{secrets}");
    assert!(secrets["verify_token"].is_string());

    let ops = operations(&sim);
    for op in ["exchange_code", "register_phone", "subscribe_app", "get_phone_number"] {
        assert!(ops.contains(&op.to_owned()), "{op} not called: {ops:?}");
    }
    let subscribe = sim.ledger().into_iter().find(|e| e.operation == "subscribe_app").unwrap();
    assert_eq!(subscribe.body["override_callback_uri"], webhook_url.as_str(), "{:?}", subscribe.body);
    assert!(subscribe.path.contains("102290129340398"));
    let exchange = sim.ledger().into_iter().find(|e| e.operation == "exchange_code").unwrap();
    assert_eq!(exchange.body["code"], "AQBx-code");
}

#[tokio::test]
async fn the_meta_handshake_echoes_only_for_the_tenants_verify_token() {
    let (app, _sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let account = signed_up_whatsapp(&app, &tenant, "AQBx-code").await;
    assert_eq!(verify(&app, &tenant, &account).await.status(), 200);
    let url = |token: &str| {
        format!("/api/webhooks/meta/{}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444", tenant.id)
    };
    let forged = app.client.get(app.url(&url("guess"))).send().await.unwrap();
    assert_error(forged, 403, "forbidden").await;
    let other = app.create_tenant("other").await;
    let elsewhere = app
        .client
        .get(app.url(&url("guess").replace(&tenant.id.to_string(), &other.id.to_string())))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);
}

#[tokio::test]
async fn a_refused_signup_code_is_422_and_the_account_stays_pending() {
    let (app, _sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let account = signed_up_whatsapp(&app, &tenant, "invalid").await;
    let error = assert_error(verify(&app, &tenant, &account).await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "config");
    let shown: Value = app
        .get(&format!("/api/v1/channel-accounts/{}", account["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "pending_verification");
    assert!(shown["providers"][0]["secrets"]["signup_code"].is_string(), "the code is kept for another try");
}

#[tokio::test]
async fn email_shows_dkim_records_at_once_and_activates_when_ses_has_verified_the_domain() {
    let (app, sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(
        &app,
        &tenant,
        json!({"channel_type": "email", "display_name": "Mail",
               "config": {"domain": "mail.alpine.example", "from_address": "tours@mail.alpine.example",
                          "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}),
    )
    .await;
    let records = account["verification"]["dkim_records"].as_array().expect("DKIM records right after creation");
    assert_eq!(records.len(), 3);
    for record in records {
        assert_eq!(record["record_type"], "CNAME");
        let name = record["name"].as_str().unwrap();
        let token = name.strip_suffix("._domainkey.mail.alpine.example").expect(name);
        assert_eq!(record["value"], format!("{token}.dkim.amazonses.com"));
    }
    assert_eq!(account["status"], "pending_verification");
    assert!(operations(&sim).contains(&"CreateEmailIdentity".to_owned()));

    // SES has not seen the DNS records yet: still pending, and nothing is lost.
    let first: Value = verify(&app, &tenant, &account).await.json().await.unwrap();
    assert_eq!(first["status"], "pending_verification");
    assert_eq!(first["verification"]["verified_for_sending"], false);
    assert_eq!(first["verification"]["dkim_records"], account["verification"]["dkim_records"]);
    let second: Value = verify(&app, &tenant, &account).await.json().await.unwrap();
    assert_eq!(second["status"], "active", "{second}");
    assert_eq!(second["sender"], "mail.alpine.example");
}

#[tokio::test]
async fn sms_through_the_platform_sns_sender_verifies_with_platform_credentials() {
    let (app, sim) = app_with_sim().await;
    let module = platform_admin(&app);
    module
        .set_platform_default(
            communications::channels::ProviderKind::Sns,
            &json!({"access_key_id": "AKIAPLATFORM0000001", "secret_access_key": "platform-secret", "origination_number": "+18005550199"}),
        )
        .await
        .unwrap();
    let tenant = app.create_tenant("alpine").await;
    let account = create(&app, &tenant, json!({"channel_type": "sms", "display_name": "SMS", "config": {}})).await;
    let response = verify(&app, &tenant, &account).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let verified: Value = response.json().await.unwrap();
    assert_eq!(verified["status"], "active");
    assert_eq!(verified["sender"], "+18005550199", "the platform's sender");
    assert!(operations(&sim).contains(&"ListOriginationNumbers".to_owned()));
}

#[tokio::test]
async fn sms_without_any_credentials_is_422_naming_what_is_missing() {
    let (app, _sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(&app, &tenant, json!({"channel_type": "sms", "display_name": "SMS", "config": {}})).await;
    let error = assert_error(verify(&app, &tenant, &account).await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "config.access_key_id");
}

#[tokio::test]
async fn twilio_checks_the_account_and_refuses_a_wrong_token() {
    let (app, sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let sid = format!("AC{}", "0123456789abcdef".repeat(2));
    let good = create(
        &app,
        &tenant,
        json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS",
               "config": {"account_sid": sid, "auth_token": SIM_TWILIO_TOKEN, "from": "+15005550006"}}),
    )
    .await;
    let verified: Value = verify(&app, &tenant, &good).await.json().await.unwrap();
    assert_eq!(verified["status"], "active");
    assert!(operations(&sim).contains(&"get_account".to_owned()));

    let other = app.create_tenant("other").await;
    let bad = create(
        &app,
        &other,
        json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS",
               "config": {"account_sid": sid, "auth_token": "wrong-token", "from": "+15005550006"}}),
    )
    .await;
    assert_error(verify(&app, &other, &bad).await, 422, "validation_failed").await;
}

#[tokio::test]
async fn an_unreachable_provider_is_502_and_changes_nothing() {
    let app = spawn_app_with(|settings| settings.providers.twilio_api_url = "http://127.0.0.1:9".into()).await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(
        &app,
        &tenant,
        json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS",
               "config": {"account_sid": format!("AC{}", "0".repeat(32)), "auth_token": "t", "from": "+15005550006"}}),
    )
    .await;
    assert_error(verify(&app, &tenant, &account).await, 502, "provider_unavailable").await;
    let shown: Value = app
        .get(&format!("/api/v1/channel-accounts/{}", account["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "pending_verification");
}

#[tokio::test]
async fn webchat_verifies_at_once_and_an_active_account_cannot_verify_again() {
    let (app, _sim) = app_with_sim().await;
    let tenant = app.create_tenant("alpine").await;
    let chat = create(&app, &tenant, json!({"channel_type": "webchat", "display_name": "Chat"})).await;
    let verified: Value = verify(&app, &tenant, &chat).await.json().await.unwrap();
    assert_eq!(verified["status"], "active");
    assert_error(verify(&app, &tenant, &chat).await, 409, "conflict").await;
    let other = app.create_tenant("other").await;
    assert_error(verify(&app, &other, &chat).await, 404, "not_found").await;
}

/// The body of the SNS Publish request whose text contains `text`, once it arrives.
async fn published(sim: &SimHandle, text: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found = sim.ledger().into_iter().find(|e| e.operation == "Publish" && e.body.to_string().contains(text));
        if let Some(entry) = found {
            return entry.body.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "{text} was not published: {:?}", sim.ledger());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A changed platform default reaches running workers (their adapters were built from the old
/// one) without a restart.
#[tokio::test]
async fn a_changed_platform_default_is_used_by_the_next_sends() {
    let (app, sim) = app_with_sim().await;
    let module = platform_admin(&app);
    let platform = |number: &str| json!({"access_key_id": "AKIAPLATFORM0000001", "secret_access_key": "platform-secret", "origination_number": number});
    let sns = communications::channels::ProviderKind::Sns;
    module.set_platform_default(sns, &platform("+18005550199")).await.unwrap();
    let tenant = app.create_tenant("alpine").await;
    let account = create(&app, &tenant, json!({"channel_type": "sms", "display_name": "SMS", "config": {}})).await;
    assert_eq!(verify(&app, &tenant, &account).await.status(), 200);
    let message = |text: &str| json!({"to": {"phone": "+4915112345678"}, "channels": "sms", "content": {"text": text}});

    assert_eq!(app.post("/api/v1/messages", &tenant.api_key, message("before")).await.status(), 202);
    assert!(published(&sim, "before").await.contains("+18005550199"));

    module.set_platform_default(sns, &platform("+18005550142")).await.unwrap();
    // Within the recheck window (2 s) a send may still use the old sender; after it, never.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.post("/api/v1/messages", &tenant.api_key, message("after")).await.status(), 202);
    let body = published(&sim, "after").await;
    assert!(body.contains("+18005550142") && !body.contains("+18005550199"), "{body}");
}
