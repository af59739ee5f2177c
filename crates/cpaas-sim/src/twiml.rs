//! The subset of voice TwiML the simulated calls act on: `<Response>` with `<Dial>` (a
//! `<Number>` child or a bare number), `<Reject>`, `<Say>`, `<Pause>` and `<Hangup>`. Other verbs
//! are kept by name so a call report can list them as ignored. Attribute values and text have
//! their XML entities decoded (an `action` URL's `&amp;` is a plain `&` to Twilio).

use xmlparser::{ElementEnd, Token, Tokenizer};

/// `<Dial>`'s default `timeout`, in seconds (docs/providers/twilio.md §4).
pub(crate) const DEFAULT_DIAL_TIMEOUT: u32 = 30;

/// One verb of a `<Response>`, in document order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Say {
        text: String,
    },
    /// `length` seconds (default 1).
    Pause {
        length: u32,
    },
    Hangup,
    /// `reason`: `rejected` (the default) or `busy`.
    Reject {
        reason: String,
    },
    Dial(Dial),
    /// A verb the simulator does not act on (`Play`, `Gather`, `Redirect`, …).
    Other {
        name: String,
    },
}

impl Verb {
    pub(crate) fn name(&self) -> &str {
        match self {
            Verb::Say { .. } => "Say",
            Verb::Pause { .. } => "Pause",
            Verb::Hangup => "Hangup",
            Verb::Reject { .. } => "Reject",
            Verb::Dial(_) => "Dial",
            Verb::Other { name } => name,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dial {
    /// As written (entities decoded), not yet resolved against the document's URL.
    pub action: Option<String>,
    /// `GET` or `POST` (the default; anything else is taken as POST).
    pub method: String,
    pub timeout: u32,
    /// The text of the first `<Number>` (or other noun), or Dial's own text.
    pub target: Option<String>,
    /// `Number`, or the other noun dialled (`Client`, `Sip`, `Conference`, `Queue`), or `None`
    /// for a bare number.
    pub noun: Option<String>,
}

/// A parsed element: name, attributes (decoded) and children.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The element's own text (children's text not included), trimmed.
    fn text(&self) -> String {
        let text: String = self
            .children
            .iter()
            .filter_map(|child| match child {
                Node::Text(text) => Some(text.as_str()),
                Node::Element(_) => None,
            })
            .collect();
        text.trim().to_owned()
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|child| match child {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }
}

/// The verbs of a TwiML document, or why it is not one (Twilio: error 12100, "Document parse
/// failure").
pub(crate) fn parse(document: &str) -> Result<Vec<Verb>, String> {
    let root = parse_document(document)?;
    if root.name != "Response" {
        return Err(format!("the root element is <{}>, not <Response>", root.name));
    }
    Ok(root.elements().map(verb).collect())
}

fn verb(element: &Element) -> Verb {
    match element.name.as_str() {
        "Say" => Verb::Say { text: element.text() },
        "Pause" => Verb::Pause { length: element.attribute("length").and_then(|v| v.trim().parse().ok()).unwrap_or(1) },
        "Hangup" => Verb::Hangup,
        "Reject" => Verb::Reject { reason: element.attribute("reason").unwrap_or("rejected").trim().to_owned() },
        "Dial" => {
            let noun = element.elements().next();
            let target = match noun {
                Some(noun) => Some(noun.text()),
                None => Some(element.text()),
            }
            .filter(|t| !t.is_empty());
            let method = match element.attribute("method").map(str::trim) {
                Some(m) if m.eq_ignore_ascii_case("GET") => "GET",
                _ => "POST",
            };
            Verb::Dial(Dial {
                action: element.attribute("action").map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned),
                method: method.to_owned(),
                timeout: element
                    .attribute("timeout")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(DEFAULT_DIAL_TIMEOUT),
                target,
                noun: noun.map(|n| n.name.clone()),
            })
        }
        other => Verb::Other { name: other.to_owned() },
    }
}

/// The document's root element, with matching tags checked and entities decoded.
fn parse_document(document: &str) -> Result<Element, String> {
    let document = document.strip_prefix('\u{feff}').unwrap_or(document);
    // Open elements, innermost last; `root` is set when the outermost one closes.
    let mut open: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    for token in Tokenizer::from(document) {
        let token = token.map_err(|e| format!("not well-formed XML: {e}"))?;
        match token {
            Token::ElementStart { prefix, local, .. } => {
                if root.is_some() {
                    return Err("content after the root element".to_owned());
                }
                open.push(Element { name: qualified(prefix.as_str(), local.as_str()), ..Element::default() });
            }
            Token::Attribute { prefix, local, value, .. } => {
                let element = open.last_mut().ok_or("an attribute outside an element")?;
                // XML attribute-value normalisation: literal whitespace characters become spaces.
                let normalised = value.as_str().replace(['\t', '\n', '\r'], " ");
                element.attributes.push((qualified(prefix.as_str(), local.as_str()), decode_entities(&normalised)?));
            }
            Token::ElementEnd { end, .. } => {
                let close = match end {
                    ElementEnd::Open => continue,
                    ElementEnd::Empty => None,
                    ElementEnd::Close(prefix, local) => Some(qualified(prefix.as_str(), local.as_str())),
                };
                let element = open.pop().ok_or("a closing tag without an opening one")?;
                if let Some(name) = close
                    && name != element.name
                {
                    return Err(format!("</{name}> closes <{}>", element.name));
                }
                match open.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => root = Some(element),
                }
            }
            Token::Text { text } => {
                let text = text.as_str();
                match open.last_mut() {
                    Some(element) => element.children.push(Node::Text(decode_entities(text)?)),
                    None if text.trim().is_empty() => {}
                    None => return Err("text outside the root element".to_owned()),
                }
            }
            Token::Cdata { text, .. } => {
                let element = open.last_mut().ok_or("CDATA outside the root element")?;
                element.children.push(Node::Text(text.as_str().to_owned()));
            }
            Token::Declaration { .. }
            | Token::ProcessingInstruction { .. }
            | Token::Comment { .. }
            | Token::DtdStart { .. }
            | Token::EmptyDtd { .. }
            | Token::EntityDeclaration { .. }
            | Token::DtdEnd { .. } => {}
        }
    }
    if let Some(element) = open.last() {
        return Err(format!("<{}> is never closed", element.name));
    }
    root.ok_or_else(|| "no root element".to_owned())
}

fn qualified(prefix: &str, local: &str) -> String {
    if prefix.is_empty() { local.to_owned() } else { format!("{prefix}:{local}") }
}

/// Decodes the five predefined entities and character references.
fn decode_entities(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find(';').ok_or_else(|| format!("an unterminated entity in {raw:?}"))?;
        let name = &after[..end];
        let decoded = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(decimal) = name.strip_prefix('#') {
                    decimal.parse::<u32>().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("an unknown entity &{name};"))?
            }
        };
        out.push(decoded);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_with_action_and_entities() {
        let verbs = parse(
            r#"<?xml version="1.0" encoding="UTF-8"?>
            <!-- forward -->
            <Response>
              <Say>Hold on &amp; wait</Say>
              <Dial action="/hooks/dial?tenant=1&amp;call=a%20b" method="get" timeout=" 20 ">
                <Number>+15125550123</Number>
              </Dial>
              <Play>https://example.com/a.mp3</Play>
            </Response>"#,
        )
        .expect("parses");
        assert_eq!(verbs[0], Verb::Say { text: "Hold on & wait".to_owned() });
        assert_eq!(
            verbs[1],
            Verb::Dial(Dial {
                action: Some("/hooks/dial?tenant=1&call=a%20b".to_owned()),
                method: "GET".to_owned(),
                timeout: 20,
                target: Some("+15125550123".to_owned()),
                noun: Some("Number".to_owned()),
            })
        );
        assert_eq!(verbs[2].name(), "Play");
    }

    #[test]
    fn bare_numbers_rejects_and_defaults() {
        let verbs = parse("<Response><Dial> +1 512 555 0123 </Dial><Reject/><Pause length='3'/><Hangup/></Response>")
            .expect("parses");
        let Verb::Dial(dial) = &verbs[0] else { panic!("{verbs:?}") };
        assert_eq!(
            (dial.action.as_deref(), dial.method.as_str(), dial.timeout, dial.target.as_deref(), dial.noun.as_deref()),
            (None, "POST", 30, Some("+1 512 555 0123"), None)
        );
        assert_eq!(verbs[1], Verb::Reject { reason: "rejected".to_owned() });
        assert_eq!(verbs[2], Verb::Pause { length: 3 });
        assert_eq!(verbs[3], Verb::Hangup);
        assert_eq!(parse("<Response/>").expect("empty response"), []);
        assert_eq!(
            parse("<Response><Reject reason=\"busy\"></Reject></Response>").expect("parses"),
            [Verb::Reject { reason: "busy".to_owned() }]
        );
    }

    #[test]
    fn character_references_and_cdata() {
        let verbs = parse("<Response><Say>&#72;&#x69;<![CDATA[ <there> ]]></Say></Response>").expect("parses");
        assert_eq!(verbs, [Verb::Say { text: "Hi <there>".to_owned() }]);
    }

    #[test]
    fn what_is_not_twiml() {
        for bad in [
            "",
            "hello",
            "<Response><Say>x</Response>",
            "<Response><Say>x</Say>",
            "<Response/><Response/>",
            "<Response><Say>a &nbsp; b</Say></Response>",
            "<Response><Say>a & b</Say></Response>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse("<Foo/>").expect_err("not a Response").contains("<Foo>"));
    }
}
