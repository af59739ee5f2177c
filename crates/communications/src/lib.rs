//! Communications: the omnichannel inbox and the notification pipeline.
//!
//! Belongs here: channel accounts and their encrypted provider configuration, contacts and
//! their identifiers, conversations (claim, snooze, resolve, read cursors), messages and their
//! append-only event trail, templates, trigger rules, the dispatch jobs and their workers, and
//! the handling of provider webhooks once `cpaas` has verified and parsed them.
//! Owns the Postgres schema `communications`.
//!
//! Must not be here: SQL against any other schema (`fulfillment`, `identity`, …), provider wire
//! formats (those live in `cpaas`), or a dependency on the `fulfillment` crate: the two modules
//! meet only through narrow traits in `kernel`, wired together in the server.

pub mod channels;
pub mod compliance;
pub mod contacts;
pub mod dialogue;
pub mod dispatch;
pub mod inbox;
pub mod messages;
pub mod policy;
pub mod queues;
pub mod rate_limit;
pub mod templates;
pub mod tracking;
pub mod triggers;
pub mod voice;
pub mod webchat;
pub mod webhooks;

use std::sync::{Arc, OnceLock};

use channels::endpoints::ProviderEndpoints;
use kernel::crypto::Keyring;
use kernel::error::ApiError;

/// The module's handle: pool, master keys and provider endpoints, cheap to clone.
#[derive(Debug, Clone)]
pub struct Communications {
    pub pool: sqlx::PgPool,
    /// The batch pool ([`Communications::batch_pool`]) and its connections kept between the
    /// hottest batches — acceptance, the slot and mark, the sent-record — sparing each use
    /// sqlx's check on release (`kernel::kept`).
    pub kept: kernel::kept::KeptConnections,
    pub keyring: Arc<Keyring>,
    pub endpoints: Arc<ProviderEndpoints>,
    /// For provider calls made with reqwest (Meta, Twilio).
    pub http: reqwest::Client,
    /// Verifies SNS notifications (SES events); holds the signing-certificate cache.
    pub sns: Arc<cpaas::webhooks::sns::SnsVerifier>,
    /// Wakes dispatch workers after jobs are committed.
    pub queue_waker: messages::queue::QueueWaker,
    /// How failed sends are retried, at send time and when a provider reports a failure later.
    pub retry: dispatch::RetryPolicy,
    /// Who the tenants' agents are (assigning a conversation checks); `None`: nobody can be
    /// assigned by an admin.
    pub agents: Option<Arc<dyn kernel::directory::AgentDirectory>>,
    /// This process's feed of inbox changes for the live streams; writers signal it after commits.
    pub feed: inbox::stream::ChangeFeed,
    /// Fulfillment's slots, holds and bookings for the SMS dialogue (the server wires it);
    /// `None`: missed calls get no proposals and dialogues go to a human.
    pub booker: Option<Arc<dyn kernel::scheduling::SlotBooker>>,
    /// The providers' send rates: bulk messages reserve their slots when accepted.
    pub rates: rate_limit::RateDefaults,
    /// Wakes this process's dialogue worker after a turn is committed.
    pub dialogue_wake: Arc<tokio::sync::Notify>,
    /// Stores accepted messages in shared transactions; started on first use.
    acceptor: Arc<OnceLock<Acceptor>>,
    /// Stores processed events and their messages in shared transactions; started on first use.
    ingester: Arc<OnceLock<Ingester>>,
    /// Stores verified webhook envelopes in shared transactions; started on first use.
    pub(crate) recorder: Arc<OnceLock<tracking::batch::Recorder>>,
    /// This process's dispatcher for the messages it accepts, while its lanes run.
    pub(crate) local: dispatch::local::LocalSlot,
    /// Trigger rules by (tenant, event) for a second; voided by rule writes here.
    pub(crate) rule_cache: Arc<RuleCache>,
    /// Channel accounts and providers for sending, voided when they change (`dispatch/configs.rs`).
    pub(crate) sending_configs: Arc<dispatch::configs::SendingConfigs>,
    /// Templates by (tenant, name) for a second; voided by template writes here.
    pub(crate) template_cache: Arc<TemplateCache>,
    /// The auth tokens Twilio signs each tenant's webhooks with, voided when channels change.
    pub(crate) webhook_tokens: Arc<kernel::cache::Notified<uuid::Uuid, Arc<[String]>>>,
}

// What turning an event or a templated request into messages reads on every request, kept for a
// second (the cache's default TTL): without it the event path spent three round trips per message
// on reads whose answer changes a few times a day. Writes here void them at once; another
// process's write is seen within the second.
type RuleCache = kernel::cache::Cache<(uuid::Uuid, String), Arc<Vec<triggers::rules::TriggerRule>>>;
type TemplateCache = kernel::cache::Cache<(uuid::Uuid, String), Option<Arc<templates::service::TemplateRecord>>>;

type Acceptor = kernel::batch::Batcher<messages::accept::Submission, Result<messages::accept::Answer, ApiError>>;

type Ingester =
    kernel::batch::Batcher<triggers::ingest::PlannedEvent, Result<triggers::ingest::EventOutcome, ApiError>>;

/// Most messages stored in one transaction.
const MAX_ACCEPT_BATCH: usize = 128;
/// Transactions storing accepted messages at once: one, the classic group commit — requests
/// that arrive while a batch commits wait for it and then go together. With two, the second
/// batch started beside the first, each holding half the requests: at 800 messages/s that cost
/// PostgreSQL 15-20 % more per message (acceptance statements of 3.5 messages instead of 4.6),
/// events alike. The price is the wait: a request reaches its statement up to one commit later.
const ACCEPT_BATCHES_IN_FLIGHT: usize = 1;
/// ... except under saturation: while the batch started last holds this many requests or more,
/// the next may start beside it (`kernel::batch`). At 800/s batches hold 5-8 on average; flat
/// out with 64 clients they hold about 35, and there the overlap sent 5 % more messages per
/// second by the medians of six rounds (sends, keyed sends and events alike; "Dispatcher
/// efficiency" in docs/architecture.md).
const ACCEPT_OVERLAP_FROM: usize = 16;
/// Group commit for acceptance (`kernel::batch`): while requests arrive steadily (batches
/// starting within 10 ms of each other, 100/s and up), a batch waits up to 4 ms for company.
/// A batch costs about as much as one message: two statements (a slot-and-mark statement in
/// dispatch too, before that was folded into the second), every one a wake-up of PostgreSQL
/// and of the service. Against a
/// 2 ms wait, a run at 800/s (12,000 messages after 2,000 warm-up) had 6.5 messages per batch
/// instead of 4.4 and 0.54 statements per message instead of 0.80; and
/// 4 ms cost the whole machine 6-21 % less per message at 800/s (sends, keyed sends
/// and events alike), for 1-2 ms more before the API answers; flat out, 64 clients sent as
/// many. A closed group of clients that all sit in one batch is no longer kept waiting for
/// nobody: a batch that company came to densely stops waiting once it stops coming
/// (`kernel::batch`), which 64 clients flat out turned into 8-24 % more messages per second.
/// Two earlier rules for that (a fixed gap, the last cycle's rate) gave up the gain at 800/s
/// ("Dispatcher efficiency" in docs/architecture.md).
const ACCEPT_LINGER: kernel::batch::Linger = kernel::batch::Linger {
    wait: std::time::Duration::from_millis(4),
    steady_within: std::time::Duration::from_millis(10),
};

impl Communications {
    /// With the providers' public endpoints; see [`Communications::with_endpoints`].
    pub fn new(pool: sqlx::PgPool, keyring: Arc<Keyring>) -> Self {
        let endpoints = ProviderEndpoints::default();
        let sns = Arc::new(sns_verifier(&endpoints));
        let queue_waker = messages::queue::QueueWaker::new(pool.clone());
        Self {
            kept: kernel::kept::KeptConnections::new(pool.clone()),
            pool,
            keyring,
            endpoints: Arc::new(endpoints),
            http: reqwest::Client::new(),
            sns,
            queue_waker,
            retry: dispatch::RetryPolicy::default(),
            feed: inbox::stream::ChangeFeed::default(),
            agents: None,
            booker: None,
            rates: rate_limit::RateDefaults::default(),
            dialogue_wake: Arc::default(),
            acceptor: Arc::default(),
            ingester: Arc::default(),
            recorder: Arc::default(),
            local: Arc::default(),
            rule_cache: Arc::default(),
            sending_configs: Arc::default(),
            template_cache: Arc::default(),
            webhook_tokens: Arc::new(dispatch::configs::notified()),
        }
    }

    /// Where the batch statements run. The server gives them connections on which PostgreSQL
    /// keeps each statement's generic plan (`plan_cache_mode = force_generic_plan`): they look
    /// rows up by key over arrays of ids, so the best plan does not depend on the batch, but
    /// with the default setting PostgreSQL planned some of them again on every call, because a
    /// plan for one id looks ten times cheaper than the generic plan's ten. The sent-record
    /// spent more time being planned than running. The API's other queries (listings, search)
    /// keep the default, where a plan for the filter at hand matters.
    pub fn with_batch_pool(mut self, pool: sqlx::PgPool) -> Self {
        self.kept = kernel::kept::KeptConnections::new(pool);
        self
    }

    /// Connections for the hot path's batch statements — acceptance, events, the dispatcher's
    /// claims, slots, marks and sent-records — which keep one plan each (`with_batch_pool`);
    /// the same pool as `pool` unless the server gives it one.
    pub fn batch_pool(&self) -> &sqlx::PgPool {
        self.kept.pool()
    }

    pub fn with_booker(mut self, booker: Arc<dyn kernel::scheduling::SlotBooker>) -> Self {
        self.booker = Some(booker);
        self
    }

    pub fn with_agents(mut self, agents: Arc<dyn kernel::directory::AgentDirectory>) -> Self {
        self.agents = Some(agents);
        self
    }

    /// The providers' send rates (the dispatcher's too): set before the first message.
    pub fn with_rates(mut self, rates: rate_limit::RateDefaults) -> Self {
        self.rates = rates;
        self
    }

    pub fn with_retry(mut self, retry: dispatch::RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The batcher the send API stores its messages through (started here on first use: it
    /// needs a Tokio runtime).
    pub(crate) fn acceptor(&self) -> &Acceptor {
        self.acceptor.get_or_init(|| {
            let (pool, rates, local) = (self.kept.clone(), self.rates.clone(), self.local.clone());
            let linger = Some(ACCEPT_LINGER);
            kernel::batch::Batcher::spawn_overlapping(
                MAX_ACCEPT_BATCH,
                ACCEPT_BATCHES_IN_FLIGHT,
                linger,
                Some(ACCEPT_OVERLAP_FROM),
                move |submissions| {
                    let (pool, rates, local) = (pool.clone(), rates.clone(), local.clone());
                    async move { messages::accept::accept_batch(&pool, &rates, &local, submissions).await }
                },
            )
        })
    }

    /// The batcher events are stored through, like [`Communications::acceptor`].
    pub(crate) fn ingester(&self) -> &Ingester {
        self.ingester.get_or_init(|| {
            let (pool, rates, waker, local) =
                (self.kept.clone(), self.rates.clone(), self.queue_waker.clone(), self.local.clone());
            let linger = Some(ACCEPT_LINGER);
            let overlap = Some(ACCEPT_OVERLAP_FROM);
            kernel::batch::Batcher::spawn_overlapping(
                MAX_ACCEPT_BATCH,
                ACCEPT_BATCHES_IN_FLIGHT,
                linger,
                overlap,
                move |events| {
                    let (pool, rates, waker, local) = (pool.clone(), rates.clone(), waker.clone(), local.clone());
                    async move { triggers::ingest::ingest_batch(&pool, &rates, &waker, &local, events).await }
                },
            )
        })
    }

    pub fn with_endpoints(mut self, endpoints: ProviderEndpoints) -> Self {
        self.http = reqwest::Client::builder()
            .timeout(endpoints.request_timeout)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        self.sns = Arc::new(sns_verifier(&endpoints));
        self.endpoints = Arc::new(endpoints);
        self
    }
}

fn sns_verifier(endpoints: &ProviderEndpoints) -> cpaas::webhooks::sns::SnsVerifier {
    cpaas::webhooks::sns::SnsVerifier::new(endpoints.sns_trust()).unwrap_or_else(|error| {
        // Only pinned certificates can fail here, and we pin none.
        tracing::error!(%error, "SNS trust policy refused; trusting AWS hosts only");
        cpaas::webhooks::sns::SnsVerifier::new(cpaas::webhooks::sns::SnsTrust::aws())
            .expect("the AWS trust policy has no pinned certificates")
    })
}
