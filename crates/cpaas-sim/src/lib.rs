//! A provider simulator that speaks the real wire formats of Meta WhatsApp Cloud API, Amazon SES
//! v2, Amazon SNS (SMS `Publish`), Twilio Messages and Voice (simulated calls), Google Calendar
//! API v3 and Jobber's GraphQL API, so tests, benchmarks and the demo can run the real adapter
//! code without the internet.
//!
//! It is deliberately an independent implementation (it depends on neither `cpaas` nor `calendars`):
//! if the adapters and the simulator shared code, a shared misunderstanding of a provider could
//! not be caught. The shapes follow `docs/providers/*.md`.
//!
//! # Endpoints (all on one base URL)
//!
//! | provider | endpoints |
//! |---|---|
//! | Meta | `POST /{version}/{phone_number_id}/messages`, `GET /{version}/oauth/access_token`, `POST /{version}/{phone_number_id}/register`, `POST /{version}/{waba_id}/subscribed_apps`, `GET /{version}/{phone_number_id}` |
//! | SES v2 | `POST /v2/email/outbound-emails`, `POST /v2/email/identities`, `GET /v2/email/identities/{identity}` |
//! | SNS | `POST /` (Query protocol: `Publish`, `ListOriginationNumbers`, `CheckIfPhoneNumberIsOptedOut`) |
//! | Twilio | `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, `GET /2010-04-01/Accounts/{AccountSid}/Messages.json` (list), `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json`, `GET /2010-04-01/Accounts/{AccountSid}.json` |
//! | inbound media | Meta `GET /{version}/{media_id}` and its `url`, `/whatsapp_business/attachments/?mid=…` (Bearer); Twilio `GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}/Media/{MediaSid}` (Basic; 307 to `/sim/storage/twilio/{token}`, which refuses an `Authorization` header as S3 does). See `media.rs` |
//! | Google Calendar | `POST/GET /calendar/v3/calendars/{calendarId}/events` (insert, list), `GET/PATCH/DELETE /calendar/v3/calendars/{calendarId}/events/{eventId}`, `POST /calendar/v3/calendars/{calendarId}/events/watch`, `POST /calendar/v3/channels/stop`, `POST /token` (OAuth refresh) |
//! | Jobber | `POST /api/graphql`, `POST /api/oauth/token` |
//! | control | `GET/DELETE /sim/ledger`, `POST/DELETE /sim/failures`, `POST /sim/callbacks`, `POST /sim/inbound`, `GET/DELETE /sim/webhooks`, `GET /sim/sns/cert.pem` |
//! | Twilio control | `POST /sim/calls` (a [`CallSpec`]; answers the [`CallReport`], 502 if the call cannot be placed), `GET /sim/calls` (the reports), `DELETE /sim/calls`; `GET /sim/twilio/opt-outs` (the current STOP blocks, [`TwilioOptOut`]), `DELETE /sim/twilio/opt-outs` |
//! | calendar control | `POST /sim/oauth/grants`, `POST /sim/oauth/expire`, `POST /sim/oauth/revoke` (body `{"vendor": "google" \| "jobber"}`); `POST /sim/google/events` (`{calendar_id, event}`: the user adds an event), `GET /sim/google/calendars/{id}/events`, `PATCH/DELETE /sim/google/calendars/{id}/events/{eventId}` (the user edits or deletes), `DELETE /sim/google/calendars/{id}`, `POST /sim/google/calendars/{id}/expire-sync-tokens`, `GET /sim/google/channels`; `GET /sim/jobber/visits`, `POST /sim/jobber/webhooks` (`{topic, item_id}`) |
//!
//! `GET /sim/webhooks` ([`SimHandle::webhook_log`]) lists every attempt at delivering a webhook,
//! retries included: `{seq, delivery, provider, url, attempt, outcome, retry_in_ms, at}`, where
//! `delivery` is shared by the attempts at one webhook, `outcome` is `"delivered"`,
//! `"http <status>"` or `"error: …"` (`error: connect: …`, `error: timeout: …`), and
//! `retry_in_ms` is the wait before the next attempt (null: no further attempt). `DELETE`
//! clears the list; scheduled retries still happen.
//!
//! # Failure injection: `FailureKind` → provider error
//!
//! A [`FailureRule`] matches a *send* (Meta `send_message`, SES `SendEmail`, SNS `Publish`,
//! Twilio `create_message`) by provider and normalised recipient (e-mail addresses lower-cased,
//! phone numbers reduced to their digits). A kind that has no meaning for a provider (marked
//! "not matched") never matches there and is not consumed.
//!
//! | kind | Meta | SES v2 | SNS | Twilio |
//! |---|---|---|---|---|
//! | `RateLimited` | 400, code 130429 | 429 `TooManyRequestsException` | 400 `Throttling` "Rate exceeded" | 429, code 20429 |
//! | `ServerError` | 500, code 131000 | 500 `InternalServiceErrorException` | 500 `InternalError` | 500, code 20500 |
//! | `Timeout` | ledger `timeout`, response held 30 s, then the `ServerError` reply | same | same | same |
//! | `InvalidRecipient` | 400, code 100 (`to` invalid) | 400 `MessageRejected` | 400 `InvalidParameter` | 400, code 21211 |
//! | `OptedOut` | 400, code 131026 (no opt-out code is documented for sends) | 400 `MessageRejected` (suppression list) | **200 with a MessageId, message dropped** (real SNS behaviour); ledger outcome `dropped:opted_out`; the number then reports `isOptedOut=true` | 400, code 21610 |
//! | `AuthFailed` | 401, code 190 | 403 `UnrecognizedClientException` | 403 `AuthorizationError` | 401, code 20003 |
//! | `AccountSuspended` | 403, code 368 | 400 `AccountSuspendedException` | 403 `AuthorizationError` | 401, code 20003 (Twilio answers a suspended account's REST calls as an authentication failure) |
//! | `ReEngagementRequired` | 400, code 131047 | not matched | not matched | not matched |
//! | `Undeliverable` | accepted (200), then a `failed` status with 131026 | accepted, then a permanent `Bounce` | accepted, dropped (no HTTP status exists for SNS SMS) | accepted (201), then `undelivered` with ErrorCode 30003 |
//! | `MessageRejected` | 400, code 131026 | 400 `MessageRejected` | 400 `InvalidParameter` | accepted (201), then `undelivered` with ErrorCode 30007 (filtered) |
//!
//! A rejected send is recorded with outcome `error:<code>` (e.g. `error:130429`,
//! `error:TooManyRequestsException`, `error:Throttling`, `error:20429`) and no
//! `provider_message_id`. An accepted send whose failure comes later is recorded as
//! `accepted:undeliverable` / `accepted:rejected` with its id. None of the rate-limit replies
//! carries `Retry-After`: none of the provider notes confirms that the provider sends it.
//!
//! # Status callbacks
//!
//! [`SimHandle::post_status_callbacks`] and `auto_callbacks` post provider-shaped, signed webhooks:
//! Meta `statuses[]` (sent/delivered/read/failed), SES events through an SNS Notification
//! (Sent→`Send`, Delivered→`Delivery`, Read→`Open`, Bounce→`Bounce`, Complaint→`Complaint`,
//! Failed→`Reject`), Twilio status forms (sent/delivered/read/failed). SNS SMS has no HTTP status
//! callback in real AWS (delivery status goes to CloudWatch Logs), so for SNS messages
//! `post_status_callbacks` returns an error saying so and `auto_callbacks` posts nothing.
//! A Meta status posted again for the same message carries the time of its first posting, as a
//! redelivery by Meta would. With `auto_callbacks` set, an accepted send gets: Meta sent→delivered→read; SES
//! Send→Delivery; Twilio sent→delivered; an `Undeliverable`/`MessageRejected` send gets
//! sent→failed (Meta), Send→Bounce (SES), sent→undelivered (Twilio).
//!
//! # Webhook retries
//!
//! Every webhook (status callbacks, inbound messages and events, SNS notifications) is retried
//! as its provider retries it. The first attempt is made while the caller waits, so
//! [`SimHandle::post_status_callbacks`], [`SimHandle::post_inbound`],
//! [`SimHandle::post_sns_notification`] and `POST /sim/callbacks` / `POST /sim/inbound` (502)
//! still report a receiver's refusal; the retries run in the background and are logged
//! (`GET /sim/webhooks`, [`SimHandle::pending_webhook_retries`]). Sources: docs/providers/*.md.
//!
//! | provider | a failed attempt | retries | a retry sends |
//! |---|---|---|---|
//! | Meta | anything but a 2xx, no connection, no answer in 10 s | always: after `meta_retry_base` (1 s), doubling, at most `meta_retry_max_delay` (30 s) apart, none starting later than `meta_retry_window` (1 h) after the first attempt (real Meta: "decreasing frequency … for up to 7 days") | the same bytes and signature (a status keeps the time of its first posting) |
//! | SNS (SES events, inbound mail, any notification) | 5xx, 1xx, 3xx, no connection, no answer in 15 s; **a 4xx is final** | per `sns_delivery_policy` (AWS's default: 3 retries, 20 s apart, linear), none later than 1 h after the first attempt (SNS's message lifetime) | the same notification: same `MessageId`, `Timestamp` and signature |
//! | Twilio | per the URL's connection overrides (`https://h/p?q#rc=5&rp=all&ct=2000`): `rp` = `4xx`, `5xx`, `ct` (no connection), `rt` (no answer; a dropped connection counts here), `all`, comma-separated | at once, up to `rc` times (0–5), each attempt limited by `ct` + `rt`, all within `tt` (≤ 15 s). Without a fragment Twilio's defaults apply: rc 1, rp ct, ct 5 s, rt 15 s, tt 15 s | the URL without the fragment (never sent, never signed), the same signature and `I-Twilio-Idempotency-Token` |
//! | SNS SMS | no HTTP callbacks exist | — | — |
//!
//! # Twilio message lookups
//!
//! Twilio keeps a Message resource for every message the sim accepted or received (`inbound`).
//! Its `status` is what the status callbacks advanced it to (`queued`, or `accepted` with a
//! Messaging Service, → `sent` → `delivered` / `undelivered` with `error_code`), whether or not
//! the callback got through; it never moves back. `date_sent` is null until `sent`. The list
//! filters by `To`, `From`, `DateSent`, `DateSent<`, `DateSent>` (a GMT date `YYYY-MM-DD`, on,
//! on or before, on or after; an RFC 3339 time is taken as the SDKs send it) — a message not
//! sent yet matches no `DateSent` filter — and is ordered newest first by `date_sent`, messages
//! not sent yet first (by `date_created`). Paging: `PageSize` (50, at most 1000), `Page`, and a
//! `PageToken` naming the previous page's last message, in Twilio's envelope (`messages`,
//! `first_page_uri`, `next_page_uri`, `previous_page_uri`, `uri`, `page`, `page_size`, `start`,
//! `end`). Basic auth as for sends; the ledger records `list_messages` and `fetch_message`.
//!
//! # Twilio voice calls
//!
//! [`SimHandle::place_call`] (`POST /sim/calls`) is a handset calling one of our Twilio numbers
//! (`twilio_voice.rs`; facts: docs/providers/twilio.md §4 and §7). Every request is form-encoded
//! and signed (`X-Twilio-Signature`) with `twilio_auth_token`, as all Twilio webhooks here.
//!
//! | step | request | params |
//! |---|---|---|
//! | the call rings | `POST {webhook_base}/api/webhooks/twilio/{webhook_id}/voice` (`webhook_id` defaults to `account_sid`) | `AccountSid`, `ApiVersion=2010-04-01`, `CallSid` (`CA` + 32 hex), `CallStatus=ringing`, `Direction=inbound`, `From`/`Caller`, `To`/`Called`, geo fields `FromCity/State/Zip/Country` … `CalledCountry` (country from the calling code, the rest empty) |
//! | the answer is a `<Dial action>` | `POST` (or `GET`, params after the action's own query, only the URL signed) to the action, resolved against the Voice URL, entities decoded, a connection-override fragment applied and stripped | the parent leg's params with `CallStatus=in-progress` (`completed` for a `canceled` dial: the caller hung up), `DialCallStatus` (the spec's `outcome`), `DialCallSid`, `DialCallDuration` (`dial_duration_secs` when bridged, else 0), `DialBridged` (`true` for `completed`/`answered`); repeated `repeat_action` more times, same bytes, signature and idempotency token |
//! | `status_callback: true`, the call is over | `POST {webhook_base}/api/webhooks/twilio/{webhook_id}/voice-status` | the parent leg's params with `CallStatus` `completed` (Twilio answered with TwiML, a dial included), `busy` (`<Reject reason="busy">` first) or `no-answer` (`<Reject>` first), `CallDuration`, `Duration` (billed minutes: at least 1 when answered, 0 when rejected), `Timestamp` (RFC 2822), `CallbackSource=call-progress-events`, `SequenceNumber=0` |
//!
//! The answer must be a 2xx with `text/xml` or `application/xml`; otherwise (another status, no
//! connection, another content type, not TwiML) the report's `answer` says why and the call
//! ends as Twilio's application error does (answered, `completed`). The TwiML subset acted on:
//! `<Response>` with `<Dial>` (`action`, `method`, `timeout` default 30; a `<Number>` child or
//! a bare number), `<Reject reason>`, `<Say>`, `<Pause length>`, `<Hangup>`; other verbs are
//! listed in `ignored_verbs` and skipped, as is a second `<Dial>`. Verbs after a `<Dial>` with an
//! `action` are unreachable; the action's own TwiML answer is acted on (no dialling), unless
//! the caller hung up (`canceled`). The modelled call length: `<Say>` at 150 words a minute,
//! `<Pause>` its length, a dial rings its `timeout` (`no-answer`), not at all (`busy`,
//! `failed`) or 5 s (at most the timeout) before it is picked up or canceled, then
//! `dial_duration_secs` of talk when bridged. The voice and action requests, retries
//! included (Twilio's default: one retry of a failed connection), are made while the caller
//! waits; the status callback is retried in the background as every webhook. All are in
//! `GET /sim/webhooks`. [`InboundSpec::TwilioMissedCall`] is the older raw shortcut: one
//! status-callback-shaped form posted to `…/{account_sid}/voice`.
//!
//! # Twilio opt-out (STOP) handling
//!
//! An inbound SMS or MMS posted through the sim ([`InboundSpec::Twilio`],
//! [`InboundSpec::TwilioMms`]) whose body is a single opt-out keyword (`STOP`, `STOPALL`,
//! `UNSUBSCRIBE`, `CANCEL`, `END`, `QUIT`, `REVOKE`, `OPTOUT`; any case, surrounding whitespace
//! ignored, "STOP PLEASE" does not count) blocks the pair (account, our number = its `To`,
//! handset = its `From`, numbers compared by digits); `START`, `YES` or `UNSTOP` lifts the block.
//! The keyword message is still posted to the webhook. While blocked, `create_message` from that
//! number to the handset (or, through a Messaging Service without `From`, from any of the
//! account's numbers) answers 400 with code 21610 "Attempt to send to unsubscribed recipient",
//! the reply of the `OptedOut` failure kind; the ledger records `error:21610` and no message is
//! created. WhatsApp addresses (`whatsapp:+…`) are outside this (it is SMS STOP filtering).
//! [`SimHandle::twilio_opt_outs`] / `GET /sim/twilio/opt-outs` list the blocks.
//!
//! # Meta registry
//!
//! The sim learns which WABA a phone number belongs to from the business token: a
//! `subscribed_apps` call ties its token to the WABA, and a `register` call with the same token
//! ties the phone number to it (in either order). Unknown ids get invented, stable values.
//! Status and inbound webhooks for a phone number go to its WABA's `override_callback_uri` if one
//! was set, else to `{webhook_base}/api/webhooks/meta`.
//!
//! # Calendar vendors
//!
//! OAuth (`oauth.rs`): there is no consent screen; `POST /sim/oauth/grants` (or
//! [`SimHandle::oauth_grant`]) hands out what the code exchange would. Access tokens live
//! `access_token_ttl`; Google keeps a refresh token until revoked, Jobber rotates it on every
//! refresh and kills the one presented (`invalid_grant` if it comes again). Jobber access
//! tokens are JWTs whose `exp` is their expiry.
//!
//! Google Calendar (`google_calendar.rs`, `google_store.rs`, `google_push.rs`): client-supplied
//! event ids (base32hex, 5–1024 characters; a repeat is 409 `duplicate`), deleted events kept
//! `cancelled` (a second delete is 410 `deleted`), full and incremental listings cut from one
//! change sequence, sync tokens that answer 410 `fullSyncRequired` once older than
//! `google_sync_token_ttl` or expired on command, and push channels that get `sync` (message 1)
//! and then `exists` on every change to the calendar's events, `not_exists` when the calendar is
//! deleted. Local times without an offset are refused (no time-zone database).
//!
//! Jobber (`jobber.rs`, `jobber_store.rs`, `jobber_webhooks.rs`): `clientCreate`,
//! `propertyCreate`, `jobCreate`, `visitCreate`, `visitEditSchedule`, `visitDelete` and the
//! `visit` query, arguments as variables, `X-JOBBER-GRAPHQL-VERSION` required, a query-cost
//! bucket (`jobber_cost`) reported in `extensions.cost` with `THROTTLED` when short, times in UTC
//! only, and `VISIT_CREATE`/`VISIT_UPDATE`/`VISIT_DESTROY` webhooks signed with the client
//! secret (`X-Jobber-Hmac-SHA256`) posted to `jobber_webhook_url` or
//! `{webhook_base}/api/webhooks/jobber`. Google notifications and Jobber webhooks are sent once
//! (no retries) and logged in `GET /sim/webhooks`.
//!
//! Failure rules with provider `google` (matched by calendar id) or `jobber`: `RateLimited`
//! (Google 429 `rateLimitExceeded`, Jobber HTTP 429), `ServerError` (500 `backendError` / 500),
//! `AuthFailed` (401), `Timeout`, and `LostAnswer`, which only these two understand: the request
//! is carried out and its answer held 30 s, so a client times out not knowing it succeeded.
//! Ledger entries: provider `google` with operations `events.insert`, `events.patch`, …,
//! `oauth.refresh`, recipient the calendar id, `provider_message_id` the event id; provider
//! `jobber` with the root field as operation (`visitCreate`, …, `oauth.refresh`), outcomes
//! `accepted`, `accepted:user_errors`, `accepted:answer_lost`, `error:THROTTLED`, `error:401`, ….
//! Notes with sources: docs/providers/google-calendar.md and docs/providers/jobber.md.
//!
//! # SES identities
//!
//! `GetEmailIdentity` answers `PENDING` (not verified) on the first read after
//! `CreateEmailIdentity` and `SUCCESS` (verified for sending) on every later read, so an adapter's
//! "poll until verified" loop terminates on its second poll.

mod callbacks;
mod control;
mod delivery;
mod failures;
mod google_calendar;
mod google_push;
mod google_store;
mod jobber;
mod jobber_store;
mod jobber_webhooks;
mod ledger;
mod media;
mod meta;
mod oauth;
mod retry;
mod ses;
mod signing;
mod sns;
mod twilio;
mod twilio_messages;
mod twilio_opt_outs;
mod twilio_voice;
mod twiml;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

pub use callbacks::{CallbackStatus, InboundSpec};
pub use delivery::WebhookAttempt;
pub use failures::{FailureKind, FailureRule};
pub use jobber::JobberCost;
pub use jobber_store::JobberVisit;
pub use ledger::LedgerEntry;
pub use media::media_bytes;
pub use oauth::{OAuthGrant, Vendor};
pub use retry::{SnsBackoff, SnsDeliveryPolicy};
pub use twilio_opt_outs::TwilioOptOut;
pub use twilio_voice::{CallReport, CallSpec, CallWebhook, DialOutcome};

/// How the simulator behaves; see the field comments.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where signed callbacks and inbound webhooks go by default, e.g. `http://127.0.0.1:8080`.
    pub webhook_base: Option<String>,
    /// Signs Meta webhooks (`X-Hub-Signature-256`).
    pub meta_app_secret: String,
    /// Signs Twilio webhooks (`X-Twilio-Signature`) and is the password Twilio's Basic auth must carry.
    pub twilio_auth_token: String,
    /// 1 (SHA1withRSA) or 2 (SHA256withRSA).
    pub sns_signature_version: u8,
    /// If set, every accepted send is followed by status callbacks spaced by this delay.
    pub auto_callbacks: Option<Duration>,
    /// Used in SNS TopicArns and SES event fields.
    pub aws_region: String,
    /// Meta: the wait before the first redelivery of a failed webhook; it doubles each time.
    pub meta_retry_base: Duration,
    /// Meta: the longest wait between redeliveries.
    pub meta_retry_max_delay: Duration,
    /// Meta: no redelivery starts later than this after the first attempt (real Meta: 7 days).
    pub meta_retry_window: Duration,
    /// SNS (SES events, inbound mail, any notification): the topic's HTTP/S delivery policy.
    pub sns_delivery_policy: SnsDeliveryPolicy,
    /// Google OAuth client: what the token endpoint expects.
    pub google_client_id: String,
    pub google_client_secret: String,
    /// Jobber OAuth client; the secret also signs Jobber webhooks.
    pub jobber_client_id: String,
    pub jobber_client_secret: String,
    /// How long Google and Jobber access tokens live (both: 1 hour).
    pub access_token_ttl: Duration,
    /// Google: a sync token older than this answers 410 `fullSyncRequired` (Google states no
    /// horizon; tokens can also be expired on command).
    pub google_sync_token_ttl: Duration,
    /// Google: the longest a push channel lives, and the lifetime of one that asks for none.
    pub google_channel_ttl: Duration,
    /// Jobber: the query-cost budget.
    pub jobber_cost: JobberCost,
    /// Jobber: where webhooks go (default `{webhook_base}/api/webhooks/jobber`).
    pub jobber_webhook_url: Option<String>,
}

impl SimConfig {
    /// The topic the sim publishes SES sending events on (a configuration set's SNS destination).
    pub fn ses_events_topic_arn(&self) -> String {
        sns::topic_arn(&self.aws_region, sns::SES_EVENTS_TOPIC)
    }

    /// The topic the sim publishes inbound mail on (a receipt rule's SNS action).
    pub fn ses_inbound_topic_arn(&self) -> String {
        sns::topic_arn(&self.aws_region, sns::SES_INBOUND_TOPIC)
    }

    /// Both topics: what a receiver configured for this sim expects notifications from.
    pub fn sns_topic_arns(&self) -> Vec<String> {
        vec![self.ses_events_topic_arn(), self.ses_inbound_topic_arn()]
    }

    pub(crate) fn meta_schedule(&self) -> retry::MetaSchedule {
        retry::MetaSchedule {
            base: self.meta_retry_base,
            max_delay: self.meta_retry_max_delay,
            window: self.meta_retry_window,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            webhook_base: None,
            meta_app_secret: "sim-meta-app-secret".to_owned(),
            twilio_auth_token: "sim-twilio-auth-token".to_owned(),
            sns_signature_version: 1,
            auto_callbacks: None,
            aws_region: "eu-central-1".to_owned(),
            meta_retry_base: Duration::from_secs(1),
            meta_retry_max_delay: Duration::from_secs(30),
            meta_retry_window: Duration::from_secs(3600),
            sns_delivery_policy: SnsDeliveryPolicy::default(),
            google_client_id: "sim-google-client-id.apps.googleusercontent.com".to_owned(),
            google_client_secret: "sim-google-client-secret".to_owned(),
            jobber_client_id: "sim-jobber-client-id".to_owned(),
            jobber_client_secret: "sim-jobber-client-secret".to_owned(),
            access_token_ttl: Duration::from_secs(3600),
            google_sync_token_ttl: Duration::from_secs(7 * 24 * 3600),
            google_channel_ttl: Duration::from_secs(7 * 24 * 3600),
            jobber_cost: JobberCost::default(),
            jobber_webhook_url: None,
        }
    }
}

/// Namespace for starting the simulator.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `127.0.0.1:0` and serves in a tokio task for the life of the runtime.
    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves in a tokio task; the handle's base URL names the bound port.
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> anyhow::Result<SimHandle> {
        let (router, handle) = Self::router(config)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        handle.set_base_url(&format!("http://{local}"));
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "cpaas-sim server stopped");
            }
        });
        Ok(handle)
    }

    /// The router, to embed in another server. The handle's `base_url()` is `""` until
    /// [`SimHandle::set_base_url`] is called with the address the router is served on. Only the
    /// SNS notifications depend on it (their `SigningCertURL` and `UnsubscribeURL` are built from
    /// it), so set it before asking for SES events or inbound mail.
    pub fn router(config: SimConfig) -> anyhow::Result<(axum::Router, SimHandle)> {
        anyhow::ensure!(matches!(config.sns_signature_version, 1 | 2), "sns_signature_version must be 1 or 2");
        // A zero base would redeliver a failing Meta webhook in a tight loop for the whole window.
        anyhow::ensure!(!config.meta_retry_base.is_zero(), "meta_retry_base must be above zero");
        // AWS caps a delivery policy at 100 retries.
        anyhow::ensure!(
            config.sns_delivery_policy.num_retries <= 100,
            "sns_delivery_policy allows at most 100 retries"
        );
        let state = Arc::new(SimState::new(config)?);
        let router = axum::Router::new()
            .merge(control::routes())
            .merge(ses::routes())
            .merge(twilio::routes())
            .merge(sns::routes())
            .merge(meta::routes())
            .merge(media::routes())
            .merge(oauth::routes())
            .merge(google_calendar::routes())
            .merge(google_push::routes())
            .merge(jobber::routes())
            .merge(jobber_webhooks::routes())
            .with_state(state.clone());
        Ok((router, SimHandle { state }))
    }
}

/// A handle on a running (or embedded) simulator; cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    state: Arc<SimState>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle").field("base_url", &self.base_url()).finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (empty for an embedded router until set).
    pub fn base_url(&self) -> String {
        self.state.base_url()
    }

    /// Tells an embedded simulator where it is served.
    pub fn set_base_url(&self, base_url: &str) {
        let mut guard = self.state.base_url.write().unwrap_or_else(|e| e.into_inner());
        *guard = base_url.trim_end_matches('/').to_owned();
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state.ledger().entries()
    }

    /// Forgets the recorded requests. Sent messages stay known, so callbacks still work.
    pub fn clear_ledger(&self) {
        self.state.ledger().clear_entries();
    }

    pub fn add_failure(&self, rule: FailureRule) {
        self.state.failures().push(rule);
    }

    pub fn clear_failures(&self) {
        self.state.failures().clear();
    }

    pub fn sns_certificate_pem(&self) -> String {
        self.state.signer.certificate_pem().to_owned()
    }

    pub fn sns_signing_cert_url(&self) -> String {
        self.state.sns_signing_cert_url()
    }

    /// Every attempt at delivering a webhook so far, retries included.
    pub fn webhook_log(&self) -> Vec<WebhookAttempt> {
        self.state.webhooks().entries()
    }

    /// Forgets the logged attempts; retries already scheduled still happen (and are logged).
    pub fn clear_webhook_log(&self) {
        self.state.webhooks().clear();
    }

    /// How many webhooks still have a retry to come.
    pub fn pending_webhook_retries(&self) -> usize {
        self.state.webhooks().pending()
    }

    /// Posts signed, provider-shaped status callbacks, in order, for a message the sim accepted.
    /// Stops at the first webhook whose first attempt fails and returns that error; the failed
    /// webhook is still retried in the background as its provider would (see the crate docs).
    pub async fn post_status_callbacks(
        &self,
        provider_message_id: &str,
        statuses: &[CallbackStatus],
    ) -> anyhow::Result<()> {
        callbacks::post_status_callbacks(&self.state, provider_message_id, statuses).await
    }

    /// Posts a signed inbound message or event webhook; errors and retries as
    /// [`SimHandle::post_status_callbacks`].
    pub async fn post_inbound(&self, inbound: InboundSpec) -> anyhow::Result<()> {
        callbacks::post_inbound(&self.state, inbound).await
    }

    /// Places a simulated call to one of our Twilio numbers and plays it out as the TwiML our
    /// service answers directs (see the crate docs, "Twilio voice calls"). Errors only when the
    /// call cannot be placed (no `webhook_base`, `repeat_action` above 10); what the service
    /// answered, refusals included, is in the report.
    pub async fn place_call(&self, spec: CallSpec) -> anyhow::Result<CallReport> {
        twilio_voice::place_call(&self.state, spec).await
    }

    /// The reports of the calls placed so far, oldest first.
    pub fn calls(&self) -> Vec<CallReport> {
        self.state.calls().clone()
    }

    pub fn clear_calls(&self) {
        self.state.calls().clear();
    }

    /// The handsets that texted an opt-out keyword to one of our Twilio numbers and have not
    /// opted in again: sends from that number to them answer 21610.
    pub fn twilio_opt_outs(&self) -> Vec<TwilioOptOut> {
        self.state.twilio_opt_outs().list()
    }

    /// Forgets every opt-out, as if each handset had texted START.
    pub fn clear_twilio_opt_outs(&self) {
        self.state.twilio_opt_outs().clear();
    }

    /// The SES event record (the SNS `Message`) the sim would publish for `status` of a mail it
    /// accepted, to inspect or alter before [`SimHandle::post_sns_notification`].
    pub fn ses_event_record(
        &self,
        provider_message_id: &str,
        status: CallbackStatus,
    ) -> anyhow::Result<serde_json::Value> {
        callbacks::ses_event_record(&self.state, provider_message_id, status)
    }

    /// Posts a correctly signed SNS notification carrying `message` (any text) on any topic
    /// `arn`, as AWS would for whoever owns that topic; errors and retries as
    /// [`SimHandle::post_status_callbacks`].
    pub async fn post_sns_notification(&self, arn: &str, message: &str) -> anyhow::Result<()> {
        callbacks::post_sns(&self.state, arn, message).await
    }

    /// A new OAuth grant for `vendor`: what the authorization-code exchange would have given.
    pub fn oauth_grant(&self, vendor: Vendor) -> OAuthGrant {
        oauth::grant(&self.state, vendor)
    }

    /// Makes every access token of `vendor` expired; refresh tokens keep working.
    pub fn expire_access_tokens(&self, vendor: Vendor) {
        self.state.tokens().expire_access(vendor);
    }

    /// Kills every token of `vendor`, as the user revoking the app's access would.
    pub fn revoke_tokens(&self, vendor: Vendor) {
        self.state.tokens().revoke(vendor);
    }

    /// The calendar's user adds an event of their own (a Google event resource; `id` optional).
    /// Push channels on the calendar hear of it. Errors with Google's error body.
    pub fn google_add_event(&self, calendar_id: &str, event: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        google_push::add_event(&self.state, calendar_id, event)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.reason, e.message))
    }

    /// The calendar's user edits one of the calendar's events.
    pub fn google_edit_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        patch: &serde_json::Value,
    ) -> anyhow::Result<()> {
        google_push::edit_event_as_user(&self.state, calendar_id, event_id, patch)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{}: {}", e.reason, e.message))
    }

    /// The calendar's user deletes one of the calendar's events (it stays, `cancelled`).
    pub fn google_delete_event(&self, calendar_id: &str, event_id: &str) -> anyhow::Result<()> {
        google_push::delete_event_as_user(&self.state, calendar_id, event_id)
            .map_err(|e| anyhow::anyhow!("{}: {}", e.reason, e.message))
    }

    /// Every event of a calendar as Google stores it, cancelled ones included.
    pub fn google_events(&self, calendar_id: &str) -> Vec<serde_json::Value> {
        self.state.google().events(calendar_id)
    }

    /// Makes the calendar's sync tokens invalid: the next incremental sync answers 410.
    pub fn google_expire_sync_tokens(&self, calendar_id: &str) {
        self.state.google().expire_sync_tokens(calendar_id);
    }

    /// Ids of the live push channels.
    pub fn google_channel_ids(&self) -> Vec<String> {
        self.state.google().channels().into_iter().map(|c| c.id).collect()
    }

    /// The visits Jobber has.
    pub fn jobber_visits(&self) -> Vec<JobberVisit> {
        self.state.jobber().visits()
    }

    /// How many clients and jobs Jobber has.
    pub fn jobber_counts(&self) -> (usize, usize) {
        self.state.jobber().counts()
    }

    /// Posts a signed Jobber webhook for any topic and item id; errors with the receiver's refusal.
    pub async fn post_jobber_webhook(&self, topic: &str, item_id: &str) -> anyhow::Result<()> {
        jobber_webhooks::post(&self.state, topic, item_id).await
    }
}

/// Everything the handlers share.
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    base_url: RwLock<String>,
    ledger: Mutex<ledger::Ledger>,
    failures: Mutex<Vec<FailureRule>>,
    meta: Mutex<meta::Registry>,
    media: Mutex<media::Store>,
    ses_identities: Mutex<HashMap<String, ses::Identity>>,
    sns_opted_out: Mutex<HashSet<String>>,
    /// When each (message, status) happened, in Unix seconds: fixed at its first callback.
    status_times: Mutex<HashMap<(String, String), i64>>,
    twilio_messages: Mutex<twilio_messages::Store>,
    twilio_opt_outs: Mutex<twilio_opt_outs::OptOuts>,
    calls: Mutex<Vec<CallReport>>,
    webhooks: Mutex<delivery::WebhookLog>,
    clients: Mutex<delivery::Clients>,
    tokens: Mutex<oauth::Tokens>,
    google: Mutex<google_store::GoogleStore>,
    jobber: Mutex<jobber_store::JobberStore>,
    jobber_bucket: Mutex<jobber::CostBucket>,
    pub(crate) signer: signing::SnsSigner,
    pub(crate) http: reqwest::Client,
}

impl SimState {
    fn new(config: SimConfig) -> anyhow::Result<Self> {
        Ok(Self {
            jobber_bucket: Mutex::new(jobber::CostBucket::full(config.jobber_cost)),
            config,
            base_url: RwLock::new(String::new()),
            ledger: Mutex::default(),
            failures: Mutex::default(),
            meta: Mutex::default(),
            media: Mutex::default(),
            ses_identities: Mutex::default(),
            sns_opted_out: Mutex::default(),
            status_times: Mutex::default(),
            twilio_messages: Mutex::default(),
            twilio_opt_outs: Mutex::default(),
            calls: Mutex::default(),
            webhooks: Mutex::default(),
            clients: Mutex::default(),
            tokens: Mutex::default(),
            google: Mutex::default(),
            jobber: Mutex::default(),
            signer: signing::SnsSigner::generate()?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        })
    }

    pub(crate) fn base_url(&self) -> String {
        self.base_url.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn sns_signing_cert_url(&self) -> String {
        format!("{}/sim/sns/cert.pem", self.base_url())
    }

    /// The default webhook base without a trailing slash, or an error naming what is missing.
    pub(crate) fn webhook_base(&self) -> anyhow::Result<String> {
        self.config
            .webhook_base
            .as_deref()
            .map(|b| b.trim_end_matches('/').to_owned())
            .ok_or_else(|| anyhow::anyhow!("SimConfig.webhook_base is not set, so there is nowhere to post"))
    }

    // A poisoned lock only means a handler panicked mid-update; the data is still usable for a
    // simulator, so recover it rather than cascade panics into every later request.
    pub(crate) fn ledger(&self) -> MutexGuard<'_, ledger::Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn failures(&self) -> MutexGuard<'_, Vec<FailureRule>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn meta(&self) -> MutexGuard<'_, meta::Registry> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn media(&self) -> MutexGuard<'_, media::Store> {
        self.media.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn ses_identities(&self) -> MutexGuard<'_, HashMap<String, ses::Identity>> {
        self.ses_identities.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn sns_opted_out(&self) -> MutexGuard<'_, HashSet<String>> {
        self.sns_opted_out.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn twilio_messages(&self) -> MutexGuard<'_, twilio_messages::Store> {
        self.twilio_messages.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn twilio_opt_outs(&self) -> MutexGuard<'_, twilio_opt_outs::OptOuts> {
        self.twilio_opt_outs.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn calls(&self) -> MutexGuard<'_, Vec<CallReport>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn webhooks(&self) -> MutexGuard<'_, delivery::WebhookLog> {
        self.webhooks.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn clients(&self) -> MutexGuard<'_, delivery::Clients> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn tokens(&self) -> MutexGuard<'_, oauth::Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn google(&self) -> MutexGuard<'_, google_store::GoogleStore> {
        self.google.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn jobber(&self) -> MutexGuard<'_, jobber_store::JobberStore> {
        self.jobber.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn jobber_bucket(&self) -> MutexGuard<'_, jobber::CostBucket> {
        self.jobber_bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The time `status` of message `id` happened: now on its first callback, the same after.
    pub(crate) fn status_time(&self, id: &str, status: &str) -> i64 {
        let mut times = self.status_times.lock().unwrap_or_else(|e| e.into_inner());
        *times.entry((id.to_owned(), status.to_owned())).or_insert_with(|| chrono::Utc::now().timestamp())
    }
}

/// How long a `Timeout` failure holds the response: longer than any sane client timeout.
pub(crate) const TIMEOUT_HOLD: Duration = Duration::from_secs(30);

/// Random-looking hex, from UUIDv4 bytes (the crate has no `rand` dependency).
pub(crate) fn random_hex(len: usize) -> String {
    let mut out = String::new();
    while out.len() < len {
        out.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    out.truncate(len);
    out
}
