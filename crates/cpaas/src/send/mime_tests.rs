#![allow(clippy::unwrap_used)]

use super::*;
use mail_parser::{MessageParser, MimeHeaders};
use proptest::prelude::*;

fn date() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z").unwrap().with_timezone(&Utc)
}

fn parts<'a>(attachments: &'a [Attachment]) -> MailParts<'a> {
    MailParts {
        from: "Alpine Coaches <noreply@mail.alpine.example>",
        to: "ann@example.org",
        subject: "Your booking",
        text: Some("Hello Ann"),
        html: Some("<p>Hello <b>Ann</b></p>"),
        attachments,
        in_reply_to: None,
    }
}

fn pdf() -> Attachment {
    Attachment {
        filename: "ticket.pdf".into(),
        content_type: "application/pdf".into(),
        data: b"%PDF-1.4 fake \x00\xff".to_vec(),
    }
}

#[test]
fn text_and_html_become_multipart_alternative() {
    let raw = build_message(&parts(&[]), date(), "b1").unwrap();
    assert!(raw.contains("Content-Type: multipart/alternative; boundary=\"=_sb_alt_b1\"\r\n"), "{raw}");
    assert!(!raw.contains("multipart/mixed"));
    let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some("Your booking"));
    assert_eq!(message.body_text(0).unwrap(), "Hello Ann");
    assert_eq!(message.body_html(0).unwrap(), "<p>Hello <b>Ann</b></p>");
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Alpine Coaches"));
    assert_eq!(from.address(), Some("noreply@mail.alpine.example"));
    assert_eq!(message.to().unwrap().first().unwrap().address(), Some("ann@example.org"));
    assert_eq!(message.attachment_count(), 0);
}

#[test]
fn every_line_ends_in_crlf_and_is_short_ascii() {
    let long_text = "word ".repeat(500);
    let attachments = [pdf()];
    let mut p = parts(&attachments);
    p.text = Some(&long_text);
    let raw = build_message(&p, date(), "b2").unwrap();
    assert!(raw.is_ascii());
    assert!(!raw.replace("\r\n", "").contains('\n'), "bare LF");
    assert!(raw.split("\r\n").all(|line| line.len() <= 998));
}

#[test]
fn attachments_make_multipart_mixed_with_the_body_first() {
    let attachments =
        [pdf(), Attachment { filename: "a.txt".into(), content_type: "text/plain".into(), data: b"plain".to_vec() }];
    let raw = build_message(&parts(&attachments), date(), "b3").unwrap();
    let mixed = raw.find("multipart/mixed").unwrap();
    let alternative = raw.find("multipart/alternative").unwrap();
    assert!(mixed < alternative);
    let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(message.body_text(0).unwrap(), "Hello Ann");
    let found: Vec<_> =
        message.attachments().map(|a| (a.attachment_name().unwrap().to_owned(), a.contents().to_vec())).collect();
    assert_eq!(found, vec![("ticket.pdf".to_owned(), pdf().data), ("a.txt".to_owned(), b"plain".to_vec())]);
    let first = message.attachments().next().unwrap();
    let ct = first.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("application", Some("pdf")));
}

#[test]
fn only_text_or_only_html_is_a_single_part() {
    let mut p = parts(&[]);
    p.html = None;
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(!raw.contains("multipart"));
    assert!(raw.contains("Content-Type: text/plain; charset=UTF-8"));
    p.html = Some("<p>x</p>");
    p.text = None;
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(!raw.contains("multipart"));
    assert_eq!(MessageParser::default().parse(raw.as_bytes()).unwrap().body_html(0).unwrap(), "<p>x</p>");
    p.html = None;
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(raw.contains("text/plain"));
}

#[test]
fn threading_headers_carry_the_answered_id() {
    let mut p = parts(&[]);
    p.in_reply_to = Some("CAF=abc123@mail.gmail.com");
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(raw.contains("In-Reply-To: <CAF=abc123@mail.gmail.com>\r\n"));
    assert!(raw.contains("References: <CAF=abc123@mail.gmail.com>\r\n"));
    let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(message.in_reply_to().as_text(), Some("CAF=abc123@mail.gmail.com"));
    p.in_reply_to = Some("<x@y>\r\nBcc: victim@example.org");
    assert!(matches!(build_message(&p, date(), "b"), Err(MimeError::InvalidMessageId(_))));
}

#[test]
fn a_thread_goes_into_references_and_its_newest_mail_into_in_reply_to() {
    let mut p = parts(&[]);
    p.in_reply_to = Some("<first@a.example> second@b.example");
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(raw.contains("In-Reply-To: <second@b.example>\r\n"));
    assert!(raw.contains("References: <first@a.example>\r\n <second@b.example>\r\n"));
    let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(message.in_reply_to().as_text(), Some("second@b.example"));
    assert_eq!(message.references().as_text_list().map(|ids| ids.len()), Some(2));
}

#[test]
fn non_ascii_subject_and_names_are_rfc2047_encoded() {
    let subject = "Ihre Buchung für Zürich — Bestätigung 🚌 ".repeat(4);
    let attachments = [Attachment {
        filename: "Fahrkarte Zürich.pdf".into(),
        content_type: "application/pdf".into(),
        data: vec![1, 2, 3],
    }];
    let mut p = parts(&attachments);
    p.subject = &subject;
    p.from = "Älpine Reisen <noreply@mail.alpine.example>";
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(raw.is_ascii());
    assert!(raw.contains("Subject: =?UTF-8?B?"));
    let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(message.subject(), Some(subject.as_str()));
    assert_eq!(message.from().unwrap().first().unwrap().name(), Some("Älpine Reisen"));
    assert_eq!(message.attachments().next().unwrap().attachment_name(), Some("Fahrkarte Zürich.pdf"));
}

#[test]
fn header_injection_is_neutralised() {
    let mut p = parts(&[]);
    p.subject = "Hi\r\nBcc: victim@example.org";
    let raw = build_message(&p, date(), "b").unwrap();
    assert!(raw.contains("Subject: Hi  Bcc: victim@example.org\r\n"));
    assert!(!raw.contains("\r\nBcc:"));
    p.to = "ann@example.org\r\nBcc: victim@example.org";
    assert!(matches!(build_message(&p, date(), "b"), Err(MimeError::InvalidAddress(_))));
}

#[test]
fn mailboxes() {
    assert_eq!(format_mailbox("a@b.example").unwrap(), "a@b.example");
    assert_eq!(format_mailbox("Ann <a@b.example>").unwrap(), "\"Ann\" <a@b.example>");
    assert_eq!(
        format_mailbox("\"Ann \\\"Q\\\" Lee\" <a@b.example>").unwrap(),
        "\"Ann \\\\\\\"Q\\\\\\\" Lee\" <a@b.example>"
    );
    assert!(format_mailbox("not an address").is_err());
    assert!(format_mailbox("a@b@c").is_err());
    assert!(format_mailbox("Ann <>").is_err());
}

#[test]
fn content_types_are_sanitised() {
    assert_eq!(sanitize_content_type("Image/PNG"), "image/png");
    assert_eq!(sanitize_content_type("text/plain\r\nX-Evil: 1"), "application/octet-stream");
    assert_eq!(sanitize_content_type("nonsense"), "application/octet-stream");
}

#[test]
fn encoded_words_stay_within_75_characters() {
    let text = "ä".repeat(100);
    let encoded = encode_header_text(&text);
    for word in encoded.split("\r\n ") {
        assert!(word.len() <= 75, "{word}");
        assert!(word.starts_with("=?UTF-8?B?") && word.ends_with("?="));
    }
}

proptest! {
    #[test]
    fn any_subject_round_trips(subject in "\\PC{1,200}") {
        let mut p = parts(&[]);
        p.subject = &subject;
        let raw = build_message(&p, date(), "p").unwrap();
        let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
        // Surrounding whitespace is not significant in an unstructured header.
        prop_assert_eq!(message.subject().unwrap_or_default().trim(), subject.trim());
    }

    #[test]
    fn any_body_and_attachment_round_trip(text in "\\PC{0,500}", data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let attachments = [Attachment { filename: "f.bin".into(), content_type: "application/octet-stream".into(), data: data.clone() }];
        let mut p = parts(&attachments);
        p.text = Some(&text);
        p.html = None;
        let raw = build_message(&p, date(), "p").unwrap();
        let message = MessageParser::default().parse(raw.as_bytes()).unwrap();
        let body = message.body_text(0).unwrap_or_default().to_string();
        prop_assert_eq!(body.as_str(), text.as_str());
        prop_assert_eq!(message.attachments().next().unwrap().contents(), data.as_slice());
    }
}
