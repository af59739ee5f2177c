//! The live stream: every step of a conversation as Server-Sent Events, a reconnect with
//! `Last-Event-ID` replaying exactly what was missed, `reset` when that is no longer possible,
//! events written through one process reaching streams of another.

use std::time::{Duration, Instant};

use cpaas_sim::InboundSpec;
use reqwest::Client;
use serde_json::{Value, json};

use crate::delivery::whatsapp;
use crate::helpers::{TestApp, spawn_app_on, spawn_app_with_sim};

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A minimal SSE reader over a streaming response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    pub async fn connect(client: &Client, url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client.get(url).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next event (comments skipped), or `None` when nothing came within `within` or the
    /// stream ended.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a heartbeat comment
                }
                return Some(SseEvent { id, event, data: serde_json::from_str(&data).unwrap() });
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Events until one of `kind` arrives (which is included); panics after `within`.
    pub async fn until(&mut self, kind: &str, within: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next(left).await else {
                panic!("no {kind} event within {within:?}; saw {seen:#?}");
            };
            let done = event.event == kind;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn inbound(sim: &cpaas_sim::SimHandle, text: &str) {
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: text.into(),
    })
    .await
    .unwrap();
}

async fn post_as(app: &TestApp, (client, csrf): &(Client, String), path: &str) -> reqwest::Response {
    client.post(app.url(path)).header("x-csrf-token", csrf).json(&json!({})).send().await.unwrap()
}

#[tokio::test]
async fn an_agents_stream_sees_every_step_and_a_reconnect_gets_exactly_what_it_missed() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    let session = app.session_client(&tenant, &agent).await;
    let stream_url = app.url("/api/v1/stream");
    let mut stream = SseClient::connect(&session.0, &stream_url, None).await;
    let first = stream.until("unread.summary", WAIT).await;
    assert_eq!(first.last().unwrap().data, json!({"unread": 0, "mine": 0, "unassigned": 0}));

    inbound(&sim, "Hello").await;
    let created = stream.until("conversation.created", WAIT).await.pop().unwrap();
    let id = created.data["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(created.data["payload"]["preview"], "Hello");
    let summary = stream.until("unread.summary", WAIT).await.pop().unwrap();
    assert_eq!(summary.data, json!({"unread": 1, "mine": 0, "unassigned": 1}));
    assert_eq!(post_as(&app, &session, &format!("/api/v1/conversations/{id}/claim")).await.status(), 200);
    let assigned = stream.until("conversation.assigned", WAIT).await.pop().unwrap();
    assert_eq!(assigned.data["payload"]["assignee_id"], agent.id.as_str());
    let last_seen = assigned.id.clone().unwrap();
    drop(stream);

    // Missed while away: a new message, a snooze, a resolve; then the agent comes back.
    inbound(&sim, "Are you there?").await;
    let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let snoozed =
        app.post(&format!("/api/v1/conversations/{id}/snooze"), &tenant.api_key, json!({"until": until})).await;
    assert_eq!(snoozed.status(), 200);
    assert_eq!(
        app.post(&format!("/api/v1/conversations/{id}/resolve"), &tenant.api_key, json!({})).await.status(),
        200
    );
    let mut stream = SseClient::connect(&session.0, &stream_url, Some(&last_seen)).await;
    let mut replayed = Vec::new();
    while let Some(event) = stream.next(Duration::from_millis(1500)).await {
        if event.event != "unread.summary" {
            replayed.push(event);
        }
    }
    let kinds: Vec<&str> = replayed.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["message.created", "conversation.status_changed", "conversation.status_changed"],
        "{replayed:#?}"
    );
    assert_eq!(replayed[0].data["payload"]["preview"], "Are you there?");
    assert_eq!(replayed[1].data["payload"]["status"], "snoozed");
    assert_eq!(replayed[2].data["payload"]["status"], "resolved");
    let ids: Vec<&str> = replayed.iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert!(ids.iter().all(|id| *id != last_seen), "nothing seen before is sent again");

    // Live again after the replay: a new inbound message reopens the conversation.
    inbound(&sim, "Hello again").await;
    let live = stream.until("message.created", WAIT).await.pop().unwrap();
    assert_eq!(live.data["conversation_id"], id.as_str());
    let now: Value = app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(now["status"], "open", "a new inbound message reopens a resolved conversation's contact");
}

#[tokio::test]
async fn a_stream_that_cannot_be_replayed_is_told_to_reset_and_other_tenants_see_nothing() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let other = app.create_tenant("other").await;
    let client = Client::new();
    let auth = |key: &str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {key}").parse().unwrap());
        Client::builder().default_headers(headers).build().unwrap()
    };
    let stream_url = app.url("/api/v1/stream");
    assert_eq!(client.get(&stream_url).send().await.unwrap().status(), 401, "anonymous");

    let mut garbage = SseClient::connect(&auth(&tenant.api_key), &stream_url, Some("not-an-id")).await;
    let reset = garbage.next(WAIT).await.unwrap();
    assert_eq!(reset.event, "reset");
    let head = reset.id.unwrap();

    let mut theirs = SseClient::connect(&auth(&other.api_key), &stream_url, None).await;
    let mut ours = SseClient::connect(&auth(&tenant.api_key), &stream_url, Some(&head)).await;
    inbound(&sim, "Hello").await;
    let created = ours.until("conversation.created", WAIT).await.pop().unwrap();
    assert!(theirs.next(Duration::from_millis(1500)).await.is_none(), "another tenant's stream stays quiet");

    // The log is trimmed past the retention: resuming from before it is a reset, not a gap.
    sqlx::query("UPDATE communications.changes SET created_at = now() - interval '8 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    let trimmed =
        communications::inbox::changes::trim(&app.pool, chrono::Utc::now() - chrono::Duration::days(7)).await.unwrap();
    assert!(trimmed >= 1);
    let mut late = SseClient::connect(&auth(&tenant.api_key), &stream_url, Some(&head)).await;
    assert_eq!(late.next(WAIT).await.unwrap().event, "reset");
    // Resuming from the newest event is still fine: nothing after it was trimmed.
    let mut current = SseClient::connect(&auth(&tenant.api_key), &stream_url, created.id.as_deref()).await;
    app.post(
        &format!("/api/v1/conversations/{}/resolve", created.data["conversation_id"].as_str().unwrap()),
        &tenant.api_key,
        json!({}),
    )
    .await;
    assert_eq!(current.next(WAIT).await.unwrap().event, "conversation.status_changed");
}

#[tokio::test]
async fn changes_written_through_one_process_reach_streams_on_another() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let replica = spawn_app_on(&app.database_url()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "a@alpine.example", "agent").await;
    // The agent's stream is on the replica; the webhook and the changes go to the first process.
    let session = replica.session_client(&tenant, &agent).await;
    let mut stream = SseClient::connect(&session.0, &replica.url("/api/v1/stream"), None).await;
    inbound(&sim, "Hello").await;
    let created = stream.until("conversation.created", WAIT).await.pop().unwrap();
    let id = created.data["conversation_id"].as_str().unwrap().to_owned();
    let snooze_until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let path = format!("/api/v1/conversations/{id}/snooze");
    assert_eq!(app.post(&path, &tenant.api_key, json!({"until": snooze_until})).await.status(), 200);
    let snoozed = stream.until("conversation.status_changed", WAIT).await.pop().unwrap();
    assert_eq!(snoozed.data["payload"]["status"], "snoozed");
    assert!(position(&snoozed) > position(&created));

    // A reconnect to the first process resumes where the replica's stream left off.
    let other_session = app.session_client(&tenant, &agent).await;
    let mut resumed = SseClient::connect(&other_session.0, &app.url("/api/v1/stream"), snoozed.id.as_deref()).await;
    app.post(&format!("/api/v1/conversations/{id}/resolve"), &tenant.api_key, json!({})).await;
    let next: Vec<SseEvent> = resumed
        .until("conversation.status_changed", WAIT)
        .await
        .into_iter()
        .filter(|event| event.event != "unread.summary")
        .collect();
    assert_eq!(next.len(), 1, "nothing replayed twice: {next:#?}");
    assert_eq!(next[0].data["payload"]["status"], "resolved");
}

fn position(event: &SseEvent) -> (i64, i64) {
    let (xid, id) = event.id.as_deref().unwrap().split_once('-').unwrap();
    (xid.parse().unwrap(), id.parse().unwrap())
}

#[tokio::test]
async fn streams_end_when_the_server_shuts_down_instead_of_holding_it_for_the_grace_period() {
    let database_url = crate::helpers::fresh_database().await;
    let created = crate::helpers::switchboard(
        &["tenant", "create", "--name", "Acme", "--slug", "acme", "--json"],
        &[("DATABASE_URL", &database_url)],
    )
    .output()
    .unwrap();
    let tenant: Value = serde_json::from_slice(&created.stdout).unwrap();
    let server = crate::helpers::RunningServer::start(
        &["serve"],
        &[("DATABASE_URL", &database_url), ("SWITCHBOARD__HTTP__SHUTDOWN_GRACE_SECS", "30")],
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {}", tenant["api_key"].as_str().unwrap()).parse().unwrap());
    let client = Client::builder().default_headers(headers).build().unwrap();
    let mut stream = SseClient::connect(&client, &server.url("/api/v1/stream"), None).await;
    let started = Instant::now();
    let status = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(15), "an open stream held shutdown for {:?}", started.elapsed());
    assert!(stream.next(Duration::from_secs(2)).await.is_none(), "the stream ended");
}

#[tokio::test]
async fn a_committed_change_is_announced_to_other_processes_with_notify() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    // What another replica's feed listens to.
    let mut listener = sqlx::postgres::PgListener::connect(&app.database_url()).await.unwrap();
    listener.listen("switchboard_changes").await.unwrap();
    inbound(&sim, "Hello").await;
    let notified = tokio::time::timeout(WAIT, listener.recv()).await;
    assert!(notified.is_ok_and(|n| n.is_ok()), "no NOTIFY after the inbound message's commit");
    // Sent after the commit, on its own: the change is visible by the time it arrives.
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.changes WHERE tenant_id = $1")
        .bind(tenant.id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(changes >= 1);
}
