//! Every adapter against the provider simulator: the provider-shaped request it records, the
//! receipt, and each error class its failure injection produces.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use cpaas::send::{Adapter, SendOptions};
use cpaas::{
    Attachment, Content, MediaKind, MetaConfig, Provider, ProviderConfig, Recipient, SendError, SendMessageCommand,
    SesConfig, SmsType, SnsConfig, TemplateContent, TwilioConfig,
};
use cpaas_sim::{FailureKind, FailureRule, LedgerEntry, SimConfig, SimHandle, Simulator};
use secrecy::SecretString;
use uuid::Uuid;

const TWILIO_SID: &str = "ACe808b673a9ec8700fe049815e199bc06";

async fn sim() -> SimHandle {
    Simulator::start(SimConfig::default()).await.unwrap()
}

fn meta(base: &str) -> ProviderConfig {
    ProviderConfig::Meta(MetaConfig {
        base_url: base.into(),
        api_version: "v21.0".into(),
        phone_number_id: "1122334455667".into(),
        waba_id: "102290129340398".into(),
        access_token: SecretString::from("EAAG-sim-token"),
        app_secret: SecretString::from("sim-meta-app-secret"),
        verify_token: SecretString::from("verify"),
    })
}

fn ses(base: &str) -> ProviderConfig {
    ProviderConfig::Ses(SesConfig {
        region: "eu-central-1".into(),
        endpoint_url: Some(base.into()),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("sim-secret"),
        domain: "mail.alpine.example".into(),
        from_address: "Alpine Coaches <noreply@mail.alpine.example>".into(),
        configuration_set: Some("switchboard-events".into()),
    })
}

fn sns(base: &str) -> ProviderConfig {
    ProviderConfig::Sns(SnsConfig {
        region: "eu-central-1".into(),
        endpoint_url: Some(base.into()),
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: SecretString::from("sim-secret"),
        sender_id: Some("SWITCHBRD".into()),
        origination_number: Some("+18005550199".into()),
        sms_type: SmsType::Transactional,
    })
}

fn twilio(base: &str) -> ProviderConfig {
    ProviderConfig::Twilio(TwilioConfig {
        base_url: base.into(),
        account_sid: TWILIO_SID.into(),
        auth_token: SecretString::from("sim-twilio-auth-token"),
        from: Some("+15017122661".into()),
        messaging_service_sid: None,
        status_callback_url: Some("https://hooks.example.com/twilio/status".into()),
    })
}

fn adapter_with(config: &ProviderConfig, options: SendOptions) -> Adapter {
    Adapter::new(config, &cpaas::send::build_http_client(&options).unwrap(), &options).unwrap()
}

fn adapter(config: &ProviderConfig) -> Adapter {
    adapter_with(config, SendOptions::default())
}

fn command(recipient: Recipient, content: Content) -> SendMessageCommand {
    SendMessageCommand {
        correlation_id: format!("msg_{}", Uuid::new_v4().simple()),
        tenant_id: Uuid::from_u128(7),
        recipient,
        content,
    }
}

fn text(body: &str) -> Content {
    Content::Text { body: body.into() }
}

fn email() -> Content {
    Content::Email {
        subject: "Your booking".into(),
        text: Some("See you at 9".into()),
        html: Some("<p>See you at 9</p>".into()),
        attachments: vec![],
        in_reply_to: None,
    }
}

fn phone() -> Recipient {
    Recipient::Phone("+4915112345678".into())
}

fn mail_to() -> Recipient {
    Recipient::Email("ann@example.org".into())
}

fn last(sim: &SimHandle) -> LedgerEntry {
    sim.ledger().pop().expect("the simulator recorded nothing")
}

fn fail(sim: &SimHandle, provider: &str, kind: FailureKind) {
    sim.clear_failures();
    sim.add_failure(FailureRule {
        provider: Some(provider.into()),
        recipient: None,
        kind,
        probability: 1.0,
        remaining: None,
    });
}

/// "rate" | "retry" | "permanent:<code>" | "blocked:<code>" | "unknown" | "accepted".
fn outcome(result: &Result<cpaas::SendReceipt, SendError>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err(SendError::RateLimited { .. }) => "rate".into(),
        Err(SendError::Retryable { .. }) => "retry".into(),
        Err(SendError::Permanent { code, .. }) => format!("permanent:{code}"),
        Err(SendError::TenantBlocked { code, .. }) => format!("blocked:{code}"),
        Err(SendError::Unknown { .. }) => "unknown".into(),
    }
}

async fn check_error_table(
    sim: &SimHandle,
    provider: &str,
    config: &ProviderConfig,
    recipient: Recipient,
    content: Content,
    table: &[(FailureKind, &str)],
) {
    let adapter = adapter(config);
    for (kind, expected) in table {
        fail(sim, provider, *kind);
        let result = adapter.send(&command(recipient.clone(), content.clone())).await;
        assert_eq!(outcome(&result), *expected, "{provider} {kind:?}: {result:?}");
    }
    sim.clear_failures();
}

// ---- Meta ----

#[tokio::test]
async fn meta_text_is_sent_as_the_cloud_api_expects() {
    let sim = sim().await;
    let receipt = adapter(&meta(&sim.base_url())).send(&command(phone(), text("Hello from the sim"))).await.unwrap();
    assert_eq!(receipt.provider, Provider::Meta);
    assert!(receipt.provider_message_id.starts_with("wamid."));
    let entry = last(&sim);
    assert_eq!(
        (entry.provider.as_str(), entry.operation.as_str(), entry.method.as_str()),
        ("meta", "send_message", "POST")
    );
    assert_eq!(entry.path, "/v21.0/1122334455667/messages");
    assert_eq!(entry.outcome, "accepted");
    assert_eq!(entry.provider_message_id.as_deref(), Some(receipt.provider_message_id.as_str()));
    assert_eq!(entry.body["messaging_product"], "whatsapp");
    assert_eq!(entry.body["to"], "+4915112345678");
    assert_eq!(entry.body["type"], "text");
    assert_eq!(entry.body["text"]["body"], "Hello from the sim");
}

#[tokio::test]
async fn meta_template_and_media_are_accepted() {
    let sim = sim().await;
    let adapter = adapter(&meta(&sim.base_url()));
    let template = TemplateContent {
        name: "order_update".into(),
        language: "en_US".into(),
        body_parameters: vec!["Asha".into()],
        components: None,
    };
    adapter.send(&command(Recipient::WhatsappId("4915112345678".into()), Content::Template(template))).await.unwrap();
    let entry = last(&sim);
    assert_eq!(entry.body["template"]["language"]["code"], "en_US");
    assert_eq!(entry.body["template"]["components"][0]["parameters"][0]["text"], "Asha");

    let doc = Content::Media {
        kind: MediaKind::Document,
        url: "https://e.example/i.pdf".into(),
        caption: Some("Invoice".into()),
        filename: Some("i.pdf".into()),
    };
    adapter.send(&command(phone(), doc)).await.unwrap();
    let entry = last(&sim);
    assert_eq!(entry.body["type"], "document");
    assert_eq!(entry.body["document"]["filename"], "i.pdf");
}

#[tokio::test]
async fn meta_error_classes() {
    let sim = sim().await;
    let table = [
        (FailureKind::RateLimited, "rate"),
        (FailureKind::ServerError, "retry"),
        (FailureKind::InvalidRecipient, "permanent:100"),
        (FailureKind::OptedOut, "permanent:131026"),
        (FailureKind::AuthFailed, "blocked:190"),
        (FailureKind::AccountSuspended, "blocked:368"),
        (FailureKind::ReEngagementRequired, "permanent:131047"),
        (FailureKind::MessageRejected, "permanent:131026"),
        // Accepted now, fails later in a status webhook.
        (FailureKind::Undeliverable, "accepted"),
    ];
    check_error_table(&sim, "meta", &meta(&sim.base_url()), phone(), text("x"), &table).await;
}

// ---- SES ----

#[tokio::test]
async fn ses_simple_email_is_sent() {
    let sim = sim().await;
    let receipt = adapter(&ses(&sim.base_url())).send(&command(mail_to(), email())).await.unwrap();
    assert_eq!(receipt.provider, Provider::Ses);
    let entry = last(&sim);
    assert_eq!(
        (entry.provider.as_str(), entry.operation.as_str(), entry.method.as_str()),
        ("ses", "SendEmail", "POST")
    );
    assert_eq!(entry.path, "/v2/email/outbound-emails");
    assert_eq!(entry.outcome, "accepted");
    assert_eq!(entry.provider_message_id.as_deref(), Some(receipt.provider_message_id.as_str()));
    assert_eq!(entry.body["FromEmailAddress"], "Alpine Coaches <noreply@mail.alpine.example>");
    assert_eq!(entry.body["Destination"]["ToAddresses"][0], "ann@example.org");
    assert_eq!(entry.body["Content"]["Simple"]["Subject"]["Data"], "Your booking");
    assert_eq!(entry.body["Content"]["Simple"]["Body"]["Html"]["Data"], "<p>See you at 9</p>");
    assert_eq!(entry.body["ConfigurationSetName"], "switchboard-events");
}

#[tokio::test]
async fn ses_raw_email_with_attachment_and_reply_headers_is_sent() {
    let sim = sim().await;
    let content = Content::Email {
        subject: "Ihre Fahrkarte für Zürich".into(),
        text: Some("Anbei".into()),
        html: None,
        attachments: vec![Attachment {
            filename: "ticket.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF-1.4".to_vec(),
        }],
        in_reply_to: Some("<orig-1@mail.example.org>".into()),
    };
    adapter(&ses(&sim.base_url())).send(&command(mail_to(), content)).await.unwrap();
    let entry = last(&sim);
    assert_eq!(entry.outcome, "accepted");
    // The sim replaces Raw.Data by the decoded MIME text.
    let mime = entry.body["Content"]["Raw"]["Data"].as_str().unwrap();
    assert!(mime.contains("In-Reply-To: <orig-1@mail.example.org>"), "{mime}");
    assert!(mime.contains("multipart/mixed"));
    assert!(mime.contains("Subject: =?UTF-8?B?"));
    assert!(mime.contains("filename=\"ticket.pdf\""));
}

#[tokio::test]
async fn ses_error_classes() {
    let sim = sim().await;
    let table = [
        (FailureKind::RateLimited, "rate"),
        (FailureKind::ServerError, "retry"),
        (FailureKind::InvalidRecipient, "permanent:MessageRejected"),
        (FailureKind::OptedOut, "permanent:MessageRejected"),
        (FailureKind::AuthFailed, "blocked:UnrecognizedClientException"),
        (FailureKind::AccountSuspended, "blocked:AccountSuspendedException"),
        (FailureKind::MessageRejected, "permanent:MessageRejected"),
        (FailureKind::Undeliverable, "accepted"),
    ];
    check_error_table(&sim, "ses", &ses(&sim.base_url()), mail_to(), email(), &table).await;
}

// ---- SNS ----

#[tokio::test]
async fn sns_publish_carries_phone_message_and_attributes() {
    let sim = sim().await;
    let receipt = adapter(&sns(&sim.base_url())).send(&command(phone(), text("Your code is 123456"))).await.unwrap();
    assert_eq!(receipt.provider, Provider::Sns);
    let entry = last(&sim);
    assert_eq!(
        (entry.provider.as_str(), entry.operation.as_str(), entry.method.as_str(), entry.path.as_str()),
        ("sns", "Publish", "POST", "/")
    );
    assert_eq!(entry.outcome, "accepted");
    assert_eq!(entry.provider_message_id.as_deref(), Some(receipt.provider_message_id.as_str()));
    assert_eq!(entry.body["Action"], "Publish");
    assert_eq!(entry.body["PhoneNumber"], "+4915112345678");
    assert_eq!(entry.body["Message"], "Your code is 123456");
    let mut attributes: Vec<(String, String)> = (1..=3)
        .map(|n| {
            let name = entry.body[format!("MessageAttributes.entry.{n}.Name")].as_str().unwrap().to_owned();
            let value =
                entry.body[format!("MessageAttributes.entry.{n}.Value.StringValue")].as_str().unwrap().to_owned();
            (name, value)
        })
        .collect();
    attributes.sort();
    assert_eq!(
        attributes,
        [
            ("AWS.MM.SMS.OriginationNumber".to_owned(), "+18005550199".to_owned()),
            ("AWS.SNS.SMS.SMSType".to_owned(), "Transactional".to_owned()),
            ("AWS.SNS.SMS.SenderID".to_owned(), "SWITCHBRD".to_owned()),
        ]
    );
}

#[tokio::test]
async fn sns_error_classes() {
    let sim = sim().await;
    let table = [
        (FailureKind::RateLimited, "rate"),
        (FailureKind::ServerError, "retry"),
        (FailureKind::InvalidRecipient, "permanent:InvalidParameter"),
        // Real SNS accepts a publish to an opted-out number and drops it.
        (FailureKind::OptedOut, "accepted"),
        (FailureKind::AuthFailed, "blocked:AuthorizationError"),
        (FailureKind::AccountSuspended, "blocked:AuthorizationError"),
        (FailureKind::MessageRejected, "permanent:InvalidParameter"),
        (FailureKind::Undeliverable, "accepted"),
    ];
    check_error_table(&sim, "sns", &sns(&sim.base_url()), phone(), text("x"), &table).await;
}

// ---- Twilio ----

#[tokio::test]
async fn twilio_message_is_created_with_the_documented_form() {
    let sim = sim().await;
    let receipt = adapter(&twilio(&sim.base_url())).send(&command(phone(), text("Your code is 123456"))).await.unwrap();
    assert_eq!(receipt.provider, Provider::Twilio);
    assert!(receipt.provider_message_id.starts_with("SM") || receipt.provider_message_id.starts_with("MM"));
    let entry = last(&sim);
    assert_eq!(
        (entry.provider.as_str(), entry.operation.as_str(), entry.method.as_str()),
        ("twilio", "create_message", "POST")
    );
    assert_eq!(entry.path, format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"));
    assert_eq!(entry.outcome, "accepted");
    assert_eq!(entry.provider_message_id.as_deref(), Some(receipt.provider_message_id.as_str()));
    assert_eq!(entry.body["To"], "+4915112345678");
    assert_eq!(entry.body["From"], "+15017122661");
    assert_eq!(entry.body["Body"], "Your code is 123456");
    // Our correlation id rides on the callback URL, so a callback can find its message.
    let callback = entry.body["StatusCallback"].as_str().unwrap();
    assert!(callback.starts_with("https://hooks.example.com/twilio/status?correlation_id=msg_"), "{callback}");
}

#[tokio::test]
async fn twilio_media_is_sent_as_media_url() {
    let sim = sim().await;
    let media = Content::Media {
        kind: MediaKind::Image,
        url: "https://e.example/a.jpg".into(),
        caption: Some("Look".into()),
        filename: None,
    };
    adapter(&twilio(&sim.base_url())).send(&command(phone(), media)).await.unwrap();
    let entry = last(&sim);
    assert_eq!(entry.body["MediaUrl"], "https://e.example/a.jpg");
    assert_eq!(entry.body["Body"], "Look");
}

#[tokio::test]
async fn twilio_error_classes() {
    let sim = sim().await;
    let table = [
        (FailureKind::RateLimited, "rate"),
        (FailureKind::ServerError, "retry"),
        (FailureKind::InvalidRecipient, "permanent:21211"),
        (FailureKind::OptedOut, "permanent:21610"),
        (FailureKind::AuthFailed, "blocked:20003"),
        (FailureKind::AccountSuspended, "blocked:20003"),
        (FailureKind::Undeliverable, "accepted"),
        (FailureKind::MessageRejected, "accepted"),
    ];
    check_error_table(&sim, "twilio", &twilio(&sim.base_url()), phone(), text("x"), &table).await;
}

#[tokio::test]
async fn twilio_wrong_token_blocks_the_tenant() {
    let sim = sim().await;
    let ProviderConfig::Twilio(mut config) = twilio(&sim.base_url()) else { unreachable!() };
    config.auth_token = SecretString::from("wrong");
    let result = adapter(&ProviderConfig::Twilio(config)).send(&command(phone(), text("x"))).await;
    assert_eq!(outcome(&result), "blocked:20003");
}

// ---- all providers ----

fn all_configs(base: &str) -> Vec<(ProviderConfig, Recipient, Content)> {
    vec![
        (meta(base), phone(), text("x")),
        (ses(base), mail_to(), email()),
        (sns(base), phone(), text("x")),
        (twilio(base), phone(), text("x")),
    ]
}

#[tokio::test]
async fn a_timeout_after_sending_is_unknown_for_every_provider() {
    let sim = sim().await;
    let options =
        SendOptions { request_timeout: Duration::from_millis(800), connect_timeout: Duration::from_millis(500) };
    for (config, recipient, content) in all_configs(&sim.base_url()) {
        sim.clear_failures();
        sim.add_failure(FailureRule {
            provider: None,
            recipient: None,
            kind: FailureKind::Timeout,
            probability: 1.0,
            remaining: Some(1),
        });
        let started = std::time::Instant::now();
        let result = adapter_with(&config, options).send(&command(recipient, content)).await;
        assert_eq!(outcome(&result), "unknown", "{config:?}: {result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(last(&sim).outcome, "timeout");
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_retryable_for_every_provider() {
    // Port 9 (discard) is closed here; a freed ephemeral port could be handed to a parallel test.
    let port = 9;
    for (config, recipient, content) in all_configs(&format!("http://127.0.0.1:{port}")) {
        let result = adapter(&config).send(&command(recipient, content)).await;
        assert_eq!(outcome(&result), "retry", "{config:?}: {result:?}");
    }
}

#[tokio::test]
async fn unsupported_content_never_reaches_the_provider() {
    let sim = sim().await;
    let base = sim.base_url();
    let template = Content::Template(TemplateContent {
        name: "t".into(),
        language: "en".into(),
        body_parameters: vec![],
        components: None,
    });
    let cases = [
        (meta(&base), phone(), email()),
        (meta(&base), mail_to(), text("x")),
        (ses(&base), mail_to(), template.clone()),
        (ses(&base), phone(), email()),
        (sns(&base), phone(), email()),
        (sns(&base), mail_to(), text("x")),
        (twilio(&base), phone(), template),
        (twilio(&base), mail_to(), text("x")),
    ];
    for (config, recipient, content) in cases {
        let result = adapter(&config).send(&command(recipient, content)).await;
        assert_eq!(outcome(&result), "permanent:unsupported_content", "{config:?}");
    }
    assert!(sim.ledger().is_empty(), "{:?}", sim.ledger());
}
