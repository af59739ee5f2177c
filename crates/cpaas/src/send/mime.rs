//! A small RFC 5322 / MIME writer for the mails SES's Simple content cannot express (attachments,
//! threading headers). Output is 7-bit ASCII with CRLF line endings:
//!
//! ```text
//! multipart/mixed                  (only with attachments)
//! ├── multipart/alternative        (only with both text and html)
//! │   ├── text/plain; charset=UTF-8   base64
//! │   └── text/html; charset=UTF-8    base64
//! └── <attachment type>; name=…       base64, Content-Disposition: attachment
//! ```
//!
//! Headers with non-ASCII text (subject, display names) use RFC 2047 encoded words
//! (`=?UTF-8?B?…?=`, at most 75 characters each, folded); non-ASCII attachment file names use
//! RFC 2231 (`filename*=UTF-8''…`). Values that could inject headers (CR, LF in addresses or
//! message ids) are refused; in free text they are replaced by spaces.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use crate::Attachment;

/// What goes into one message.
#[derive(Debug, Clone)]
pub struct MailParts<'a> {
    /// `addr@domain` or `Display Name <addr@domain>`.
    pub from: &'a str,
    pub to: &'a str,
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
    pub attachments: &'a [Attachment],
    /// The Message-ID answered, with or without angle brackets; or the answered mail's
    /// References followed by its Message-ID, separated by spaces. All go into `References`
    /// (the newest ten), the last one into `In-Reply-To`.
    pub in_reply_to: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("invalid message id: {0}")]
    InvalidMessageId(String),
}

/// Longest encoded word allowed by RFC 2047 §2.
const MAX_ENCODED_WORD: usize = 75;
/// UTF-8 bytes per encoded word: base64 of 45 bytes is 60 characters, plus 12 for `=?UTF-8?B??=`.
const ENCODED_WORD_BYTES: usize = 45;
/// ASCII header text longer than this is encoded (and so folded) to stay far below the
/// 998-character line limit of RFC 5322 §2.1.1.
const MAX_PLAIN_HEADER: usize = 900;

/// Writes the message. `date` and `boundary_id` are parameters so output is reproducible in
/// tests; callers pass `Utc::now()` and a fresh unique id.
pub fn build_message(parts: &MailParts<'_>, date: DateTime<Utc>, boundary_id: &str) -> Result<String, MimeError> {
    let mut out = String::new();
    push_header(&mut out, "From", &format_mailbox(parts.from)?);
    push_header(&mut out, "To", &format_mailbox(parts.to)?);
    push_header(&mut out, "Subject", &encode_header_text(parts.subject));
    push_header(&mut out, "Date", &date.to_rfc2822());
    if let Some(ids) = parts.in_reply_to {
        let ids = ids.split(' ').filter(|id| !id.is_empty()).map(format_message_id).collect::<Result<Vec<_>, _>>()?;
        if let Some(parent) = ids.last() {
            push_header(&mut out, "In-Reply-To", parent);
            // Folded one id per line: a long thread stays far below the line limit.
            push_header(&mut out, "References", &ids[ids.len().saturating_sub(10)..].join("\r\n "));
        }
    }
    push_header(&mut out, "MIME-Version", "1.0");

    let body = body_part(parts.text, parts.html, boundary_id);
    if parts.attachments.is_empty() {
        out.push_str(&body);
    } else {
        let boundary = format!("=_sb_mixed_{boundary_id}");
        let mut children = vec![body];
        children.extend(parts.attachments.iter().map(attachment_part));
        out.push_str(&multipart("mixed", &boundary, &children));
    }
    Ok(out)
}

fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// Text, HTML, both (as multipart/alternative, plain first: the last part is preferred), or an
/// empty text part when there is neither.
fn body_part(text: Option<&str>, html: Option<&str>, boundary_id: &str) -> String {
    match (text, html) {
        (Some(text), Some(html)) => {
            let boundary = format!("=_sb_alt_{boundary_id}");
            multipart("alternative", &boundary, &[text_part("plain", text), text_part("html", html)])
        }
        (None, Some(html)) => text_part("html", html),
        (text, None) => text_part("plain", text.unwrap_or_default()),
    }
}

/// Headers plus body of one part: everything after the part's headers is its content.
fn multipart(subtype: &str, boundary: &str, children: &[String]) -> String {
    let mut out = format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n");
    for child in children {
        out.push_str(&format!("--{boundary}\r\n"));
        out.push_str(child);
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

fn text_part(subtype: &str, content: &str) -> String {
    format!(
        "Content-Type: text/{subtype}; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(content.as_bytes())
    )
}

fn attachment_part(attachment: &Attachment) -> String {
    let content_type = sanitize_content_type(&attachment.content_type);
    let (name_param, filename_param) = file_name_params(&attachment.filename);
    format!(
        "Content-Type: {content_type}; {name_param}\r\nContent-Disposition: attachment; {filename_param}\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(&attachment.data)
    )
}

/// Base64 in lines of 76 characters (RFC 2045 §6.8), each ending in CRLF.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        // Base64 output is ASCII, so any byte boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// `type/subtype` made of token characters, else `application/octet-stream` (the value comes
/// from users; it must not smuggle parameters or headers).
fn sanitize_content_type(value: &str) -> String {
    let is_token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    match value.trim().split_once('/') {
        Some((kind, sub)) if is_token(kind) && is_token(sub) => {
            format!("{}/{}", kind.to_ascii_lowercase(), sub.to_ascii_lowercase())
        }
        _ => "application/octet-stream".to_owned(),
    }
}

/// The `name=` (Content-Type) and `filename=` (Content-Disposition) parameters: a quoted string
/// for printable ASCII, RFC 2231 extended notation otherwise.
fn file_name_params(filename: &str) -> (String, String) {
    let clean = strip_controls(filename);
    if clean.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let quoted = quote(&clean);
        (format!("name={quoted}"), format!("filename={quoted}"))
    } else {
        let encoded = rfc2231_encode(&clean);
        (format!("name*=UTF-8''{encoded}"), format!("filename*=UTF-8''{encoded}"))
    }
}

fn rfc2231_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A quoted-string with `\` and `"` escaped.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Control characters (CR and LF above all) become spaces: free text must stay on its line.
fn strip_controls(value: &str) -> String {
    value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Unstructured header text (RFC 5322 §3.2.5): as-is when it is short printable ASCII that
/// cannot be mistaken for an encoded word, else RFC 2047 encoded words folded onto
/// continuation lines.
pub fn encode_header_text(value: &str) -> String {
    let clean = strip_controls(value);
    let plain =
        clean.bytes().all(|b| (0x20..0x7f).contains(&b)) && clean.len() <= MAX_PLAIN_HEADER && !clean.contains("=?");
    if plain { clean } else { encoded_words(&clean).join("\r\n ") }
}

/// Splits on character boundaries so no word holds half a UTF-8 sequence (RFC 2047 §5(3)).
fn encoded_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (index, c) in value.char_indices() {
        if index + c.len_utf8() - start > ENCODED_WORD_BYTES {
            words.push(encoded_word(&value[start..end]));
            start = index;
        }
        end = index + c.len_utf8();
    }
    if start < value.len() || words.is_empty() {
        words.push(encoded_word(&value[start..]));
    }
    words
}

fn encoded_word(chunk: &str) -> String {
    let word = format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes()));
    debug_assert!(word.len() <= MAX_ENCODED_WORD);
    word
}

/// `addr@domain` or `Display Name <addr@domain>` → a header mailbox, the display name quoted
/// or encoded.
pub fn format_mailbox(value: &str) -> Result<String, MimeError> {
    let value = value.trim();
    let (display, address) = match value.rfind('<') {
        Some(open) if value.ends_with('>') => (value[..open].trim(), &value[open + 1..value.len() - 1]),
        _ => ("", value),
    };
    let address = check_address(address)?;
    let display = display.trim_matches('"').trim();
    if display.is_empty() {
        return Ok(address.to_owned());
    }
    let display = strip_controls(display);
    let name =
        if display.is_ascii() && !display.contains("=?") { quote(&display) } else { encoded_words(&display).join(" ") };
    Ok(format!("{name} <{address}>"))
}

/// An ASCII addr-spec with one `@`, no spaces, controls or angle brackets.
fn check_address(address: &str) -> Result<&str, MimeError> {
    let ok = address.is_ascii()
        && !address.bytes().any(|b| b.is_ascii_control() || b" <>,;\"\\".contains(&b))
        && matches!(address.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if ok { Ok(address) } else { Err(MimeError::InvalidAddress(address.escape_debug().to_string())) }
}

/// `<id>` from `id` or `<id>`; refuses anything that could break the header.
pub fn format_message_id(value: &str) -> Result<String, MimeError> {
    let inner = value.trim().trim_start_matches('<').trim_end_matches('>');
    let ok = !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    if ok { Ok(format!("<{inner}>")) } else { Err(MimeError::InvalidMessageId(value.escape_debug().to_string())) }
}

/// A fresh boundary id (UUID v4 hex: no characters that need quoting, none that base64 emits
/// after `=_`).
pub fn new_boundary_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
#[path = "mime_tests.rs"]
mod tests;
