//! Amazon SNS Query protocol (`POST /`, form-encoded, XML replies) for SMS `Publish` and the number
//! checks, plus the signed HTTP Notification envelope the sim posts (see docs/providers/sns.md).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::failures::{FailureKind, has_opt_out_rule, normalize_recipient, pick_failure};
use crate::ledger::{NewEntry, SentMessage, form_to_json};
use crate::ses::ACCOUNT_ID;
use crate::{SimState, TIMEOUT_HOLD};

/// Topic names the sim publishes SES events and inbound mail to.
pub(crate) const SES_EVENTS_TOPIC: &str = "switchboard-ses-events";
pub(crate) const SES_INBOUND_TOPIC: &str = "switchboard-ses-inbound";

/// The origination number `ListOriginationNumbers` reports.
const ORIGINATION_NUMBER: &str = "+18005550199";

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new().route("/", post(query_action))
}

pub(crate) fn topic_arn(region: &str, topic: &str) -> String {
    format!("arn:aws:sns:{region}:{ACCOUNT_ID}:{topic}")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

fn xml_response(status: StatusCode, request_id: &str, xml: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "text/xml")], xml).into_response();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

/// The awsQuery error envelope; `Type` is `Sender` for 4xx and `Receiver` for 5xx.
fn sns_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let kind = if status.is_server_error() { "Receiver" } else { "Sender" };
    let xml = format!(
        "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n  <Error>\n    <Type>{kind}</Type>\n    \
         <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        xml_escape(code),
        xml_escape(message)
    );
    xml_response(status, &request_id, xml)
}

fn success(action: &str, result_xml: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let xml = format!(
        "<{action}Response xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n  <{action}Result>\n{result_xml}  </{action}Result>\n  \
         <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n"
    );
    xml_response(StatusCode::OK, &request_id, xml)
}

fn failure_reply(kind: FailureKind) -> (StatusCode, &'static str, &'static str) {
    match kind {
        FailureKind::RateLimited => (StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        FailureKind::ServerError | FailureKind::Timeout => {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "Internal server error")
        }
        FailureKind::InvalidRecipient => (
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Invalid parameter: PhoneNumber Reason: is not valid to publish to",
        ),
        FailureKind::MessageRejected => (StatusCode::BAD_REQUEST, "InvalidParameter", "Invalid parameter: Message"),
        FailureKind::AuthFailed => (
            StatusCode::FORBIDDEN,
            "AuthorizationError",
            "User is not authorized to perform: SNS:Publish on resource: phone number",
        ),
        FailureKind::AccountSuspended => {
            (StatusCode::FORBIDDEN, "AuthorizationError", "The account is suspended and cannot publish SMS messages")
        }
        // Unreachable: these are accepted (OptedOut/Undeliverable) or not matched (ReEngagement,
        // LostAnswer).
        FailureKind::OptedOut
        | FailureKind::Undeliverable
        | FailureKind::ReEngagementRequired
        | FailureKind::LostAnswer => (StatusCode::BAD_REQUEST, "InvalidParameter", "Invalid parameter"),
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) && !digits.starts_with('0')
    })
}

async fn query_action(State(state): State<Arc<SimState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&raw).unwrap_or_default();
    let body = form_to_json(&fields);
    let authorised = headers.get(header::AUTHORIZATION).is_some_and(|v| !v.is_empty());
    let action = field(&fields, "Action").unwrap_or_default().to_owned();
    let operation: &'static str = match action.as_str() {
        "Publish" => "Publish",
        "ListOriginationNumbers" => "ListOriginationNumbers",
        "CheckIfPhoneNumberIsOptedOut" => "CheckIfPhoneNumberIsOptedOut",
        _ => "unknown",
    };
    let recipient = match operation {
        "Publish" => field(&fields, "PhoneNumber"),
        "CheckIfPhoneNumberIsOptedOut" => field(&fields, "phoneNumber"),
        _ => None,
    }
    .map(str::to_owned);
    let record = |outcome: String, id: Option<String>| {
        state.ledger().record(NewEntry {
            provider: "sns",
            operation,
            method: "POST",
            path: "/".to_owned(),
            recipient: recipient.clone(),
            provider_message_id: id,
            body: body.clone(),
            outcome,
        });
    };
    if !authorised {
        record("error:MissingAuthenticationToken".to_owned(), None);
        return sns_error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        );
    }
    if field(&fields, "Version") != Some("2010-03-31") {
        record("error:InvalidParameter".to_owned(), None);
        return sns_error(StatusCode::BAD_REQUEST, "InvalidParameter", "Version must be 2010-03-31");
    }
    match operation {
        "Publish" => publish(&state, &fields, recipient.as_deref(), record).await,
        "ListOriginationNumbers" => {
            record("accepted".to_owned(), None);
            list_origination_numbers()
        }
        "CheckIfPhoneNumberIsOptedOut" => {
            let Some(number) = recipient.as_deref().filter(|n| is_e164(n)) else {
                record("error:InvalidParameter".to_owned(), None);
                return sns_error(StatusCode::BAD_REQUEST, "InvalidParameter", "Invalid parameter: phoneNumber");
            };
            record("accepted".to_owned(), None);
            let opted_out =
                state.sns_opted_out().contains(&normalize_recipient(number)) || has_opt_out_rule(&state, "sns", number);
            success("CheckIfPhoneNumberIsOptedOut", &format!("    <isOptedOut>{opted_out}</isOptedOut>\n"))
        }
        _ => {
            record("error:InvalidAction".to_owned(), None);
            sns_error(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                &format!("The action {action} is not valid for this endpoint."),
            )
        }
    }
}

async fn publish(
    state: &Arc<SimState>,
    fields: &[(String, String)],
    recipient: Option<&str>,
    record: impl Fn(String, Option<String>),
) -> Response {
    let Some(number) = recipient else {
        record("error:InvalidParameter".to_owned(), None);
        let message = if field(fields, "TopicArn").is_some() || field(fields, "TargetArn").is_some() {
            "Invalid parameter: the simulator publishes SMS to PhoneNumber only"
        } else {
            "Invalid parameter: TopicArn or TargetArn Reason: no value for required parameter"
        };
        return sns_error(StatusCode::BAD_REQUEST, "InvalidParameter", message);
    };
    if !is_e164(number) {
        record("error:InvalidParameter".to_owned(), None);
        return sns_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            &format!("Invalid parameter: PhoneNumber Reason: {number} is not valid to publish to"),
        );
    }
    if field(fields, "Message").is_none_or(str::is_empty) {
        record("error:InvalidParameter".to_owned(), None);
        return sns_error(StatusCode::BAD_REQUEST, "InvalidParameter", "Invalid parameter: Empty message");
    }
    let applies = |kind| kind != FailureKind::ReEngagementRequired;
    let outcome = match pick_failure(state, "sns", Some(number), applies) {
        None => "accepted",
        Some(FailureKind::Undeliverable) => "accepted:undeliverable",
        Some(FailureKind::OptedOut) => {
            // Real SNS accepts a publish to an opted-out number and drops it.
            state.sns_opted_out().insert(normalize_recipient(number));
            "dropped:opted_out"
        }
        Some(FailureKind::Timeout) => {
            record("timeout".to_owned(), None);
            tokio::time::sleep(TIMEOUT_HOLD).await;
            let (status, code, message) = failure_reply(FailureKind::Timeout);
            return sns_error(status, code, message);
        }
        Some(kind) => {
            let (status, code, message) = failure_reply(kind);
            record(format!("error:{code}"), None);
            return sns_error(status, code, message);
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    record(outcome.to_owned(), Some(id.clone()));
    state.ledger().remember_message(&id, SentMessage::Sns { phone_number: number.to_owned() });
    success("Publish", &format!("    <MessageId>{id}</MessageId>\n"))
}

fn list_origination_numbers() -> Response {
    let result = format!(
        "    <PhoneNumbers>\n      <member>\n        <CreatedAt>2024-03-01T12:00:00Z</CreatedAt>\n        \
         <PhoneNumber>{ORIGINATION_NUMBER}</PhoneNumber>\n        <Status>ACTIVE</Status>\n        \
         <Iso2CountryCode>US</Iso2CountryCode>\n        <RouteType>Transactional</RouteType>\n        \
         <NumberCapabilities>\n          <member>SMS</member>\n          <member>VOICE</member>\n        </NumberCapabilities>\n      \
         </member>\n    </PhoneNumbers>\n"
    );
    success("ListOriginationNumbers", &result)
}

/// An HTTP request the sim is about to post: (url, headers, body).
pub(crate) type OutgoingPost = (String, Vec<(String, String)>, Vec<u8>);

/// A signed SNS HTTP `Notification` whose `Message` is `message`, on the topic `arn`.
pub(crate) fn signed_notification(state: &SimState, arn: &str, message: &str) -> anyhow::Result<OutgoingPost> {
    let url = format!("{}/api/webhooks/aws/sns", state.webhook_base()?);
    let arn = arn.to_owned();
    let message_id = uuid::Uuid::new_v4().to_string();
    let subscription_arn = format!("{arn}:{}", uuid::Uuid::new_v4());
    let mut notification = serde_json::Map::new();
    notification.insert("Type".into(), json!("Notification"));
    notification.insert("MessageId".into(), json!(message_id));
    notification.insert("TopicArn".into(), json!(arn));
    notification.insert("Message".into(), json!(message));
    notification
        .insert("Timestamp".into(), json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    let version = state.config.sns_signature_version;
    let signature = state.signer.sign(version, &crate::signing::sns_string_to_sign(&notification))?;
    notification.insert("SignatureVersion".into(), json!(version.to_string()));
    notification.insert("Signature".into(), json!(signature));
    notification.insert("SigningCertURL".into(), json!(state.sns_signing_cert_url()));
    notification.insert(
        "UnsubscribeURL".into(),
        json!(format!("{}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}", state.base_url())),
    );
    let headers = vec![
        ("x-amz-sns-message-type".to_owned(), "Notification".to_owned()),
        ("x-amz-sns-message-id".to_owned(), message_id),
        ("x-amz-sns-topic-arn".to_owned(), arn),
        ("x-amz-sns-subscription-arn".to_owned(), subscription_arn),
        ("content-type".to_owned(), "text/plain; charset=UTF-8".to_owned()),
        ("user-agent".to_owned(), "Amazon Simple Notification Service Agent".to_owned()),
    ];
    let body = serde_json::to_vec_pretty(&Value::Object(notification))?;
    Ok((url, headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_validation() {
        assert!(is_e164("+4915112345678"));
        assert!(!is_e164("4915112345678"));
        assert!(!is_e164("+1555"));
        assert!(!is_e164("+49 151 1234"));
    }
}
