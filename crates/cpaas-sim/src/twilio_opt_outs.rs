//! Twilio's default opt-out handling ("SMS STOP filtering"): a handset that texts a single-word
//! opt-out keyword to one of an account's numbers gets no more messages from that number until
//! it texts an opt-in keyword; a send to it answers 400 with code 21610. The keyword message
//! still reaches the webhook. Sources: /work/shared/research/fulfillment.md §2.2–2.3,
//! docs/providers/twilio.md §3 and §1.3.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::failures::normalize_recipient;

/// Opt-out keywords, including REVOKE and OPTOUT (added May 2025).
const OPT_OUT: [&str; 8] = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"];
const OPT_IN: [&str; 3] = ["START", "YES", "UNSTOP"];

/// A handset that opted out of one of an account's numbers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TwilioOptOut {
    pub account_sid: String,
    /// Our Twilio number, as the keyword message's `To` named it.
    pub number: String,
    /// The handset, as the keyword message's `From` named it.
    pub handset: String,
    /// The keyword, upper-cased (`STOP`, `QUIT`, …).
    pub keyword: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyword {
    OptOut,
    OptIn,
}

/// Whether `body` is a single opt-out or opt-in keyword (case-insensitive, surrounding
/// whitespace ignored; "STOP PLEASE" is neither).
pub(crate) fn keyword(body: &str) -> Option<(Keyword, String)> {
    let word = body.trim().to_ascii_uppercase();
    if OPT_OUT.contains(&word.as_str()) {
        Some((Keyword::OptOut, word))
    } else if OPT_IN.contains(&word.as_str()) {
        Some((Keyword::OptIn, word))
    } else {
        None
    }
}

/// WhatsApp addresses are outside SMS STOP filtering (it is a feature of SMS/MMS senders).
fn is_whatsapp(address: &str) -> bool {
    address.trim().get(..9).is_some_and(|p| p.eq_ignore_ascii_case("whatsapp:"))
}

/// The current blocks, in the order they were made.
#[derive(Debug, Default)]
pub(crate) struct OptOuts {
    blocks: Vec<TwilioOptOut>,
}

impl OptOuts {
    /// Applies an inbound message `from` a handset `to` one of the account's numbers: an
    /// opt-out keyword blocks the pair, an opt-in keyword lifts the block.
    pub(crate) fn inbound(&mut self, account_sid: &str, from: &str, to: &str, body: &str) -> Option<Keyword> {
        if is_whatsapp(from) || is_whatsapp(to) {
            return None;
        }
        let (kind, word) = keyword(body)?;
        let (number, handset) = (normalize_recipient(to), normalize_recipient(from));
        self.blocks.retain(|b| {
            !(b.account_sid == account_sid
                && normalize_recipient(&b.number) == number
                && normalize_recipient(&b.handset) == handset)
        });
        if kind == Keyword::OptOut {
            self.blocks.push(TwilioOptOut {
                account_sid: account_sid.to_owned(),
                number: to.to_owned(),
                handset: from.to_owned(),
                keyword: word,
                at: Utc::now(),
            });
        }
        Some(kind)
    }

    /// Whether a send of `account_sid` to `to` is blocked: from the number `from`, or (a send
    /// through a Messaging Service, `from` = `None`) from any of the account's numbers.
    pub(crate) fn blocks(&self, account_sid: &str, from: Option<&str>, to: &str) -> bool {
        if is_whatsapp(to) {
            return false;
        }
        let handset = normalize_recipient(to);
        let from = from.map(normalize_recipient);
        self.blocks.iter().any(|b| {
            b.account_sid == account_sid
                && normalize_recipient(&b.handset) == handset
                && from.as_ref().is_none_or(|f| *f == normalize_recipient(&b.number))
        })
    }

    pub(crate) fn list(&self) -> Vec<TwilioOptOut> {
        self.blocks.clone()
    }

    pub(crate) fn clear(&mut self) {
        self.blocks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_keywords_count() {
        assert_eq!(keyword(" stop \n").map(|k| k.0), Some(Keyword::OptOut));
        assert_eq!(keyword("OptOut").map(|k| k.1), Some("OPTOUT".to_owned()));
        assert_eq!(keyword("unstop").map(|k| k.0), Some(Keyword::OptIn));
        for not in ["STOP PLEASE", "OPT OUT", "stop.", "HELP", ""] {
            assert_eq!(keyword(not), None, "{not:?}");
        }
    }

    #[test]
    fn blocks_are_per_account_number_and_handset() {
        let mut opt_outs = OptOuts::default();
        assert_eq!(opt_outs.inbound("AC1", "+1 555 867 5310", "+15005550006", "quit"), Some(Keyword::OptOut));
        assert!(opt_outs.blocks("AC1", Some("+15005550006"), "+15558675310"));
        assert!(opt_outs.blocks("AC1", None, "15558675310"), "a Messaging Service send");
        assert!(!opt_outs.blocks("AC1", Some("+15005550007"), "+15558675310"), "another of our numbers");
        assert!(!opt_outs.blocks("AC2", Some("+15005550006"), "+15558675310"), "another account");
        assert!(!opt_outs.blocks("AC1", Some("+15005550006"), "whatsapp:+15558675310"));
        opt_outs.inbound("AC1", "+15558675310", "+15005550006", "STOP");
        assert_eq!(opt_outs.list().len(), 1, "a second STOP keeps one block");
        assert_eq!(opt_outs.inbound("AC1", "+15558675310", "+15005550006", "Yes"), Some(Keyword::OptIn));
        assert!(!opt_outs.blocks("AC1", Some("+15005550006"), "+15558675310"));
        assert_eq!(opt_outs.inbound("AC1", "whatsapp:+15558675310", "whatsapp:+15005550006", "STOP"), None);
    }
}
