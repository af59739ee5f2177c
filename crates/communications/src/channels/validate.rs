//! Field validators; each error names the field it is about.

use kernel::error::ApiError;

/// `+` then 7 to 15 digits, no leading zero (ITU-T E.164).
pub fn e164(field: &str, value: &str) -> Result<String, ApiError> {
    let digits = value.strip_prefix('+').unwrap_or_default();
    let valid =
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::validation(field, "must be an E.164 phone number such as +4915112345678"))
    }
}

/// A DNS name with at least two labels, lower-cased.
pub fn domain(field: &str, value: &str) -> Result<String, ApiError> {
    let domain = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(label_ok)
        && !labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit())
    {
        Ok(domain)
    } else {
        Err(ApiError::validation(field, "must be a domain name such as mail.example.com"))
    }
}

/// An address at `domain` (or one of its subdomains), lower-cased.
pub fn address_at(field: &str, value: &str, domain: &str) -> Result<String, ApiError> {
    let address = value.trim().to_ascii_lowercase();
    let Some((local, host)) = address.split_once('@') else {
        return Err(ApiError::validation(field, "must be an email address"));
    };
    if local.is_empty() || local.contains(char::is_whitespace) {
        return Err(ApiError::validation(field, "must be an email address"));
    }
    if host != domain && !host.ends_with(&format!(".{domain}")) {
        return Err(ApiError::validation(field, format!("must be an address at {domain}")));
    }
    Ok(address)
}

/// Digits only (Meta ids).
pub fn numeric_id(field: &str, value: &str) -> Result<String, ApiError> {
    if !value.is_empty() && value.len() <= 32 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::validation(field, "must be a numeric id"))
    }
}

/// A Twilio SID: two letters then 32 hex digits.
pub fn twilio_sid(field: &str, value: &str, prefix: &str) -> Result<String, ApiError> {
    let rest = value.strip_prefix(prefix).unwrap_or_default();
    if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::validation(field, format!("must be {prefix} followed by 32 hex digits")))
    }
}

/// An AWS region such as `eu-central-1`.
pub fn aws_region(field: &str, value: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = value.split('-').collect();
    let valid = parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::validation(field, "must be an AWS region such as eu-central-1"))
    }
}

/// An alphanumeric SMS sender id: 1-11 characters, letters and digits, at least one letter.
pub fn sender_id(field: &str, value: &str) -> Result<String, ApiError> {
    let valid = (1..=11).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
        && value.bytes().any(|b| b.is_ascii_alphabetic());
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ApiError::validation(field, "must be 1-11 letters and digits with at least one letter"))
    }
}

/// A non-empty secret of reasonable size.
pub fn secret(field: &str, value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() || trimmed.len() > 4096 {
        return Err(ApiError::validation(field, "must be a non-empty secret of at most 4096 characters"));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers() {
        assert!(e164("f", "+4915112345678").is_ok());
        for bad in ["4915112345678", "+0491511", "+12", "+49 151 123", "+1234567890123456"] {
            assert!(e164("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains_and_addresses() {
        assert_eq!(domain("d", "Mail.Example.COM.").ok().as_deref(), Some("mail.example.com"));
        for bad in ["localhost", "-a.com", "a..com", "exa mple.com", "1.2.3.4"] {
            assert!(domain("d", bad).is_err(), "{bad}");
        }
        assert!(address_at("a", "Tours@Example.com", "example.com").is_ok());
        assert!(address_at("a", "tours@news.example.com", "example.com").is_ok());
        assert!(address_at("a", "tours@example.org", "example.com").is_err());
        assert!(address_at("a", "example.com", "example.com").is_err());
    }

    #[test]
    fn ids() {
        assert!(twilio_sid("s", &format!("AC{}", "a".repeat(32)), "AC").is_ok());
        assert!(twilio_sid("s", "AC123", "AC").is_err());
        assert!(aws_region("r", "eu-central-1").is_ok());
        assert!(aws_region("r", "Europe").is_err());
        assert!(sender_id("s", "AlpineTour").is_ok());
        assert!(sender_id("s", "123456").is_err());
        assert!(sender_id("s", "WayTooLongSender").is_err());
        assert!(numeric_id("n", "1234567890").is_ok());
        assert!(numeric_id("n", "12ab").is_err());
    }
}
