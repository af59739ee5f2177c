//! Failure rules: which sends fail, and how (the per-provider mapping lives in each provider
//! module and is tabled in the crate docs).

use serde::{Deserialize, Serialize};

use crate::SimState;

/// Makes matching sends fail.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailureRule {
    /// `"meta"`, `"ses"`, `"sns"`, `"twilio"`; `None` matches any provider.
    pub provider: Option<String>,
    /// Compared normalised (e-mail lower-cased, phone numbers as digits); `None` matches anyone.
    pub recipient: Option<String>,
    pub kind: FailureKind,
    /// 1.0 = always.
    pub probability: f64,
    /// How many more sends it may fail; `None` = unlimited.
    pub remaining: Option<u32>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    RateLimited,
    ServerError,
    Timeout,
    InvalidRecipient,
    OptedOut,
    AuthFailed,
    AccountSuspended,
    ReEngagementRequired,
    Undeliverable,
    MessageRejected,
    /// Google Calendar and Jobber only: the request is carried out, then its answer is held
    /// for 30 s, so the client times out not knowing it succeeded (a retry must cope).
    LostAnswer,
}

/// Kinds that only some providers can express, whatever a rule's `applies` says.
fn provider_can_express(kind: FailureKind, provider: &str) -> bool {
    kind != FailureKind::LostAnswer || matches!(provider, "google" | "jobber")
}

/// Normalises a recipient so `+49 151 234`, `49151234` and `whatsapp:+49151234` compare equal,
/// and e-mail addresses compare case-insensitively.
pub(crate) fn normalize_recipient(recipient: &str) -> String {
    let trimmed = recipient.trim();
    if trimmed.contains('@') {
        // "Name <a@b>" → "a@b"
        let address = match (trimmed.rfind('<'), trimmed.rfind('>')) {
            (Some(start), Some(end)) if start < end => &trimmed[start + 1..end],
            _ => trimmed,
        };
        address.trim().to_lowercase()
    } else {
        trimmed.chars().filter(char::is_ascii_digit).collect()
    }
}

/// A uniform number in [0, 1) from UUIDv4 randomness (the crate has no `rand` dependency).
fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 75; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

impl FailureRule {
    fn matches(&self, provider: &str, recipient: Option<&str>) -> bool {
        if self.remaining == Some(0) {
            return false;
        }
        if self.provider.as_deref().is_some_and(|p| !p.eq_ignore_ascii_case(provider)) {
            return false;
        }
        match (&self.recipient, recipient) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(wanted), Some(got)) => normalize_recipient(wanted) == normalize_recipient(got),
        }
    }
}

/// The failure to inject into this send, if any. Rules are tried in the order they were added;
/// a rule whose kind the provider cannot express is skipped, a rule that loses its dice roll is
/// skipped without being consumed, and a rule that fires has its `remaining` decremented.
pub(crate) fn pick_failure(
    state: &SimState,
    provider: &str,
    recipient: Option<&str>,
    applies: impl Fn(FailureKind) -> bool,
) -> Option<FailureKind> {
    let mut rules = state.failures();
    let fired = rules.iter_mut().find(|rule| {
        rule.matches(provider, recipient)
            && provider_can_express(rule.kind, provider)
            && applies(rule.kind)
            && (rule.probability >= 1.0 || random_unit() < rule.probability)
    })?;
    if let Some(remaining) = fired.remaining.as_mut() {
        *remaining -= 1;
    }
    let kind = fired.kind;
    rules.retain(|rule| rule.remaining != Some(0));
    Some(kind)
}

/// Whether an `OptedOut` rule would match this number, without consuming it (for SNS
/// `CheckIfPhoneNumberIsOptedOut`).
pub(crate) fn has_opt_out_rule(state: &SimState, provider: &str, recipient: &str) -> bool {
    state.failures().iter().any(|rule| rule.kind == FailureKind::OptedOut && rule.matches(provider, Some(recipient)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_normalise_across_formats() {
        assert_eq!(normalize_recipient("+49 151 234"), "49151234");
        assert_eq!(normalize_recipient("whatsapp:+49151234"), "49151234");
        assert_eq!(normalize_recipient("Ann <Ann@Example.ORG>"), "ann@example.org");
    }

    #[test]
    fn random_unit_stays_in_range() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
