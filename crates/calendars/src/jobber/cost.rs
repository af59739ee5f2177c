//! Jobber's query-cost budget: a leaky bucket per app and account, reported in every answer's
//! `extensions.cost` (`requestedQueryCost`, `actualQueryCost`, `throttleStatus
//! {maximumAvailable, currentlyAvailable, restoreRate}`). A query costing more than is
//! available is refused with a `THROTTLED` error; waiting `(requested − available) / restoreRate`
//! seconds makes room for it.
//!
//! The adapter remembers the last status and what each operation cost last time, and refuses
//! an operation itself (`RateLimited`) when the bucket, restored since, cannot hold it: a
//! request that would only be throttled is not sent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `extensions.cost` of one answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cost {
    pub requested: f64,
    pub maximum: f64,
    pub available: f64,
    pub restore_rate: f64,
}

impl Cost {
    pub(crate) fn read(body: &Value) -> Option<Self> {
        let cost = body.pointer("/extensions/cost")?;
        let status = cost.get("throttleStatus")?;
        Some(Self {
            requested: cost.get("requestedQueryCost")?.as_f64()?,
            maximum: status.get("maximumAvailable")?.as_f64()?,
            available: status.get("currentlyAvailable")?.as_f64()?,
            restore_rate: status.get("restoreRate")?.as_f64()?,
        })
    }

    /// How long until `needed` points are available, from `available` now. At least one
    /// second, so a caller never spins.
    pub(crate) fn wait_for(needed: f64, available: f64, restore_rate: f64) -> Duration {
        if restore_rate <= 0.0 {
            return Duration::from_secs(60);
        }
        let seconds = ((needed - available) / restore_rate).max(0.0).ceil().max(1.0);
        Duration::from_secs_f64(seconds)
    }

    /// The wait a `THROTTLED` answer asks for.
    pub(crate) fn throttled_wait(&self) -> Duration {
        Self::wait_for(self.requested, self.available, self.restore_rate)
    }
}

/// What the adapter knows of the account's budget.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    last: Option<(Cost, Instant)>,
    /// The requested cost each operation had last time.
    costs: HashMap<&'static str, f64>,
}

impl Budget {
    pub(crate) fn observe(&mut self, operation: &'static str, cost: Cost) {
        self.costs.insert(operation, cost.requested);
        self.last = Some((cost, Instant::now()));
    }

    /// `Some(wait)` when `operation` would be throttled now, judging by the last answer.
    pub(crate) fn hold_off(&self, operation: &'static str) -> Option<Duration> {
        let needed = *self.costs.get(operation)?;
        let (cost, at) = self.last?;
        let available = (cost.available + at.elapsed().as_secs_f64() * cost.restore_rate).min(cost.maximum);
        (needed > available).then(|| Cost::wait_for(needed, available, cost.restore_rate))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn answer(requested: u32, available: u32) -> Value {
        json!({"extensions": {"cost": {"requestedQueryCost": requested, "actualQueryCost": 0,
            "throttleStatus": {"maximumAvailable": 10000, "currentlyAvailable": available, "restoreRate": 500}}}})
    }

    #[test]
    fn a_throttled_answer_asks_for_the_time_to_restore_the_deficit() {
        let cost = Cost::read(&answer(10001, 10000)).unwrap();
        assert_eq!(cost.throttled_wait(), Duration::from_secs(1), "never less than a second");
        let cost = Cost::read(&answer(3000, 500)).unwrap();
        assert_eq!(cost.throttled_wait(), Duration::from_secs(5));
        assert!(Cost::read(&json!({"data": {}})).is_none());
    }

    #[test]
    fn the_budget_holds_off_an_operation_that_would_not_fit() {
        let mut budget = Budget::default();
        assert_eq!(budget.hold_off("visitCreate"), None, "nothing known yet");
        budget.observe("visitCreate", Cost::read(&answer(14, 9000)).unwrap());
        assert_eq!(budget.hold_off("visitCreate"), None);
        budget.observe("visitCreate", Cost::read(&answer(14, 0)).unwrap());
        assert_eq!(budget.hold_off("visitCreate"), Some(Duration::from_secs(1)));
        assert_eq!(budget.hold_off("visitDelete"), None, "its cost is unknown");
    }
}
