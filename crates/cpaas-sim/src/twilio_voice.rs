//! Simulated phone calls to a Twilio number, driven by the TwiML our service answers
//! (/work/shared/research/fulfillment.md §1, docs/providers/twilio.md §4):
//!
//! 1. the incoming-call request to the number's Voice URL
//!    (`{webhook_base}/api/webhooks/twilio/{webhook_id}/voice`, `CallStatus=ringing`);
//! 2. the TwiML it answers is acted on (`twiml.rs`): `<Reject>` as the first verb ends the call
//!    unanswered (`busy` for `reason="busy"`, else `no-answer`); `<Dial>` rings the dialled leg,
//!    which ends as [`CallSpec::outcome`] says; `<Say>`, `<Pause>` take time; `<Hangup>` ends;
//! 3. a `<Dial action>` is requested with the parent leg's params plus `DialCallStatus`,
//!    `DialCallSid`, `DialCallDuration` and `DialBridged`, [`CallSpec::repeat_action`] more times
//!    with the same bytes and signature, and the TwiML it answers is acted on in turn;
//! 4. with [`CallSpec::status_callback`], the number-level status callback of the parent leg
//!    (`{webhook_base}/api/webhooks/twilio/{webhook_id}/voice-status`) when the call is over.
//!
//! The voice and action requests are made while the caller waits (their answers steer the
//! call), with Twilio's connection-override retries in line; the status callback's retries run
//! in the background as for every other webhook. Every attempt is in `GET /sim/webhooks`.

use std::sync::Arc;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::callbacks::twilio_request;
use crate::delivery::{Answer, Exchange, Outgoing, deliver_answered, exchange};
use crate::retry::split_fragment;
use crate::twilio_messages::rfc2822;
use crate::twiml::{self, Verb};
use crate::{SimState, random_hex};

/// How long a dialled phone rings before someone picks up (or the caller gives up, for
/// `canceled`), at most the `<Dial timeout>`. A model, not a Twilio fact.
pub(crate) const RING_BEFORE_PICKUP_SECS: u32 = 5;

/// At most this many repeated `<Dial action>` deliveries per call.
const MAX_REPEAT_ACTION: u32 = 10;

/// What happens to the dialled (child) leg of a `<Dial>`: its `DialCallStatus`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DialOutcome {
    /// Nobody picks up within the `<Dial timeout>`.
    #[default]
    NoAnswer,
    Busy,
    /// The number could not be reached as dialled.
    Failed,
    /// The caller hangs up while the dialled phone rings: the parent leg is over.
    Canceled,
    /// Picked up and bridged; `dial_duration_secs` of talk.
    Completed,
    /// As `completed`; the legacy value some handlers still see.
    Answered,
}

impl DialOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DialOutcome::NoAnswer => "no-answer",
            DialOutcome::Busy => "busy",
            DialOutcome::Failed => "failed",
            DialOutcome::Canceled => "canceled",
            DialOutcome::Completed => "completed",
            DialOutcome::Answered => "answered",
        }
    }

    fn bridged(self) -> bool {
        matches!(self, DialOutcome::Completed | DialOutcome::Answered)
    }

    /// Seconds of ringing before the outcome.
    fn ring_secs(self, timeout: u32) -> u32 {
        match self {
            DialOutcome::NoAnswer => timeout,
            DialOutcome::Busy | DialOutcome::Failed => 0,
            DialOutcome::Canceled | DialOutcome::Completed | DialOutcome::Answered => {
                RING_BEFORE_PICKUP_SECS.min(timeout)
            }
        }
    }
}

/// A call from a handset to one of our Twilio numbers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CallSpec {
    pub account_sid: String,
    /// The id in our webhook URLs (`/api/webhooks/twilio/{webhook_id}/voice`); default
    /// `account_sid`.
    #[serde(default)]
    pub webhook_id: Option<String>,
    /// The caller, E.164.
    pub from: String,
    /// Our Twilio number.
    pub to: String,
    /// What happens to the leg a `<Dial>` rings (default `no-answer`).
    #[serde(default)]
    pub outcome: DialOutcome,
    /// Talk time of a `completed` (or `answered`) dial; ignored otherwise.
    #[serde(default)]
    pub dial_duration_secs: u32,
    /// Also post the number-level status callback of the parent leg when the call is over.
    #[serde(default)]
    pub status_callback: bool,
    /// Deliver the `<Dial action>` request this many extra times, same bytes and signature
    /// (Twilio retrying a request it thinks failed); at most 10.
    #[serde(default)]
    pub repeat_action: u32,
}

/// One request the call made, and what came back of its last attempt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallWebhook {
    pub method: String,
    /// As requested: for a GET, with the params in the query.
    pub url: String,
    /// Attempts made while the caller waited (connection-override retries included).
    pub attempts: u32,
    /// `None` when no answer came (no connection, timeout).
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: String,
    /// `None` for a 2xx, else `"http <status>"` or `"error: …"`.
    pub failure: Option<String>,
}

/// What happened on a simulated call.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallReport {
    /// The parent (inbound) leg.
    pub call_sid: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    /// The incoming-call request to the Voice URL and its answer.
    pub voice_answer: CallWebhook,
    /// `"twiml"`, or why the answer could not be acted on: `"http 500"`, `"error: connect: …"`,
    /// `"content-type text/plain"`, `"twiml: …"` (Twilio then plays an application error and
    /// hangs up).
    pub answer: String,
    /// The verbs of the answer, in order.
    pub verbs: Vec<String>,
    /// Verbs (of the answer or of the action's answer) the simulator did not act on.
    pub ignored_verbs: Vec<String>,
    /// The `<Reject>` reason when it was the first verb.
    pub rejected: Option<String>,
    /// The number (or other noun's text) the `<Dial>` rang.
    pub dialed: Option<String>,
    pub dial_timeout: Option<u32>,
    pub dial_call_sid: Option<String>,
    pub dial_call_status: Option<String>,
    /// The `<Dial action>`, resolved against the Voice URL, entities decoded, no fragment.
    pub action_url: Option<String>,
    pub action_method: Option<String>,
    /// Every delivery of the action request: the first, then the repeats.
    pub action_deliveries: Vec<CallWebhook>,
    /// As `answer`, for the action request's answer (the last delivery that got a 2xx).
    pub action_answer: Option<String>,
    pub action_verbs: Vec<String>,
    /// The parent leg's final status: `completed`, `busy` or `no-answer`.
    pub call_status: String,
    /// The parent leg's modelled length (see the crate docs).
    pub call_duration_secs: u32,
    /// The status callback, when asked for (its first attempt; retries go on in the background).
    pub status_callback: Option<CallWebhook>,
}

/// The parent (inbound) leg: its standard request params.
struct Leg<'a> {
    account_sid: &'a str,
    call_sid: String,
    from: &'a str,
    to: &'a str,
}

impl Leg<'_> {
    /// The params every voice request carries; geo fields are sent (empty where unknown), as
    /// Twilio sends them.
    fn params(&self, call_status: &str) -> Vec<(String, String)> {
        let (from_country, to_country) = (country(self.from), country(self.to));
        [
            ("AccountSid", self.account_sid),
            ("ApiVersion", "2010-04-01"),
            ("CallSid", self.call_sid.as_str()),
            ("CallStatus", call_status),
            ("Called", self.to),
            ("CalledCity", ""),
            ("CalledCountry", to_country),
            ("CalledState", ""),
            ("CalledZip", ""),
            ("Caller", self.from),
            ("CallerCity", ""),
            ("CallerCountry", from_country),
            ("CallerState", ""),
            ("CallerZip", ""),
            ("Direction", "inbound"),
            ("From", self.from),
            ("FromCity", ""),
            ("FromCountry", from_country),
            ("FromState", ""),
            ("FromZip", ""),
            ("To", self.to),
            ("ToCity", ""),
            ("ToCountry", to_country),
            ("ToState", ""),
            ("ToZip", ""),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }
}

/// The ISO country of an E.164 number, for a few calling codes (empty when unknown).
fn country(number: &str) -> &'static str {
    const CODES: [(&str, &str); 12] = [
        ("+1", "US"),
        ("+31", "NL"),
        ("+32", "BE"),
        ("+33", "FR"),
        ("+34", "ES"),
        ("+39", "IT"),
        ("+41", "CH"),
        ("+43", "AT"),
        ("+44", "GB"),
        ("+45", "DK"),
        ("+49", "DE"),
        ("+61", "AU"),
    ];
    let number = number.trim();
    CODES.iter().find(|(code, _)| number.starts_with(code)).map_or("", |(_, iso)| iso)
}

/// Seconds to speak `text` at about 150 words a minute.
fn say_secs(text: &str) -> u32 {
    let words = u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX);
    words.saturating_mul(2).div_ceil(5)
}

fn webhook(outgoing: &Outgoing, exchange: Exchange) -> CallWebhook {
    let Exchange { attempts, answer, failure } = exchange;
    let (status, content_type, body) = match answer {
        Some(Answer { status, content_type, body }) => (Some(status), content_type, body),
        None => (None, None, String::new()),
    };
    CallWebhook {
        method: outgoing.method.to_string(),
        url: outgoing.url.clone(),
        attempts,
        status,
        content_type,
        body,
        failure,
    }
}

/// The verbs of an answer, or why Twilio could not act on it.
fn twiml_of(webhook: &CallWebhook) -> Result<Vec<Verb>, String> {
    if let Some(failure) = &webhook.failure {
        return Err(failure.clone());
    }
    let media_type =
        webhook.content_type.as_deref().map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("text/xml" | "application/xml") => twiml::parse(&webhook.body).map_err(|e| format!("twiml: {e}")),
        Some(other) => Err(format!("content-type {other}")),
        None => Err("no content-type".to_owned()),
    }
}

/// `action` resolved against the document's URL (absolute, or relative to it), without its
/// connection-override fragment; and the fragment.
fn resolve(document_url: &str, action: &str) -> Result<(String, Option<String>), String> {
    let (target, fragment) = split_fragment(action);
    let base = url::Url::parse(document_url).map_err(|e| format!("{document_url}: {e}"))?;
    let url = base.join(target).map_err(|e| format!("action URL {action:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("action URL {action:?} is not http(s)"));
    }
    Ok((url.to_string(), fragment.map(str::to_owned)))
}

/// Places the call; see the module docs. Errors only when it cannot be placed at all.
pub(crate) async fn place_call(state: &Arc<SimState>, spec: CallSpec) -> anyhow::Result<CallReport> {
    anyhow::ensure!(spec.repeat_action <= MAX_REPEAT_ACTION, "repeat_action is at most {MAX_REPEAT_ACTION}");
    let base = state.webhook_base()?;
    let webhook_id = spec.webhook_id.as_deref().unwrap_or(&spec.account_sid);
    let voice_url = format!("{base}/api/webhooks/twilio/{webhook_id}/voice");
    let leg = Leg {
        account_sid: &spec.account_sid,
        call_sid: format!("CA{}", random_hex(32)),
        from: &spec.from,
        to: &spec.to,
    };

    let request = twilio_request(state, Method::POST, &voice_url, &leg.params("ringing"))?;
    let voice_answer = webhook(&request, exchange(state, &request).await);
    let mut report = CallReport {
        call_sid: leg.call_sid.clone(),
        account_sid: spec.account_sid.clone(),
        from: spec.from.clone(),
        to: spec.to.clone(),
        answer: String::new(),
        verbs: Vec::new(),
        ignored_verbs: Vec::new(),
        rejected: None,
        dialed: None,
        dial_timeout: None,
        dial_call_sid: None,
        dial_call_status: None,
        action_url: None,
        action_method: None,
        action_deliveries: Vec::new(),
        action_answer: None,
        action_verbs: Vec::new(),
        call_status: "completed".to_owned(),
        call_duration_secs: 0,
        status_callback: None,
        voice_answer,
    };
    match twiml_of(&report.voice_answer) {
        // Twilio answers, plays "an application error has occurred" and hangs up.
        Err(reason) => report.answer = reason,
        Ok(verbs) => {
            report.answer = "twiml".to_owned();
            run(state, &spec, &leg, &voice_url, &verbs, &mut report).await?;
        }
    }

    if spec.status_callback {
        let url = format!("{base}/api/webhooks/twilio/{webhook_id}/voice-status");
        let seconds = report.call_duration_secs;
        // Billed minutes: an answered call is billed at least a minute; an unanswered one not at all.
        let billed = if report.call_status == "completed" { seconds.div_ceil(60).max(1) } else { 0 };
        let mut form = leg.params(&report.call_status);
        form.extend(
            [
                ("CallDuration", seconds.to_string()),
                ("Duration", billed.to_string()),
                ("Timestamp", rfc2822(chrono::Utc::now())),
                ("CallbackSource", "call-progress-events".to_owned()),
                // Only the `completed` event is subscribed on a number: it is the first sent.
                ("SequenceNumber", "0".to_owned()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        let request = twilio_request(state, Method::POST, &url, &form)?;
        let (answer, error) = deliver_answered(state, request.clone()).await;
        let failure = match (&answer, &error) {
            (Some(a), _) if !(200..300).contains(&a.status) => Some(format!("http {}", a.status)),
            (_, Some(error)) => Some(format!("error: {error}")),
            _ => None,
        };
        report.status_callback = Some(webhook(&request, Exchange { attempts: 1, answer, failure }));
    }
    state.calls().push(report.clone());
    Ok(report)
}

/// Acts on the verbs of the Voice URL's answer.
async fn run(
    state: &Arc<SimState>,
    spec: &CallSpec,
    leg: &Leg<'_>,
    voice_url: &str,
    verbs: &[Verb],
    report: &mut CallReport,
) -> anyhow::Result<()> {
    report.verbs = verbs.iter().map(|v| v.name().to_owned()).collect();
    let mut seconds = 0u32;
    let mut dialled = false;
    for (index, verb) in verbs.iter().enumerate() {
        match verb {
            // Twilio does not pick up: no charge, and the call ends busy or unanswered.
            Verb::Reject { reason } if index == 0 => {
                report.call_status = if reason == "busy" { "busy" } else { "no-answer" }.to_owned();
                report.rejected = Some(reason.clone());
                break;
            }
            // The call is already answered: a later <Reject> just ends it.
            Verb::Reject { .. } | Verb::Hangup => break,
            Verb::Say { text } => seconds = seconds.saturating_add(say_secs(text)),
            Verb::Pause { length } => seconds = seconds.saturating_add(*length),
            // One dialled leg per simulated call.
            Verb::Dial(_) if dialled => report.ignored_verbs.push("Dial".to_owned()),
            Verb::Dial(dial) => {
                dialled = true;
                let outcome = spec.outcome;
                let dial_sid = format!("CA{}", random_hex(32));
                let talk = if outcome.bridged() { spec.dial_duration_secs } else { 0 };
                seconds = seconds.saturating_add(outcome.ring_secs(dial.timeout)).saturating_add(talk);
                report.dialed = dial.target.clone();
                report.dial_timeout = Some(dial.timeout);
                report.dial_call_sid = Some(dial_sid.clone());
                report.dial_call_status = Some(outcome.as_str().to_owned());
                // The caller hanging up while it rings is what cancels the dialled leg.
                let caller_left = outcome == DialOutcome::Canceled;
                let Some(action) = &dial.action else {
                    if caller_left {
                        break;
                    }
                    continue;
                };
                let (url, fragment) = match resolve(voice_url, action) {
                    Ok(resolved) => resolved,
                    Err(reason) => {
                        report.action_answer = Some(reason);
                        break;
                    }
                };
                let method = if dial.method == "GET" { Method::GET } else { Method::POST };
                report.action_url = Some(url.clone());
                report.action_method = Some(method.to_string());
                let mut form = leg.params(if caller_left { "completed" } else { "in-progress" });
                form.extend(
                    [
                        ("DialBridged", outcome.bridged().to_string()),
                        ("DialCallDuration", talk.to_string()),
                        ("DialCallSid", dial_sid),
                        ("DialCallStatus", outcome.as_str().to_owned()),
                    ]
                    .map(|(k, v)| (k.to_owned(), v)),
                );
                let with_fragment = match &fragment {
                    Some(fragment) => format!("{url}#{fragment}"),
                    None => url,
                };
                let request = twilio_request(state, method, &with_fragment, &form)?;
                for _ in 0..=spec.repeat_action {
                    let delivery = webhook(&request, exchange(state, &request).await);
                    report.action_deliveries.push(delivery);
                }
                // The answer Twilio goes on with: that of the last delivery that got through.
                let steering = report
                    .action_deliveries
                    .iter()
                    .rev()
                    .find(|d| d.failure.is_none())
                    .or(report.action_deliveries.last())
                    .map(twiml_of);
                match steering {
                    Some(Ok(action_verbs)) => {
                        report.action_answer = Some("twiml".to_owned());
                        report.action_verbs = action_verbs.iter().map(|v| v.name().to_owned()).collect();
                        // Nobody is left to hear it when the caller hung up.
                        if !caller_left {
                            seconds = seconds.saturating_add(follow(&action_verbs, report));
                        }
                    }
                    Some(Err(reason)) => report.action_answer = Some(reason),
                    None => {}
                }
                // Verbs after a <Dial> with an action are unreachable.
                break;
            }
            Verb::Other { name } => report.ignored_verbs.push(name.clone()),
        }
    }
    if report.rejected.is_none() {
        report.call_duration_secs = seconds;
    }
    Ok(())
}

/// Acts on the action's answer (no second dial): the seconds it takes.
fn follow(verbs: &[Verb], report: &mut CallReport) -> u32 {
    let mut seconds = 0u32;
    for verb in verbs {
        match verb {
            Verb::Say { text } => seconds = seconds.saturating_add(say_secs(text)),
            Verb::Pause { length } => seconds = seconds.saturating_add(*length),
            Verb::Reject { .. } | Verb::Hangup => break,
            Verb::Dial(_) | Verb::Other { .. } => report.ignored_verbs.push(verb.name().to_owned()),
        }
    }
    seconds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_ring_and_bridge() {
        assert_eq!(DialOutcome::NoAnswer.ring_secs(20), 20);
        assert_eq!(DialOutcome::Busy.ring_secs(20), 0);
        assert_eq!(DialOutcome::Completed.ring_secs(3), 3);
        assert!(DialOutcome::Answered.bridged() && !DialOutcome::Canceled.bridged());
        let spec: CallSpec =
            serde_json::from_str(r#"{"account_sid":"AC1","from":"+1","to":"+2","outcome":"no-answer"}"#).expect("spec");
        assert_eq!((spec.outcome, spec.repeat_action, spec.status_callback), (DialOutcome::NoAnswer, 0, false));
    }

    #[test]
    fn actions_resolve_against_the_voice_url() {
        let voice = "http://127.0.0.1:9/api/webhooks/twilio/AC1/voice";
        assert_eq!(
            resolve(voice, "dial-result?a=1&b=2").expect("relative"),
            ("http://127.0.0.1:9/api/webhooks/twilio/AC1/dial-result?a=1&b=2".to_owned(), None)
        );
        assert_eq!(
            resolve(voice, "/x#rc=2").expect("absolute path"),
            ("http://127.0.0.1:9/x".to_owned(), Some("rc=2".to_owned()))
        );
        assert_eq!(resolve(voice, "https://h.example/y").expect("absolute").0, "https://h.example/y");
        assert!(resolve(voice, "mailto:a@b").is_err());
    }

    #[test]
    fn speech_and_countries() {
        assert_eq!(say_secs("Sorry we missed you, we will text you."), 4, "8 words");
        assert_eq!(say_secs(""), 0);
        assert_eq!((country("+15125550100"), country("+4915112345678"), country("+999")), ("US", "DE", ""));
    }
}
