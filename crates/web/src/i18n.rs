//! The UI's strings in English and German, chosen by the browser's `Accept-Language`.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

/// `de` when the browser prefers German, else `en`.
pub fn language(headers: &HeaderMap) -> &'static str {
    let accepted = headers.get("accept-language").and_then(|v| v.to_str().ok()).unwrap_or_default();
    // The first language listed is the browser's preference (weights are rarely reordered).
    match accepted.split(',').next().map(|tag| tag.trim().to_lowercase()) {
        Some(tag) if tag.starts_with("de") => "de",
        _ => "en",
    }
}

const STRINGS: &[(&str, &str, &str)] = &[
    ("title", "Switchboard inbox", "Switchboard-Posteingang"),
    ("login", "Log in", "Anmelden"),
    ("logout", "Log out", "Abmelden"),
    ("workspace", "Workspace", "Arbeitsbereich"),
    ("email", "Email", "E-Mail"),
    ("password", "Password", "Passwort"),
    ("login_failed", "Workspace, email or password is wrong.", "Arbeitsbereich, E-Mail oder Passwort ist falsch."),
    ("mine", "Mine", "Meine"),
    ("unassigned", "Unassigned", "Nicht zugewiesen"),
    ("all", "All", "Alle"),
    ("open", "Open", "Offen"),
    ("snoozed", "Snoozed", "Zurückgestellt"),
    ("resolved", "Resolved", "Erledigt"),
    ("search", "Search messages", "Nachrichten suchen"),
    ("conversations", "Conversations", "Unterhaltungen"),
    ("skip_to_list", "Skip to the conversations", "Zu den Unterhaltungen springen"),
    ("messages", "Messages", "Nachrichten"),
    ("conversation", "Conversation", "Unterhaltung"),
    ("new_message", "New message", "Neue Nachricht"),
    ("assigned_other", "assigned to someone else", "jemand anderem zugewiesen"),
    ("no_conversations", "Nothing here.", "Nichts da."),
    ("pick_conversation", "Pick a conversation.", "Wähle eine Unterhaltung."),
    ("claim", "Claim", "Übernehmen"),
    ("release", "Release", "Freigeben"),
    ("resolve", "Resolve", "Erledigen"),
    ("reopen", "Reopen", "Wieder öffnen"),
    ("snooze", "Snooze", "Zurückstellen"),
    ("snooze_1h", "1 hour", "1 Stunde"),
    ("snooze_tomorrow", "Tomorrow 9:00", "Morgen 9:00"),
    ("snooze_week", "Next week", "Nächste Woche"),
    ("reply", "Reply", "Antworten"),
    ("send", "Send", "Senden"),
    ("note", "Private note", "Interne Notiz"),
    ("add_note", "Add note", "Notiz hinzufügen"),
    ("subject", "Subject", "Betreff"),
    ("composer_hint", "Enter sends, Shift+Enter starts a new line", "Enter sendet, Umschalt+Enter für eine neue Zeile"),
    (
        "window_closed",
        "The customer last wrote more than 24 hours ago: WhatsApp only allows a template now.",
        "Der Kunde hat vor mehr als 24 Stunden zuletzt geschrieben: WhatsApp erlaubt jetzt nur eine Vorlage.",
    ),
    ("assigned_to", "Assigned to", "Zugewiesen an"),
    ("assign", "Assign to", "Zuweisen an"),
    ("nobody", "nobody", "niemand"),
    ("you", "you", "dir"),
    ("unread", "unread", "ungelesen"),
    ("failed", "failed", "fehlgeschlagen"),
    // A reply's status (the tick's label), by `status_` and the API's name.
    ("status_queued", "queued", "in der Warteschlange"),
    ("status_pending_review", "awaiting review", "wartet auf Freigabe"),
    ("status_sending", "sending", "wird gesendet"),
    ("status_sent", "sent", "gesendet"),
    ("status_delivered", "delivered", "zugestellt"),
    ("status_read", "read", "gelesen"),
    ("status_failed", "failed", "fehlgeschlagen"),
    ("status_superseded", "replaced", "ersetzt"),
    ("status_canceled", "canceled", "abgebrochen"),
    ("status_unknown", "unconfirmed", "unbestätigt"),
    // A contact's identifiers and a message's media, by the API's names.
    ("kind_phone", "phone", "Telefon"),
    ("kind_email", "email", "E-Mail"),
    ("kind_whatsapp", "WhatsApp", "WhatsApp"),
    ("media_image", "image", "Bild"),
    ("media_document", "document", "Dokument"),
    ("media_audio", "audio", "Audio"),
    ("media_video", "video", "Video"),
    ("download", "Download", "Herunterladen"),
    ("attach", "Attach files", "Dateien anhängen"),
    ("attachments", "Attachments", "Anhänge"),
    ("remove", "Remove", "Entfernen"),
    (
        "attach_too_large",
        "Too large to send: the attachments are {size}, at most {limit} fit in one email.",
        "Zu groß zum Senden: Die Anhänge haben {size}, in eine E-Mail passen höchstens {limit}.",
    ),
    ("context", "Context", "Kontext"),
    ("contact", "Contact", "Kontakt"),
    ("visitor", "Website visitor", "Website-Besucher"),
    ("other_conversations", "Other conversations", "Weitere Unterhaltungen"),
    ("merge_with", "Merge with…", "Zusammenführen mit…"),
    ("merge_search", "Find a contact (name, email or phone)", "Kontakt suchen (Name, E-Mail oder Telefon)"),
    ("merge_none", "No other contact found.", "Kein anderer Kontakt gefunden."),
    (
        "merge_confirm",
        "Merge {name} into this contact? Its identifiers and conversations move here. This cannot be undone.",
        "{name} mit diesem Kontakt zusammenführen? Kennungen und Unterhaltungen kommen hierher. Das lässt sich nicht rückgängig machen.",
    ),
    ("merge", "Merge", "Zusammenführen"),
    ("merge_done", "Contacts merged.", "Kontakte zusammengeführt."),
    ("cancel", "Cancel", "Abbrechen"),
    ("canned", "Canned responses", "Textbausteine"),
    ("template", "Template", "Vorlage"),
    ("variables", "Variables (one name=value per line)", "Variablen (eine name=wert pro Zeile)"),
    ("live", "Live", "Live"),
    ("offline", "Reconnecting…", "Verbinde neu…"),
    ("shortcuts", "Keyboard shortcuts", "Tastenkürzel"),
    ("shortcut_jk", "next / previous conversation", "nächste / vorige Unterhaltung"),
    ("shortcut_r", "reply", "antworten"),
    ("shortcut_e", "resolve", "erledigen"),
    ("shortcut_help", "this help", "diese Hilfe"),
    ("close", "Close", "Schließen"),
    ("queues", "Queues", "Warteschlangen"),
    ("queues_title", "Switchboard queues", "Switchboard-Warteschlangen"),
    ("inbox", "Inbox", "Posteingang"),
    ("lane", "Lane", "Spur"),
    ("lane_urgent", "Urgent", "Dringend"),
    ("lane_bulk", "Bulk", "Massenversand"),
    ("queued", "Queued", "Wartend"),
    ("scheduled", "Scheduled", "Geplant"),
    ("running", "Running", "Läuft"),
    ("retrying", "Retrying", "Neuer Versuch"),
    ("failed", "Failed (24 h)", "Fehlgeschlagen (24 h)"),
    ("unknown", "Unknown", "Unbekannt"),
    ("oldest", "Oldest due", "Älteste fällige"),
    ("status_failed", "Failed", "Fehlgeschlagen"),
    ("status_dead", "Dead", "Aufgegeben"),
    ("status_unknown", "Unknown", "Unbekannt"),
    ("recipient", "Recipient", "Empfänger"),
    ("channel", "Channel", "Kanal"),
    ("reason", "Reason", "Grund"),
    ("attempts", "Attempts", "Versuche"),
    ("when", "When", "Wann"),
    ("replay", "Replay", "Erneut senden"),
    ("replay_all", "Replay all", "Alle erneut senden"),
    ("replay_confirm", "Replay {n} messages?", "{n} Nachrichten erneut senden?"),
    (
        "replay_unknown",
        "The provider may have delivered this message. Send it again anyway?",
        "Der Anbieter hat diese Nachricht vielleicht zugestellt. Trotzdem erneut senden?",
    ),
    ("replayed", "Queued again", "Wieder eingereiht"),
    ("nothing_failed", "Nothing here.", "Nichts da."),
];

/// The strings of `language` by key.
pub fn strings(language: &str) -> BTreeMap<&'static str, &'static str> {
    STRINGS.iter().map(|(key, en, de)| (*key, if language == "de" { *de } else { *en })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn german_browsers_get_german_and_everyone_else_english() {
        let mut headers = HeaderMap::new();
        assert_eq!(language(&headers), "en");
        headers.insert("accept-language", "de-DE,de;q=0.9,en;q=0.8".parse().expect("header"));
        assert_eq!(language(&headers), "de");
        assert_eq!(strings("de")["resolve"], "Erledigen");
        headers.insert("accept-language", "fr-FR,de;q=0.5".parse().expect("header"));
        assert_eq!(language(&headers), "en");
    }
}
