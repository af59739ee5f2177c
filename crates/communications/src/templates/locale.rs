//! Locales of template variants: BCP 47 tags normalised, and the order a send tries them in.

/// A locale in BCP 47 shape (`de`, `de-AT`, `zh-Hant-TW`), normalised: language lowercase,
/// region uppercase, script title case. `_` is accepted for `-`.
pub fn parse_locale(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 35 {
        return None;
    }
    let mut parts = raw.split(['-', '_']);
    let language = parts.next()?;
    if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let mut out = language.to_ascii_lowercase();
    for part in parts {
        if !(1..=8).contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        match part.len() {
            2 if part.bytes().all(|b| b.is_ascii_alphabetic()) => out.push_str(&part.to_ascii_uppercase()),
            4 if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
                let lower = part.to_ascii_lowercase();
                out.push_str(&lower[..1].to_ascii_uppercase());
                out.push_str(&lower[1..]);
            }
            _ => out.push_str(&part.to_ascii_lowercase()),
        }
    }
    Some(out)
}

/// The locales tried, in order: the requested one, its language, the template's default.
pub fn fallback_chain(requested: Option<&str>, default_locale: &str) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let mut push = |locale: &str| {
        if !chain.iter().any(|l| l.eq_ignore_ascii_case(locale)) {
            chain.push(locale.to_owned());
        }
    };
    if let Some(requested) = requested {
        push(requested);
        if let Some((language, _)) = requested.split_once('-') {
            push(language);
        }
    }
    push(default_locale);
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_normalised() {
        assert_eq!(parse_locale("de").as_deref(), Some("de"));
        assert_eq!(parse_locale("de_at").as_deref(), Some("de-AT"));
        assert_eq!(parse_locale("ZH-hant-tw").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(parse_locale("es-419").as_deref(), Some("es-419"));
        for bad in ["", "d", "german", "de-", "de AT", "12"] {
            assert_eq!(parse_locale(bad), None, "{bad}");
        }
        assert_eq!(fallback_chain(Some("de-AT"), "en"), ["de-AT", "de", "en"]);
        assert_eq!(fallback_chain(Some("en"), "en"), ["en"]);
        assert_eq!(fallback_chain(None, "en"), ["en"]);
    }
}
