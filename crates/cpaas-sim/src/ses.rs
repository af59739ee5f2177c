//! Amazon SES v2 (restJson1, as aws-sdk-sesv2 calls it): SendEmail, Create/GetEmailIdentity, and
//! the SES event / receipt records the sim publishes through SNS (see docs/providers/ses.md).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::failures::{FailureKind, normalize_recipient, pick_failure};
use crate::ledger::{Fate, NewEntry, SentMessage};
use crate::{SimState, TIMEOUT_HOLD, callbacks, random_hex};

/// The account id the sim pretends to be (used in ARNs).
pub(crate) const ACCOUNT_ID: &str = "123456789012";

pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/v2/email/outbound-emails", post(send_email))
        .route("/v2/email/identities", post(create_email_identity))
        .route("/v2/email/identities/{identity}", get(get_email_identity))
}

/// An identity created through `CreateEmailIdentity`.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    is_domain: bool,
    tokens: Vec<String>,
    reads: u32,
    created_at: i64,
}

/// A restJson1 error: `x-amzn-ErrorType` header plus `{"__type","message"}`.
fn ses_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({"__type": code, "message": message}))).into_response();
    if let Ok(value) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-amzn-ErrorType", value);
    }
    with_request_id(response)
}

fn with_request_id(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-amzn-RequestId", value);
    }
    response
}

fn failure_reply(kind: FailureKind) -> (StatusCode, &'static str, &'static str) {
    match kind {
        FailureKind::RateLimited => {
            (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Maximum sending rate exceeded.")
        }
        FailureKind::ServerError | FailureKind::Timeout => {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalServiceErrorException", "Internal service error.")
        }
        FailureKind::InvalidRecipient => (StatusCode::BAD_REQUEST, "MessageRejected", "Illegal address"),
        FailureKind::OptedOut => (
            StatusCode::BAD_REQUEST,
            "MessageRejected",
            "The recipient address is on the account-level suppression list.",
        ),
        FailureKind::AuthFailed => (
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        FailureKind::AccountSuspended => (
            StatusCode::BAD_REQUEST,
            "AccountSuspendedException",
            "Your account's ability to send email has been permanently restricted.",
        ),
        FailureKind::MessageRejected
        | FailureKind::ReEngagementRequired
        | FailureKind::Undeliverable
        | FailureKind::LostAnswer => {
            (StatusCode::BAD_REQUEST, "MessageRejected", "Email rejected: the message contains invalid content.")
        }
    }
}

fn has_authorization(headers: &HeaderMap) -> bool {
    headers.get(header::AUTHORIZATION).is_some_and(|v| !v.is_empty())
}

fn missing_auth() -> Response {
    ses_error(StatusCode::FORBIDDEN, "MissingAuthenticationTokenException", "Missing Authentication Token")
}

/// A header's value from raw MIME (first occurrence, unfolded).
fn mime_header(mime: &str, name: &str) -> Option<String> {
    let head = mime.split("\r\n\r\n").next().unwrap_or(mime).split("\n\n").next().unwrap_or(mime);
    let mut value: Option<String> = None;
    for line in head.lines() {
        if let Some(current) = value.as_mut() {
            if line.starts_with(' ') || line.starts_with('\t') {
                current.push(' ');
                current.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.trim().eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_owned());
        }
    }
    value
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The facts a send is judged and remembered by.
struct ParsedEmail {
    from: String,
    to: Vec<String>,
    subject: String,
}

/// Validates the SendEmail body; replaces `Raw.Data` with the decoded MIME for the ledger.
fn parse_send_email(body: &mut Value) -> Result<ParsedEmail, String> {
    let content = body.get("Content").and_then(Value::as_object).ok_or("Content is required.")?;
    let kinds: Vec<&String> = content.keys().filter(|k| ["Simple", "Raw", "Template"].contains(&k.as_str())).collect();
    if kinds.len() != 1 {
        return Err("Exactly one of Simple, Raw or Template content is required.".to_owned());
    }
    let kind = kinds[0].clone();
    let mut from = body.get("FromEmailAddress").and_then(Value::as_str).map(str::to_owned);
    let mut to = string_list(body.pointer("/Destination/ToAddresses"));
    let mut subject = String::new();
    match kind.as_str() {
        "Simple" => {
            subject = body
                .pointer("/Content/Simple/Subject/Data")
                .and_then(Value::as_str)
                .ok_or("Subject is required.")?
                .to_owned();
            let has_body = body.pointer("/Content/Simple/Body/Text/Data").is_some()
                || body.pointer("/Content/Simple/Body/Html/Data").is_some();
            if !has_body {
                return Err("Body is required.".to_owned());
            }
        }
        "Raw" => {
            let data = body.pointer("/Content/Raw/Data").and_then(Value::as_str).ok_or("Raw.Data is required.")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| "Raw.Data is not valid base64.")?;
            let mime = String::from_utf8_lossy(&bytes).into_owned();
            from = from.or_else(|| mime_header(&mime, "From"));
            if to.is_empty() {
                to = mime_header(&mime, "To")
                    .map(|v| v.split(',').map(|a| a.trim().to_owned()).collect())
                    .unwrap_or_default();
            }
            subject = mime_header(&mime, "Subject").unwrap_or_default();
            if let Some(slot) = body.pointer_mut("/Content/Raw/Data") {
                *slot = Value::String(mime);
            }
        }
        _ => {
            let template = body.pointer("/Content/Template").ok_or("Template is required.")?;
            if template.get("TemplateName").is_none() && template.get("TemplateArn").is_none() {
                return Err("TemplateName or TemplateArn is required.".to_owned());
            }
        }
    }
    let from = from.ok_or("Missing required parameter: FromEmailAddress")?;
    let cc = string_list(body.pointer("/Destination/CcAddresses"));
    let bcc = string_list(body.pointer("/Destination/BccAddresses"));
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err("Missing final '@domain'".to_owned());
    }
    Ok(ParsedEmail { from, to, subject })
}

/// SES message ids look like `0100018f1b2c3d4e-5f6a7b8c-…-000000`.
fn new_message_id() -> String {
    let millis = chrono::Utc::now().timestamp_millis();
    format!("0100{millis:012x}-{}-000000", uuid::Uuid::new_v4())
}

async fn send_email(State(state): State<Arc<SimState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let mut body: Value =
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    let parsed = parse_send_email(&mut body);
    let recipient = parsed.as_ref().ok().and_then(|p| p.to.first().cloned());
    let record = |outcome: String, id: Option<String>| {
        state.ledger().record(NewEntry {
            provider: "ses",
            operation: "SendEmail",
            method: "POST",
            path: "/v2/email/outbound-emails".to_owned(),
            recipient: recipient.clone(),
            provider_message_id: id,
            body: body.clone(),
            outcome,
        });
    };
    if !has_authorization(&headers) {
        record("error:MissingAuthenticationTokenException".to_owned(), None);
        return missing_auth();
    }
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            record("error:BadRequestException".to_owned(), None);
            return ses_error(StatusCode::BAD_REQUEST, "BadRequestException", &message);
        }
    };
    let applies = |kind| kind != FailureKind::ReEngagementRequired;
    let fate = match pick_failure(&state, "ses", recipient.as_deref(), applies) {
        None => Fate::Delivered,
        Some(FailureKind::Undeliverable) => Fate::Undeliverable,
        Some(FailureKind::Timeout) => {
            record("timeout".to_owned(), None);
            tokio::time::sleep(TIMEOUT_HOLD).await;
            let (status, code, message) = failure_reply(FailureKind::Timeout);
            return ses_error(status, code, message);
        }
        Some(kind) => {
            let (status, code, message) = failure_reply(kind);
            record(format!("error:{code}"), None);
            return ses_error(status, code, message);
        }
    };
    let id = new_message_id();
    let outcome = if fate == Fate::Delivered { "accepted" } else { "accepted:undeliverable" };
    record(outcome.to_owned(), Some(id.clone()));
    let tags = body
        .get("EmailTags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| Some((t.get("Name")?.as_str()?.to_owned(), t.get("Value")?.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    state.ledger().remember_message(
        &id,
        SentMessage::Ses {
            from: parsed.from,
            to: parsed.to,
            subject: parsed.subject,
            tags,
            configuration_set: body.get("ConfigurationSetName").and_then(Value::as_str).map(str::to_owned),
            fate,
        },
    );
    callbacks::schedule_auto_callbacks(&state, &id);
    with_request_id((StatusCode::OK, axum::Json(json!({"MessageId": id}))).into_response())
}

async fn create_email_identity(State(state): State<Arc<SimState>>, headers: HeaderMap, raw: Bytes) -> Response {
    let body: Value =
        serde_json::from_slice(&raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()));
    let identity = body.get("EmailIdentity").and_then(Value::as_str).map(|s| s.trim().to_lowercase());
    let record = |outcome: &str| {
        state.ledger().record(NewEntry {
            provider: "ses",
            operation: "CreateEmailIdentity",
            method: "POST",
            path: "/v2/email/identities".to_owned(),
            recipient: None,
            provider_message_id: None,
            body: body.clone(),
            outcome: outcome.to_owned(),
        });
    };
    if !has_authorization(&headers) {
        record("error:MissingAuthenticationTokenException");
        return missing_auth();
    }
    let Some(identity) = identity.filter(|i| !i.is_empty()) else {
        record("error:BadRequestException");
        return ses_error(StatusCode::BAD_REQUEST, "BadRequestException", "EmailIdentity is required.");
    };
    let created = {
        let mut identities = state.ses_identities();
        if identities.contains_key(&identity) {
            None
        } else {
            let is_domain = !identity.contains('@');
            let tokens = if is_domain { (0..3).map(|_| random_hex(32)).collect() } else { Vec::new() };
            let entry = Identity { is_domain, tokens, reads: 0, created_at: chrono::Utc::now().timestamp() };
            identities.insert(identity.clone(), entry.clone());
            Some(entry)
        }
    };
    let Some(created) = created else {
        record("error:AlreadyExistsException");
        return ses_error(
            StatusCode::BAD_REQUEST,
            "AlreadyExistsException",
            &format!("Email identity {identity} already exist."),
        );
    };
    record("accepted");
    let mut reply = json!({
        "IdentityType": if created.is_domain { "DOMAIN" } else { "EMAIL_ADDRESS" },
        "VerifiedForSendingStatus": false,
    });
    if created.is_domain {
        reply["DkimAttributes"] = dkim_attributes(&created, "PENDING");
    }
    with_request_id((StatusCode::OK, axum::Json(reply)).into_response())
}

fn dkim_attributes(identity: &Identity, status: &str) -> Value {
    json!({
        "SigningEnabled": true,
        "Status": status,
        "Tokens": identity.tokens,
        "SigningAttributesOrigin": "AWS_SES",
        "NextSigningKeyLength": "RSA_2048_BIT",
        "CurrentSigningKeyLength": "RSA_2048_BIT",
        "LastKeyGenerationTimestamp": identity.created_at,
    })
}

async fn get_email_identity(
    State(state): State<Arc<SimState>>,
    Path(identity): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = identity.trim().to_lowercase();
    // PENDING on the first read after creation, SUCCESS afterwards (documented in the crate docs).
    let found = state.ses_identities().get_mut(&key).map(|entry| {
        entry.reads += 1;
        entry.clone()
    });
    let authorised = has_authorization(&headers);
    let outcome = match (&found, authorised) {
        (_, false) => "error:MissingAuthenticationTokenException",
        (None, true) => "error:NotFoundException",
        (Some(_), true) => "accepted",
    };
    state.ledger().record(NewEntry {
        provider: "ses",
        operation: "GetEmailIdentity",
        method: "GET",
        path: format!("/v2/email/identities/{identity}"),
        recipient: None,
        provider_message_id: None,
        body: Value::Null,
        outcome: outcome.to_owned(),
    });
    if !authorised {
        return missing_auth();
    }
    let Some(found) = found else {
        return ses_error(
            StatusCode::NOT_FOUND,
            "NotFoundException",
            &format!("Email identity {identity} does not exist."),
        );
    };
    let verified = found.reads > 1;
    let status = if verified { "SUCCESS" } else { "PENDING" };
    let mut reply = json!({
        "IdentityType": if found.is_domain { "DOMAIN" } else { "EMAIL_ADDRESS" },
        "FeedbackForwardingStatus": true,
        "VerifiedForSendingStatus": verified,
        "VerificationStatus": status,
        "Policies": {},
        "Tags": [],
    });
    if found.is_domain {
        reply["DkimAttributes"] = dkim_attributes(&found, status);
        reply["MailFromAttributes"] = json!({
            "BehaviorOnMxFailure": "USE_DEFAULT_VALUE",
            "MailFromDomain": "",
            "MailFromDomainStatus": "PENDING",
        });
    }
    with_request_id((StatusCode::OK, axum::Json(reply)).into_response())
}

fn iso_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn domain_of(address: &str) -> String {
    normalize_recipient(address).rsplit('@').next().unwrap_or_default().to_owned()
}

/// The configuration-set event record (ses.md §3) for one event type.
pub(crate) fn event_record(
    state: &SimState,
    message_id: &str,
    message: &SentMessage,
    event_type: &str,
) -> anyhow::Result<Value> {
    let SentMessage::Ses { from, to, subject, tags, configuration_set, .. } = message else {
        anyhow::bail!("not an SES message");
    };
    let region = &state.config.aws_region;
    let now = iso_now();
    let mut tag_map = serde_json::Map::new();
    tag_map.insert(
        "ses:configuration-set".into(),
        json!([configuration_set.clone().unwrap_or_else(|| "switchboard-events".into())]),
    );
    tag_map.insert("ses:source-ip".into(), json!(["192.0.2.10"]));
    tag_map.insert("ses:from-domain".into(), json!([domain_of(from)]));
    tag_map.insert("ses:caller-identity".into(), json!(["switchboard"]));
    for (name, value) in tags {
        tag_map.insert(name.clone(), json!([value]));
    }
    let mail = json!({
        "timestamp": now,
        "source": from,
        "sourceArn": format!("arn:aws:ses:{region}:{ACCOUNT_ID}:identity/{}", domain_of(from)),
        "sendingAccountId": ACCOUNT_ID,
        "messageId": message_id,
        "destination": to,
        "headersTruncated": false,
        "headers": [
            {"name": "From", "value": from},
            {"name": "To", "value": to.join(", ")},
            {"name": "Subject", "value": subject},
        ],
        "commonHeaders": {"from": [from], "to": to, "messageId": message_id, "subject": subject},
        "tags": tag_map,
    });
    let mut record = json!({"eventType": event_type, "mail": mail});
    match event_type {
        "Send" => record["send"] = json!({}),
        "Delivery" => {
            record["delivery"] = json!({
                "timestamp": now, "processingTimeMillis": 812, "recipients": to,
                "smtpResponse": "250 2.6.0 Message received", "reportingMTA": format!("a1-23.smtp-out.{region}.amazonses.com"),
            });
        }
        "Bounce" => {
            let bounced: Vec<Value> = to
                .iter()
                .map(|a| json!({"emailAddress": a, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}))
                .collect();
            record["bounce"] = json!({
                "bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": bounced,
                "timestamp": now, "feedbackId": new_message_id(), "reportingMTA": "dsn; mta.example.com",
            });
        }
        "Complaint" => {
            let complained: Vec<Value> = to.iter().map(|a| json!({"emailAddress": a})).collect();
            record["complaint"] = json!({
                "complainedRecipients": complained, "timestamp": now, "feedbackId": new_message_id(),
                "userAgent": "Mozilla/5.0", "complaintFeedbackType": "abuse", "arrivalDate": now,
            });
        }
        "Open" => record["open"] = json!({"ipAddress": "192.0.2.1", "timestamp": now, "userAgent": "Mozilla/5.0"}),
        "Reject" => record["reject"] = json!({"reason": "Bad content"}),
        other => anyhow::bail!("unsupported SES event type {other}"),
    }
    Ok(record)
}

/// The receipt-rule SNS-action notification (ses.md §4) for one inbound mail.
pub(crate) fn inbound_record(
    state: &SimState,
    from: &str,
    to: &str,
    subject: &str,
    text: &str,
    in_reply_to: Option<&str>,
) -> Value {
    let now = chrono::Utc::now();
    let date = now.to_rfc2822();
    let message_id = random_hex(26);
    let header_message_id = format!("<{}@{}>", uuid::Uuid::new_v4(), domain_of(from));
    let threading = in_reply_to
        .map(|id| format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n", id = id.trim_matches(['<', '>'])))
        .unwrap_or_default();
    let content = format!(
        "Return-Path: <{from}>\r\nFrom: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {date}\r\n\
         Message-ID: {header_message_id}\r\n{threading}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n"
    );
    let region = &state.config.aws_region;
    json!({
        "notificationType": "Received",
        "receipt": {
            "timestamp": iso_now(),
            "processingTimeMillis": 222,
            "recipients": [to],
            "spamVerdict": {"status": "PASS"}, "virusVerdict": {"status": "PASS"},
            "spfVerdict": {"status": "PASS"}, "dkimVerdict": {"status": "PASS"}, "dmarcVerdict": {"status": "PASS"},
            "action": {"type": "SNS", "topicArn": crate::sns::topic_arn(region, crate::sns::SES_INBOUND_TOPIC), "encoding": "UTF8"},
        },
        "mail": {
            "timestamp": iso_now(),
            "source": from,
            "messageId": message_id,
            "destination": [to],
            "headersTruncated": false,
            "headers": [
                {"name": "Return-Path", "value": format!("<{from}>")},
                {"name": "From", "value": from},
                {"name": "To", "value": to},
                {"name": "Subject", "value": subject},
                {"name": "Date", "value": date},
                {"name": "Message-ID", "value": header_message_id},
            ],
            "commonHeaders": {
                "returnPath": from, "from": [from], "date": date, "to": [to],
                "messageId": header_message_id, "subject": subject,
            },
        },
        "content": content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_headers_are_found_case_insensitively_and_unfolded() {
        let mime = "From: a@b.test\r\nsubject: Hello\r\n  world\r\nTo: c@d.test\r\n\r\nBody: not a header\r\n";
        assert_eq!(mime_header(mime, "Subject").as_deref(), Some("Hello world"));
        assert_eq!(mime_header(mime, "to").as_deref(), Some("c@d.test"));
        assert_eq!(mime_header(mime, "Body"), None);
    }
}
