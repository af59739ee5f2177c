//! Getting an RSA public key out of SNS's signing certificate, and checking signatures with it.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::webhooks::WebhookError;

/// Certificates are small (~2 KB); anything much larger is not one.
pub(super) const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// The signing key: a DER `RSAPublicKey` (PKCS#1), as aws-lc-rs verifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SigningKey {
    rsa_public_key_der: Vec<u8>,
}

impl SigningKey {
    /// Parses a PEM (`-----BEGIN CERTIFICATE-----`, as SNS serves it) or DER certificate.
    pub(super) fn from_certificate(bytes: &[u8]) -> Result<Self, WebhookError> {
        let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let (_, pem) =
                x509_parser::pem::parse_x509_pem(bytes).map_err(|error| fetch_error(format!("bad PEM: {error}")))?;
            pem.contents
        } else {
            bytes.to_vec()
        };
        let (_, certificate) =
            X509Certificate::from_der(&der).map_err(|error| fetch_error(format!("bad certificate: {error}")))?;
        let spki = certificate.public_key();
        match spki.parsed() {
            // The subjectPublicKey bit string of an rsaEncryption key *is* the PKCS#1 structure.
            Ok(PublicKey::RSA(_)) => Ok(SigningKey { rsa_public_key_der: spki.subject_public_key.data.to_vec() }),
            Ok(_) => Err(fetch_error("certificate key is not RSA".to_owned())),
            Err(error) => Err(fetch_error(format!("bad public key: {error}"))),
        }
    }

    /// Verifies an RSA PKCS#1 v1.5 signature: SHA-1 for SignatureVersion 1, SHA-256 for 2.
    pub(super) fn verify(
        &self,
        signature_version: SignatureVersion,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), WebhookError> {
        let algorithm: &'static signature::RsaParameters = match signature_version {
            SignatureVersion::V1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            SignatureVersion::V2 => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, &self.rsa_public_key_der)
            .verify(message, signature)
            .map_err(|_| WebhookError::BadSignature)
    }
}

/// The signature algorithms SNS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SignatureVersion {
    /// SHA1withRSA.
    V1,
    /// SHA256withRSA.
    V2,
}

impl SignatureVersion {
    pub(super) fn parse(text: &str) -> Result<Self, WebhookError> {
        match text {
            "1" => Ok(SignatureVersion::V1),
            "2" => Ok(SignatureVersion::V2),
            other => Err(WebhookError::UnsupportedSignatureVersion(other.chars().take(32).collect())),
        }
    }
}

fn fetch_error(message: String) -> WebhookError {
    WebhookError::CertificateFetch(message)
}
