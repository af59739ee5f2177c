//! Pooled connections kept between a hot path's batches.
//!
//! sqlx pings every connection it takes back into its pool, to be sure it still works and to
//! flush a rollback left behind: a round trip — a wake-up of the PostgreSQL backend and of our
//! process — after every use. At everyday rates the hot path's batches hold two or three
//! messages and use a connection each, so that ping cost a third of all round trips. A
//! connection given back here after a statement that completed is known to work and to hold no
//! transaction; it is kept out of the pool for the next batch, without the ping, as long as it
//! is reused soon: one idle for [`IDLE_FOR_AT_MOST`] goes back to the pool (and its ping) on the
//! next acquire. Anything else — a failed statement, a dropped future, a connection held for a
//! minute — goes back to the pool the usual way.
//!
//! At most [`KEEP_AT_MOST`] are kept, so the pool's other users always find the rest; when the
//! pool looks exhausted, a connection goes back to it at once, and one kept unused goes back
//! within twice [`IDLE_FOR_AT_MOST`] even when nobody asks here again (a timer trims them).

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

/// How many connections wait here at most (the hot path runs a few batches at once).
pub const KEEP_AT_MOST: usize = 3;
/// How long a connection may wait here unused and still be handed out without a check (the
/// pool's own rule for a connection it hands out: `server::database::PING_IF_IDLE_FOR`).
pub const IDLE_FOR_AT_MOST: Duration = Duration::from_millis(250);
/// How long a connection stays out of the pool in all: now and then it goes back and is checked,
/// and the pool's lifetime rules see it.
pub const HOLD_FOR_AT_MOST: Duration = Duration::from_secs(60);

/// A pool's front for the hot path: hands out a kept connection if one is fresh, else the pool's.
#[derive(Debug, Clone)]
pub struct KeptConnections {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first.
    idle: Vec<Idle>,
    /// A trim is due (see [`Inner::trim_later`]).
    trimming: bool,
}

#[derive(Debug)]
struct Idle {
    connection: PoolConnection<Postgres>,
    since: Instant,
    taken: Instant,
}

impl KeptConnections {
    pub fn new(pool: PgPool) -> Self {
        Self { inner: Arc::new(Inner { pool, state: Mutex::default() }) }
    }

    /// The pool behind: for transactions, and statements off the hot path.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The connection kept last, if it is fresh; else one from the pool.
    pub async fn acquire(&self) -> Result<Kept, sqlx::Error> {
        let (stale, fresh) = {
            let mut state = self.inner.lock();
            (state.stale(), state.idle.pop())
        };
        // Back to the pool, which checks them (outside the lock: dropping spawns that check).
        drop(stale);
        let (connection, taken) = match fresh {
            Some(kept) => (kept.connection, kept.taken),
            None => (self.inner.pool.acquire().await?, Instant::now()),
        };
        Ok(Kept { connection: Some(connection), taken, reusable: false, home: self.inner.clone() })
    }

    /// How many connections wait here now.
    pub fn kept(&self) -> usize {
        self.inner.lock().idle.len()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives the stale connections back to the pool in a while, and again while any are kept.
    fn trim_later(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let inner = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_FOR_AT_MOST).await;
                let Some(inner) = inner.upgrade() else { return };
                let (stale, again) = {
                    let mut state = inner.lock();
                    let stale = state.stale();
                    state.trimming = !state.idle.is_empty();
                    (stale, state.trimming)
                };
                drop(stale);
                if !again {
                    return;
                }
            }
        });
    }
}

impl State {
    /// Takes out the connections idle too long to be handed out unchecked.
    fn stale(&mut self) -> Vec<Idle> {
        let first_fresh =
            self.idle.iter().position(|kept| kept.since.elapsed() < IDLE_FOR_AT_MOST).unwrap_or(self.idle.len());
        self.idle.drain(..first_fresh).collect()
    }
}

/// A connection from [`KeptConnections::acquire`]. Dropped, it goes back to the pool unless
/// [`Kept::reusable`] was called since its last statement.
#[derive(Debug)]
pub struct Kept {
    connection: Option<PoolConnection<Postgres>>,
    taken: Instant,
    reusable: bool,
    home: Arc<Inner>,
}

impl Kept {
    /// Says the statements run on this connection completed and left no transaction open, so
    /// the next batch may have it without a check. Call it last, after the final `.await`.
    pub fn reusable(&mut self) {
        self.reusable = true;
    }
}

impl Deref for Kept {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection.as_deref().unwrap_or_else(|| unreachable!("a Kept holds its connection until dropped"))
    }
}

impl DerefMut for Kept {
    fn deref_mut(&mut self) -> &mut PgConnection {
        // A statement after `reusable` must say so again.
        self.reusable = false;
        self.connection.as_deref_mut().unwrap_or_else(|| unreachable!("a Kept holds its connection until dropped"))
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        let pool = &self.home.pool;
        let exhausted = pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections();
        // The trim needs a runtime; without one (a runtime shutting down) nothing is kept.
        let runtime = tokio::runtime::Handle::try_current();
        if !self.reusable || self.taken.elapsed() >= HOLD_FOR_AT_MOST || exhausted || pool.is_closed() {
            return drop(connection);
        }
        let Ok(runtime) = runtime else { return drop(connection) };
        let (refused, trim) = {
            let mut state = self.home.lock();
            if state.idle.len() < KEEP_AT_MOST {
                state.idle.push(Idle { connection, since: Instant::now(), taken: self.taken });
                (None, !std::mem::replace(&mut state.trimming, true))
            } else {
                (Some(connection), false)
            }
        };
        drop(refused);
        if trim {
            self.home.trim_later(&runtime);
        }
    }
}
