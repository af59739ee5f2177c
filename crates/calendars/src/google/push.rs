//! Google push notifications: a `POST` with an empty body whose headers say which channel
//! fired and why. Nothing in it is signed; what makes it ours is the token we gave the channel
//! (`X-Goog-Channel-Token`), compared in constant time.
//!
//! Reading is two steps so that nothing is acted on before it is verified:
//! [`UnverifiedPush::from_headers`] exposes only the channel id (to look up the token we set),
//! and [`UnverifiedPush::verify`] yields the [`PushNotification`]. On `Exists` run
//! an incremental [`super::GoogleCalendar::busy`]; `Sync` only confirms a new channel;
//! `NotExists` means the watched resource is gone. Message numbers increase per channel, so an
//! older number than one already handled is a redelivery.

use reqwest::header::HeaderMap;

use crate::http::constant_time_eq;

/// Why a request is not an authentic push notification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("missing or unreadable header {0}")]
    MissingHeader(&'static str),
    #[error("unknown X-Goog-Resource-State {0:?}")]
    UnknownState(String),
    #[error("the channel token does not match")]
    BadToken,
}

/// What happened to the watched resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceState {
    /// The channel is open (its first message).
    Sync,
    /// Something changed.
    Exists,
    /// The resource is gone.
    NotExists,
}

/// An authentic notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushNotification {
    pub channel_id: String,
    pub resource_id: String,
    pub state: ResourceState,
    pub message_number: u64,
}

/// A notification whose token is not checked yet.
#[derive(Clone, Debug)]
pub struct UnverifiedPush {
    channel_id: String,
    token: Option<String>,
    notification: PushNotification,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, PushError> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).ok_or(PushError::MissingHeader(name))
}

impl UnverifiedPush {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, PushError> {
        let channel_id = header(headers, "x-goog-channel-id")?.to_owned();
        let resource_id = header(headers, "x-goog-resource-id")?.to_owned();
        let state = match header(headers, "x-goog-resource-state")? {
            "sync" => ResourceState::Sync,
            "exists" => ResourceState::Exists,
            "not_exists" => ResourceState::NotExists,
            other => return Err(PushError::UnknownState(other.to_owned())),
        };
        let message_number = header(headers, "x-goog-message-number")?
            .parse()
            .map_err(|_| PushError::MissingHeader("x-goog-message-number"))?;
        let token = headers.get("x-goog-channel-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let notification = PushNotification { channel_id: channel_id.clone(), resource_id, state, message_number };
        Ok(Self { channel_id, token, notification })
    }

    /// The channel it claims to come from: look up the token set on it.
    pub fn channel_id(&self) -> &str {
        &self.channel_id
    }

    /// The notification, if it carries `expected_token` (the one given to [`super::GoogleCalendar::watch`]).
    pub fn verify(self, expected_token: &str) -> Result<PushNotification, PushError> {
        match &self.token {
            Some(token) if constant_time_eq(token.as_bytes(), expected_token.as_bytes()) => Ok(self.notification),
            _ => Err(PushError::BadToken),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(state: &str, token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-goog-channel-id", HeaderValue::from_static("ch-1"));
        headers.insert("x-goog-resource-id", HeaderValue::from_static("res-1"));
        headers.insert("x-goog-resource-state", HeaderValue::from_str(state).unwrap());
        headers.insert("x-goog-message-number", HeaderValue::from_static("7"));
        if let Some(token) = token {
            headers.insert("x-goog-channel-token", HeaderValue::from_str(token).unwrap());
        }
        headers
    }

    #[test]
    fn a_notification_with_our_token_is_read() {
        let push = UnverifiedPush::from_headers(&headers("exists", Some("s3cret"))).unwrap();
        assert_eq!(push.channel_id(), "ch-1");
        let push = push.verify("s3cret").unwrap();
        assert_eq!(push.state, ResourceState::Exists);
        assert_eq!(push.message_number, 7);
    }

    #[test]
    fn a_wrong_or_missing_token_is_refused() {
        let push = UnverifiedPush::from_headers(&headers("sync", Some("guess"))).unwrap();
        assert_eq!(push.verify("s3cret"), Err(PushError::BadToken));
        let push = UnverifiedPush::from_headers(&headers("sync", None)).unwrap();
        assert_eq!(push.verify("s3cret"), Err(PushError::BadToken));
    }

    #[test]
    fn unknown_states_and_missing_headers_are_errors() {
        assert!(matches!(UnverifiedPush::from_headers(&headers("gone", None)), Err(PushError::UnknownState(_))));
        let mut partial = headers("exists", None);
        partial.remove("x-goog-message-number");
        assert_eq!(
            UnverifiedPush::from_headers(&partial).unwrap_err(),
            PushError::MissingHeader("x-goog-message-number")
        );
        assert_eq!(
            UnverifiedPush::from_headers(&headers("not_exists", Some("t"))).unwrap().verify("t").unwrap().state,
            ResourceState::NotExists
        );
    }
}
