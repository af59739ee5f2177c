//! The visitor's token: who a browser is, kept in its local storage.
//!
//! Sealed with the master keyring (XChaCha20-Poly1305), so it is authenticated and opaque: the
//! visitor id inside cannot be read or changed, and the associated data binds it to one tenant's
//! one webchat channel — a token taken to another channel does not open. The key id travels with
//! it, so tokens outlive a key rotation for as long as the old key stays in the keyring.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};
use kernel::crypto::{Envelope, Keyring, associated_data};
use uuid::Uuid;

const PREFIX: &str = "sbv1";
/// A returning visitor keeps their chat this long after the token was last renewed (every visit
/// renews it).
pub const MAX_AGE_DAYS: i64 = 365;

/// What a valid token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visitor {
    pub id: Uuid,
    pub issued_at: DateTime<Utc>,
}

fn bound_to(tenant: Uuid, channel: Uuid) -> Vec<u8> {
    associated_data(&tenant.to_string(), &format!("webchat_channel:{channel}"), "visitor_token")
}

/// A token for `visitor` on the channel, issued now.
pub fn issue(keyring: &Keyring, tenant: Uuid, channel: Uuid, visitor: Uuid) -> String {
    let mut plain = visitor.as_bytes().to_vec();
    plain.extend_from_slice(&Utc::now().timestamp().to_be_bytes());
    let sealed = keyring.seal(&plain, &bound_to(tenant, channel));
    let mut body = sealed.nonce;
    body.extend_from_slice(&sealed.ciphertext);
    format!("{PREFIX}.{}.{}", B64.encode(sealed.kid.as_bytes()), B64.encode(body))
}

/// The visitor a token names, if it was issued for this channel, opens with a key we hold, and
/// is not older than [`MAX_AGE_DAYS`].
pub fn open(keyring: &Keyring, tenant: Uuid, channel: Uuid, token: &str) -> Option<Visitor> {
    let mut parts = token.trim().split('.');
    let (Some(PREFIX), Some(kid), Some(body), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let kid = String::from_utf8(B64.decode(kid).ok()?).ok()?;
    let body = B64.decode(body).ok()?;
    if body.len() < 24 {
        return None;
    }
    let (nonce, ciphertext) = body.split_at(24);
    let envelope = Envelope { kid, nonce: nonce.to_vec(), ciphertext: ciphertext.to_vec() };
    let plain = keyring.open(&envelope, &bound_to(tenant, channel)).ok()?;
    let (id, issued) = plain.split_at_checked(16)?;
    let id = Uuid::from_slice(id).ok()?;
    let issued_at = DateTime::from_timestamp(i64::from_be_bytes(issued.try_into().ok()?), 0)?;
    let age = Utc::now() - issued_at;
    (age < Duration::days(MAX_AGE_DAYS) && age > -Duration::minutes(5)).then_some(Visitor { id, issued_at })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keyring(active: &str) -> Keyring {
        let a = B64_STD.encode([7u8; 32]);
        let b = B64_STD.encode([9u8; 32]);
        Keyring::from_base64(active, [("k1", a.as_str()), ("k2", b.as_str())]).unwrap()
    }
    use base64::engine::general_purpose::STANDARD as B64_STD;

    #[test]
    fn a_token_opens_only_for_its_channel_and_survives_rotation() {
        let (tenant, channel, visitor) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let token = issue(&keyring("k1"), tenant, channel, visitor);
        assert_eq!(open(&keyring("k1"), tenant, channel, &token).unwrap().id, visitor);
        // Rotated: k2 seals now, k1 still opens.
        assert_eq!(open(&keyring("k2"), tenant, channel, &token).unwrap().id, visitor);
        assert!(open(&keyring("k1"), tenant, Uuid::now_v7(), &token).is_none());
        assert!(open(&keyring("k1"), Uuid::now_v7(), channel, &token).is_none());
    }

    #[test]
    fn tampered_or_malformed_tokens_do_not_open() {
        let (tenant, channel) = (Uuid::now_v7(), Uuid::now_v7());
        let token = issue(&keyring("k1"), tenant, channel, Uuid::now_v7());
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        for bad in [tampered.as_str(), "", "sbv1", "sbv1.x.y", "sbv1..", "x.y.z", &format!("{token}.extra")] {
            assert!(open(&keyring("k1"), tenant, channel, bad).is_none(), "{bad:?} opened");
        }
    }
}
