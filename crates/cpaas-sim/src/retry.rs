//! When each provider tries a failed webhook again (the table is in the crate docs; sources in
//! docs/providers/*.md). Pure timing and policy: the HTTP side is in `delivery.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How one attempt at a webhook went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Any 2xx.
    Delivered,
    /// Any other HTTP status, with the start of the answer's body.
    Status(u16, String),
    /// The connection was never established (refused, unreachable, connect timeout).
    Connect(String),
    /// Connected, but no answer in time.
    Timeout(String),
    /// Anything else after connecting: reset, closed mid-answer.
    Broken(String),
}

impl Attempt {
    /// `"delivered"`, `"http 503"` or `"error: …"`, as the webhook log shows it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Attempt::Delivered => "delivered".to_owned(),
            Attempt::Status(status, _) => format!("http {status}"),
            Attempt::Connect(reason) => format!("error: connect: {reason}"),
            Attempt::Timeout(reason) => format!("error: timeout: {reason}"),
            Attempt::Broken(reason) => format!("error: {reason}"),
        }
    }
}

/// AWS's backoff functions for the backoff phase of an HTTP/S delivery policy. Only the two
/// whose shape is unambiguous are modelled; AWS documents the others (arithmetic, geometric) by
/// a graph only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnsBackoff {
    /// Delays step evenly from `min_delay` to `max_delay` (AWS's default).
    Linear,
    /// Delays grow by a constant factor from `min_delay` to `max_delay`.
    Exponential,
}

/// The backoff phase of an SNS HTTP/S delivery policy (`healthyRetryPolicy`). AWS's default is
/// 3 retries, 20 s apart, linear, with no immediate, minimum-delay or maximum-delay retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnsDeliveryPolicy {
    /// `numRetries`: retries after the first attempt.
    pub num_retries: u32,
    /// `minDelayTarget`: the delay before the first retry.
    pub min_delay: Duration,
    /// `maxDelayTarget`: the delay before the last retry.
    pub max_delay: Duration,
    /// `backoffFunction`.
    pub backoff: SnsBackoff,
}

impl Default for SnsDeliveryPolicy {
    fn default() -> Self {
        SnsDeliveryPolicy {
            num_retries: 3,
            min_delay: Duration::from_secs(20),
            max_delay: Duration::from_secs(20),
            backoff: SnsBackoff::Linear,
        }
    }
}

/// SNS drops a message it could not deliver within an hour, whatever the policy says.
pub(crate) const SNS_MESSAGE_LIFETIME: Duration = Duration::from_secs(3600);

/// SNS waits 15 s for an answer before it counts the attempt as failed.
pub(crate) const SNS_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Meta documents no timeout for its webhook requests; this is what the sim always used.
pub(crate) const META_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl SnsDeliveryPolicy {
    /// The delay before retry `n` (1-based). AWS's example: 3 retries, 20 s to 40 s, linear →
    /// 20 s, 30 s, 40 s.
    pub(crate) fn delay_before(&self, n: u32) -> Duration {
        let max = self.max_delay.max(self.min_delay);
        if self.num_retries <= 1 || n <= 1 {
            return self.min_delay;
        }
        let fraction = f64::from(n.min(self.num_retries) - 1) / f64::from(self.num_retries - 1);
        let (min, max) = (self.min_delay.as_secs_f64(), max.as_secs_f64());
        let seconds = match self.backoff {
            SnsBackoff::Exponential if min > 0.0 => min * (max / min).powf(fraction),
            _ => min + (max - min) * fraction,
        };
        Duration::from_secs_f64(seconds)
    }

    /// 4xx is a permanent failure to SNS; 5xx (and 1xx), timeouts and connection errors are
    /// retried. A 3xx is not listed either way; SNS does not follow redirects, so it is retried.
    pub(crate) fn retries(outcome: &Attempt) -> bool {
        !matches!(outcome, Attempt::Delivered | Attempt::Status(400..=499, _))
    }
}

/// Meta's schedule as the sim models it: "decreasing frequency … for up to 7 days" becomes a
/// doubling delay, capped, within a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MetaSchedule {
    pub base: Duration,
    pub max_delay: Duration,
    pub window: Duration,
}

impl MetaSchedule {
    /// The delay before retry `n` (1-based): base, 2·base, 4·base, … up to `max_delay`.
    pub(crate) fn delay_before(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max_delay)
    }
}

/// Which failures Twilio retries (`rp`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TwilioRetryOn {
    pub client_errors: bool,
    pub server_errors: bool,
    pub connect: bool,
    pub read: bool,
}

/// Twilio's connection settings for one webhook URL: the documented defaults, changed by the
/// URL's connection-override fragment (`#ct=…&rt=…&tt=…&rc=…&rp=…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TwilioOverrides {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub total_time: Duration,
    pub retry_count: u32,
    pub retry_on: TwilioRetryOn,
}

impl Default for TwilioOverrides {
    /// Twilio's defaults: ct 5000, rt 15000, tt 15000, rc 1, rp ct.
    fn default() -> Self {
        TwilioOverrides {
            connect_timeout: Duration::from_millis(5000),
            read_timeout: Duration::from_millis(15000),
            total_time: Duration::from_millis(15000),
            retry_count: 1,
            retry_on: TwilioRetryOn { connect: true, ..TwilioRetryOn::default() },
        }
    }
}

impl TwilioOverrides {
    /// Reads a fragment (without the `#`). Out-of-range numbers are clamped and unknown keys or
    /// values ignored: real Twilio reports them in its debugger (11237–11243) and goes on.
    pub(crate) fn parse(fragment: Option<&str>) -> Self {
        let mut overrides = TwilioOverrides::default();
        let Some(fragment) = fragment else { return overrides };
        let millis =
            |value: &str, max: u64| value.parse::<u64>().ok().map(|v| Duration::from_millis(v.clamp(100, max)));
        for (key, value) in url::form_urlencoded::parse(fragment.as_bytes()) {
            match key.as_ref() {
                "ct" => overrides.connect_timeout = millis(&value, 10_000).unwrap_or(overrides.connect_timeout),
                "rt" => overrides.read_timeout = millis(&value, 15_000).unwrap_or(overrides.read_timeout),
                "tt" => overrides.total_time = millis(&value, 15_000).unwrap_or(overrides.total_time),
                "rc" => overrides.retry_count = value.parse::<u32>().map_or(overrides.retry_count, |v| v.min(5)),
                "rp" => {
                    let mut on = TwilioRetryOn::default();
                    for policy in value.split(',').map(str::trim) {
                        match policy {
                            "4xx" => on.client_errors = true,
                            "5xx" => on.server_errors = true,
                            "ct" => on.connect = true,
                            "rt" => on.read = true,
                            "all" => {
                                on = TwilioRetryOn {
                                    client_errors: true,
                                    server_errors: true,
                                    connect: true,
                                    read: true,
                                }
                            }
                            _ => {}
                        }
                    }
                    if on != TwilioRetryOn::default() {
                        overrides.retry_on = on;
                    }
                }
                _ => {}
            }
        }
        overrides
    }

    /// Whether `rp` covers this failure. A connection broken after it was made counts as `rt`:
    /// the answer did not come.
    pub(crate) fn retries(&self, outcome: &Attempt) -> bool {
        let on = self.retry_on;
        match outcome {
            Attempt::Delivered => false,
            Attempt::Status(400..=499, _) => on.client_errors,
            Attempt::Status(500..=599, _) => on.server_errors,
            Attempt::Status(..) => false,
            Attempt::Connect(_) => on.connect,
            Attempt::Timeout(_) | Attempt::Broken(_) => on.read,
        }
    }
}

/// Splits `https://h/p?q#frag` into the URL that goes on the wire and the fragment.
pub(crate) fn split_fragment(url: &str) -> (&str, Option<&str>) {
    match url.split_once('#') {
        Some((wire, fragment)) => (wire, Some(fragment)),
        None => (url, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_default_is_three_retries_twenty_seconds_apart() {
        let policy = SnsDeliveryPolicy::default();
        let delays: Vec<u64> = (1..=3).map(|n| policy.delay_before(n).as_secs()).collect();
        assert_eq!(delays, [20, 20, 20]);
    }

    #[test]
    fn sns_linear_backoff_matches_the_aws_example() {
        let policy = SnsDeliveryPolicy { max_delay: Duration::from_secs(40), ..SnsDeliveryPolicy::default() };
        let delays: Vec<u64> = (1..=3).map(|n| policy.delay_before(n).as_secs()).collect();
        assert_eq!(delays, [20, 30, 40]);
        let exponential = SnsDeliveryPolicy {
            num_retries: 3,
            min_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(40),
            backoff: SnsBackoff::Exponential,
        };
        let delays: Vec<u64> = (1..=3).map(|n| exponential.delay_before(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40]);
    }

    #[test]
    fn sns_does_not_retry_client_errors() {
        assert!(!SnsDeliveryPolicy::retries(&Attempt::Status(403, String::new())));
        assert!(SnsDeliveryPolicy::retries(&Attempt::Status(503, String::new())));
        assert!(SnsDeliveryPolicy::retries(&Attempt::Connect("refused".into())));
        assert!(SnsDeliveryPolicy::retries(&Attempt::Timeout("15 s".into())));
        assert!(!SnsDeliveryPolicy::retries(&Attempt::Delivered));
    }

    #[test]
    fn meta_doubles_up_to_the_cap() {
        let schedule = MetaSchedule {
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            window: Duration::from_secs(3600),
        };
        let delays: Vec<u64> = (1..=7).map(|n| schedule.delay_before(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(schedule.delay_before(200), Duration::from_secs(30));
    }

    #[test]
    fn twilio_defaults_retry_once_on_connect_failure() {
        let defaults = TwilioOverrides::parse(None);
        assert_eq!(defaults, TwilioOverrides::default());
        assert_eq!(defaults.retry_count, 1);
        assert!(defaults.retries(&Attempt::Connect("refused".into())));
        assert!(!defaults.retries(&Attempt::Status(500, String::new())));
        assert!(!defaults.retries(&Attempt::Timeout("slow".into())));
    }

    #[test]
    fn twilio_fragment_overrides_are_read_and_clamped() {
        let overrides = TwilioOverrides::parse(Some("rc=9&rp=5xx,rt&ct=50&rt=2000&tt=99999&sni=y&e=dublin"));
        assert_eq!(overrides.retry_count, 5);
        assert_eq!(overrides.connect_timeout, Duration::from_millis(100));
        assert_eq!(overrides.read_timeout, Duration::from_millis(2000));
        assert_eq!(overrides.total_time, Duration::from_millis(15000));
        assert!(overrides.retries(&Attempt::Status(502, String::new())));
        assert!(overrides.retries(&Attempt::Broken("reset".into())));
        assert!(!overrides.retries(&Attempt::Status(404, String::new())));
        assert!(!overrides.retries(&Attempt::Connect("refused".into())));
        let all = TwilioOverrides::parse(Some("rc=5&rp=all"));
        assert!(all.retries(&Attempt::Status(404, String::new())) && all.retries(&Attempt::Connect("x".into())));
        assert!(!all.retries(&Attempt::Status(302, String::new())));
        // An rp naming nothing known keeps the default.
        assert_eq!(TwilioOverrides::parse(Some("rp=bogus")).retry_on, TwilioOverrides::default().retry_on);
    }

    #[test]
    fn fragments_are_split_off_the_wire_url() {
        assert_eq!(split_fragment("https://h/p?x=1#rc=5&rp=all"), ("https://h/p?x=1", Some("rc=5&rp=all")));
        assert_eq!(split_fragment("https://h/p"), ("https://h/p", None));
    }
}
