//! Recipient and content checks every adapter makes before touching the network: what a
//! provider cannot carry fails permanently at once, so the pipeline can fall back to the next
//! channel without burning a request.

use crate::{Recipient, SendError};

/// `Permanent { code: "unsupported_content" }`: this provider cannot carry this content.
pub(crate) fn unsupported_content(provider: &str, what: &str) -> SendError {
    SendError::Permanent { code: "unsupported_content".into(), reason: format!("{provider} cannot send {what}") }
}

/// `Permanent { code: "invalid_recipient" }`: the recipient is malformed or of the wrong kind.
pub(crate) fn invalid_recipient(reason: impl Into<String>) -> SendError {
    SendError::Permanent { code: "invalid_recipient".into(), reason: reason.into() }
}

/// What a recipient is, for messages (never the address itself: that is personal data).
pub(crate) fn recipient_kind(recipient: &Recipient) -> &'static str {
    match recipient {
        Recipient::Phone(_) => "a phone recipient",
        Recipient::Email(_) => "an email recipient",
        Recipient::WhatsappId(_) => "a WhatsApp id recipient",
    }
}

/// The E.164 number of an SMS recipient: `+`, then 6 to 15 digits, the first not 0.
pub(crate) fn e164_phone<'a>(provider: &str, recipient: &'a Recipient) -> Result<&'a str, SendError> {
    let Recipient::Phone(number) = recipient else {
        return Err(unsupported_content(provider, &format!("to {}", recipient_kind(recipient))));
    };
    if is_e164(number) {
        Ok(number)
    } else {
        Err(invalid_recipient("phone number is not in E.164 form (+ and 6 to 15 digits)"))
    }
}

pub(crate) fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else { return false };
    (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn e164_accepts_plus_and_digits_only() {
        assert!(is_e164("+4915112345678"));
        assert!(is_e164("+15005550006"));
        assert!(!is_e164("4915112345678"));
        assert!(!is_e164("+49 151 1234"));
        assert!(!is_e164("+0123456789"));
        assert!(!is_e164("+12345"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn e164_phone_rejects_other_recipient_kinds_as_unsupported() {
        let err = e164_phone("sns", &Recipient::Email("a@b.example".into())).unwrap_err();
        assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "unsupported_content"), "{err:?}");
        let err = e164_phone("sns", &Recipient::Phone("0151 123".into())).unwrap_err();
        assert!(matches!(err, SendError::Permanent { ref code, .. } if code == "invalid_recipient"), "{err:?}");
    }
}
