#![allow(clippy::unwrap_used)]
//! The calendar vendors over HTTP: the `/sim/*` controls, and the vendors' refusals that the
//! adapter tests (in `calendars`) do not reach.

mod common;

use common::Receiver;
use cpaas_sim::{SimConfig, Simulator};
use serde_json::{Value, json};

async fn grant(http: &reqwest::Client, base: &str, vendor: &str) -> Value {
    let grant = http.post(format!("{base}/sim/oauth/grants")).json(&json!({"vendor": vendor})).send().await.unwrap();
    assert_eq!(grant.status(), 200);
    grant.json().await.unwrap()
}

#[tokio::test]
async fn the_calendars_user_is_played_over_http_and_channels_hear_of_it() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let receiver = Receiver::start().await;
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = grant(&http, &base, "google").await["access_token"].as_str().unwrap().to_owned();
    let watch = json!({"id": "ch-1", "type": "web_hook", "address": format!("{}/hook", receiver.base), "token": "t"});
    let channel: Value = http
        .post(format!("{base}/calendar/v3/calendars/cal-1/events/watch"))
        .bearer_auth(&token)
        .json(&watch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(channel["kind"], "api#channel");
    assert!(channel["expiration"].is_string(), "an int64 as a string");

    let event = json!({"calendar_id": "cal-1", "event": {"id": "dentist1", "summary": "Dentist",
        "start": {"dateTime": "2030-01-01T09:00:00Z"}, "end": {"dateTime": "2030-01-01T10:00:00Z"}}});
    let added = http.post(format!("{base}/sim/google/events")).json(&event).send().await.unwrap();
    assert_eq!(added.status(), 201);
    let again = http.post(format!("{base}/sim/google/events")).json(&event).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let moved = json!({"end": {"dateTime": "2030-01-01T11:00:00Z"}});
    let edited =
        http.patch(format!("{base}/sim/google/calendars/cal-1/events/dentist1")).json(&moved).send().await.unwrap();
    assert_eq!(edited.status(), 200);
    let deleted = http.delete(format!("{base}/sim/google/calendars/cal-1/events/dentist1")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let events: Value =
        http.get(format!("{base}/sim/google/calendars/cal-1/events")).send().await.unwrap().json().await.unwrap();
    assert_eq!(events[0]["status"], "cancelled");
    assert_eq!(events[0]["end"]["dateTime"], "2030-01-01T11:00:00Z");

    let channels: Value = http.get(format!("{base}/sim/google/channels")).send().await.unwrap().json().await.unwrap();
    assert_eq!(channels[0]["id"], "ch-1");
    let gone = http.delete(format!("{base}/sim/google/calendars/cal-1")).send().await.unwrap();
    assert_eq!(gone.status(), 204);
    // Each notification goes out in its own task: order them by their numbers.
    let mut posts = receiver.wait_for_posts(5).await;
    posts.sort_by_key(|p| p.header("x-goog-message-number").parse::<u64>().unwrap());
    let states: Vec<String> = posts.iter().map(|p| p.header("x-goog-resource-state")).collect();
    assert_eq!(states, ["sync", "exists", "exists", "exists", "not_exists"]);
    let numbers: Vec<String> = posts.iter().map(|p| p.header("x-goog-message-number")).collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "5"]);
    assert!(posts.iter().all(|p| p.header("x-goog-channel-token") == "t" && p.body.is_empty()));
    assert!(sim.google_channel_ids().is_empty(), "the calendar's channels ended with it");
}

#[tokio::test]
async fn sync_tokens_expire_on_command_and_tokens_can_be_expired_or_revoked() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = grant(&http, &base, "google").await["access_token"].as_str().unwrap().to_owned();
    let list = |query: String| {
        let http = http.clone();
        let url = format!("{base}/calendar/v3/calendars/cal-1/events{query}");
        let token = token.clone();
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let full: Value = list(String::new()).await.json().await.unwrap();
    let sync_token = full["nextSyncToken"].as_str().unwrap().to_owned();
    let with_time_min = list(format!("?syncToken={sync_token}&timeMin=2030-01-01T00:00:00Z")).await;
    assert_eq!(with_time_min.status(), 400, "timeMin is not allowed with a sync token");
    let expired = http.post(format!("{base}/sim/google/calendars/cal-1/expire-sync-tokens")).send().await.unwrap();
    assert_eq!(expired.status(), 204);
    let gone = list(format!("?syncToken={sync_token}")).await;
    assert_eq!(gone.status(), 410);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "fullSyncRequired");

    http.post(format!("{base}/sim/oauth/expire")).json(&json!({"vendor": "google"})).send().await.unwrap();
    let refused = list(String::new()).await;
    assert_eq!(refused.status(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["errors"][0]["reason"], "authError");

    let refresh_token = grant(&http, &base, "google").await["refresh_token"].as_str().unwrap().to_owned();
    http.post(format!("{base}/sim/oauth/revoke")).json(&json!({"vendor": "google"})).send().await.unwrap();
    let defaults = SimConfig::default();
    let form = [
        ("client_id", defaults.google_client_id.as_str()),
        ("client_secret", defaults.google_client_secret.as_str()),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
    ];
    let refreshed = http.post(format!("{base}/token")).form(&form).send().await.unwrap();
    assert_eq!(refreshed.status(), 400);
    assert_eq!(refreshed.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let wrong_client = [form[0], ("client_secret", "guess"), form[2], form[3]];
    let refused = http.post(format!("{base}/token")).form(&wrong_client).send().await.unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn jobber_refuses_what_its_api_refuses_and_webhooks_go_on_command() {
    let receiver = Receiver::start().await;
    let config = SimConfig { webhook_base: Some(receiver.base.clone()), ..SimConfig::default() };
    let sim = Simulator::start(config).await.unwrap();
    let (base, http) = (sim.base_url(), reqwest::Client::new());
    let token = grant(&http, &base, "jobber").await["access_token"].as_str().unwrap().to_owned();
    let query = json!({"query": "query V($id: EncodedId!) { visit(id: $id) { id } }", "variables": {"id": "Z2lkOi8vSm9iYmVyL1Zpc2l0LzE="}});
    let post = |body: Value, version: Option<&'static str>| {
        let mut request = http.post(format!("{base}/api/graphql")).bearer_auth(&token).json(&body);
        if let Some(version) = version {
            request = request.header("X-JOBBER-GRAPHQL-VERSION", version);
        }
        request.send()
    };
    let found: Value = post(query.clone(), Some("2025-04-16")).await.unwrap().json().await.unwrap();
    assert_eq!(found["data"]["visit"], Value::Null, "not found by id is null");
    assert_eq!(found["extensions"]["cost"]["throttleStatus"]["maximumAvailable"], 10000);
    assert_eq!(found["extensions"]["versioning"]["version"], "2025-04-16");
    assert_eq!(post(query.clone(), None).await.unwrap().status(), 400, "the version header is required");
    let literal = json!({"query": "mutation { visitDelete(visitIds: [\"x\"]) { visits { id } } }"});
    let refused: Value = post(literal, Some("2025-04-16")).await.unwrap().json().await.unwrap();
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("as a variable"));
    let unknown = json!({"query": "mutation M($id: EncodedId!) { jobDestroy(id: $id) { id } }", "variables": {}});
    let refused: Value = post(unknown, Some("2025-04-16")).await.unwrap().json().await.unwrap();
    assert_eq!(refused["errors"][0]["message"], "Field 'jobDestroy' doesn't exist on type 'Mutation'");
    let form = http
        .post(format!("{base}/api/graphql"))
        .bearer_auth(&token)
        .header("X-JOBBER-GRAPHQL-VERSION", "2025-04-16")
        .form(&[("query", "{ visit }")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400, "JSON only");
    let anonymous = http.post(format!("{base}/api/graphql")).json(&query).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let visits: Value = http.get(format!("{base}/sim/jobber/visits")).send().await.unwrap().json().await.unwrap();
    assert_eq!(visits, json!([]));
    let sent = http
        .post(format!("{base}/sim/jobber/webhooks"))
        .json(&json!({"topic": "VISIT_UPDATE", "item_id": "Z2lk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    let posted = &receiver.wait_for_posts(1).await[0];
    assert_eq!(posted.path, "/api/webhooks/jobber");
    assert_eq!(posted.json()["data"]["webHookEvent"]["topic"], "VISIT_UPDATE");
    assert!(!posted.header("x-jobber-hmac-sha256").is_empty());
}
