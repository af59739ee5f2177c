//! Sending a signed webhook and, when it fails, sending it again as its provider would. The
//! first attempt runs while the caller waits, so a test still sees a receiver's refusal as an
//! error; the retries run in a background task. Every attempt is logged for `GET /sim/webhooks`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::SimState;
use crate::retry::{
    Attempt, META_REQUEST_TIMEOUT, MetaSchedule, SNS_MESSAGE_LIFETIME, SNS_REQUEST_TIMEOUT, SnsDeliveryPolicy,
    TwilioOverrides,
};

/// One attempt at delivering a webhook, as `GET /sim/webhooks` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookAttempt {
    pub seq: u64,
    /// The same for every attempt at the same webhook.
    pub delivery: u64,
    /// `"meta"`, `"sns"` or `"twilio"`.
    pub provider: String,
    /// The URL requested (a Twilio connection-override fragment is never sent, so never shown).
    pub url: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `"delivered"`, `"http <status>"` or `"error: …"`.
    pub outcome: String,
    /// When the next attempt is due, if the provider will try again.
    pub retry_in_ms: Option<u64>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub(crate) struct WebhookLog {
    next_seq: u64,
    next_delivery: u64,
    entries: Vec<WebhookAttempt>,
    /// Deliveries with a retry still to come.
    pending: usize,
}

impl WebhookLog {
    fn start_delivery(&mut self) -> u64 {
        self.next_delivery += 1;
        self.next_delivery
    }

    fn record(&mut self, delivery: u64, outgoing: &Outgoing, attempt: u32, outcome: &Attempt, next: Option<Duration>) {
        self.next_seq += 1;
        self.entries.push(WebhookAttempt {
            seq: self.next_seq,
            delivery,
            provider: outgoing.policy.provider().to_owned(),
            url: outgoing.url.clone(),
            attempt,
            outcome: outcome.describe(),
            retry_in_ms: next.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            at: Utc::now(),
        });
    }

    pub(crate) fn entries(&self) -> Vec<WebhookAttempt> {
        self.entries.clone()
    }

    /// Forgets the attempts made so far; retries already scheduled still happen and are logged.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }
}

/// Whose rules a webhook is retried by.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Policy {
    Meta(MetaSchedule),
    Sns(SnsDeliveryPolicy),
    Twilio(TwilioOverrides),
    /// One attempt, no retries: Google Calendar push notifications and Jobber webhooks, whose
    /// retry schedules the sim does not model (the provider notes do not state them).
    Once(&'static str),
}

impl Policy {
    fn provider(&self) -> &'static str {
        match self {
            Policy::Meta(_) => "meta",
            Policy::Sns(_) => "sns",
            Policy::Twilio(_) => "twilio",
            Policy::Once(provider) => provider,
        }
    }

    /// The whole-request timeout of the next attempt, `spent` after the first began.
    fn request_timeout(&self, spent: Duration) -> Duration {
        match self {
            Policy::Meta(_) => META_REQUEST_TIMEOUT,
            Policy::Sns(_) => SNS_REQUEST_TIMEOUT,
            // `tt` bounds all attempts together.
            Policy::Twilio(o) => (o.connect_timeout + o.read_timeout)
                .min(o.total_time.saturating_sub(spent))
                .max(Duration::from_millis(1)),
            // Jobber expects an answer within 1 s; Google states no limit, 10 s as for Meta.
            Policy::Once("jobber") => Duration::from_secs(1),
            Policy::Once(_) => META_REQUEST_TIMEOUT,
        }
    }

    /// The wait before another attempt after attempt number `made` ended with `outcome`,
    /// `spent` after the first began; `None` when the provider gives up (or it was delivered).
    fn next(&self, outcome: &Attempt, made: u32, spent: Duration) -> Option<Duration> {
        if *outcome == Attempt::Delivered {
            return None;
        }
        let delay = match self {
            Policy::Once(_) => return None,
            Policy::Meta(schedule) => schedule.delay_before(made),
            Policy::Sns(policy) => {
                if !SnsDeliveryPolicy::retries(outcome) || made > policy.num_retries {
                    return None;
                }
                policy.delay_before(made)
            }
            Policy::Twilio(overrides) => {
                // Twilio retries at once; `tt` leaves no room for spacing them out.
                let time_left = overrides.total_time.saturating_sub(spent) >= Duration::from_millis(100);
                if !overrides.retries(outcome) || made > overrides.retry_count || !time_left {
                    return None;
                }
                Duration::ZERO
            }
        };
        let window = match self {
            Policy::Meta(schedule) => schedule.window,
            Policy::Sns(_) => SNS_MESSAGE_LIFETIME,
            Policy::Twilio(overrides) => overrides.total_time,
            Policy::Once(_) => Duration::ZERO,
        };
        (spent + delay <= window).then_some(delay)
    }
}

/// A signed webhook ready to go: the same bytes on every attempt (Meta's and SNS's
/// redeliveries carry the original body; Twilio's keep their `I-Twilio-Idempotency-Token`).
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    /// POST for everything but a Twilio voice request configured as GET (params in the query).
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub policy: Policy,
}

/// Clients by connect timeout: reqwest sets that per client, and Twilio's `ct` varies per URL.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    by_connect_timeout: HashMap<Duration, reqwest::Client>,
}

impl Clients {
    fn get(&mut self, state_default: &reqwest::Client, policy: &Policy) -> reqwest::Client {
        let Policy::Twilio(overrides) = policy else { return state_default.clone() };
        self.by_connect_timeout
            .entry(overrides.connect_timeout)
            .or_insert_with(|| {
                reqwest::Client::builder()
                    .connect_timeout(overrides.connect_timeout)
                    .build()
                    .unwrap_or_else(|_| state_default.clone())
            })
            .clone()
    }
}

/// What a receiver answered (any status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// How a webhook whose answer matters went: the last attempt's answer, or why there was none.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    /// Attempts made (retries included).
    pub attempts: u32,
    pub answer: Option<Answer>,
    /// `"http 500"`, `"error: connect: …"`; `None` when delivered (2xx).
    pub failure: Option<String>,
}

/// Makes the first attempt and, if the provider would try again, schedules the rest. Errors
/// with the first attempt's failure (`POST … answered 403: …` or `POST … failed: …`).
pub(crate) async fn deliver(state: &Arc<SimState>, outgoing: Outgoing) -> anyhow::Result<()> {
    match deliver_answered(state, outgoing).await {
        (_, None) => Ok(()),
        (_, Some(error)) => Err(error),
    }
}

/// [`deliver`], also returning what the receiver answered to the first attempt.
pub(crate) async fn deliver_answered(
    state: &Arc<SimState>,
    outgoing: Outgoing,
) -> (Option<Answer>, Option<anyhow::Error>) {
    let delivery = state.webhooks().start_delivery();
    let started = Instant::now();
    let outgoing = Arc::new(outgoing);
    let (outcome, answer, error) = attempt(state, &outgoing, Duration::ZERO).await;
    let next = outgoing.policy.next(&outcome, 1, started.elapsed());
    {
        let mut log = state.webhooks();
        log.record(delivery, &outgoing, 1, &outcome, next);
        if next.is_some() {
            log.pending += 1;
        }
    }
    if let Some(delay) = next {
        let state = Arc::clone(state);
        let outgoing = Arc::clone(&outgoing);
        tokio::spawn(async move { retry(state, outgoing, delivery, started, delay).await });
    }
    if error.is_none() {
        tracing::debug!(url = outgoing.url, "webhook delivered");
    }
    (answer, error)
}

/// A request whose answer steers what happens next (Twilio's voice URL and `<Dial action>`):
/// every attempt the provider's policy allows is made while the caller waits, and the last
/// one's answer returned. Each attempt is logged; nothing is left pending.
pub(crate) async fn exchange(state: &Arc<SimState>, outgoing: &Outgoing) -> Exchange {
    let delivery = state.webhooks().start_delivery();
    let started = Instant::now();
    let mut made = 0;
    loop {
        made += 1;
        let (outcome, answer, _) = attempt(state, outgoing, started.elapsed()).await;
        let next = outgoing.policy.next(&outcome, made, started.elapsed());
        state.webhooks().record(delivery, outgoing, made, &outcome, next);
        match next {
            Some(delay) => tokio::time::sleep(delay).await,
            None => {
                let failure = (outcome != Attempt::Delivered).then(|| outcome.describe());
                return Exchange { attempts: made, answer, failure };
            }
        }
    }
}

async fn retry(state: Arc<SimState>, outgoing: Arc<Outgoing>, delivery: u64, started: Instant, first_delay: Duration) {
    let mut delay = first_delay;
    let mut made = 1;
    loop {
        tokio::time::sleep(delay).await;
        made += 1;
        let (outcome, _, _) = attempt(&state, &outgoing, started.elapsed()).await;
        let next = outgoing.policy.next(&outcome, made, started.elapsed());
        {
            let mut log = state.webhooks();
            log.record(delivery, &outgoing, made, &outcome, next);
            if next.is_none() {
                log.pending = log.pending.saturating_sub(1);
            }
        }
        match next {
            Some(wait) => delay = wait,
            None => {
                if outcome != Attempt::Delivered {
                    tracing::info!(url = outgoing.url, attempts = made, "webhook given up after retries");
                }
                return;
            }
        }
    }
}

/// One request: the outcome, what the receiver answered, and for a failure the error a caller
/// of `deliver` gets.
async fn attempt(
    state: &SimState,
    outgoing: &Outgoing,
    spent: Duration,
) -> (Attempt, Option<Answer>, Option<anyhow::Error>) {
    let client = state.clients().get(&state.http, &outgoing.policy);
    let (method, url) = (&outgoing.method, &outgoing.url);
    let mut request = client.request(method.clone(), url).timeout(outgoing.policy.request_timeout(spent));
    if !outgoing.body.is_empty() || *method == reqwest::Method::POST {
        request = request.body(outgoing.body.clone());
    }
    for (name, value) in &outgoing.headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let content_type =
                response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            // Read the answer (so the connection can be reused, and for callers that need it).
            let body = response.text().await.unwrap_or_default();
            let answer = Answer { status: status.as_u16(), content_type, body: body.clone() };
            if status.is_success() {
                (Attempt::Delivered, Some(answer), None)
            } else {
                let error = anyhow::anyhow!("{method} {url} answered {status}: {body}");
                (Attempt::Status(status.as_u16(), body), Some(answer), Some(error))
            }
        }
        Err(error) => {
            let reason = causes(&error);
            let outcome = if error.is_connect() {
                Attempt::Connect(reason)
            } else if error.is_timeout() {
                Attempt::Timeout(reason)
            } else {
                Attempt::Broken(reason)
            };
            (outcome, None, Some(anyhow::anyhow!("{method} {url} failed: {error}")))
        }
    }
}

/// The error's sources, which say what happened (reqwest's own message only names the URL).
fn causes(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        parts.push(inner.to_string());
        source = inner.source();
    }
    if parts.is_empty() { error.to_string() } else { parts.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Policy {
        Policy::Meta(MetaSchedule {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn meta_retries_every_failure_until_the_window_closes() {
        let refused = Attempt::Connect("refused".into());
        assert_eq!(meta().next(&refused, 1, Duration::ZERO), Some(Duration::from_secs(1)));
        assert_eq!(meta().next(&Attempt::Status(400, String::new()), 3, Duration::ZERO), Some(Duration::from_secs(4)));
        assert_eq!(meta().next(&refused, 6, Duration::from_secs(29)), Some(Duration::from_secs(30)));
        assert_eq!(meta().next(&refused, 6, Duration::from_secs(31)), None);
        assert_eq!(meta().next(&Attempt::Delivered, 1, Duration::ZERO), None);
    }

    #[test]
    fn sns_stops_after_its_retries_and_on_client_errors() {
        let sns = Policy::Sns(SnsDeliveryPolicy::default());
        let failed = Attempt::Status(503, String::new());
        assert_eq!(sns.next(&failed, 1, Duration::ZERO), Some(Duration::from_secs(20)));
        assert_eq!(sns.next(&failed, 3, Duration::from_secs(40)), Some(Duration::from_secs(20)));
        assert_eq!(sns.next(&failed, 4, Duration::from_secs(60)), None, "3 retries, then it gives up");
        assert_eq!(sns.next(&Attempt::Status(403, String::new()), 1, Duration::ZERO), None);
        assert_eq!(sns.next(&failed, 1, Duration::from_secs(3590)), None, "one hour lifetime");
    }

    #[test]
    fn twilio_retries_at_once_within_its_total_time() {
        let twilio = Policy::Twilio(TwilioOverrides::parse(Some("rc=2&rp=5xx&tt=1000")));
        let failed = Attempt::Status(500, String::new());
        assert_eq!(twilio.next(&failed, 1, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(twilio.next(&failed, 2, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(twilio.next(&failed, 3, Duration::ZERO), None, "rc=2: three attempts in all");
        assert_eq!(twilio.next(&failed, 1, Duration::from_millis(950)), None, "tt spent");
        assert_eq!(twilio.request_timeout(Duration::from_millis(400)), Duration::from_millis(600));
        let default = Policy::Twilio(TwilioOverrides::default());
        assert_eq!(default.next(&failed, 1, Duration::ZERO), None, "rp defaults to ct");
    }
}
