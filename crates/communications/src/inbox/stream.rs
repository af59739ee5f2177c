//! `GET /api/v1/stream`: Server-Sent Events of the tenant's inbox changes, for agents (and
//! operator keys).
//!
//! One feed per process reads the change log in stream order (see `changes.rs`) and hands each
//! change to this process's streams over a broadcast channel. It reads when a writer of this
//! process signals a commit, when another process's `NOTIFY` arrives (sent after the commit, on
//! its own: a `NOTIFY` inside the writing transaction would serialise every commit of the
//! database behind one lock), and every half second whatever happens, so a lost notification
//! costs latency, never an event.
//!
//! A stream resuming with `Last-Event-ID` first replays the tenant's changes after that
//! position from the database, then follows the feed, skipping what it already sent. A position
//! past the retention (or not a position at all) gets a `reset` event: refetch, then follow.
//! A client that cannot keep up is disconnected rather than buffered: its next connection
//! resumes from its last event id.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use kernel::auth::Caller;
use kernel::error::{ApiError, ErrorBody};
use kernel::extract::Query;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::changes::{self, Change, Position};
use super::unread;
use crate::Communications;

/// The Postgres notification channel writers announce commits on.
const CHANNEL: &str = "switchboard_changes";
/// The feed reads this often even without a signal.
const POLL: Duration = Duration::from_millis(500);
/// Changes read per statement.
const PAGE: i64 = 500;
/// A stream further behind than this is reset instead of replayed.
const MAX_REPLAY: usize = 5_000;
/// Events waiting for a slow client before it is disconnected.
const CLIENT_BUFFER: usize = 256;
/// Changes this process's streams have not taken yet before a stream counts as lagging.
const FEED_BUFFER: usize = 4_096;
/// An agent's unread summary follows changes at most this often.
const SUMMARY_EVERY: Duration = Duration::from_millis(250);
/// Heartbeat comments keep proxies from closing an idle stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// This process's feed of changes; cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<Arc<Change>>,
    /// Read now: this process committed changes, or another one announced some.
    wake: Notify,
    /// Announce this process's commits to the other processes.
    announce: Notify,
    /// Set when the server shuts down: streams end.
    closing: watch::Sender<bool>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                sender: broadcast::channel(FEED_BUFFER).0,
                wake: Notify::new(),
                announce: Notify::new(),
                closing: watch::channel(false).0,
            }),
        }
    }
}

impl ChangeFeed {
    /// Tells the feeds of every process that changes were committed. Call after the commit.
    pub fn signal(&self) {
        self.inner.wake.notify_one();
        self.inner.announce.notify_one();
    }

    /// Ends every stream of this process (the server is shutting down).
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }
}

/// Feeds this process's streams until the task is dropped.
pub async fn run_feed(pool: PgPool, feed: ChangeFeed) {
    let _listener = AbortOnDrop(tokio::spawn(listen(pool.clone(), feed.clone())));
    let _announcer = AbortOnDrop(tokio::spawn(announce(pool.clone(), feed.clone())));
    let mut cursor = loop {
        match changes::head(&pool).await {
            Ok(head) => break head,
            Err(error) => {
                tracing::warn!(%error, "the change feed cannot read the change log yet");
                tokio::time::sleep(POLL).await;
            }
        }
    };
    let mut delay = POLL;
    loop {
        tokio::select! {
            () = feed.inner.wake.notified() => {}
            () = tokio::time::sleep(delay) => {}
        }
        delay = match read_new(&pool, &feed, &mut cursor).await {
            // Committed changes wait behind an older transaction: look again soon, backing off.
            Ok(true) if delay >= POLL => Duration::from_millis(2),
            Ok(true) => (delay * 2).min(POLL / 2),
            Ok(false) => POLL,
            Err(error) => {
                tracing::warn!(%error, "reading the change log failed");
                POLL
            }
        };
    }
}

/// Broadcasts the changes after `cursor`; answers whether some are held back.
async fn read_new(pool: &PgPool, feed: &ChangeFeed, cursor: &mut Position) -> Result<bool, ApiError> {
    let mut conn = pool.acquire().await?;
    loop {
        let (page, held_back) = changes::read_all(&mut conn, *cursor, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        for change in page {
            *cursor = change.position;
            // No stream listening is fine.
            let _ = feed.inner.sender.send(Arc::new(change));
        }
        if !full {
            return Ok(held_back);
        }
    }
}

async fn listen(pool: PgPool, feed: ChangeFeed) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    // Whatever was announced while we were not listening.
                    feed.inner.wake.notify_one();
                    while listener.recv().await.is_ok() {
                        feed.inner.wake.notify_one();
                    }
                }
                Err(error) => tracing::warn!(%error, "LISTEN for inbox changes failed"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect to LISTEN for inbox changes"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One `NOTIFY` per wake-up however many commits signalled meanwhile.
async fn announce(pool: PgPool, feed: ChangeFeed) {
    loop {
        feed.inner.announce.notified().await;
        if let Err(error) = sqlx::query!("SELECT pg_notify('switchboard_changes', '')").execute(&pool).await {
            tracing::debug!(%error, "announcing inbox changes failed; other processes poll");
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Resume after this event id, for clients that cannot send the `Last-Event-ID` header.
    pub last_event_id: Option<String>,
}

/// The tenant's inbox changes as Server-Sent Events: `conversation.created`, `.assigned`,
/// `.status_changed`, `.updated`, `.read`, `message.created`, `message.status_changed`, and the
/// agent's `unread.summary`. Each change's event id is its position; reconnecting with
/// `Last-Event-ID` replays what was missed, or sends `reset` when that is no longer possible.
#[utoipa::path(
    get, path = "/api/v1/stream", tag = "inbox", params(StreamParams),
    responses((status = 200, content_type = "text/event-stream", description = "The event stream"),
              (status = 401, body = ErrorBody))
)]
pub async fn stream(
    State(module): State<Communications>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume =
        headers.get("last-event-id").map(|value| value.to_str().unwrap_or("?").to_owned()).or(params.last_event_id);
    // Subscribe before reading the log: whatever the feed sends from now on is either in the
    // replay (and skipped by position) or after it.
    let live = module.feed.inner.sender.subscribe();
    let tenant = caller.tenant_id.0;
    let agent = caller.agent_id().map(|agent| agent.0);
    let (replay, last) = catch_up(&module.pool, tenant, agent, resume.as_deref()).await?;
    let (sender, receiver) = mpsc::channel(CLIENT_BUFFER);
    let closing = module.feed.inner.closing.subscribe();
    tokio::spawn(follow(module.pool.clone(), Follower { tenant, agent, last }, live, sender, closing));
    metrics::gauge!("inbox_streams").increment(1.0);
    let replayed = futures_util::stream::iter(replay.into_iter().map(Ok));
    let followed = futures_util::stream::unfold(StreamGuard(receiver), |mut guard| async move {
        guard.0.recv().await.map(|event| (Ok(event), guard))
    });
    use futures_util::StreamExt;
    Ok(Sse::new(replayed.chain(followed)).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

/// Counts open streams down when the response body is dropped.
struct StreamGuard(mpsc::Receiver<Event>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::gauge!("inbox_streams").decrement(1.0);
    }
}

/// The events a stream resuming from `resume` missed, and the position it has then reached.
async fn catch_up(
    pool: &PgPool,
    tenant: Uuid,
    agent: Option<Uuid>,
    resume: Option<&str>,
) -> Result<(Vec<Event>, Position), ApiError> {
    let head = changes::head(pool).await?;
    let Some(resume) = resume else {
        return Ok((Vec::new(), head));
    };
    let reset = |reason: &str| (vec![reset_event(head, reason)], head);
    let Ok(from) = resume.parse::<Position>() else {
        return Ok(reset("Last-Event-ID is not an event id of this stream"));
    };
    if from < changes::horizon(pool).await? {
        return Ok(reset("the changes since Last-Event-ID are past their retention"));
    }
    if from > head {
        return Ok(reset("Last-Event-ID is ahead of this server's change log"));
    }
    let mut events = Vec::new();
    let mut last = from;
    loop {
        let page = changes::read_tenant(pool, tenant, last, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        for change in page {
            last = change.position;
            if for_caller(&change, tenant, agent) {
                events.push(change_event(&change));
            }
        }
        if events.len() > MAX_REPLAY {
            return Ok(reset("too many changes since Last-Event-ID to replay"));
        }
        if !full {
            return Ok((events, last));
        }
    }
}

/// Whether the caller's streams get `change`.
fn for_caller(change: &Change, tenant: Uuid, agent: Option<Uuid>) -> bool {
    change.tenant_id == tenant && change.agent_id.is_none_or(|only| Some(only) == agent)
}

fn change_event(change: &Change) -> Event {
    Event::default()
        .id(change.id.clone())
        .event(change.kind.as_str())
        .json_data(change)
        .unwrap_or_else(|_| Event::default().comment("unserialisable change"))
}

fn reset_event(head: Position, reason: &str) -> Event {
    Event::default()
        .id(head.to_string())
        .event("reset")
        .json_data(json!({ "id": head.to_string(), "reason": reason }))
        .unwrap_or_else(|_| Event::default().comment("reset"))
}

struct Follower {
    tenant: Uuid,
    agent: Option<Uuid>,
    last: Position,
}

/// Passes the feed's changes for this caller to its stream, with the agent's unread summary
/// after the changes that can move it, until the client goes away, falls behind, or the
/// server shuts down.
async fn follow(
    pool: PgPool,
    mut follower: Follower,
    mut live: broadcast::Receiver<Arc<Change>>,
    sender: mpsc::Sender<Event>,
    mut closing: watch::Receiver<bool>,
) {
    // The summary as the stream starts, then after changes (at most every SUMMARY_EVERY).
    let mut summary_due = follower.agent.map(|_| Instant::now());
    if *closing.borrow_and_update() {
        return;
    }
    loop {
        let summary_timer = async {
            match summary_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = closing.changed() => {
                let closed = changed.is_err() || *closing.borrow_and_update();
                if closed {
                    return;
                }
            }
            () = sender.closed() => return,
            () = summary_timer => {
                summary_due = None;
                let Some(agent) = follower.agent else { continue };
                match unread::summary(&pool, follower.tenant, agent).await {
                    Ok(summary) => {
                        let event = Event::default().event("unread.summary").json_data(summary);
                        if let Ok(event) = event && sender.try_send(event).is_err() {
                            return;
                        }
                    }
                    Err(error) => tracing::debug!(%error, "unread summary for a stream failed"),
                }
            }
            received = live.recv() => match received {
                Ok(change) => {
                    if change.position <= follower.last || !for_caller(&change, follower.tenant, follower.agent) {
                        continue;
                    }
                    follower.last = change.position;
                    if sender.try_send(change_event(&change)).is_err() {
                        tracing::info!("an inbox stream's client is not keeping up; disconnecting it");
                        return;
                    }
                    if follower.agent.is_some() && summary_due.is_none() && moves_summary(&change.kind) {
                        summary_due = Some(Instant::now() + SUMMARY_EVERY);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "an inbox stream fell behind the feed; disconnecting it to resume");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn moves_summary(kind: &str) -> bool {
    kind.starts_with("conversation.") || kind == "message.created"
}
