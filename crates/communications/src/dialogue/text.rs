//! What the dialogue reads in a customer's text and what it writes back.

use chrono::{DateTime, FixedOffset, Utc};
use kernel::scheduling::OfferedSlot;
use serde::{Deserialize, Serialize};

/// A slot as offered in a text: its number and the slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub n: u8,
    #[serde(flatten)]
    pub slot: OfferedSlot,
}

pub fn numbered(slots: Vec<OfferedSlot>) -> Vec<Proposal> {
    slots.into_iter().zip(1u8..).map(|(slot, n)| Proposal { n, slot }).collect()
}

/// The number a reply picks ("2", "#2", "2.", " 2) "), if it is one of `1..=count`.
pub fn pick(body: &str, count: usize) -> Option<u8> {
    let word = body.trim().trim_start_matches('#').trim_end_matches(['.', ')', '!']).trim();
    let n: u8 = word.parse().ok()?;
    (n >= 1 && usize::from(n) <= count).then_some(n)
}

pub fn is_yes(body: &str) -> bool {
    matches!(word(body).as_str(), "YES" | "Y" | "OK" | "OKAY" | "CONFIRM" | "JA")
}

pub fn is_no(body: &str) -> bool {
    matches!(word(body).as_str(), "NO" | "N" | "NEIN")
}

fn word(body: &str) -> String {
    body.trim().trim_end_matches(['.', '!']).trim().to_uppercase()
}

/// A slot's start as the customer reads it: local time in the resource's zone.
pub fn when(slot: &OfferedSlot) -> String {
    DateTime::<FixedOffset>::parse_from_rfc3339(&slot.local_start)
        .map(|local| local.format("%a %-d %b %H:%M").to_string())
        .unwrap_or_else(|_| slot.start.format("%a %-d %b %H:%M UTC").to_string())
}

/// "Reply 1 for Tue 1 Dec 09:00, 2 for Tue 1 Dec 10:00 or 3 for Tue 1 Dec 11:00 to book."
pub fn offer(proposals: &[Proposal]) -> String {
    let items: Vec<String> = proposals.iter().map(|p| format!("{} for {}", p.n, when(&p.slot))).collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => format!("Reply {one} to book."),
        [rest @ .., last] => format!("Reply {} or {last} to book.", rest.join(", ")),
    }
}

pub fn ask_to_confirm(proposal: &Proposal, until: Option<DateTime<Utc>>, time_zone: &str) -> String {
    let held = until
        .and_then(|at| {
            time_zone.parse::<chrono_tz::Tz>().ok().map(|tz| at.with_timezone(&tz).format("%H:%M").to_string())
        })
        .map(|at| format!(" We hold it for you until {at}."))
        .unwrap_or_default();
    format!("Reply YES to book {}.{held}", when(&proposal.slot))
}

pub fn booked(proposal: &Proposal) -> String {
    format!("You're booked for {}. Reply here if anything changes.", when(&proposal.slot))
}

pub fn ask_address(proposal: &Proposal) -> String {
    format!("You're booked for {}. What's the address for the visit?", when(&proposal.slot))
}

pub fn address_noted(address: &str) -> String {
    format!("Thanks! We'll come to {address}. Reply here if anything changes.")
}

/// Whether a reply can be an address: some words with a letter, not a bare number or keyword.
pub fn looks_like_address(body: &str) -> bool {
    let text = body.trim();
    (5..=300).contains(&text.chars().count()) && text.chars().any(char::is_alphabetic) && text.contains(' ')
}

pub const TAKEN: &str = "Sorry, that time was just taken.";
pub const LAPSED: &str = "Sorry, we could not hold that time any longer.";
pub const NO_SLOTS: &str =
    "Sorry, we have no free times in the next two weeks. Someone from our team will get back to you.";
pub const HANDED_OFF: &str = "Thanks! Someone from our team will get back to you shortly.";

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn slot(local: &str) -> OfferedSlot {
        let start = DateTime::parse_from_rfc3339(local).expect("a time").with_timezone(&Utc);
        OfferedSlot {
            resource_id: Uuid::nil(),
            service_id: Uuid::nil(),
            start,
            end: start,
            local_start: local.to_owned(),
            time_zone: "Europe/Berlin".into(),
        }
    }

    #[test]
    fn picks_numbers_in_range_only() {
        assert_eq!(pick("2", 3), Some(2));
        assert_eq!(pick(" #3. ", 3), Some(3));
        assert_eq!(pick("1)", 3), Some(1));
        assert_eq!(pick("4", 3), None);
        assert_eq!(pick("0", 3), None);
        assert_eq!(pick("2 please", 3), None);
        assert_eq!(pick("two", 3), None);
    }

    #[test]
    fn offers_read_in_local_time() {
        let proposals = numbered(vec![slot("2026-12-01T09:00:00+01:00"), slot("2026-12-01T10:00:00+01:00")]);
        assert_eq!(offer(&proposals), "Reply 1 for Tue 1 Dec 09:00 or 2 for Tue 1 Dec 10:00 to book.");
        assert_eq!(offer(&proposals[..1]), "Reply 1 for Tue 1 Dec 09:00 to book.");
        assert_eq!(offer(&[]), "");
        assert!(is_yes(" yes! ") && is_yes("Y") && !is_yes("yes please"));
        assert!(is_no("No."));
    }
}
