//! SES domain identities (docs/providers/ses.md §2): create the configured sending domain with
//! Easy DKIM and hand back the three CNAME records the operator publishes, then poll its status.
//!
//! Errors: AWS auth codes → Unauthorized; `NotFoundException` → NotFound; throttling and 5xx →
//! Unavailable; the rest (`BadRequestException`, `LimitExceededException`, …) → Rejected.
//! Creating a domain that already exists is not an error: its current records are returned.

use aws_sdk_sesv2::types::DkimAttributes;

use super::ProvisioningError;
use super::aws_error::from_sdk_error;
use crate::SesConfig;
use crate::send::SendOptions;

/// One DNS record to publish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsRecord {
    pub name: String,
    /// Always `CNAME` for Easy DKIM.
    pub record_type: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainIdentity {
    pub dkim_records: Vec<DnsRecord>,
    /// Whether SES already lets this domain send (after DNS propagated, up to 72 h).
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityStatus {
    pub verified_for_sending: bool,
    /// SES's DKIM status: `PENDING`, `SUCCESS`, `FAILED`, `TEMPORARY_FAILURE`, `NOT_STARTED`
    /// (also reported when SES returns no DKIM attributes at all).
    pub dkim_status: String,
}

/// Creates `config.domain` as an Easy DKIM identity (or reads it, if it exists already).
pub async fn create_domain_identity(config: &SesConfig) -> Result<DomainIdentity, ProvisioningError> {
    let domain = checked_domain(&config.domain)?;
    let client = crate::send::ses::build_client(config, &SendOptions::default())?;
    match client.create_email_identity().email_identity(domain).send().await {
        Ok(output) => Ok(DomainIdentity {
            dkim_records: dkim_records(domain, output.dkim_attributes()),
            verified: output.verified_for_sending_status(),
        }),
        Err(error) => {
            let error = from_sdk_error(&error);
            if error.code.as_deref() != Some("AlreadyExistsException") {
                return Err(error);
            }
            // Verification flows get re-run; the identity's records are what the operator needs.
            let output =
                client.get_email_identity().email_identity(domain).send().await.map_err(|e| from_sdk_error(&e))?;
            Ok(DomainIdentity {
                dkim_records: dkim_records(domain, output.dkim_attributes()),
                verified: output.verified_for_sending_status(),
            })
        }
    }
}

/// Whether `config.domain` may send yet, and its DKIM status.
pub async fn domain_identity_status(config: &SesConfig) -> Result<IdentityStatus, ProvisioningError> {
    let domain = checked_domain(&config.domain)?;
    let client = crate::send::ses::build_client(config, &SendOptions::default())?;
    let output = client.get_email_identity().email_identity(domain).send().await.map_err(|e| from_sdk_error(&e))?;
    Ok(IdentityStatus {
        verified_for_sending: output.verified_for_sending_status(),
        dkim_status: output.dkim_attributes().and_then(|d| d.status()).map_or("NOT_STARTED", |s| s.as_str()).to_owned(),
    })
}

/// `{token}._domainkey.{domain}` CNAME `{token}.dkim.amazonses.com`, one per Easy DKIM token.
pub fn dkim_records(domain: &str, dkim: Option<&DkimAttributes>) -> Vec<DnsRecord> {
    let tokens = dkim.map(DkimAttributes::tokens).unwrap_or_default();
    tokens
        .iter()
        .map(|token| DnsRecord {
            name: format!("{token}._domainkey.{domain}"),
            record_type: "CNAME".to_owned(),
            value: format!("{token}.dkim.amazonses.com"),
        })
        .collect()
}

fn checked_domain(domain: &str) -> Result<&str, ProvisioningError> {
    let ok = !domain.is_empty()
        && domain.contains('.')
        && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if ok { Ok(domain) } else { Err(ProvisioningError::rejected(format!("{domain:?} is not a domain name"))) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_cname_per_token() {
        let dkim = DkimAttributes::builder().tokens("abcd1234").tokens("qrst5678").build();
        assert_eq!(
            dkim_records("mail.alpine.example", Some(&dkim)),
            vec![
                DnsRecord {
                    name: "abcd1234._domainkey.mail.alpine.example".into(),
                    record_type: "CNAME".into(),
                    value: "abcd1234.dkim.amazonses.com".into()
                },
                DnsRecord {
                    name: "qrst5678._domainkey.mail.alpine.example".into(),
                    record_type: "CNAME".into(),
                    value: "qrst5678.dkim.amazonses.com".into()
                },
            ]
        );
        assert!(dkim_records("x.example", None).is_empty());
    }

    #[test]
    fn domains_are_checked() {
        assert!(checked_domain("mail.alpine.example").is_ok());
        assert!(checked_domain("user@alpine.example").is_err());
        assert!(checked_domain("").is_err());
    }
}
