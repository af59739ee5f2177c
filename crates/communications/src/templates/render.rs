//! Variant bodies: parsed and syntax-checked when they are written (a broken template is never
//! stored), resolved by locale and rendered strictly (an undefined variable is an error, never
//! an empty string) when a message is accepted or previewed.

use std::collections::HashSet;

use kernel::error::ApiError;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::messages::content::MessageContent;
use crate::messages::model::Channel;

use super::reads::Reads;

/// Longest rendered SMS text (ten concatenated segments).
pub const MAX_SMS_TEXT: usize = 1600;
/// Longest rendered WhatsApp session text and email text part.
pub const MAX_TEXT: usize = 4096;
/// Longest rendered email subject (RFC 5322 line limit).
pub const MAX_SUBJECT: usize = 998;
/// Longest template source of one field.
pub const MAX_SOURCE: usize = 64 * 1024;
/// Longest rendered email HTML part.
const MAX_HTML: usize = 512 * 1024;
const MAX_BODY_PARAMETERS: usize = 60;
/// Longest rendered WhatsApp template body parameter.
const MAX_PARAMETER: usize = 1024;
/// Work one render may do (about one unit per instruction or per 64 bytes made): far above any
/// real message, far below a template an admin wrote to loop for minutes or fill memory.
const RENDER_FUEL: u64 = 200_000;

/// A strict environment: undefined values fail rendering; only templates named `*.html` (the
/// email HTML part) are HTML-escaped; a render that does too much work is stopped.
fn environment<'a>() -> Environment<'a> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
    env.set_recursion_limit(32);
    env.set_fuel(Some(RENDER_FUEL));
    env
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsBody {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappBody {
    /// A session message (inside the 24-hour window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// An approved Meta template (outside the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_template: Option<MetaTemplate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaTemplate {
    /// The approved template's name at Meta (taken literally).
    pub name: String,
    /// Meta's language code (`de`, `en_US`); defaults to the variant's locale.
    pub language: String,
    /// Each one a template expression rendered with the variables.
    #[serde(default)]
    pub body_parameters: Vec<String>,
    /// Passed to Meta as given (header, buttons…).
    #[serde(default)]
    pub components: Option<Value>,
}

/// A variant body, typed by its channel.
#[derive(Debug, Clone, PartialEq)]
pub enum VariantBody {
    Sms(SmsBody),
    Email(EmailBody),
    Whatsapp(WhatsappBody),
}

impl VariantBody {
    /// The normalised JSON that is stored.
    pub fn to_json(&self) -> Value {
        let value = match self {
            Self::Sms(body) => serde_json::to_value(body),
            Self::Email(body) => serde_json::to_value(body),
            Self::Whatsapp(body) => serde_json::to_value(body),
        };
        value.unwrap_or(Value::Null)
    }
}

/// A stored body with each of its templates compiled, once per cached template rather than
/// once per message.
#[derive(Debug, Clone)]
pub struct Compiled {
    body: VariantBody,
    env: Environment<'static>,
    /// What of the variables the body's templates read, together (one may include another).
    reads: Reads,
}

impl Compiled {
    pub fn new(body: VariantBody) -> Result<Self, minijinja::Error> {
        let mut env = environment();
        let sources: Vec<(String, &String)> = match &body {
            VariantBody::Sms(sms) => vec![("text".into(), &sms.text)],
            VariantBody::Email(email) => {
                [("subject", Some(&email.subject)), ("html.html", email.html.as_ref()), ("text", email.text.as_ref())]
                    .into_iter()
                    .filter_map(|(name, source)| Some((name.to_owned(), source?)))
                    .collect()
            }
            VariantBody::Whatsapp(whatsapp) => whatsapp
                .text
                .iter()
                .map(|text| ("text".to_owned(), text))
                .chain(whatsapp.meta_template.iter().flat_map(|meta| {
                    meta.body_parameters.iter().enumerate().map(|(i, p)| (format!("body_parameters[{i}]"), p))
                }))
                .collect(),
        };
        let mut reads = Reads::default();
        for (name, source) in sources {
            env.add_template_owned(name.clone(), source.clone())?;
            for path in env.get_template(&name)?.undeclared_variables(true) {
                reads.add(&path);
            }
        }
        Ok(Self { body, env, reads })
    }
}

#[cfg(test)]
impl Compiled {
    /// This body handing the engine every variable, as rendering did before [`Reads`].
    pub(super) fn seeing_all(&self) -> Self {
        Self { reads: Reads::everything(), ..self.clone() }
    }
}

/// Parses and checks a body for `channel`: shape, required parts, and the syntax of every
/// template in it. Errors name the field under `field` (e.g. `variants[0].body`).
pub fn parse_body(channel: Channel, locale: &str, body: &Value, field: &str) -> Result<VariantBody, ApiError> {
    if !body.is_object() {
        return Err(ApiError::validation(field, "must be an object"));
    }
    let at = |name: &str| format!("{field}.{name}");
    match channel {
        Channel::Webchat => Err(ApiError::validation(
            "channel",
            "webchat answers are written by agents in the conversation; templates are for whatsapp, email and sms",
        )),
        Channel::Sms => {
            let body: SmsBody = deserialize(body, field)?;
            check_source(&body.text, "text", &at("text"), true)?;
            Ok(VariantBody::Sms(body))
        }
        Channel::Email => {
            let body: EmailBody = deserialize(body, field)?;
            check_source(&body.subject, "subject", &at("subject"), true)?;
            if body.subject.contains(['\r', '\n']) {
                return Err(ApiError::validation(at("subject"), "must be one line"));
            }
            let html = body.html.as_deref().filter(|h| !h.trim().is_empty());
            let text = body.text.as_deref().filter(|t| !t.trim().is_empty());
            if html.is_none() && text.is_none() {
                return Err(ApiError::validation(at("text"), "an email needs `html`, `text` or both"));
            }
            if let Some(html) = html {
                check_source(html, "html.html", &at("html"), true)?;
            }
            if let Some(text) = text {
                check_source(text, "text", &at("text"), true)?;
            }
            Ok(VariantBody::Email(EmailBody {
                subject: body.subject,
                html: html.map(str::to_owned),
                text: text.map(str::to_owned),
            }))
        }
        Channel::Whatsapp => {
            let mut raw = body.clone();
            // `meta_template.language` defaults to the variant's locale in Meta's spelling.
            if let Some(meta) = raw.get_mut("meta_template").and_then(Value::as_object_mut) {
                meta.entry("language").or_insert_with(|| Value::String(locale.replace('-', "_")));
            }
            let body: WhatsappBody = deserialize(&raw, field)?;
            match (&body.text, &body.meta_template) {
                (Some(_), Some(_)) => {
                    Err(ApiError::validation(at("meta_template"), "send either `text` or `meta_template`, not both"))
                }
                (None, None) => {
                    Err(ApiError::validation(at("text"), "a WhatsApp body needs `text` or `meta_template`"))
                }
                (Some(text), None) => {
                    check_source(text, "text", &at("text"), true)?;
                    Ok(VariantBody::Whatsapp(body))
                }
                (None, Some(meta)) => {
                    check_meta(meta, &at("meta_template"))?;
                    Ok(VariantBody::Whatsapp(body))
                }
            }
        }
    }
}

fn check_meta(meta: &MetaTemplate, field: &str) -> Result<(), ApiError> {
    let name_ok = !meta.name.is_empty()
        && meta.name.len() <= 512
        && meta.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !name_ok {
        return Err(ApiError::validation(
            format!("{field}.name"),
            "must be the approved template's name at Meta: lowercase letters, digits and `_`",
        ));
    }
    let language_ok = (2..=15).contains(&meta.language.len())
        && meta.language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && meta.language.as_bytes()[0].is_ascii_lowercase();
    if !language_ok {
        return Err(ApiError::validation(
            format!("{field}.language"),
            "must be a Meta language code such as `de` or `en_US`",
        ));
    }
    if meta.body_parameters.len() > MAX_BODY_PARAMETERS {
        return Err(ApiError::validation(
            format!("{field}.body_parameters"),
            format!("at most {MAX_BODY_PARAMETERS} parameters"),
        ));
    }
    for (index, parameter) in meta.body_parameters.iter().enumerate() {
        check_source(parameter, "parameter", &format!("{field}.body_parameters[{index}]"), true)?;
    }
    if let Some(components) = &meta.components
        && !(components.is_array() || components.is_null())
    {
        return Err(ApiError::validation(format!("{field}.components"), "must be an array of Meta components"));
    }
    Ok(())
}

/// Deserialises `value`, naming the failing field below `field`.
fn deserialize<T: serde::de::DeserializeOwned>(value: &Value, field: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        let mut full = field.to_owned();
        if path != "." {
            full = format!("{full}.{path}");
        }
        if let Some(name) = missing {
            full = format!("{full}.{name}");
            return ApiError::validation(full, "is required");
        }
        ApiError::validation(full, message)
    })
}

/// A template source must compile (and be non-empty when `required`).
fn check_source(source: &str, name: &str, field: &str, required: bool) -> Result<(), ApiError> {
    if required && source.trim().is_empty() {
        return Err(ApiError::validation(field, "must not be empty"));
    }
    if source.len() > MAX_SOURCE {
        return Err(ApiError::validation(field, format!("must be at most {MAX_SOURCE} bytes")));
    }
    let env = environment();
    env.template_from_named_str(name, source).map(|_| ()).map_err(|error| {
        let line = error.line().map(|line| format!(" on line {line}")).unwrap_or_default();
        let detail = error.detail().unwrap_or("invalid template");
        ApiError::validation(field, format!("template syntax error{line}: {detail}"))
    })
}

/// Where rendering errors point: the send API's `content.template.*` or the preview's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// The template reference as a whole (no variant for the channel).
    pub template: &'static str,
    /// The variables object (`<variables>.<path>` for a missing one).
    pub variables: &'static str,
}

impl Fields {
    pub const SEND: Self = Self { template: "content.template", variables: "content.template.variables" };
    pub const PREVIEW: Self = Self { template: "channel", variables: "variables" };
}

/// Renders one parsed variant body with `variables` (a JSON object).
pub fn render(
    template_name: &str,
    compiled: &Compiled,
    variables: &Value,
    fields: Fields,
) -> Result<MessageContent, ApiError> {
    let context = compiled.reads.project(variables);
    let render_one = |name: &str, source: &str| {
        render_source(&compiled.env, template_name, name, source, &context, variables, fields)
    };
    let too_long = |what: &str, max: usize| {
        ApiError::validation(fields.variables, format!("the rendered {what} is longer than {max} characters"))
    };
    match &compiled.body {
        VariantBody::Sms(body) => {
            let text = render_one("text", &body.text)?.trim().to_owned();
            if text.is_empty() {
                return Err(ApiError::validation(fields.variables, "the rendered sms text is empty"));
            }
            if text.chars().count() > MAX_SMS_TEXT {
                return Err(too_long("sms text", MAX_SMS_TEXT));
            }
            Ok(MessageContent::Text { text })
        }
        VariantBody::Email(body) => {
            let subject = render_one("subject", &body.subject)?.trim().to_owned();
            if subject.is_empty() || subject.contains(['\r', '\n']) {
                return Err(ApiError::validation(
                    fields.variables,
                    "the rendered email subject must be one non-empty line",
                ));
            }
            if subject.chars().count() > MAX_SUBJECT {
                return Err(too_long("email subject", MAX_SUBJECT));
            }
            let html = match &body.html {
                Some(html) => Some(render_one("html.html", html)?).filter(|h| !h.trim().is_empty()),
                None => None,
            };
            let text = match &body.text {
                Some(text) => Some(render_one("text", text)?.trim().to_owned()).filter(|t| !t.is_empty()),
                None => None,
            };
            if html.is_none() && text.is_none() {
                return Err(ApiError::validation(fields.variables, "the rendered email has neither html nor text"));
            }
            if html.as_ref().is_some_and(|h| h.chars().count() > MAX_HTML) {
                return Err(too_long("email html", MAX_HTML));
            }
            if text.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT) {
                return Err(too_long("email text", MAX_TEXT));
            }
            Ok(MessageContent::Email { subject, text, html, attachments: Vec::new(), in_reply_to: None })
        }
        VariantBody::Whatsapp(WhatsappBody { text: Some(text), .. }) => {
            let text = render_one("text", text)?.trim().to_owned();
            if text.is_empty() {
                return Err(ApiError::validation(fields.variables, "the rendered whatsapp text is empty"));
            }
            if text.chars().count() > MAX_TEXT {
                return Err(too_long("whatsapp text", MAX_TEXT));
            }
            Ok(MessageContent::Text { text })
        }
        VariantBody::Whatsapp(WhatsappBody { meta_template: Some(meta), .. }) => {
            let mut body_parameters = Vec::with_capacity(meta.body_parameters.len());
            for (index, parameter) in meta.body_parameters.iter().enumerate() {
                let name = format!("body_parameters[{index}]");
                let value = render_one(&name, parameter)?.trim().to_owned();
                // Meta refuses empty parameters and parameters with newlines or tabs.
                if value.is_empty() || value.contains(['\n', '\r', '\t']) {
                    return Err(ApiError::validation(
                        fields.variables,
                        format!("WhatsApp template parameter {} must render to one non-empty line", index + 1),
                    ));
                }
                if value.chars().count() > MAX_PARAMETER {
                    return Err(too_long(&format!("WhatsApp template parameter {}", index + 1), MAX_PARAMETER));
                }
                body_parameters.push(value);
            }
            Ok(MessageContent::WhatsappTemplate {
                name: meta.name.clone(),
                language: meta.language.clone(),
                body_parameters,
                components: meta.components.clone().filter(|c| !c.is_null()),
            })
        }
        VariantBody::Whatsapp(WhatsappBody { text: None, meta_template: None }) => {
            Err(ApiError::validation(fields.template, "this WhatsApp variant has no body"))
        }
    }
}

fn render_source(
    env: &Environment<'static>,
    template_name: &str,
    part: &str,
    source: &str,
    context: &minijinja::Value,
    variables: &Value,
    fields: Fields,
) -> Result<String, ApiError> {
    let template = env
        .get_template(part)
        .map_err(|error| ApiError::internal(format!("stored template `{template_name}` does not compile: {error}")))?;
    template.render(context.clone()).map_err(|error| {
        if error.kind() == ErrorKind::OutOfFuel {
            return ApiError::validation(
                fields.variables,
                format!("template `{template_name}` ({part}) does too much work to render: a loop too long?"),
            );
        }
        if let Some(path) = missing_variable(&template.undeclared_variables(true), source, variables, &error) {
            return ApiError::validation(
                format!("{}.{path}", fields.variables),
                format!("template `{template_name}` needs the variable `{path}`"),
            );
        }
        let detail = error.detail().map(str::to_owned).unwrap_or_else(|| error.kind().to_string());
        ApiError::validation(
            fields.variables,
            format!("template `{template_name}` could not be rendered ({part}): {detail}"),
        )
    })
}

/// Names used in templates that are the engine's own, never variables.
const GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "lipsum", "cycler", "joiner", "loop", "self"];

/// The variable whose absence made rendering fail: the first (in source order) referenced path
/// that the variables do not contain. minijinja (without its `debug` feature) does not name
/// the undefined value, so the template's references are checked against the variables.
fn missing_variable(
    referenced: &HashSet<String>,
    source: &str,
    variables: &Value,
    error: &minijinja::Error,
) -> Option<String> {
    let mut missing: Vec<(usize, &String)> = referenced
        .iter()
        .filter(|path| !path.split('.').next().is_some_and(|root| GLOBALS.contains(&root)))
        .filter(|path| !resolves(variables, path))
        .map(|path| (source.find(path.as_str()).unwrap_or(usize::MAX), path))
        .collect();
    missing.sort();
    if let Some((_, path)) = missing.first() {
        return Some((*path).clone());
    }
    // Not a top-level reference (e.g. an attribute of a loop variable): use what the error says.
    if error.kind() == ErrorKind::UndefinedError {
        let detail = error.detail()?;
        let name = detail.split('`').nth(1)?;
        let valid = !name.is_empty() && name.split('.').all(is_identifier);
        return valid.then(|| name.to_owned());
    }
    None
}

fn is_identifier(part: &str) -> bool {
    let mut bytes = part.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn resolves(variables: &Value, path: &str) -> bool {
    let mut current = variables;
    for part in path.split('.') {
        match current.get(part) {
            Some(next) => current = next,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn field(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        match result {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn bodies_are_checked_per_channel() {
        let f = "variants[0].body";
        assert!(parse_body(Channel::Sms, "de", &json!({"text": "Hi {{ name }}"}), f).is_ok());
        assert_eq!(field(parse_body(Channel::Sms, "de", &json!({"txt": "x"}), f)), "variants[0].body.txt");
        assert_eq!(field(parse_body(Channel::Sms, "de", &json!({}), f)), "variants[0].body.text");
        assert_eq!(field(parse_body(Channel::Sms, "de", &json!({"text": "{{ name "}), f)), "variants[0].body.text");
        assert_eq!(field(parse_body(Channel::Email, "de", &json!({"subject": "S"}), f)), "variants[0].body.text");
        assert_eq!(
            field(parse_body(Channel::Email, "de", &json!({"subject": "S", "html": "{% if %}"}), f)),
            "variants[0].body.html"
        );
        assert_eq!(
            field(parse_body(
                Channel::Whatsapp,
                "de",
                &json!({"meta_template": {"name": "x", "body_parameters": ["{{"]}}),
                f
            )),
            "variants[0].body.meta_template.body_parameters[0]"
        );
        let meta = parse_body(Channel::Whatsapp, "de-AT", &json!({"meta_template": {"name": "booking"}}), f).unwrap();
        assert_eq!(meta.to_json()["meta_template"]["language"], "de_AT");
    }

    #[test]
    fn rendering_is_strict_and_escapes_only_email_html() {
        let email = parse_body(
            Channel::Email,
            "en",
            &json!({"subject": "Trip {{ trip }}", "html": "<p>{{ trip }}</p>", "text": "{{ trip }}"}),
            "body",
        )
        .unwrap();
        let content = render("t", &Compiled::new(email).unwrap(), &json!({"trip": "A & <B>"}), Fields::SEND).unwrap();
        assert_eq!(
            content,
            MessageContent::Email {
                subject: "Trip A & <B>".into(),
                text: Some("A & <B>".into()),
                html: Some("<p>A &amp; &lt;B&gt;</p>".into()),
                attachments: vec![],
                in_reply_to: None,
            }
        );
        let sms =
            parse_body(Channel::Sms, "en", &json!({"text": "{{ booking.ref }} {{ booking.departure }}"}), "b").unwrap();
        let error = render("t", &Compiled::new(sms.clone()).unwrap(), &json!({"booking": {"ref": "X1"}}), Fields::SEND);
        assert_eq!(field(error), "content.template.variables.booking.departure");
        let error = render("t", &Compiled::new(sms.clone()).unwrap(), &json!({}), Fields::PREVIEW);
        assert_eq!(field(error), "variables.booking.ref");
    }

    #[test]
    fn loop_attributes_and_long_output_are_refused() {
        let sms =
            parse_body(Channel::Sms, "en", &json!({"text": "{% for p in people %}{{ p.name }}{% endfor %}"}), "b")
                .unwrap();
        assert_eq!(
            field(render("t", &Compiled::new(sms.clone()).unwrap(), &json!({"people": [{"nom": "x"}]}), Fields::SEND)),
            "content.template.variables"
        );
        let endless = "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}";
        let endless = parse_body(Channel::Sms, "en", &json!({"text": endless}), "b").unwrap();
        match render("t", &Compiled::new(endless).unwrap(), &json!({}), Fields::SEND) {
            Err(ApiError::Validation { field, message }) => {
                assert_eq!(field, "content.template.variables");
                assert!(message.contains("too much work"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let long = parse_body(Channel::Sms, "en", &json!({"text": "{{ x }}"}), "b").unwrap();
        assert_eq!(
            field(render("t", &Compiled::new(long).unwrap(), &json!({"x": "a".repeat(1601)}), Fields::SEND)),
            "content.template.variables"
        );
    }
}
