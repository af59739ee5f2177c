//! Provisioning calls against the provider simulator.
#![allow(clippy::unwrap_used)]

use cpaas::provisioning::{ProvisioningErrorKind, meta, ses, sns, twilio};
use cpaas::{MetaConfig, SesConfig, SmsType, SnsConfig, TwilioConfig};
use cpaas_sim::{LedgerEntry, SimConfig, SimHandle, Simulator};
use secrecy::{ExposeSecret, SecretString};

const TWILIO_SID: &str = "ACe808b673a9ec8700fe049815e199bc06";

async fn sim() -> SimHandle {
    Simulator::start(SimConfig::default()).await.unwrap()
}

fn last(sim: &SimHandle) -> LedgerEntry {
    sim.ledger().pop().expect("the simulator recorded nothing")
}

fn meta_app(base: &str) -> meta::MetaApp {
    meta::MetaApp {
        base_url: base.into(),
        api_version: "v21.0".into(),
        app_id: "1234567890".into(),
        app_secret: SecretString::from("app-secret"),
    }
}

fn meta_config(base: &str, token: &SecretString) -> MetaConfig {
    MetaConfig {
        base_url: base.into(),
        api_version: "v21.0".into(),
        phone_number_id: "1122334455667".into(),
        waba_id: "102290129340398".into(),
        access_token: token.clone(),
        app_secret: SecretString::from("sim-meta-app-secret"),
        verify_token: SecretString::from("verify"),
    }
}

fn ses_config(base: &str) -> SesConfig {
    SesConfig {
        region: "eu-central-1".into(),
        endpoint_url: Some(base.into()),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("sim-secret"),
        domain: "mail.alpine.example".into(),
        from_address: "noreply@mail.alpine.example".into(),
        configuration_set: None,
    }
}

fn sns_config(base: &str, origination_number: Option<&str>) -> SnsConfig {
    SnsConfig {
        region: "eu-central-1".into(),
        endpoint_url: Some(base.into()),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("sim-secret"),
        sender_id: None,
        origination_number: origination_number.map(str::to_owned),
        sms_type: SmsType::Transactional,
    }
}

fn twilio_config(base: &str, token: &str) -> TwilioConfig {
    TwilioConfig {
        base_url: base.into(),
        account_sid: TWILIO_SID.into(),
        auth_token: SecretString::from(token.to_owned()),
        from: Some("+15017122661".into()),
        messaging_service_sid: None,
        status_callback_url: None,
    }
}

#[tokio::test]
async fn meta_embedded_signup_flow() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let base = sim.base_url();

    let token = meta::exchange_code(&http, &meta_app(&base), "signup-code-1").await.unwrap();
    assert!(!token.expose_secret().is_empty());
    let entry = last(&sim);
    assert_eq!(
        (entry.operation.as_str(), entry.method.as_str(), entry.path.as_str()),
        ("exchange_code", "GET", "/v21.0/oauth/access_token")
    );
    assert_eq!(entry.body["client_id"], "1234567890");
    assert_eq!(entry.body["code"], "signup-code-1");

    let config = meta_config(&base, &token);
    meta::subscribe_app(&http, &config, None, &config.verify_token).await.unwrap();
    let entry = last(&sim);
    assert_eq!(
        (entry.operation.as_str(), entry.path.as_str(), entry.outcome.as_str()),
        ("subscribe_app", "/v21.0/102290129340398/subscribed_apps", "accepted")
    );

    meta::register_phone(&http, &config, &SecretString::from("123456")).await.unwrap();
    let entry = last(&sim);
    assert_eq!((entry.operation.as_str(), entry.path.as_str()), ("register_phone", "/v21.0/1122334455667/register"));
    assert_eq!(entry.body["messaging_product"], "whatsapp");
    assert_eq!(entry.body["pin"], "123456");

    let info = meta::phone_number_info(&http, &config).await.unwrap();
    assert!(!info.display_phone_number.is_empty());
    assert_eq!(info.verified_name, "Switchboard Sim");
    assert_eq!(info.quality_rating.as_deref(), Some("GREEN"));
    assert_eq!(info.messaging_limit_tier.as_deref(), Some("TIER_1K"));
    let entry = last(&sim);
    assert_eq!(entry.operation, "get_phone_number");
    assert_eq!(entry.body["fields"], "display_phone_number,verified_name,quality_rating,messaging_limit_tier");
}

#[tokio::test]
async fn meta_invalid_code_is_rejected_with_the_provider_message() {
    let sim = sim().await;
    let err = meta::exchange_code(&reqwest::Client::new(), &meta_app(&sim.base_url()), "invalid").await.unwrap_err();
    assert_eq!(err.kind, ProvisioningErrorKind::Rejected);
    assert_eq!(err.code.as_deref(), Some("100"));
    assert_eq!(err.message, "Invalid verification code format.");
    // The app secret travels in the query string; it must not leak into the error.
    assert!(!err.to_string().contains("app-secret"));
}

#[tokio::test]
async fn meta_override_callback_is_refused_locally_when_too_long() {
    let sim = sim().await;
    let config = meta_config(&sim.base_url(), &SecretString::from("t"));
    let long = format!("https://hooks.example.com/{}", "x".repeat(200));
    let err =
        meta::subscribe_app(&reqwest::Client::new(), &config, Some(&long), &config.verify_token).await.unwrap_err();
    assert_eq!(err.kind, ProvisioningErrorKind::Rejected);
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn meta_unreachable_is_unavailable() {
    // Port 9 (discard) is closed here; a freed ephemeral port could be handed to a parallel test.
    let port = 9;
    let err = meta::exchange_code(&reqwest::Client::new(), &meta_app(&format!("http://127.0.0.1:{port}")), "c")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProvisioningErrorKind::Unavailable);
    assert!(!err.message.contains("app-secret"), "{}", err.message);
}

#[tokio::test]
async fn ses_domain_identity_flow() {
    let sim = sim().await;
    let config = ses_config(&sim.base_url());
    let identity = ses::create_domain_identity(&config).await.unwrap();
    assert!(!identity.verified);
    assert!(!identity.dkim_records.is_empty());
    for record in &identity.dkim_records {
        assert_eq!(record.record_type, "CNAME");
        let token = record.name.strip_suffix("._domainkey.mail.alpine.example").unwrap();
        assert_eq!(record.value, format!("{token}.dkim.amazonses.com"));
    }
    let entry = last(&sim);
    assert_eq!(
        (entry.operation.as_str(), entry.method.as_str(), entry.path.as_str()),
        ("CreateEmailIdentity", "POST", "/v2/email/identities")
    );
    assert_eq!(entry.body["EmailIdentity"], "mail.alpine.example");

    // Re-running the flow returns the same records instead of failing.
    let again = ses::create_domain_identity(&config).await.unwrap();
    assert_eq!(again.dkim_records, identity.dkim_records);

    // The sim answers PENDING once after creation… (the retry above already read once), then SUCCESS.
    let mut status = ses::domain_identity_status(&config).await.unwrap();
    if !status.verified_for_sending {
        status = ses::domain_identity_status(&config).await.unwrap();
    }
    assert!(status.verified_for_sending);
    assert_eq!(status.dkim_status, "SUCCESS");
    assert_eq!(last(&sim).operation, "GetEmailIdentity");
}

#[tokio::test]
async fn ses_unknown_identity_is_not_found() {
    let sim = sim().await;
    let err = ses::domain_identity_status(&ses_config(&sim.base_url())).await.unwrap_err();
    assert_eq!(err.kind, ProvisioningErrorKind::NotFound);
    assert_eq!(err.code.as_deref(), Some("NotFoundException"));
}

#[tokio::test]
async fn sns_sender_check_finds_the_origination_number() {
    let sim = sim().await;
    let check = sns::check_sender(&sns_config(&sim.base_url(), Some("+18005550199"))).await.unwrap();
    let number = check.origination_number.unwrap();
    assert_eq!(number.phone_number, "+18005550199");
    assert!(number.capabilities.iter().any(|c| c == "SMS"));
    let operations: Vec<String> = sim.ledger().into_iter().map(|e| e.operation).collect();
    assert_eq!(operations, ["CheckIfPhoneNumberIsOptedOut", "ListOriginationNumbers"]);
}

#[tokio::test]
async fn sns_sender_check_without_origination_number_only_proves_credentials() {
    let sim = sim().await;
    let check = sns::check_sender(&sns_config(&sim.base_url(), None)).await.unwrap();
    assert_eq!(check.origination_number, None);
    let operations: Vec<String> = sim.ledger().into_iter().map(|e| e.operation).collect();
    assert_eq!(operations, ["CheckIfPhoneNumberIsOptedOut"]);
}

#[tokio::test]
async fn sns_unknown_origination_number_is_not_found() {
    let sim = sim().await;
    let err = sns::check_sender(&sns_config(&sim.base_url(), Some("+18005550000"))).await.unwrap_err();
    assert_eq!(err.kind, ProvisioningErrorKind::NotFound);
    assert!(err.message.contains("+18005550000"));
}

#[tokio::test]
async fn twilio_account_check() {
    let sim = sim().await;
    let http = reqwest::Client::new();
    let account = twilio::check_account(&http, &twilio_config(&sim.base_url(), "sim-twilio-auth-token")).await.unwrap();
    assert_eq!(account.status, "active");
    assert!(account.is_active());
    assert_eq!(account.friendly_name, "Switchboard Sim");
    let entry = last(&sim);
    assert_eq!((entry.operation.as_str(), entry.method.as_str()), ("get_account", "GET"));
    assert_eq!(entry.path, format!("/2010-04-01/Accounts/{TWILIO_SID}.json"));
    // The account answer carries the auth token; our type does not keep it.
    assert!(!format!("{account:?}").contains("sim-twilio-auth-token"));

    let err = twilio::check_account(&http, &twilio_config(&sim.base_url(), "wrong")).await.unwrap_err();
    assert_eq!(
        (err.kind, err.code.as_deref(), err.message.as_str()),
        (ProvisioningErrorKind::Unauthorized, Some("20003"), "Authenticate")
    );
}
