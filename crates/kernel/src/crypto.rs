//! Secrets at rest: XChaCha20-Poly1305 envelopes (libsodium's
//! `crypto_aead_xchacha20poly1305_ietf` combined format: ciphertext ‖ 16-byte tag, 24-byte
//! random nonce), under master keys from configuration.
//!
//! Every envelope records the id of the key that sealed it, so keys can rotate: a keyring holds
//! one active key (used to seal) and any number of older ones (still able to open).
//! Callers bind each secret to where it belongs with associated data (tenant, owner row, field
//! name): a ciphertext copied to another row or field no longer opens.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// A sealed secret as stored (JSON): key id, nonce and ciphertext+tag, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The id of the master key that sealed it.
    pub kid: String,
    #[serde(with = "base64_field")]
    pub nonce: Vec<u8>,
    #[serde(with = "base64_field")]
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("no master key with id `{0}` is configured")]
    UnknownKey(String),
    #[error("the secret does not open: wrong key, tampered data, or it belongs elsewhere")]
    Inauthentic,
    #[error("{0}")]
    InvalidKey(String),
}

/// The master keys. Debug output shows key ids only.
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("active", &self.active).field("keys", &self.keys.keys()).finish()
    }
}

impl Keyring {
    /// Builds a keyring from base64-encoded 32-byte keys; `active` must be one of them.
    pub fn from_base64<'a>(
        active: &str,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CryptoError> {
        let mut ciphers = BTreeMap::new();
        for (id, encoded) in keys {
            let bytes = BASE64
                .decode(encoded.trim())
                .map_err(|_| CryptoError::InvalidKey(format!("key `{id}` is not base64")))?;
            let key: [u8; KEY_BYTES] = bytes
                .try_into()
                .map_err(|_| CryptoError::InvalidKey(format!("key `{id}` must decode to {KEY_BYTES} bytes")))?;
            ciphers.insert(id.to_owned(), XChaCha20Poly1305::new(&Key::from(key)));
        }
        if !ciphers.contains_key(active) {
            return Err(CryptoError::InvalidKey(format!("the active key `{active}` is not among the configured keys")));
        }
        Ok(Self { active: active.to_owned(), keys: ciphers })
    }

    pub fn active_key_id(&self) -> &str {
        &self.active
    }

    /// Seals under the active key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Envelope {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.active];
        let ciphertext = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: associated_data })
            // Only fails for inputs beyond 256 GiB.
            .unwrap_or_default();
        Envelope { kid: self.active.clone(), nonce: nonce.to_vec(), ciphertext }
    }

    pub fn open(&self, envelope: &Envelope, associated_data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self.keys.get(&envelope.kid).ok_or_else(|| CryptoError::UnknownKey(envelope.kid.clone()))?;
        let nonce: [u8; NONCE_BYTES] = envelope.nonce.as_slice().try_into().map_err(|_| CryptoError::Inauthentic)?;
        cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &envelope.ciphertext, aad: associated_data })
            .map_err(|_| CryptoError::Inauthentic)
    }

    /// Whether `envelope` was sealed by a key other than the active one.
    pub fn is_stale(&self, envelope: &Envelope) -> bool {
        envelope.kid != self.active
    }

    /// Opens with whichever key sealed it and seals again under the active key.
    pub fn reseal(&self, envelope: &Envelope, associated_data: &[u8]) -> Result<Envelope, CryptoError> {
        let plaintext = self.open(envelope, associated_data)?;
        Ok(self.seal(&plaintext, associated_data))
    }
}

/// 32 random bytes from the OS-seeded CSPRNG, hex-encoded: session tokens, API keys, verify tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Associated data naming where a secret belongs: `tenant/owner/field`.
pub fn associated_data(tenant: &str, owner: &str, field: &str) -> Vec<u8> {
    format!("switchboard:v1:{tenant}/{owner}/{field}").into_bytes()
}

/// A mask for showing that a secret is set without revealing it: `…a1b2`.
pub fn mask(secret: &str) -> String {
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    if secret.chars().count() <= 8 { "…".to_owned() } else { format!("…{tail}") }
}

mod base64_field {
    use super::BASE64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    fn ring(active: &str) -> Keyring {
        Keyring::from_base64(active, [("k1", K1), ("k2", K2)]).unwrap()
    }

    #[test]
    fn seals_and_opens_with_the_same_associated_data() {
        let ring = ring("k1");
        let aad = associated_data("t1", "acct1", "access_token");
        let envelope = ring.seal(b"EAAG-secret-token", &aad);
        assert_eq!(envelope.kid, "k1");
        assert_eq!(envelope.nonce.len(), 24);
        assert_eq!(envelope.ciphertext.len(), b"EAAG-secret-token".len() + 16, "libsodium combined: ct || tag");
        assert_eq!(ring.open(&envelope, &aad).unwrap(), b"EAAG-secret-token");
    }

    #[test]
    fn nonces_are_fresh() {
        let ring = ring("k1");
        let a = ring.seal(b"same", b"aad");
        let b = ring.seal(b"same", b"aad");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn another_tenant_owner_or_field_cannot_open_it() {
        let ring = ring("k1");
        let envelope = ring.seal(b"secret", &associated_data("t1", "acct1", "access_token"));
        for aad in [
            associated_data("t2", "acct1", "access_token"),
            associated_data("t1", "acct2", "access_token"),
            associated_data("t1", "acct1", "app_secret"),
        ] {
            assert_eq!(ring.open(&envelope, &aad), Err(CryptoError::Inauthentic));
        }
    }

    #[test]
    fn tampering_is_detected() {
        let ring = ring("k1");
        let aad = b"aad";
        let mut envelope = ring.seal(b"secret", aad);
        envelope.ciphertext[0] ^= 1;
        assert_eq!(ring.open(&envelope, aad), Err(CryptoError::Inauthentic));
    }

    #[test]
    fn rotation_keeps_old_envelopes_readable_and_reseals_under_the_new_key() {
        let old = ring("k1").seal(b"secret", b"aad");
        let rotated = ring("k2");
        assert!(rotated.is_stale(&old));
        assert_eq!(rotated.open(&old, b"aad").unwrap(), b"secret");
        let fresh = rotated.reseal(&old, b"aad").unwrap();
        assert_eq!(fresh.kid, "k2");
        assert!(!rotated.is_stale(&fresh));
        let only_new = Keyring::from_base64("k2", [("k2", K2)]).unwrap();
        assert_eq!(only_new.open(&fresh, b"aad").unwrap(), b"secret");
        assert_eq!(only_new.open(&old, b"aad"), Err(CryptoError::UnknownKey("k1".into())));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Keyring::from_base64("k1", [("k1", "not base64!")]).is_err());
        assert!(Keyring::from_base64("k1", [("k1", "AAEC")]).is_err());
        assert!(Keyring::from_base64("k3", [("k1", K1)]).is_err());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let debug = format!("{:?}", ring("k1"));
        assert!(debug.contains("k1") && !debug.contains(K1));
    }

    #[test]
    fn masks_show_only_the_tail() {
        assert_eq!(mask("EAAGabcdefa1b2"), "…a1b2");
        assert_eq!(mask("short"), "…");
    }

    /// A known-answer vector: draft-irtf-cfrg-xchacha-03 §A.3.1 (the libsodium construction).
    #[test]
    fn matches_the_xchacha20poly1305_ietf_test_vector() {
        let key = hex_bytes("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
        let nonce = hex_bytes("404142434445464748494a4b4c4d4e4f5051525354555657");
        let aad = hex_bytes("50515253c0c1c2c3c4c5c6c7");
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ring = Keyring::from_base64("k", [("k", BASE64.encode(&key).as_str())]).unwrap();
        let envelope = Envelope { kid: "k".into(), nonce, ciphertext: Vec::new() };
        let cipher = &ring.keys["k"];
        let nonce: [u8; 24] = envelope.nonce.as_slice().try_into().unwrap();
        let sealed = cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad }).unwrap();
        let expected_tag = hex_bytes("c0875924c1c7987947deafd8780acf49");
        assert_eq!(&sealed[sealed.len() - 16..], expected_tag.as_slice());
        let expected_start = hex_bytes("bd6d179d3e83d43b9576579493c0e939");
        assert_eq!(&sealed[..16], expected_start.as_slice());
    }

    fn hex_bytes(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }
}
