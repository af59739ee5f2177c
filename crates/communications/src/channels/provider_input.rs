//! Provider configuration as operators send it: typed per provider, validated, and split into
//! non-secret settings and secret fields (sealed separately, shown only as masks).

use std::collections::BTreeMap;

use kernel::error::ApiError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{ChannelType, ProviderKind, validate};

/// A validated provider configuration.
#[derive(Clone, Default, PartialEq)]
pub struct ParsedConfig {
    pub settings: Map<String, Value>,
    pub secrets: BTreeMap<String, String>,
    /// The sender identity this configuration implies, if any.
    pub sender: Option<String>,
}

impl std::fmt::Debug for ParsedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedConfig")
            .field("settings", &self.settings)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("sender", &self.sender)
            .finish()
    }
}

/// Parses `config` for `provider`; errors name the field as `config.<name>`.
pub fn parse(provider: ProviderKind, config: &Value) -> Result<ParsedConfig, ApiError> {
    match provider {
        ProviderKind::Meta => typed::<MetaInput>(config)?.into_parsed(),
        ProviderKind::Ses => typed::<SesInput>(config)?.into_parsed(),
        ProviderKind::Sns => typed::<SnsInput>(config)?.into_parsed(),
        ProviderKind::Twilio => typed::<TwilioInput>(config)?.into_parsed(),
    }
}

/// A platform default: credentials (and for SMS a sender) that tenants without their own inherit.
/// Meta has none here: the platform's Meta app is part of the server configuration.
pub fn parse_platform(provider: ProviderKind, config: &Value) -> Result<ParsedConfig, ApiError> {
    let parsed = match provider {
        ProviderKind::Meta => {
            return Err(ApiError::validation(
                "provider",
                "the platform's Meta app is configured in [providers]; WhatsApp numbers belong to tenants",
            ));
        }
        ProviderKind::Ses => {
            let input: PlatformSesInput = typed(config)?;
            let mut parsed = ParsedConfig::default();
            if let Some(region) = optional(input.region) {
                parsed.settings.insert("region".into(), json!(validate::aws_region("config.region", &region)?));
            }
            aws_credentials(&mut parsed, Some(input.access_key_id), Some(input.secret_access_key))?;
            ses_notifications(&mut parsed, input.sns_topic_arns, input.aws_account_id)?;
            parsed
        }
        ProviderKind::Sns => {
            let parsed = typed::<SnsInput>(config)?.into_parsed()?;
            if !parsed.secrets.contains_key("secret_access_key") {
                return Err(ApiError::validation("config.access_key_id", "a platform default needs AWS credentials"));
            }
            parsed
        }
        ProviderKind::Twilio => typed::<TwilioInput>(config)?.into_parsed()?,
    };
    Ok(parsed)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlatformSesInput {
    access_key_id: String,
    secret_access_key: String,
    region: Option<String>,
    sns_topic_arns: Option<Vec<String>>,
    aws_account_id: Option<String>,
}

/// Where SES tells us about the mail sent with this configuration: the SNS topics of its event
/// destinations (or identity notifications), and, when the topics live in another AWS account,
/// the account that sends. Notifications from topics nobody configured are refused.
fn ses_notifications(
    parsed: &mut ParsedConfig,
    topics: Option<Vec<String>>,
    account: Option<String>,
) -> Result<(), ApiError> {
    let mut arns = Vec::new();
    for (index, raw) in topics.unwrap_or_default().iter().enumerate() {
        let topic = cpaas::webhooks::sns::TopicArn::parse(raw)
            .map_err(|problem| ApiError::validation(format!("config.sns_topic_arns[{index}]"), problem))?;
        if !arns.contains(&topic.as_str().to_owned()) {
            arns.push(topic.as_str().to_owned());
        }
    }
    if !arns.is_empty() {
        parsed.settings.insert("sns_topic_arns".into(), json!(arns));
    }
    if let Some(account) = optional(account) {
        if !cpaas::webhooks::sns::is_account_id(&account) {
            return Err(ApiError::validation("config.aws_account_id", "must be a 12-digit AWS account id"));
        }
        parsed.settings.insert("aws_account_id".into(), json!(account));
    }
    Ok(())
}

/// Webchat needs no provider; its optional config lists the origins allowed to embed it.
pub fn parse_webchat(config: Option<&Value>) -> Result<Map<String, Value>, ApiError> {
    let input: WebchatInput = match config {
        None | Some(Value::Null) => WebchatInput::default(),
        Some(value) => typed(value)?,
    };
    let mut origins = Vec::with_capacity(input.allowed_origins.len());
    for (index, raw) in input.allowed_origins.iter().enumerate() {
        let origin = origin_of(raw).ok_or_else(|| {
            ApiError::validation(
                format!("config.allowed_origins[{index}]"),
                "must be an http(s) origin such as https://www.example.com (scheme, host and port only)",
            )
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    if origins.len() > 50 {
        return Err(ApiError::validation("config.allowed_origins", "at most 50 origins"));
    }
    let greeting = input.greeting.as_deref().map(str::trim).filter(|g| !g.is_empty());
    if greeting.is_some_and(|g| g.chars().count() > 500) {
        return Err(ApiError::validation("config.greeting", "must be at most 500 characters"));
    }
    Ok(Map::from_iter([("allowed_origins".to_owned(), json!(origins)), ("greeting".to_owned(), json!(greeting))]))
}

/// The canonical origin (`scheme://host[:port]`, lower case, default port left out) of an
/// origin as an operator writes it; `None` for anything with a path, query, credentials or
/// another scheme, which browsers would never send as an `Origin`.
fn origin_of(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(raw).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !raw.contains(['?', '#']);
    plain.then(|| url.origin().ascii_serialization())
}

/// Which provider a channel uses when the request names none.
pub fn default_provider(channel: ChannelType) -> Option<ProviderKind> {
    match channel {
        ChannelType::Whatsapp => Some(ProviderKind::Meta),
        ChannelType::Email => Some(ProviderKind::Ses),
        ChannelType::Sms => Some(ProviderKind::Sns),
        ChannelType::Webchat => None,
    }
}

fn typed<T: DeserializeOwned>(config: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(config.clone()).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // serde reports a missing field at its parent's path; an unknown one at its own.
        let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => format!("config.{name}"),
            (path, Some(name)) => format!("config.{path}.{name}"),
            (".", None) => "config".to_owned(),
            (path, None) => format!("config.{path}"),
        };
        ApiError::validation(field.clone(), format!("`{field}`: {message}"))
    })
}

fn optional(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Access keys travel as a pair: both given (tenant's own AWS account) or neither (platform's).
fn aws_credentials(
    parsed: &mut ParsedConfig,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
) -> Result<(), ApiError> {
    match (optional(access_key_id), optional(secret_access_key)) {
        (Some(id), Some(secret)) => {
            let id_ok = (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !id_ok {
                return Err(ApiError::validation("config.access_key_id", "must be an AWS access key id"));
            }
            parsed.settings.insert("access_key_id".into(), json!(id));
            parsed.secrets.insert("secret_access_key".into(), validate::secret("config.secret_access_key", &secret)?);
            Ok(())
        }
        (None, None) => Ok(()),
        (Some(_), None) => Err(ApiError::validation("config.secret_access_key", "is required with access_key_id")),
        (None, Some(_)) => Err(ApiError::validation("config.access_key_id", "is required with secret_access_key")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaInput {
    phone_number_id: String,
    waba_id: String,
    /// A business token, when the operator has one already.
    access_token: Option<String>,
    /// The code from Meta Embedded Signup, exchanged for a business token on verify.
    signup_code: Option<String>,
    /// The number's two-step verification PIN, used to register it.
    pin: Option<String>,
}

impl MetaInput {
    fn into_parsed(self) -> Result<ParsedConfig, ApiError> {
        let mut parsed = ParsedConfig::default();
        let phone_number_id = validate::numeric_id("config.phone_number_id", &self.phone_number_id)?;
        parsed.settings.insert("phone_number_id".into(), json!(phone_number_id));
        parsed.settings.insert("waba_id".into(), json!(validate::numeric_id("config.waba_id", &self.waba_id)?));
        match (optional(self.access_token), optional(self.signup_code)) {
            (None, None) => {
                return Err(ApiError::validation(
                    "config.signup_code",
                    "either signup_code (Embedded Signup) or access_token is required",
                ));
            }
            (token, code) => {
                if let Some(token) = token {
                    parsed.secrets.insert("access_token".into(), validate::secret("config.access_token", &token)?);
                }
                if let Some(code) = code {
                    parsed.secrets.insert("signup_code".into(), validate::secret("config.signup_code", &code)?);
                }
            }
        }
        if let Some(pin) = optional(self.pin) {
            if pin.len() != 6 || !pin.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::validation("config.pin", "must be 6 digits"));
            }
            parsed.secrets.insert("pin".into(), pin);
        }
        parsed.sender = Some(phone_number_id);
        Ok(parsed)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SesInput {
    domain: String,
    from_address: String,
    region: Option<String>,
    configuration_set: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    sns_topic_arns: Option<Vec<String>>,
    aws_account_id: Option<String>,
}

impl SesInput {
    fn into_parsed(self) -> Result<ParsedConfig, ApiError> {
        let mut parsed = ParsedConfig::default();
        let domain = validate::domain("config.domain", &self.domain)?;
        let from = validate::address_at("config.from_address", &self.from_address, &domain)?;
        parsed.settings.insert("domain".into(), json!(domain));
        parsed.settings.insert("from_address".into(), json!(from));
        if let Some(region) = optional(self.region) {
            parsed.settings.insert("region".into(), json!(validate::aws_region("config.region", &region)?));
        }
        if let Some(set) = optional(self.configuration_set) {
            parsed.settings.insert("configuration_set".into(), json!(set));
        }
        aws_credentials(&mut parsed, self.access_key_id, self.secret_access_key)?;
        ses_notifications(&mut parsed, self.sns_topic_arns, self.aws_account_id)?;
        parsed.sender = Some(domain);
        Ok(parsed)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnsInput {
    origination_number: Option<String>,
    sender_id: Option<String>,
    sms_type: Option<SmsType>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SmsType {
    Transactional,
    Promotional,
}

impl SnsInput {
    fn into_parsed(self) -> Result<ParsedConfig, ApiError> {
        let mut parsed = ParsedConfig::default();
        let number =
            optional(self.origination_number).map(|n| validate::e164("config.origination_number", &n)).transpose()?;
        let sender_id = optional(self.sender_id).map(|s| validate::sender_id("config.sender_id", &s)).transpose()?;
        if let Some(number) = &number {
            parsed.settings.insert("origination_number".into(), json!(number));
        }
        if let Some(sender_id) = &sender_id {
            parsed.settings.insert("sender_id".into(), json!(sender_id));
        }
        let sms_type = match self.sms_type.unwrap_or(SmsType::Transactional) {
            SmsType::Transactional => "transactional",
            SmsType::Promotional => "promotional",
        };
        parsed.settings.insert("sms_type".into(), json!(sms_type));
        if let Some(region) = optional(self.region) {
            parsed.settings.insert("region".into(), json!(validate::aws_region("config.region", &region)?));
        }
        aws_credentials(&mut parsed, self.access_key_id, self.secret_access_key)?;
        parsed.sender = number.or(sender_id);
        Ok(parsed)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwilioInput {
    account_sid: String,
    auth_token: String,
    from: Option<String>,
    messaging_service_sid: Option<String>,
}

impl TwilioInput {
    fn into_parsed(self) -> Result<ParsedConfig, ApiError> {
        let mut parsed = ParsedConfig::default();
        parsed.settings.insert(
            "account_sid".into(),
            json!(validate::twilio_sid("config.account_sid", self.account_sid.trim(), "AC")?),
        );
        parsed.secrets.insert("auth_token".into(), validate::secret("config.auth_token", &self.auth_token)?);
        let from = optional(self.from).map(|n| validate::e164("config.from", &n)).transpose()?;
        let service = optional(self.messaging_service_sid)
            .map(|s| validate::twilio_sid("config.messaging_service_sid", &s, "MG"))
            .transpose()?;
        if from.is_none() && service.is_none() {
            return Err(ApiError::validation("config.from", "either from or messaging_service_sid is required"));
        }
        if let Some(from) = &from {
            parsed.settings.insert("from".into(), json!(from));
        }
        if let Some(service) = &service {
            parsed.settings.insert("messaging_service_sid".into(), json!(service));
        }
        parsed.sender = from.or(service);
        Ok(parsed)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebchatInput {
    #[serde(default)]
    allowed_origins: Vec<String>,
    /// Shown in the widget before anyone has written.
    greeting: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field_of(result: Result<ParsedConfig, ApiError>) -> String {
        match result {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn meta_separates_secrets_from_settings() {
        let parsed = parse(
            ProviderKind::Meta,
            &json!({"phone_number_id": "1065", "waba_id": "2001", "signup_code": "AQB-code", "pin": "123456"}),
        )
        .unwrap();
        assert_eq!(parsed.settings["phone_number_id"], "1065");
        assert_eq!(parsed.secrets.keys().collect::<Vec<_>>(), ["pin", "signup_code"]);
        assert!(!serde_json::to_string(&parsed.settings).unwrap().contains("AQB-code"));
        assert_eq!(parsed.sender.as_deref(), Some("1065"));
    }

    #[test]
    fn errors_name_the_config_field() {
        assert_eq!(field_of(parse(ProviderKind::Meta, &json!({"waba_id": "1"}))), "config.phone_number_id");
        assert_eq!(
            field_of(parse(ProviderKind::Meta, &json!({"phone_number_id": "1", "waba_id": "2"}))),
            "config.signup_code"
        );
        assert_eq!(
            field_of(parse(ProviderKind::Meta, &json!({"phone_number_id": "x", "waba_id": "2", "access_token": "t"}))),
            "config.phone_number_id"
        );
        assert_eq!(
            field_of(parse(ProviderKind::Ses, &json!({"domain": "example.com", "from_address": "a@other.org"}))),
            "config.from_address"
        );
        assert_eq!(
            field_of(parse(ProviderKind::Ses, &json!({"domain": "nodot", "from_address": "a@nodot"}))),
            "config.domain"
        );
        assert_eq!(
            field_of(parse(ProviderKind::Sns, &json!({"origination_number": "0151"}))),
            "config.origination_number"
        );
        assert_eq!(field_of(parse(ProviderKind::Sns, &json!({"sms_type": "loud"}))), "config.sms_type");
        let ses = |extra: Value| {
            let mut config = json!({"domain": "example.com", "from_address": "a@example.com"});
            config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            parse(ProviderKind::Ses, &config)
        };
        assert_eq!(
            field_of(ses(json!({"sns_topic_arns": ["arn:aws:sns:eu-west-1:123456789012:ok", "MyTopic"]}))),
            "config.sns_topic_arns[1]"
        );
        assert_eq!(field_of(ses(json!({"aws_account_id": "1234"}))), "config.aws_account_id");
        let parsed = ses(json!({"sns_topic_arns": ["arn:aws:sns:eu-west-1:123456789012:ses-events"],
                                "aws_account_id": "210987654321"}))
        .unwrap();
        assert_eq!(parsed.settings["sns_topic_arns"], json!(["arn:aws:sns:eu-west-1:123456789012:ses-events"]));
        assert_eq!(parsed.settings["aws_account_id"], "210987654321");
        assert_eq!(
            field_of(parse(ProviderKind::Sns, &json!({"access_key_id": "AKIAIOSFODNN7EXAMPLE"}))),
            "config.secret_access_key"
        );
        assert_eq!(
            field_of(parse(
                ProviderKind::Twilio,
                &json!({"account_sid": "AC1", "auth_token": "t", "from": "+15005550006"})
            )),
            "config.account_sid"
        );
        let sid = format!("AC{}", "0".repeat(32));
        assert_eq!(
            field_of(parse(ProviderKind::Twilio, &json!({"account_sid": sid, "auth_token": "t"}))),
            "config.from"
        );
        assert_eq!(
            field_of(parse(
                ProviderKind::Twilio,
                &json!({"account_sid": sid, "auth_token": "t", "from": "+15005550006", "extra": 1})
            )),
            "config.extra"
        );
    }

    #[test]
    fn webchat_origins() {
        assert!(parse_webchat(None).is_ok());
        assert!(parse_webchat(Some(&json!({"allowed_origins": ["https://alpine.example"]}))).is_ok());
        assert!(parse_webchat(Some(&json!({"allowed_origins": ["javascript:alert(1)"]}))).is_err());
        for bad in
            ["https://a.example/path", "https://a.example?x=1", "https://u:p@a.example", "ftp://a.example", "a.example"]
        {
            assert!(parse_webchat(Some(&json!({"allowed_origins": [bad]}))).is_err(), "{bad} passed");
        }
        let parsed =
            parse_webchat(Some(&json!({"allowed_origins": ["HTTPS://Shop.Example:443/", "http://localhost:8080"]})));
        assert_eq!(parsed.unwrap()["allowed_origins"], json!(["https://shop.example", "http://localhost:8080"]));
    }
}
