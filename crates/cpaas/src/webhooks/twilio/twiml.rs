//! TwiML answers to voice webhooks (`text/xml`). Everything we put in is escaped: a number or
//! a sentence from an operator's settings never becomes markup.

/// The content type Twilio expects.
pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// Rings `number` for `timeout_secs`; when that leg ends Twilio requests `action_url` (POST)
/// with `DialCallStatus`, and continues with the TwiML it answers.
pub fn dial(number: &str, action_url: &str, timeout_secs: u32) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="{}" method="POST" timeout="{timeout_secs}"><Number>{}</Number></Dial></Response>"#,
        escape(action_url),
        escape(number),
    )
}

/// Ends the call, after saying `say` if given.
pub fn hangup(say: Option<&str>) -> String {
    let say = say.map(|text| format!("<Say>{}</Say>", escape(text))).unwrap_or_default();
    format!(r#"<?xml version="1.0" encoding="UTF-8"?><Response>{say}<Hangup/></Response>"#)
}

/// Nothing to do (status callbacks; Twilio ignores the body).
pub fn empty() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#.to_owned()
}

/// Refuses the call without answering it (not billed); the caller hears busy.
pub fn reject_busy() -> String {
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>"#.to_owned()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_it_is_given() {
        let xml = dial("+4930<1>", "https://x.test/a?b=1&c=2", 20);
        assert!(xml.contains(r#"action="https://x.test/a?b=1&amp;c=2""#), "{xml}");
        assert!(xml.contains("<Number>+4930&lt;1&gt;</Number>"), "{xml}");
        assert!(xml.contains(r#"timeout="20""#));
        let said = hangup(Some("Sorry <b>we</b> missed you & \"more\""));
        assert!(said.contains("<Say>Sorry &lt;b&gt;we&lt;/b&gt; missed you &amp; &quot;more&quot;</Say><Hangup/>"));
        assert_eq!(hangup(None).matches("<Say>").count(), 0);
        assert!(reject_busy().contains(r#"<Reject reason="busy"/>"#));
    }
}
