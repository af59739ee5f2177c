//! Natural batching: many concurrent callers share one statement and one commit.
//!
//! A caller (an API request authenticating or accepting a message, a dispatch job) hands its request to a
//! [`Batcher`] and waits for its answer. The batcher runs at most `in_flight` batches at once;
//! whatever arrived while those ran becomes the next batch (up to `max_batch`). So an idle
//! service answers a lone request at once — no timer, no added latency — and a busy one spends
//! one round trip and one commit on many requests instead of one each. That is where the time
//! went: a handful of statements per message, each a round trip and (for writes) a WAL flush, on
//! a database that shares the machine's two cores with the service.
//!
//! At everyday rates that is not enough: batches finish before the next request arrives, so
//! each holds one or two, and a message costs five times its share under saturation. A batcher
//! may therefore *linger* (group commit): while traffic is steady — batches starting within
//! [`Linger::steady_within`] of each other — a batch's first request waits up to
//! [`Linger::wait`] for company. A request after a quieter spell still goes at once.
//!
//! A batch that company came to densely stops waiting once it stops coming: with at least
//! [`DENSE`] requests, a pause of [`GAP_FACTOR`] times their mean spacing (at least [`MIN_GAP`])
//! ends the wait. That is a closed group of clients — a load driver, a campaign's senders, an
//! integration with fixed concurrency — all of whom are already in the batch and wait for its
//! answer before they send again: nobody else is coming, and lingering on would only idle the
//! group. At everyday rates requests come a millisecond or more apart, the pause it would take is
//! longer than the wait, and the wait is unchanged.
//!
//! A batcher may also *overlap* under saturation: while the batch started last holds at least
//! `overlap_from` requests, one more batch may start beside the `in_flight` ones. At everyday
//! rates a second batch in flight only splits the requests of one commit in two (each statement
//! and commit then serves half as many), but a batch that large means the requests of one commit
//! fill it, and the next one can form and run its statements while the last one waits for its
//! flush instead of after its answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};

type Pending<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// How long a batch waits for company while traffic is steady (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// The longest a batch's first request waits for more (the timer's resolution is a
    /// millisecond).
    pub wait: Duration,
    /// Traffic counts as steady while batches start within this of each other.
    pub steady_within: Duration,
}

/// A lingering batch this large may stop waiting before its time (see the module's notes).
pub const DENSE: usize = 8;
/// The pause, in mean spacings of the batch's arrivals so far, that ends its wait.
pub const GAP_FACTOR: u32 = 4;
/// The shortest pause that ends a wait: a client's turnaround on a busy machine.
pub const MIN_GAP: Duration = Duration::from_micros(500);

/// Collects requests from concurrent callers into batches for `run`.
pub struct Batcher<Req, Resp> {
    sender: mpsc::UnboundedSender<Pending<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone() }
    }
}

impl<Req, Resp> std::fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the batching task (on the current Tokio runtime). `run` answers a batch with one
    /// response per request, in order. The task ends when the last clone is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        Self::spawn_lingering(max_batch, in_flight, None, run)
    }

    /// [`Batcher::spawn`], lingering for company as `linger` says while traffic is steady.
    pub fn spawn_lingering<F, Fut>(max_batch: usize, in_flight: usize, linger: Option<Linger>, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        Self::spawn_overlapping(max_batch, in_flight, linger, None, run)
    }

    /// [`Batcher::spawn_lingering`], and while the batch started last holds at least
    /// `overlap_from` requests, one more batch may run beside the `in_flight` ones (see the
    /// module's notes).
    pub fn spawn_overlapping<F, Fut>(
        max_batch: usize,
        in_flight: usize,
        linger: Option<Linger>,
        overlap_from: Option<usize>,
        run: F,
    ) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Pending<Req, Resp>>();
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        let overlap = Arc::new(Semaphore::new(usize::from(overlap_from.is_some())));
        let run = Arc::new(run);
        tokio::spawn(async move {
            let mut previous_start: Option<tokio::time::Instant> = None;
            let mut previous_len = 0;
            loop {
                let permit = if overlap_from.is_some_and(|from| previous_len >= from) {
                    tokio::select! {
                        biased;
                        permit = permits.clone().acquire_owned() => permit,
                        permit = overlap.clone().acquire_owned() => permit,
                    }
                } else {
                    permits.clone().acquire_owned().await
                };
                let Ok(permit) = permit else { return };
                let Some(first) = receiver.recv().await else { return };
                let started = tokio::time::Instant::now();
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                let steady = |linger: &Linger| previous_start.is_some_and(|at| started - at < linger.steady_within);
                if let Some(linger) = linger.filter(steady) {
                    let deadline = started + linger.wait;
                    let (mut arrivals, mut last) = (0u32, started);
                    while batch.len() < max_batch {
                        let until = if batch.len() >= DENSE {
                            // Requests already queued when the batch began came together.
                            let spacing = (last - started).checked_div(arrivals).unwrap_or_default();
                            deadline.min(last + (spacing * GAP_FACTOR).max(MIN_GAP))
                        } else {
                            deadline
                        };
                        match tokio::time::timeout_at(until, receiver.recv()).await {
                            Ok(Some(pending)) => {
                                batch.push(pending);
                                arrivals += 1;
                                last = tokio::time::Instant::now();
                            }
                            // Out of time, or no callers left: this batch goes as it is.
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                previous_start = Some(started);
                previous_len = batch.len();
                let run = run.clone();
                tokio::spawn(async move {
                    let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = batch.into_iter().unzip();
                    let responses = run(requests).await;
                    // A caller that gave up (shutdown) just does not hear back.
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(response);
                    }
                    drop(permit);
                });
            }
        });
        Self { sender }
    }

    /// Submits `request` and waits for its batch; `None` if the batching task is gone (the
    /// runtime shutting down, or `run` panicked).
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (reply, response) = oneshot::channel();
        self.sender.send((request, reply)).ok()?;
        response.await.ok()
    }

    /// Submits `requests` together, so that they share a batch (up to `max_batch`) rather than
    /// race each other into several, and waits for their answers, in order.
    pub async fn call_many(&self, requests: Vec<Req>) -> Vec<Option<Resp>> {
        let waiting: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let (reply, response) = oneshot::channel();
                self.sender.send((request, reply)).ok().map(|()| response)
            })
            .collect();
        let mut answers = Vec::with_capacity(waiting.len());
        for response in waiting {
            answers.push(match response {
                Some(response) => response.await.ok(),
                None => None,
            });
        }
        answers
    }
}

/// Runs a batch whose items may repeat an earlier item's key (an idempotency key, an event id):
/// the first item of each key goes into `together`; each repeat runs after it, `alone`, and so
/// finds what the first one did, as a later request would. Items without a key are never
/// repeats. Answers in the items' order.
pub async fn first_of_each_key<T, K, R, Together, Alone, AloneFut>(
    items: Vec<T>,
    key: impl Fn(&T) -> Option<K>,
    together: Together,
    alone: Alone,
) -> Vec<R>
where
    K: Eq + std::hash::Hash,
    Together: AsyncFnOnce(Vec<T>) -> Vec<R>,
    Alone: Fn(T) -> AloneFut,
    AloneFut: Future<Output = R>,
{
    let mut seen = std::collections::HashSet::new();
    let (first, repeats): (Vec<_>, Vec<_>) =
        items.into_iter().enumerate().partition(|(_, item)| key(item).is_none_or(|key| seen.insert(key)));
    let (order, batch): (Vec<usize>, Vec<T>) = first.into_iter().unzip();
    let mut answers: Vec<(usize, R)> = order.into_iter().zip(together(batch).await).collect();
    for (index, item) in repeats {
        answers.push((index, alone(item).await));
    }
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(16, 1, move |requests: Vec<u32>| {
            seen.lock().expect("not poisoned").push(requests.len());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                requests.into_iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        });
        let calls: Vec<_> = (0..40u32)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (n, batcher.call(n).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.expect("caller task");
            assert_eq!(answer, Some(n * 10));
        }
        let sizes = sizes.lock().expect("not poisoned").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().all(|size| *size <= 16), "{sizes:?}");
        assert!(sizes.len() < 40, "callers waiting together should share a batch: {sizes:?}");
    }

    #[tokio::test]
    async fn requests_submitted_together_share_a_batch() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(64, 2, move |requests: Vec<u32>| {
            seen.lock().expect("not poisoned").push(requests.len());
            async move { requests.into_iter().map(|n| n + 1).collect::<Vec<_>>() }
        });
        let answers = batcher.call_many((0..10).collect()).await;
        assert_eq!(answers, (1..11).map(Some).collect::<Vec<_>>());
        assert_eq!(sizes.lock().expect("not poisoned").clone(), vec![10]);
    }

    #[tokio::test]
    async fn a_lone_request_is_answered_without_waiting_for_company() {
        let batcher = Batcher::spawn(64, 2, |requests: Vec<u8>| async move { requests });
        let answer = tokio::time::timeout(Duration::from_millis(500), batcher.call(7)).await;
        assert_eq!(answer.expect("answered in time"), Some(7));
    }

    /// Requests 2 ms apart, steady traffic: a lingering batch waits for the next ones. A lone
    /// request after a quiet spell goes at once.
    #[tokio::test]
    async fn while_traffic_is_steady_a_lingering_batch_waits_for_company() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let linger = Linger { wait: Duration::from_millis(100), steady_within: Duration::from_millis(300) };
        let batcher = Batcher::spawn_lingering(64, 1, Some(linger), move |requests: Vec<u32>| {
            seen.lock().expect("not poisoned").push(requests.len());
            async move { requests }
        });
        let mut calls = Vec::new();
        for n in 0..20u32 {
            let batcher = batcher.clone();
            calls.push(tokio::spawn(async move { batcher.call(n).await }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for (n, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.expect("caller"), Some(n as u32));
        }
        let together = sizes.lock().expect("not poisoned").clone();
        assert_eq!(together.iter().sum::<usize>(), 20);
        // The first goes alone (nothing before it); the rest share a few batches.
        assert!(together.len() <= 6, "steady traffic shares batches: {together:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let lone = std::time::Instant::now();
        assert_eq!(batcher.call(99).await, Some(99));
        let waited = lone.elapsed();
        assert!(waited < Duration::from_millis(50), "a request after a quiet spell waited {waited:?}");
    }

    /// A closed group of callers, each sending again as soon as it is answered: once all of them
    /// are in the batch, it goes without waiting out its linger.
    #[tokio::test]
    async fn a_batch_that_company_came_to_densely_stops_waiting_once_it_stops_coming() {
        let linger = Linger { wait: Duration::from_millis(400), steady_within: Duration::from_secs(5) };
        let batcher = Batcher::spawn_lingering(256, 1, Some(linger), |requests: Vec<u32>| async move { requests });
        // Traffic becomes steady: a first batch.
        assert_eq!(batcher.call(0).await, Some(0));
        let started = std::time::Instant::now();
        let group: Vec<_> = (1..=32u32)
            .map(|n| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.call(n).await })
            })
            .collect();
        for (n, call) in (1..=32u32).zip(group) {
            assert_eq!(call.await.expect("caller"), Some(n));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_millis(200), "32 callers at once waited {took:?} of a 400 ms linger");
    }

    /// How many batches ran at once, at most, when `callers` callers came together in waves
    /// while each batch took 50 ms.
    async fn most_batches_at_once(overlap_from: Option<usize>, callers: u32) -> usize {
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (now, peak) = (running.clone(), most.clone());
        let batcher = Batcher::spawn_overlapping(256, 1, None, overlap_from, move |requests: Vec<u32>| {
            let (now, peak) = (now.clone(), peak.clone());
            async move {
                let at_once = now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(at_once, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                requests
            }
        });
        let mut calls = Vec::new();
        for wave in 0..3u32 {
            for n in 0..callers {
                let batcher = batcher.clone();
                calls.push(tokio::spawn(async move { batcher.call(wave * 1000 + n).await }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for call in calls {
            assert!(call.await.expect("caller").is_some());
        }
        most.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waves of 20 callers 10 ms apart, each batch taking 50 ms: a batch of 20 lets the next one
    /// start beside it (never more than one beside it); waves of 4 do not.
    #[tokio::test]
    async fn a_batch_large_enough_lets_the_next_one_start_beside_it() {
        assert_eq!(most_batches_at_once(Some(16), 20).await, 2);
        assert_eq!(most_batches_at_once(Some(16), 4).await, 1);
        assert_eq!(most_batches_at_once(None, 20).await, 1);
    }

    #[tokio::test]
    async fn repeats_of_a_key_run_after_the_batch_and_answers_keep_the_order() {
        let items = vec![(Some("a"), 1), (None, 2), (Some("a"), 3), (Some("b"), 4), (None, 5)];
        let answers = first_of_each_key(
            items,
            |(key, _)| *key,
            async |batch: Vec<(Option<&str>, u32)>| batch.iter().map(|(_, n)| format!("batch {n}")).collect(),
            |(_, n)| async move { format!("alone {n}") },
        )
        .await;
        assert_eq!(answers, ["batch 1", "batch 2", "alone 3", "batch 4", "batch 5"]);
    }

    #[tokio::test]
    async fn a_panicking_batch_answers_none_instead_of_hanging() {
        let batcher = Batcher::spawn(8, 1, |requests: Vec<u8>| async move {
            if requests.contains(&0) {
                panic!("boom");
            }
            requests
        });
        assert_eq!(batcher.call(0).await, None);
        assert_eq!(batcher.call(5).await, Some(5));
    }
}
