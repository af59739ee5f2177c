//! Webchat's rate limits: a page anyone can open must not become a way to flood an inbox.
//! Per visitor (a person typing quickly fits; a script does not) and per address (a script
//! minting new visitors still shares its address's budget). GCRA in the shared rate-limit table,
//! so every replica counts the same.

use std::time::Duration;

use kernel::error::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::rate_limit::{self, Acquired, RateLimit};

/// A visitor: 8 messages at once, then one every 5 s.
const VISITOR: RateLimit = RateLimit { per_second: 0.2, burst: 8 };
/// An address (a household or office shares one): 30 messages at once, then one a second.
const ADDRESS: RateLimit = RateLimit { per_second: 1.0, burst: 30 };
/// Sessions (page loads, reconnects) per address.
const SESSIONS: RateLimit = RateLimit { per_second: 2.0, burst: 60 };

pub async fn message(pool: &PgPool, channel: Uuid, visitor: Uuid, address: String) -> Result<(), ApiError> {
    take(pool, &format!("webchat:visitor:{channel}:{visitor}"), VISITOR, "you are sending messages too quickly")
        .await?;
    take(pool, &format!("webchat:address:{address}"), ADDRESS, "too many messages from this address").await
}

pub async fn session(pool: &PgPool, address: String) -> Result<(), ApiError> {
    take(pool, &format!("webchat:session:{address}"), SESSIONS, "too many chats opened from this address").await
}

async fn take(pool: &PgPool, key: &str, limit: RateLimit, message: &str) -> Result<(), ApiError> {
    match rate_limit::acquire(pool, key, limit, 1).await? {
        Acquired::Granted => Ok(()),
        Acquired::Wait(wait) => Err(ApiError::TooManyRequests {
            message: format!("{message}: try again in {} s", seconds(wait)),
            retry_after_secs: seconds(wait),
        }),
    }
}

fn seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}
