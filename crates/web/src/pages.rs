//! The pages: login, and the inbox (views, list, thread, composer) with the fragments the
//! browser's script swaps in when the live stream says something changed.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use communications::inbox::http::{ConversationFilter, ConversationView};
use kernel::auth::Caller;
use kernel::error::ApiError;
use kernel::pagination::PageParams;
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Web;
use crate::i18n;

pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Names end in .html: everything interpolated is HTML-escaped.
    for (name, source) in [
        ("layout.html", include_str!("../templates/layout.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("inbox.html", include_str!("../templates/inbox.html")),
        ("list.html", include_str!("../templates/list.html")),
        ("thread.html", include_str!("../templates/thread.html")),
        ("queues.html", include_str!("../templates/queues.html")),
    ] {
        if let Err(error) = env.add_template(name, source) {
            // A broken template is a bug caught by the tests, never a start-up crash.
            tracing::error!(%error, name, "web template does not compile");
        }
    }
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

pub(crate) fn render(web: &Web, name: &str, context: serde_json::Value) -> Response {
    let context = minijinja::Value::from(minijinja::value::Serde(context));
    match web.templates.get_template(name).and_then(|template| template.render(context)) {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, name, "rendering a page failed");
            ApiError::internal(error).into_response()
        }
    }
}

pub async fn home() -> Redirect {
    Redirect::to("/inbox")
}

pub async fn login(State(web): State<Web>, caller: Option<Extension<Caller>>, headers: HeaderMap) -> Response {
    if caller.is_some_and(|Extension(caller)| caller.agent_id().is_some()) {
        return Redirect::to("/inbox").into_response();
    }
    let lang = i18n::language(&headers);
    render(&web, "login.html", json!({ "lang": lang, "t": i18n::strings(lang) }))
}

#[derive(Debug, Default, Deserialize)]
pub struct InboxParams {
    /// mine, unassigned, all, snoozed or resolved.
    pub view: Option<String>,
    /// The open conversation.
    pub c: Option<Uuid>,
    /// Search the messages instead of listing a view.
    pub q: Option<String>,
}

const VIEWS: [&str; 5] = ["mine", "unassigned", "all", "snoozed", "resolved"];

fn filter_of(view: &str) -> ConversationFilter {
    let (status, assignee) = match view {
        "mine" => (Some("open"), Some("me")),
        "unassigned" => (Some("open"), Some("unassigned")),
        "snoozed" => (Some("snoozed"), None),
        "resolved" => (Some("resolved"), None),
        _ => (None, None),
    };
    ConversationFilter {
        status: status.map(str::to_owned),
        assignee: assignee.map(str::to_owned),
        limit: Some(50),
        ..ConversationFilter::default()
    }
}

/// The whole inbox page. Without an agent's session: the login page.
pub async fn inbox(
    State(web): State<Web>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Query(params): Query<InboxParams>,
) -> Response {
    let Some(Extension(caller)) = caller.filter(|Extension(c)| c.agent_id().is_some()) else {
        return Redirect::to("/login").into_response();
    };
    let lang = i18n::language(&headers);
    let view = params.view.filter(|v| VIEWS.contains(&v.as_str())).unwrap_or_else(|| "mine".to_owned());
    let query = params.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_owned);
    let result = async {
        let list = match &query {
            Some(q) => search(&web, caller, q).await?,
            None => conversations(&web, caller, &view).await?,
        };
        let summary = communications::inbox::unread::summary(
            &web.communications.pool,
            caller.tenant_id.0,
            caller.agent_id().map(|a| a.0).unwrap_or_default(),
        )
        .await?;
        let thread = match params.c {
            Some(id) => Some(thread(&web, caller, id).await?),
            None => None,
        };
        Ok::<_, ApiError>((list, summary, thread))
    }
    .await;
    match result {
        Ok((list, summary, thread)) => render(
            &web,
            "inbox.html",
            json!({
                "lang": lang, "t": i18n::strings(lang), "view": view, "views": VIEWS, "list": list,
                "summary": summary, "thread": thread, "selected": params.c, "me": caller.agent_id().map(|a| a.0),
                "query": query, "admin": caller.is_admin(),
            }),
        ),
        Err(error) => error.into_response(),
    }
}

/// The list of a view, for the script to swap in.
pub async fn list_fragment(
    State(web): State<Web>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Query(params): Query<InboxParams>,
) -> Response {
    let Some(Extension(caller)) = caller else { return ApiError::Unauthenticated.into_response() };
    let lang = i18n::language(&headers);
    let view = params.view.filter(|v| VIEWS.contains(&v.as_str())).unwrap_or_else(|| "mine".to_owned());
    match conversations(&web, caller, &view).await {
        Ok(list) => render(
            &web,
            "list.html",
            json!({
                "lang": lang, "t": i18n::strings(lang), "view": view, "list": list, "selected": params.c,
                "me": caller.agent_id().map(|a| a.0),
            }),
        ),
        Err(error) => error.into_response(),
    }
}

/// One conversation's thread, header and composer, for the script to swap in.
pub async fn thread_fragment(
    State(web): State<Web>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let Some(Extension(caller)) = caller else { return ApiError::Unauthenticated.into_response() };
    let lang = i18n::language(&headers);
    match thread(&web, caller, id).await {
        Ok(thread) => render(
            &web,
            "thread.html",
            json!({ "lang": lang, "t": i18n::strings(lang), "thread": thread, "me": caller.agent_id().map(|a| a.0) }),
        ),
        Err(error) => error.into_response(),
    }
}

/// Messages matching `q`, shaped as list entries (the matching message is the preview).
async fn search(web: &Web, caller: Caller, q: &str) -> Result<Vec<Value>, ApiError> {
    let hits = communications::inbox::search::search(
        State(web.communications.clone()),
        caller,
        kernel::extract::Query(communications::inbox::search::SearchParams {
            q: Some(q.to_owned()),
            limit: Some(50),
            cursor: None,
        }),
    )
    .await?;
    Ok(hits
        .0
        .items
        .into_iter()
        .map(|hit| {
            json!({
                "id": hit.conversation_id, "contact_name": hit.contact_name, "channel": hit.channel,
                "last_message_at": hit.at, "preview": hit.snippet, "unread_count": null, "assignee_id": null,
                "labels": [],
            })
        })
        .collect())
}

/// The view's conversations, each with a plain-text `preview` of its last message.
async fn conversations(web: &Web, caller: Caller, view: &str) -> Result<Vec<Value>, ApiError> {
    let page = communications::inbox::http::list_conversations(
        State(web.communications.clone()),
        caller,
        kernel::extract::Query(filter_of(view)),
    )
    .await?;
    Ok(page
        .0
        .items
        .into_iter()
        .map(|conversation| {
            let preview = conversation.last_message.as_ref().map(|content| display(content).0).unwrap_or_default();
            let mut value = serde_json::to_value(&conversation).unwrap_or_default();
            value["preview"] = Value::String(preview.chars().take(140).collect());
            value
        })
        .collect())
}

/// What the thread template shows.
#[derive(Debug, Serialize)]
struct Thread {
    conversation: ConversationView,
    /// Oldest first, with a day heading where the day changes.
    entries: Vec<Entry>,
    /// WhatsApp's customer-service window is closed: free text would be refused.
    window_closed: bool,
    /// The workspace's agents: the holder's name, and whom an admin can assign it to.
    agents: Vec<AgentOption>,
    can_assign: bool,
    /// The contact with its identifiers and conversations across channels (the side panel).
    contact: Value,
    /// The workspace's canned responses for the composer.
    canned: Vec<Value>,
    /// Templates with a WhatsApp variant: what can be sent when the window is closed.
    templates: Vec<String>,
    /// The largest request the server takes, in bytes: attachments travel inside it as base64.
    body_limit: usize,
}

#[derive(Debug, Serialize)]
struct AgentOption {
    id: Uuid,
    name: String,
}

#[derive(Debug, Serialize)]
struct Entry {
    /// `message` or `note`.
    kind: &'static str,
    id: Uuid,
    /// A new day starts here (YYYY-MM-DD, UTC; the script shows it in the agent's time zone).
    day: Option<String>,
    direction: String,
    status: String,
    status_reason: Option<String>,
    text: String,
    media: Option<String>,
    /// An email's attachments: names and sizes only (their bytes never reach the page).
    attachments: Vec<AttachmentView>,
    at: DateTime<Utc>,
}

#[derive(Debug, PartialEq, Serialize)]
struct AttachmentView {
    name: String,
    content_type: String,
    bytes: u64,
}

async fn thread(web: &Web, caller: Caller, id: Uuid) -> Result<Thread, ApiError> {
    let module = web.communications.clone();
    let conversation =
        communications::inbox::http::get_conversation(State(module.clone()), caller, kernel::extract::Path(id))
            .await?
            .0;
    let messages = communications::inbox::thread::thread(
        State(module.clone()),
        caller,
        kernel::extract::Path(id),
        kernel::extract::Query(communications::inbox::thread::ThreadParams { limit: Some(100), cursor: None }),
    )
    .await?
    .0
    .items;
    let notes = communications::inbox::notes::list_notes(
        State(module),
        caller,
        kernel::extract::Path(id),
        kernel::extract::Query(PageParams { limit: Some(100), cursor: None }),
    )
    .await?
    .0
    .items;
    let mut entries: Vec<Entry> = messages
        .into_iter()
        .map(|m| {
            let (text, media) = display(&m.content);
            Entry {
                kind: "message",
                id: m.id,
                day: None,
                direction: m.direction,
                status: m.status,
                status_reason: m.status_reason,
                attachments: attachments(&m.content),
                text,
                media,
                at: m.at,
            }
        })
        .chain(notes.into_iter().map(|n| Entry {
            kind: "note",
            id: n.id,
            day: None,
            direction: "note".into(),
            status: String::new(),
            status_reason: None,
            text: n.text,
            media: None,
            attachments: Vec::new(),
            at: n.created_at,
        }))
        .collect();
    entries.sort_by_key(|entry| (entry.at, entry.id));
    let mut last_day = String::new();
    for entry in &mut entries {
        let day = entry.at.format("%Y-%m-%d").to_string();
        if day != last_day {
            entry.day = Some(day.clone());
            last_day = day;
        }
    }
    let window_closed = conversation.channel.as_str() == "whatsapp"
        && conversation.last_inbound_at.is_none_or(|at| Utc::now() - at > chrono::Duration::hours(24));
    let page = PageParams { limit: Some(100), cursor: None }.parse()?;
    let agents = identity::agents::list(&web.communications.pool, caller.tenant_id, page)
        .await?
        .into_iter()
        .map(|agent| AgentOption { id: agent.id.0, name: agent.name })
        .collect();
    let contact = communications::inbox::contacts_http::get_contact(
        State(web.communications.clone()),
        caller,
        kernel::extract::Path(conversation.contact_id),
    )
    .await?
    .0;
    let canned = communications::inbox::canned::list_canned(
        State(web.communications.clone()),
        caller,
        kernel::extract::Query(communications::inbox::canned::CannedSearch { q: None, limit: Some(100), cursor: None }),
    )
    .await?
    .0
    .items;
    let templates = if window_closed {
        communications::templates::http::list_templates(
            State(web.communications.clone()),
            caller,
            kernel::extract::Query(communications::templates::http::TemplateFilter {
                trigger_event: None,
                limit: Some(100),
                cursor: None,
            }),
        )
        .await?
        .0
        .items
        .into_iter()
        .filter(|t| t.variants.iter().any(|v| v.channel.as_str() == "whatsapp"))
        .map(|t| t.name)
        .collect()
    } else {
        Vec::new()
    };
    Ok(Thread {
        body_limit: web.body_limit,
        templates,
        conversation,
        entries,
        window_closed,
        agents,
        can_assign: caller.is_admin(),
        contact: serde_json::to_value(contact).unwrap_or_default(),
        canned: canned.iter().filter_map(|c| serde_json::to_value(c).ok()).collect(),
    })
}

/// A message's words and, for media, its kind; whatever the content's shape.
fn display(content: &Value) -> (String, Option<String>) {
    let text = |key: &str| content.get(key).and_then(Value::as_str).map(str::to_owned);
    let kind = content.get("type").and_then(Value::as_str).unwrap_or_default();
    let media = (kind == "media").then(|| text("kind").unwrap_or_else(|| "media".into()));
    let words = match kind {
        "location" => [text("name"), text("address")].into_iter().flatten().collect::<Vec<_>>().join(", "),
        "email" => [text("subject"), text("text")].into_iter().flatten().collect::<Vec<_>>().join("\n\n"),
        "reaction" => text("emoji").unwrap_or_default(),
        "call" => match text("outcome").as_deref() {
            Some("short") => "Missed call (hung up at once)".to_owned(),
            Some("rejected") => "Missed call".to_owned(),
            Some(outcome) => format!("Missed call ({})", outcome.replace('-', " ")),
            None => "Call".to_owned(),
        },
        _ => text("body")
            .or_else(|| text("text"))
            .or_else(|| text("caption"))
            .or_else(|| text("title"))
            .unwrap_or_default(),
    };
    (words, media)
}

/// An email's attachments, whichever way it went: ours are stored with their bytes (base64),
/// a customer's with their size only (the bytes stay with the provider).
fn attachments(content: &Value) -> Vec<AttachmentView> {
    if content.get("type").and_then(Value::as_str) != Some("email") {
        return Vec::new();
    }
    let Some(list) = content.get("attachments").and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .map(|a| {
            let text = |key: &str| a.get(key).and_then(Value::as_str);
            let bytes = a.get("size").and_then(Value::as_u64).unwrap_or_else(|| {
                // Decoded length without decoding: 3 bytes per 4 characters, less the padding.
                let data = text("data").unwrap_or_default();
                (data.len() / 4 * 3).saturating_sub(data.bytes().rev().take_while(|b| *b == b'=').count()) as u64
            });
            AttachmentView {
                name: text("filename").filter(|n| !n.trim().is_empty()).unwrap_or("attachment").to_owned(),
                content_type: text("content_type").unwrap_or("application/octet-stream").to_owned(),
                bytes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use minijinja::context;

    use super::*;

    #[test]
    fn every_template_compiles_and_content_is_escaped() {
        let mut env = templates();
        for name in ["layout.html", "login.html", "inbox.html", "list.html", "thread.html"] {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
        let (text, media) = display(&json!({"type": "text", "body": "<script>alert(1)</script>"}));
        assert_eq!(media, None);
        env.add_template("probe.html", "{{ text }}").expect("compiles");
        let html = env.get_template("probe.html").and_then(|t| t.render(context! { text })).expect("renders");
        assert_eq!(html, "&lt;script&gt;alert(1)&lt;&#x2f;script&gt;");
        let strings = minijinja::Value::from(minijinja::value::Serde(i18n::strings("en")));
        let page = env.get_template("login.html").expect("login").render(context! { lang => "en", t => strings });
        assert!(page.expect("renders").contains("<form"));
    }

    #[test]
    fn attachments_show_name_and_size_both_ways() {
        let ours = json!({"type": "email", "subject": "S", "attachments": [
            {"filename": "seat.txt", "content_type": "text/plain", "data": "aGk="},
            {"filename": "b.bin", "content_type": "application/octet-stream", "data": "AAECAw=="}]});
        let sizes: Vec<u64> = attachments(&ours).iter().map(|a| a.bytes).collect();
        assert_eq!(sizes, [2, 4]);
        let theirs =
            json!({"type": "email", "attachments": [{"filename": null, "content_type": "image/png", "size": 2048}]});
        assert_eq!(
            attachments(&theirs),
            [AttachmentView { name: "attachment".into(), content_type: "image/png".into(), bytes: 2048 }]
        );
        assert!(attachments(&json!({"type": "text", "body": "hi"})).is_empty());
    }
}
