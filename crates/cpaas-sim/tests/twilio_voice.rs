#![allow(clippy::unwrap_used)]
//! Simulated calls to a Twilio number, against a real HTTP receiver that checks the
//! `X-Twilio-Signature` of every request (recomputed here, independently of the sim) and
//! answers TwiML per path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cpaas_sim::{CallReport, CallSpec, DialOutcome, SimConfig, SimHandle, Simulator};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;

const TOKEN: &str = "voice-test-token";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALLER: &str = "+15125550199";
const OUR_NUMBER: &str = "+15125550100";
const OWNER: &str = "+15125550123";

fn signature(url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let data: String = std::iter::once(url.to_owned()).chain(sorted.into_iter().map(|(k, v)| k + &v)).collect();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TOKEN.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    }
    /// The params: the form of a POST, the query of a GET.
    fn params(&self) -> HashMap<String, String> {
        if self.method == Method::GET {
            serde_urlencoded::from_str(self.query.as_deref().unwrap_or_default()).unwrap()
        } else {
            serde_urlencoded::from_bytes(&self.body).unwrap()
        }
    }
}

/// What a path answers: status, content type, body.
type Answer = (StatusCode, String, String);

/// Answers by path; unknown paths get an empty `<Response/>`.
#[derive(Clone, Default)]
struct Service {
    base: String,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn serve(State(service): State<Service>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    // What Twilio signs: the full URL it requested, then (POST only) the sorted params.
    let url = match &query {
        Some(query) => format!("{}{path}?{query}", service.base),
        None => format!("{}{path}", service.base),
    };
    let params: Vec<(String, String)> =
        if parts.method == Method::POST { serde_urlencoded::from_bytes(&body).unwrap() } else { Vec::new() };
    let signed = parts.headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let verified = signed == signature(&url, &params);
    service.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query,
        headers: parts.headers.clone(),
        body,
    });
    if !verified {
        return (StatusCode::FORBIDDEN, format!("bad signature for {url}")).into_response();
    }
    let answer = service.answers.lock().unwrap().get(&path).cloned();
    let (status, content_type, body) =
        answer.unwrap_or((StatusCode::OK, "text/xml".to_owned(), "<Response/>".to_owned()));
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

impl Service {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let service = Service { base: format!("http://{}", listener.local_addr().unwrap()), ..Service::default() };
        let app = Router::new().fallback(serve).with_state(service.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        service
    }

    fn answer(&self, path: &str, status: StatusCode, content_type: &str, body: &str) {
        self.answers.lock().unwrap().insert(path.to_owned(), (status, content_type.to_owned(), body.to_owned()));
    }

    fn twiml(&self, path: &str, twiml: &str) {
        self.answer(path, StatusCode::OK, "text/xml; charset=utf-8", twiml);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

async fn start() -> (SimHandle, Service) {
    let service = Service::start().await;
    let config = SimConfig {
        webhook_base: Some(service.base.clone()),
        twilio_auth_token: TOKEN.to_owned(),
        ..SimConfig::default()
    };
    (Simulator::start(config).await.unwrap(), service)
}

fn call(outcome: DialOutcome) -> CallSpec {
    CallSpec {
        account_sid: ACCOUNT.to_owned(),
        from: CALLER.to_owned(),
        to: OUR_NUMBER.to_owned(),
        outcome,
        ..CallSpec::default()
    }
}

const VOICE: &str = "/api/webhooks/twilio/AC0123456789abcdef0123456789abcdef/voice";
const VOICE_STATUS: &str = "/api/webhooks/twilio/AC0123456789abcdef0123456789abcdef/voice-status";

fn forward(action: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Dial action="{action}" method="POST" timeout="20">
    <Number>{OWNER}</Number>
  </Dial>
  <Say>never reached</Say>
</Response>"#
    )
}

fn assert_call_sid(sid: &str) {
    assert!(sid.len() == 34 && sid.starts_with("CA") && sid[2..].chars().all(|c| c.is_ascii_hexdigit()), "{sid}");
}

#[tokio::test]
async fn a_dial_action_reports_each_outcome_signed() {
    let (sim, service) = start().await;
    service.twiml(VOICE, &forward("/hooks/dial-result"));
    let cases = [
        (DialOutcome::NoAnswer, "no-answer", "false", "0", "in-progress"),
        (DialOutcome::Busy, "busy", "false", "0", "in-progress"),
        (DialOutcome::Failed, "failed", "false", "0", "in-progress"),
        (DialOutcome::Canceled, "canceled", "false", "0", "completed"),
        (DialOutcome::Completed, "completed", "true", "42", "in-progress"),
    ];
    for (outcome, status, bridged, duration, parent) in cases {
        service.clear();
        let report = sim.place_call(CallSpec { dial_duration_secs: 42, ..call(outcome) }).await.unwrap();
        assert_eq!(report.answer, "twiml", "{report:#?}");
        assert_eq!(report.verbs, ["Dial", "Say"]);
        assert_eq!((report.dialed.as_deref(), report.dial_timeout), (Some(OWNER), Some(20)));
        assert_eq!(report.action_url, Some(format!("{}/hooks/dial-result", service.base)));
        assert_eq!(report.action_deliveries.len(), 1);
        assert_eq!(report.action_deliveries[0].status, Some(200));
        assert_eq!(report.action_answer.as_deref(), Some("twiml"));

        // The incoming-call request: Twilio's params for a ringing inbound call.
        let voice = service.seen_at(VOICE);
        assert_eq!(voice.len(), 1);
        assert_eq!(voice[0].header("content-type"), "application/x-www-form-urlencoded");
        let form = voice[0].params();
        assert_call_sid(&form["CallSid"]);
        assert_eq!(form["CallSid"], report.call_sid);
        for (key, value) in [
            ("AccountSid", ACCOUNT),
            ("ApiVersion", "2010-04-01"),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
            ("From", CALLER),
            ("Caller", CALLER),
            ("To", OUR_NUMBER),
            ("Called", OUR_NUMBER),
            ("FromCountry", "US"),
            ("ToCountry", "US"),
        ] {
            assert_eq!(form[key], value, "{key}");
        }

        // The action request: the parent leg's params plus the dialled leg's outcome.
        let action = service.seen_at("/hooks/dial-result");
        assert_eq!(action.len(), 1, "{outcome:?}");
        let form = action[0].params();
        assert_eq!(form["CallSid"], report.call_sid);
        assert_eq!(form["DialCallSid"], report.dial_call_sid.clone().unwrap());
        assert_call_sid(&form["DialCallSid"]);
        assert_ne!(form["DialCallSid"], form["CallSid"]);
        assert_eq!(
            (
                form["DialCallStatus"].as_str(),
                form["DialBridged"].as_str(),
                form["DialCallDuration"].as_str(),
                form["CallStatus"].as_str()
            ),
            (status, bridged, duration, parent),
            "{outcome:?}"
        );
        assert_eq!(
            (form["Direction"].as_str(), form["From"].as_str(), form["To"].as_str()),
            ("inbound", CALLER, OUR_NUMBER)
        );
        assert!(!form.contains_key("CallDuration"));
        assert!(service.seen_at(VOICE_STATUS).is_empty(), "no status callback unless asked for");
    }
    assert_eq!(sim.calls().len(), 5);
}

#[tokio::test]
async fn a_repeated_action_is_the_same_request_again() {
    let (sim, service) = start().await;
    service.twiml(VOICE, &forward("/hooks/dial-result"));
    let report = sim.place_call(CallSpec { repeat_action: 2, ..call(DialOutcome::NoAnswer) }).await.unwrap();
    assert_eq!(report.action_deliveries.len(), 3);
    assert!(report.action_deliveries.iter().all(|d| d.status == Some(200) && d.failure.is_none()));
    let deliveries = service.seen_at("/hooks/dial-result");
    assert_eq!(deliveries.len(), 3);
    for delivery in &deliveries[1..] {
        assert_eq!(delivery.body, deliveries[0].body, "same bytes");
        for name in ["x-twilio-signature", "i-twilio-idempotency-token"] {
            assert_eq!(delivery.header(name), deliveries[0].header(name), "{name}");
        }
    }
    assert_eq!(deliveries[0].params()["DialCallStatus"], "no-answer");
    // Each delivery is in the webhook log.
    let logged = sim.webhook_log().iter().filter(|a| a.url.ends_with("/hooks/dial-result")).count();
    assert_eq!(logged, 3);
}

#[tokio::test]
async fn an_action_url_with_entities_arrives_decoded_and_signed_over_it() {
    let (sim, service) = start().await;
    let action = format!("{}/hooks/dial?tenant=t1&amp;leg=a%2Fb&amp;n=%2B1", service.base);
    service.twiml(VOICE, &forward(&action));
    let report = sim.place_call(call(DialOutcome::Busy)).await.unwrap();
    let decoded = format!("{}/hooks/dial?tenant=t1&leg=a%2Fb&n=%2B1", service.base);
    assert_eq!(report.action_url.as_deref(), Some(decoded.as_str()));
    // The receiver answered 200, so the signature verified over the decoded URL.
    assert_eq!(report.action_deliveries[0].status, Some(200), "{report:#?}");
    let seen = service.seen_at("/hooks/dial");
    assert_eq!(seen[0].query.as_deref(), Some("tenant=t1&leg=a%2Fb&n=%2B1"));
    assert_eq!(seen[0].params()["DialCallStatus"], "busy");

    // method="GET": the params go in the query, after the action's own, and only the URL is signed.
    service.clear();
    service.twiml(
        VOICE,
        &format!(
            r#"<Response><Dial action="/hooks/dial?tenant=t1&amp;x=1" method="GET"><Number>{OWNER}</Number></Dial></Response>"#
        ),
    );
    let report = sim.place_call(call(DialOutcome::Failed)).await.unwrap();
    assert_eq!(report.action_method.as_deref(), Some("GET"));
    assert_eq!(report.dial_timeout, Some(30), "Dial's default timeout");
    let seen = service.seen_at("/hooks/dial");
    assert_eq!((seen[0].method.clone(), seen[0].body.len()), (Method::GET, 0));
    let query = seen[0].query.clone().unwrap();
    assert!(query.starts_with("tenant=t1&x=1&"), "{query}");
    let params = seen[0].params();
    assert_eq!((params["DialCallStatus"].as_str(), params["CallSid"].as_str()), ("failed", report.call_sid.as_str()));
    assert_eq!(report.action_deliveries[0].status, Some(200));
    assert_eq!(report.action_deliveries[0].url, format!("{}/hooks/dial?{query}", service.base));
}

#[tokio::test]
async fn a_reject_dials_nobody_and_ends_busy_or_unanswered() {
    let (sim, service) = start().await;
    let voice = "/api/webhooks/twilio/tenant-42/voice";
    let voice_status = "/api/webhooks/twilio/tenant-42/voice-status";
    service.twiml(voice, r#"<Response><Reject reason="busy"/><Say>unreachable</Say></Response>"#);
    let spec =
        CallSpec { webhook_id: Some("tenant-42".to_owned()), status_callback: true, ..call(DialOutcome::Completed) };
    let report = sim.place_call(spec.clone()).await.unwrap();
    assert_eq!(
        (report.rejected.as_deref(), report.call_status.as_str(), report.call_duration_secs),
        (Some("busy"), "busy", 0)
    );
    assert_eq!((report.dialed.clone(), report.action_url.clone()), (None, None));
    assert!(report.action_deliveries.is_empty());
    assert_eq!(report.status_callback.as_ref().unwrap().status, Some(200));
    let paths: Vec<String> = service.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, [voice, voice_status], "no action request");
    let status = service.seen_at(voice_status)[0].params();
    assert_eq!(
        (status["CallStatus"].as_str(), status["CallDuration"].as_str(), status["Duration"].as_str()),
        ("busy", "0", "0")
    );
    assert_eq!(status["CallSid"], report.call_sid);

    // <Reject/> without a reason: the call ends unanswered.
    service.clear();
    service.twiml(voice, "<Response><Reject/></Response>");
    let report = sim.place_call(spec).await.unwrap();
    assert_eq!((report.rejected.as_deref(), report.call_status.as_str()), (Some("rejected"), "no-answer"));
    assert_eq!(service.seen_at(voice_status)[0].params()["CallStatus"], "no-answer");
}

#[tokio::test]
async fn the_status_callback_after_a_dialled_call_is_completed_with_its_duration() {
    let (sim, service) = start().await;
    service.twiml(
        VOICE,
        &format!(r#"<Response><Pause length="2"/><Dial action="dial-result" timeout="20">{OWNER}</Dial></Response>"#),
    );
    // The action is relative to the Voice URL; what it answers is played before the call ends.
    let action_path = "/api/webhooks/twilio/AC0123456789abcdef0123456789abcdef/dial-result";
    service
        .twiml(action_path, "<Response><Say>Thanks for calling, goodbye.</Say><Hangup/><Play>x.mp3</Play></Response>");
    let report = sim
        .place_call(CallSpec { status_callback: true, dial_duration_secs: 42, ..call(DialOutcome::Completed) })
        .await
        .unwrap();
    assert_eq!(report.dialed.as_deref(), Some(OWNER), "a bare number");
    assert_eq!(report.action_verbs, ["Say", "Hangup", "Play"]);
    // 2 s pause + 5 s ringing + 42 s talk + 2 s of "Thanks for calling, goodbye."
    assert_eq!((report.call_status.as_str(), report.call_duration_secs), ("completed", 51));
    let seen = service.seen_at(VOICE_STATUS);
    assert_eq!(seen.len(), 1);
    let form = seen[0].params();
    assert_eq!(form["CallSid"], report.call_sid);
    assert_eq!(
        (
            form["CallStatus"].as_str(),
            form["CallDuration"].as_str(),
            form["Duration"].as_str(),
            form["CallbackSource"].as_str(),
            form["SequenceNumber"].as_str(),
            form["Direction"].as_str()
        ),
        ("completed", "51", "1", "call-progress-events", "0", "inbound")
    );
    let at = chrono::DateTime::parse_from_rfc2822(&form["Timestamp"]).unwrap();
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 60);
    assert!(!form.contains_key("DialCallStatus"));

    // Unanswered: the parent leg is still `completed` (Twilio answered it with TwiML), and lasts
    // the dial's timeout.
    service.clear();
    let report = sim.place_call(CallSpec { status_callback: true, ..call(DialOutcome::NoAnswer) }).await.unwrap();
    assert_eq!(report.call_duration_secs, 2 + 20 + 2);
    let form = service.seen_at(VOICE_STATUS)[0].params();
    assert_eq!((form["CallStatus"].as_str(), form["CallDuration"].as_str()), ("completed", "24"));
}

#[tokio::test]
async fn what_the_voice_url_cannot_answer_is_reported() {
    let (sim, service) = start().await;
    for (status, content_type, body, expected) in [
        (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "boom", "http 500"),
        (StatusCode::OK, "text/plain", "<Response/>", "content-type text/plain"),
        (StatusCode::OK, "application/xml", "<Response><Dial></Response>", "twiml: </Response> closes <Dial>"),
        (StatusCode::OK, "application/xml", "<Say>hi</Say>", "twiml: the root element is <Say>, not <Response>"),
    ] {
        service.answer(VOICE, status, content_type, body);
        let report = sim.place_call(call(DialOutcome::Completed)).await.unwrap();
        assert_eq!(report.answer, expected);
        assert_eq!(report.voice_answer.body, body);
        assert!(report.action_deliveries.is_empty() && report.dialed.is_none());
    }
    // Unknown verbs are listed and skipped; a <Dial> without an action calls nobody back.
    service.twiml(
        VOICE,
        &format!("<Response><Gather/><Dial><Number>{OWNER}</Number></Dial><Say>Bye now</Say><Hangup/></Response>"),
    );
    service.clear();
    let report = sim.place_call(call(DialOutcome::Busy)).await.unwrap();
    assert_eq!(report.ignored_verbs, ["Gather"]);
    assert_eq!((report.dial_call_status.as_deref(), report.action_url.clone()), (Some("busy"), None));
    assert_eq!(report.call_duration_secs, 1, "busy at once, then \"Bye now\"");
    assert_eq!(service.seen().len(), 1, "only the Voice URL was requested");

    // A service nobody listens on: Twilio's default overrides retry a failed connection once.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = SimConfig { webhook_base: Some(format!("http://{gone}")), ..SimConfig::default() };
    let lonely = Simulator::start(config).await.unwrap();
    let report = lonely.place_call(call(DialOutcome::NoAnswer)).await.unwrap();
    assert!(report.answer.starts_with("error: connect"), "{}", report.answer);
    assert_eq!((report.voice_answer.attempts, report.voice_answer.status), (2, None));
}

#[tokio::test]
async fn calls_are_placed_listed_and_cleared_over_http() {
    let (sim, service) = start().await;
    service.twiml(VOICE, &forward("/hooks/dial-result"));
    let client = reqwest::Client::new();
    let url = format!("{}/sim/calls", sim.base_url());
    let answer = client
        .post(&url)
        .json(&serde_json::json!({
            "account_sid": ACCOUNT, "from": CALLER, "to": OUR_NUMBER,
            "outcome": "completed", "dial_duration_secs": 7, "repeat_action": 1,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let report: CallReport = answer.json().await.unwrap();
    assert_eq!(report.dial_call_status.as_deref(), Some("completed"));
    assert_eq!(report.action_deliveries.len(), 2);
    let form = service.seen_at("/hooks/dial-result")[0].params();
    assert_eq!((form["DialCallDuration"].as_str(), form["DialBridged"].as_str()), ("7", "true"));

    // Defaults: no-answer.
    let report: Value = client
        .post(&url)
        .json(&serde_json::json!({"account_sid": ACCOUNT, "from": CALLER, "to": OUR_NUMBER}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["dial_call_status"], "no-answer");

    let listed: Vec<CallReport> = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed, sim.calls());
    assert_eq!(client.delete(&url).send().await.unwrap().status(), 204);
    assert!(sim.calls().is_empty());

    let too_many = client
        .post(&url)
        .json(&serde_json::json!({"account_sid": ACCOUNT, "from": CALLER, "to": OUR_NUMBER, "repeat_action": 11}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 502);
}
