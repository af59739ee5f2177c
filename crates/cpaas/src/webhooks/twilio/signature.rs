//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL + sorted params)).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::webhooks::WebhookError;

pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Verifies a form-encoded callback.
///
/// `full_url` is the URL exactly as Twilio requested it (scheme, host, port if any, path and
/// query as sent — behind a proxy, the public one). `params` are the POST form parameters
/// (empty for GET callbacks, whose parameters are in the URL).
pub fn verify_signature(
    auth_token: &[u8],
    full_url: &str,
    params: &[(String, String)],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    let claimed = decode_header(header)?;
    let suffix = sorted_params(params);
    check_any_url_variant(auth_token, full_url, &suffix, &claimed)
}

/// Verifies a callback with a JSON body: Twilio adds `bodySHA256=<hex sha256 of the body>` to
/// the URL and signs the URL alone. Both the body hash and the signature must match.
pub fn verify_json_signature(
    auth_token: &[u8],
    full_url: &str,
    raw_body: &[u8],
    header: Option<&str>,
) -> Result<(), WebhookError> {
    let claimed = decode_header(header)?;
    let url =
        url::Url::parse(full_url).map_err(|_| WebhookError::Malformed("callback URL does not parse".to_owned()))?;
    let body_hash = url
        .query_pairs()
        .find(|(key, _)| key == "bodySHA256")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| WebhookError::Malformed("JSON callback without bodySHA256".to_owned()))?;
    check_any_url_variant(auth_token, full_url, "", &claimed)?;
    // The hash is public (it is in the URL), so a plain comparison leaks nothing.
    if !hex::encode(Sha256::digest(raw_body)).eq_ignore_ascii_case(&body_hash) {
        return Err(WebhookError::BadSignature);
    }
    Ok(())
}

fn decode_header(header: Option<&str>) -> Result<Vec<u8>, WebhookError> {
    let header = header.map(str::trim).filter(|value| !value.is_empty()).ok_or(WebhookError::MissingSignature)?;
    base64::engine::general_purpose::STANDARD.decode(header).map_err(|_| WebhookError::BadSignature)
}

/// Names in byte order, each name's values in byte order, duplicates once — as twilio-python's
/// `sorted(set(...))` does — concatenated as `name + value`.
fn sorted_params(params: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = params.iter().collect();
    pairs.sort();
    pairs.dedup();
    pairs.iter().map(|(name, value)| format!("{name}{value}")).collect()
}

/// Twilio's own libraries accept the URL with and without the scheme's default port, because
/// Twilio is not consistent about which one it signs.
fn check_any_url_variant(auth_token: &[u8], full_url: &str, suffix: &str, claimed: &[u8]) -> Result<(), WebhookError> {
    if auth_token.is_empty() {
        return Err(WebhookError::BadSignature);
    }
    for url in url_variants(full_url) {
        let mut mac = Hmac::<Sha1>::new_from_slice(auth_token).map_err(|_| WebhookError::BadSignature)?;
        mac.update(url.as_bytes());
        mac.update(suffix.as_bytes());
        if mac.verify_slice(claimed).is_ok() {
            return Ok(());
        }
    }
    Err(WebhookError::BadSignature)
}

/// The URL as given, plus the same with the default port added or removed. Done on the text,
/// not through `Url`, which would re-encode the path and query that Twilio signed verbatim.
fn url_variants(full_url: &str) -> Vec<String> {
    let mut variants = vec![full_url.to_owned()];
    let Some((scheme, rest)) = full_url.split_once("://") else {
        return variants;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return variants,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The port follows the last ':' after any userinfo and outside an IPv6 literal.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = authority.get(host_start..).unwrap_or_default();
    let port = host_port
        .rfind(':')
        .filter(|colon| !host_port[*colon..].contains(']'))
        .map(|colon| (colon, &host_port[colon + 1..]));
    match port {
        Some((colon, port)) if port == default_port => {
            let without = format!("{scheme}://{}{}{tail}", &authority[..host_start], &host_port[..colon]);
            variants.push(without);
        }
        Some(_) => {}
        None => variants.push(format!("{scheme}://{authority}:{default_port}{tail}")),
    }
    variants
}
