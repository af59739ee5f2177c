//! SES notifications (the SNS `Message`): sending events and inbound mail.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use cpaas::event::InboundAttachment;
use cpaas::webhooks::ses::{parse, sending_account_id};
use cpaas::{Channel, DeliveryStatus, FailureClass, InboundContent, Provider, ProviderError, ProviderEvent};

const MESSAGE_ID: &str = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/ses/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// (status, timestamp, recipient, error) of one status update.
type Update = (DeliveryStatus, DateTime<Utc>, Option<String>, Option<ProviderError>);

/// The status updates of a fixture, checking their common fields.
fn statuses(file: &str) -> Vec<Update> {
    parse(&fixture(file))
        .unwrap()
        .into_iter()
        .map(|event| match event {
            ProviderEvent::StatusUpdate {
                provider, provider_message_id, status, timestamp, recipient, error, ..
            } => {
                assert_eq!(provider, Provider::Ses);
                assert_eq!(provider_message_id, MESSAGE_ID);
                (status, timestamp, recipient, error)
            }
            other => panic!("{file}: {other:?}"),
        })
        .collect()
}

fn recipient() -> Option<String> {
    Some("recipient@example.com".into())
}

#[test]
fn send_delivery_open_and_click() {
    assert_eq!(
        statuses("send.json"),
        vec![(DeliveryStatus::Sent, time("2017-08-05T00:40:02.012Z"), recipient(), None)]
    );
    assert_eq!(
        statuses("delivery.json"),
        vec![(DeliveryStatus::Delivered, time("2016-10-19T23:21:04.133Z"), recipient(), None)]
    );
    assert_eq!(
        statuses("open.json"),
        vec![(DeliveryStatus::Opened, time("2017-08-09T22:00:19.652Z"), recipient(), None)]
    );
    // A click proves an open (documented mapping).
    assert_eq!(
        statuses("click.json"),
        vec![(DeliveryStatus::Opened, time("2017-08-09T23:51:25.570Z"), recipient(), None)]
    );
}

#[test]
fn permanent_bounce_is_permanent() {
    let events = statuses("bounce_permanent.json");
    assert_eq!(events.len(), 1);
    let (status, timestamp, to, error) = events.into_iter().next().unwrap();
    assert_eq!(status, DeliveryStatus::Bounced);
    assert_eq!(timestamp, time("2017-08-05T00:41:02.669Z"));
    assert_eq!(to, recipient());
    let error = error.unwrap();
    assert_eq!(error.class, FailureClass::Permanent);
    assert_eq!(error.code, "Permanent/General");
    assert!(error.reason.contains("550 5.1.1 user unknown"), "{}", error.reason);
}

#[test]
fn transient_bounce_gives_one_update_per_recipient() {
    let events = statuses("bounce_transient_two_recipients.json");
    let recipients: Vec<_> = events.iter().map(|(_, _, to, _)| to.clone().unwrap()).collect();
    assert_eq!(recipients, ["a@example.com", "b@example.com"]);
    assert!(events.iter().all(|(status, _, _, error)| *status == DeliveryStatus::Bounced
        && error.as_ref().unwrap().class == FailureClass::Transient));
}

#[test]
fn complaint_reject_rendering_failure_and_delay() {
    let [(status, _, to, error)] = statuses("complaint.json").try_into().unwrap();
    assert_eq!((status, to), (DeliveryStatus::Complained, recipient()));
    assert_eq!(error.unwrap().code, "abuse");

    let [(status, timestamp, _, error)] = statuses("reject.json").try_into().unwrap();
    assert_eq!(status, DeliveryStatus::Rejected);
    assert_eq!(timestamp, time("2017-08-05T00:40:02.012Z"), "no event time: the mail's");
    assert_eq!(
        error,
        Some(ProviderError { code: "Reject".into(), reason: "Bad content".into(), class: FailureClass::Permanent })
    );

    let [(status, _, _, error)] = statuses("rendering_failure.json").try_into().unwrap();
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(error.unwrap().reason.contains("attributeName"));

    let [(status, timestamp, to, error)] = statuses("delivery_delay.json").try_into().unwrap();
    assert_eq!((status, to), (DeliveryStatus::Delayed, recipient()));
    assert_eq!(timestamp, time("2020-06-16T00:25:40.095Z"));
    let error = error.unwrap();
    assert_eq!(error.code, "TransientCommunicationFailure");
    assert_eq!(error.class, FailureClass::Transient);
}

#[test]
fn unmodelled_events_are_unknown() {
    for body in [
        fixture("subscription.json"),
        "{}".to_owned(),
        r#"{"eventType":"Bounce"}"#.to_owned(),
        r#"{"notificationType":"AmazonSnsSubscriptionSucceeded","message":"x"}"#.to_owned(),
        "[1,2]".to_owned(),
        // The SNS envelope was authentic; its Message is just not an SES record.
        "Hello world!".to_owned(),
    ] {
        let events = parse(&body).unwrap();
        assert!(
            events.iter().all(|e| matches!(e, ProviderEvent::Unknown { provider: Provider::Ses, .. })),
            "{body}: {events:?}"
        );
    }
}

#[test]
fn the_sending_account_comes_from_the_record() {
    let bounce = fixture("bounce_permanent.json");
    let expected: serde_json::Value = serde_json::from_str(&bounce).unwrap();
    assert_eq!(sending_account_id(&bounce).as_deref(), expected["mail"]["sendingAccountId"].as_str());
    let from_source = r#"{"eventType":"Bounce","mail":{"messageId":"m","sourceArn":"arn:aws:ses:us-east-1:111122223333:identity/example.com"}}"#;
    assert_eq!(sending_account_id(from_source).as_deref(), Some("111122223333"));
    assert_eq!(sending_account_id("Hello world!"), None);
    assert_eq!(sending_account_id(r#"{"eventType":"Send"}"#), None);
}

fn inbound(file: &str) -> ProviderEvent {
    let events = parse(&fixture(file)).unwrap();
    assert_eq!(events.len(), 1);
    events.into_iter().next().unwrap()
}

#[test]
fn inbound_mail_utf8_and_base64_give_the_same_message() {
    let utf8 = inbound("received_utf8.json");
    assert_eq!(utf8, inbound("received_base64.json"));
    let ProviderEvent::InboundMessage {
        provider,
        channel,
        provider_message_id,
        from,
        to,
        from_name,
        timestamp,
        content,
        in_reply_to,
    } = utf8
    else {
        panic!("{utf8:?}")
    };
    assert_eq!((provider, channel), (Provider::Ses, Channel::Email));
    assert_eq!(provider_message_id, "d6iitobk75ur44p8kdnnp7g2n800");
    assert_eq!(from, "ann@customer.example");
    assert_eq!(from_name.as_deref(), Some("Ann Müller"));
    assert_eq!(to, "support@alpine-coaches.example");
    assert_eq!(timestamp, time("2015-09-11T20:32:33.936Z"));
    assert_eq!(in_reply_to.as_deref(), Some("0100018f1b2c3d4e-5f6a7b8c@email.amazonses.com"));
    assert_eq!(
        content,
        InboundContent::Email {
            subject: Some("Re: Your booking confirmation – tour 42".into()),
            text: Some("Can we move to Tuesday? Grüße, Ann".into()),
            html: Some("<p>Can we move to <b>Tuesday</b>?</p>".into()),
            attachments: vec![InboundAttachment {
                filename: Some("ticket.pdf".into()),
                content_type: "application/pdf".into(),
                size: 221
            }],
            message_id: Some("CAF=reply-123@mail.customer.example".into()),
            in_reply_to: Some("0100018f1b2c3d4e-5f6a7b8c@email.amazonses.com".into()),
            references: vec![
                "first-456@alpine-coaches.example".into(),
                "0100018f1b2c3d4e-5f6a7b8c@email.amazonses.com".into()
            ],
        }
    );
}

#[test]
fn inbound_without_content_or_with_bad_base64_is_unknown() {
    assert!(
        matches!(inbound("received_s3_action.json"), ProviderEvent::Unknown { ref description, .. } if description.contains("S3"))
    );
    let mut body: serde_json::Value = serde_json::from_str(&fixture("received_base64.json")).unwrap();
    body["content"] = "%%% not base64 %%%".into();
    let events = parse(&body.to_string()).unwrap();
    assert!(matches!(events.as_slice(), [ProviderEvent::Unknown { .. }]), "{events:?}");
}

#[test]
fn plain_text_only_mail_has_no_html() {
    let mut body: serde_json::Value = serde_json::from_str(&fixture("received_utf8.json")).unwrap();
    body["content"] = "From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nJust text\r\n".into();
    let events = parse(&body.to_string()).unwrap();
    let [
        ProviderEvent::InboundMessage {
            content: InboundContent::Email { text, html, attachments, in_reply_to, references, .. },
            ..
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert!(text.as_deref().unwrap().starts_with("Just text"));
    assert_eq!(*html, None);
    assert!(attachments.is_empty() && in_reply_to.is_none() && references.is_empty());
}

#[test]
fn our_correlation_tag_is_echoed_back() {
    let correlation = |text: &str| -> Vec<Option<String>> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|event| match event {
                ProviderEvent::StatusUpdate { correlation_id, .. } => correlation_id,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let plain = fixture("delivery.json");
    assert_eq!(correlation(&plain), vec![None], "other tags are not ours");
    let tagged =
        plain.replace(r#""tenant": ["#, r#""sb_correlation": ["0195f3c0-7d1e-7c3a-9f00-3b1d2c4e5f60"], "tenant": ["#);
    assert_ne!(tagged, plain);
    assert_eq!(correlation(&tagged), vec![Some("0195f3c0-7d1e-7c3a-9f00-3b1d2c4e5f60".to_owned())]);
}
