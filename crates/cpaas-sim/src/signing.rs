//! Webhook signatures: Meta (HMAC-SHA256), Twilio (HMAC-SHA1 over URL + sorted params) and SNS
//! (RSA PKCS#1 v1.5 over SHA-1 or SHA-256 with a self-signed certificate made at start).

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use num_bigint::BigUint;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;

/// `sha256=<lowercase hex HMAC-SHA256(app_secret, raw body)>`, the `X-Hub-Signature-256` value.
pub(crate) fn meta_signature(app_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 …))` with the POST params
/// sorted by name (and, for repeated names, by value), the `X-Twilio-Signature` value.
pub(crate) fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// The SNS string to sign: for each key present, in this fixed order, `key\nvalue\n`.
pub(crate) fn sns_string_to_sign(message: &serde_json::Map<String, serde_json::Value>) -> String {
    let keys: &[&str] = match message.get("Type").and_then(|t| t.as_str()) {
        Some("Notification") => &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
        _ => &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"],
    };
    let mut out = String::new();
    for key in keys {
        if let Some(value) = message.get(*key).and_then(|v| v.as_str()) {
            out.push_str(key);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        }
    }
    out
}

/// The sim's SNS signing identity: an RSA-2048 key and a self-signed certificate over it.
pub(crate) struct SnsSigner {
    key: RsaKeyPair,
    modulus: BigUint,
    private_exponent: BigUint,
    certificate_pem: String,
}

impl std::fmt::Debug for SnsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsSigner").finish_non_exhaustive()
    }
}

impl SnsSigner {
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let pkcs8 = key_pair.serialize_der();
        let mut params = rcgen::CertificateParams::new(vec!["sns.sim.invalid".to_owned()])?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "sns.amazonaws.com (cpaas-sim)");
        let certificate = params.self_signed(&key_pair)?;
        let key = RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| anyhow::anyhow!("RSA key rejected: {e}"))?;
        let (modulus, private_exponent) = rsa_modulus_and_private_exponent(&pkcs8)?;
        Ok(Self { key, modulus, private_exponent, certificate_pem: certificate.pem() })
    }

    pub(crate) fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Base64 signature of `string_to_sign`: version 1 = SHA1withRSA, 2 = SHA256withRSA.
    pub(crate) fn sign(&self, version: u8, string_to_sign: &str) -> anyhow::Result<String> {
        let signature = if version == 2 {
            let mut signature = vec![0; self.key.public_modulus_len()];
            let rng = aws_lc_rs::rand::SystemRandom::new();
            self.key
                .sign(&RSA_PKCS1_SHA256, &rng, string_to_sign.as_bytes(), &mut signature)
                .map_err(|e| anyhow::anyhow!("RSA signing failed: {e}"))?;
            signature
        } else {
            self.sign_sha1_pkcs1(string_to_sign.as_bytes())
        };
        Ok(BASE64.encode(signature))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-1 (RFC 8017 §8.2.1 / §9.2), done by hand because aws-lc-rs
    /// only offers SHA-1 for verification. Not constant-time: this key signs test traffic only.
    fn sign_sha1_pkcs1(&self, message: &[u8]) -> Vec<u8> {
        // DER DigestInfo prefix for SHA-1 (RFC 8017 §9.2 note 1).
        const SHA1_DIGEST_INFO: [u8; 15] =
            [0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];
        let k = self.key.public_modulus_len();
        let digest = Sha1::digest(message);
        let t_len = SHA1_DIGEST_INFO.len() + digest.len();
        let mut encoded = Vec::with_capacity(k);
        encoded.extend_from_slice(&[0x00, 0x01]);
        encoded.resize(k - t_len - 1, 0xff);
        encoded.push(0x00);
        encoded.extend_from_slice(&SHA1_DIGEST_INFO);
        encoded.extend_from_slice(&digest);
        let m = BigUint::from_bytes_be(&encoded);
        let s = m.modpow(&self.private_exponent, &self.modulus).to_bytes_be();
        let mut signature = vec![0; k - s.len()];
        signature.extend_from_slice(&s);
        signature
    }
}

/// Reads `n` and `d` out of a PKCS#8 `PrivateKeyInfo` holding an `RSAPrivateKey` (RFC 8017 A.1.2).
fn rsa_modulus_and_private_exponent(pkcs8: &[u8]) -> anyhow::Result<(BigUint, BigUint)> {
    let (info, _) = der_read(pkcs8, 0x30)?;
    let (_version, rest) = der_read(info, 0x02)?;
    let (_algorithm, rest) = der_read(rest, 0x30)?;
    let (private_key, _) = der_read(rest, 0x04)?;
    let (rsa_key, _) = der_read(private_key, 0x30)?;
    let (_version, rest) = der_read(rsa_key, 0x02)?;
    let (n, rest) = der_read(rest, 0x02)?;
    let (_e, rest) = der_read(rest, 0x02)?;
    let (d, _) = der_read(rest, 0x02)?;
    Ok((BigUint::from_bytes_be(n), BigUint::from_bytes_be(d)))
}

/// One DER TLV with the expected tag: (contents, rest).
fn der_read(input: &[u8], tag: u8) -> anyhow::Result<(&[u8], &[u8])> {
    let malformed = || anyhow::anyhow!("malformed DER in generated RSA key");
    let (&got, rest) = input.split_first().ok_or_else(malformed)?;
    anyhow::ensure!(got == tag, "unexpected DER tag {got:#x}, wanted {tag:#x}");
    let (&first, mut rest) = rest.split_first().ok_or_else(malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        anyhow::ensure!(count <= 4 && rest.len() >= count, "bad DER length");
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    anyhow::ensure!(rest.len() >= len, "truncated DER");
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_signature_matches_the_documented_vector() {
        assert_eq!(
            meta_signature("secret", b"test"),
            "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"
        );
    }

    #[test]
    fn twilio_signature_matches_the_documented_vector() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
