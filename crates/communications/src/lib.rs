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

use std::sync::Arc;

use kernel::crypto::Keyring;

/// The module's handle: pool and master keys, cheap to clone.
#[derive(Debug, Clone)]
pub struct Communications {
    pub pool: sqlx::PgPool,
    pub keyring: Arc<Keyring>,
}

impl Communications {
    pub fn new(pool: sqlx::PgPool, keyring: Arc<Keyring>) -> Self {
        Self { pool, keyring }
    }
}
