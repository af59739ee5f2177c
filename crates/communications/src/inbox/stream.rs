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

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
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
use super::unread::{self, AgentUnread, ConversationState};
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
    sender: broadcast::Sender<Arc<FeedItem>>,
    /// Agents with a stream in this process, and how many: the feed reads their read cursors
    /// along with each change, so each stream keeps its badge without a query of its own.
    agents: Mutex<HashMap<Uuid, usize>>,
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
                agents: Mutex::default(),
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

    /// The feed's changes from now on, and whether the server is closing: for streams of other
    /// audiences (webchat visitors).
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Arc<FeedItem>>, watch::Receiver<bool>) {
        (self.inner.sender.subscribe(), self.inner.closing.subscribe())
    }

    fn agents(&self) -> Vec<Uuid> {
        self.inner.agents.lock().map(|agents| agents.keys().copied().collect()).unwrap_or_default()
    }

    fn register(&self, agent: Uuid) {
        if let Ok(mut agents) = self.inner.agents.lock() {
            *agents.entry(agent).or_default() += 1;
        }
    }

    fn unregister(&self, agent: Uuid) {
        if let Ok(mut agents) = self.inner.agents.lock()
            && let Some(count) = agents.get_mut(&agent)
        {
            *count -= 1;
            if *count == 0 {
                agents.remove(&agent);
            }
        }
    }
}

/// A change as the feed hands it to streams: serialised once, with the current state of its
/// conversation when that can move an agent's badge.
#[derive(Debug)]
pub(crate) struct FeedItem {
    pub(crate) change: Change,
    data: String,
    state: Option<Arc<ConversationState>>,
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
        let conversations: Vec<Uuid> =
            page.iter().filter(|c| moves_summary(&c.kind)).filter_map(|c| c.conversation_id).collect();
        let mut states = unread::states(&mut *conn, &conversations, &feed.agents()).await?;
        let states: HashMap<Uuid, Arc<ConversationState>> =
            states.drain().map(|(id, state)| (id, Arc::new(state))).collect();
        let now = chrono::Utc::now();
        for change in page {
            *cursor = change.position;
            // From the change's write to its hand-over to this process's streams.
            let lag = (now - change.at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            metrics::histogram!("inbox_stream_lag_seconds").record(lag);
            let state = change.conversation_id.filter(|_| moves_summary(&change.kind)).and_then(|id| states.get(&id));
            let item = FeedItem {
                data: serde_json::to_string(&change).map_err(ApiError::internal)?,
                state: state.cloned(),
                change,
            };
            // No stream listening is fine.
            let _ = feed.inner.sender.send(Arc::new(item));
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
    let registration = agent.map(|agent| Registration::new(&module.feed, agent));
    let (replay, last) = catch_up(&module.pool, tenant, agent, resume.as_deref()).await?;
    let unread = match agent {
        Some(agent) => Some(AgentUnread::load(&module.pool, tenant, agent).await?),
        None => None,
    };
    let (sender, receiver) = mpsc::channel(CLIENT_BUFFER);
    let closing = module.feed.inner.closing.subscribe();
    let follower = Follower { tenant, agent, last, unread, _registration: registration };
    tokio::spawn(follow(follower, live, sender, closing));
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
    /// The agent's badge, kept from the feed's conversation states.
    unread: Option<AgentUnread>,
    _registration: Option<Registration>,
}

/// An agent's stream counted in the feed for as long as it lives.
struct Registration {
    feed: ChangeFeed,
    agent: Uuid,
}

impl Registration {
    fn new(feed: &ChangeFeed, agent: Uuid) -> Self {
        feed.register(agent);
        Self { feed: feed.clone(), agent }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.feed.unregister(self.agent);
    }
}

/// Passes the feed's changes for this caller to its stream, with the agent's unread summary
/// when changes move it (at most every SUMMARY_EVERY), until the client goes away, falls behind,
/// or the server shuts down.
async fn follow(
    mut follower: Follower,
    mut live: broadcast::Receiver<Arc<FeedItem>>,
    sender: mpsc::Sender<Event>,
    mut closing: watch::Receiver<bool>,
) {
    let mut sent_summary = None;
    // The summary as the stream starts, then after changes that move it.
    let mut summary_due = follower.unread.as_ref().map(|_| Instant::now());
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
                let Some(summary) = follower.unread.as_ref().map(AgentUnread::summary) else { continue };
                if sent_summary == Some(summary) {
                    continue;
                }
                let event = Event::default().event("unread.summary").json_data(summary);
                if let Ok(event) = event && sender.try_send(event).is_err() {
                    return;
                }
                sent_summary = Some(summary);
            }
            received = live.recv() => match received {
                Ok(item) => {
                    let change = &item.change;
                    if change.tenant_id != follower.tenant {
                        continue;
                    }
                    if let (Some(unread), Some(state), Some(conversation)) =
                        (follower.unread.as_mut(), &item.state, change.conversation_id)
                    {
                        unread.apply(conversation, state);
                        if summary_due.is_none() && sent_summary != Some(unread.summary()) {
                            summary_due = Some(Instant::now() + SUMMARY_EVERY);
                        }
                    }
                    if change.position <= follower.last || !for_caller(change, follower.tenant, follower.agent) {
                        continue;
                    }
                    follower.last = change.position;
                    let event = Event::default().id(change.id.clone()).event(change.kind.as_str()).data(item.data.as_str());
                    if sender.try_send(event).is_err() {
                        tracing::info!("an inbox stream's client is not keeping up; disconnecting it");
                        return;
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
