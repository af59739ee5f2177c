//! The hot path's kept connections (`kernel::kept`): after statements that completed, a
//! connection waits for the next batch without sqlx's check on release; anything else, or one
//! left unused, goes back to the pool and its check, and the pool's other users never starve.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kernel::kept::{IDLE_FOR_AT_MOST, KEEP_AT_MOST, Kept, KeptConnections};
use sqlx::PgConnection;
use sqlx::postgres::PgPoolOptions;

/// A pool of `size` connections that counts those it takes back (each of which it pings).
async fn counting_pool(size: u32) -> (sqlx::PgPool, Arc<AtomicUsize>) {
    let url = crate::helpers::fresh_database().await;
    let released = Arc::new(AtomicUsize::new(0));
    let counter = released.clone();
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(2))
        .after_release(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .connect(&url)
        .await
        .expect("connect");
    (pool, released)
}

async fn backend(connection: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(connection).await.expect("pid")
}

/// A connection from `kept` after a statement that completed, declared reusable; and its backend.
async fn used_cleanly(kept: &KeptConnections) -> (Kept, i32) {
    let mut connection = kept.acquire().await.expect("acquire");
    let pid = backend(&mut connection).await;
    connection.reusable();
    (connection, pid)
}

/// The pool takes connections back in a task of its own.
async fn released_becomes(released: &AtomicUsize, expected: usize) {
    for _ in 0..200 {
        if released.load(Ordering::SeqCst) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(released.load(Ordering::SeqCst), expected, "connections taken back by the pool");
}

#[tokio::test]
async fn a_connection_whose_statements_completed_serves_the_next_batches_unchecked() {
    let (pool, released) = counting_pool(4).await;
    let kept = KeptConnections::new(pool);
    let (first, pid) = used_cleanly(&kept).await;
    drop(first);
    assert_eq!(kept.kept(), 1);
    for _ in 0..5 {
        let mut again = kept.acquire().await.expect("acquire");
        assert_eq!(kept.kept(), 0, "handed out");
        assert_eq!(backend(&mut again).await, pid, "the kept connection, not another");
        again.reusable();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(released.load(Ordering::SeqCst), 0, "no connection went back to the pool");
    assert_eq!(kept.kept(), 1);
}

#[tokio::test]
async fn a_connection_after_a_failed_or_unconfirmed_statement_goes_back_to_the_pool() {
    let (pool, released) = counting_pool(4).await;
    let kept = KeptConnections::new(pool);

    let mut failed = kept.acquire().await.expect("acquire");
    assert!(sqlx::query("SELECT 1/0").execute(&mut *failed).await.is_err());
    drop(failed);
    // At once: the trim would give back a kept one too, a little later.
    assert_eq!(kept.kept(), 0, "not kept");
    released_becomes(&released, 1).await;

    // `reusable` speaks of the statements before it: one after it needs saying again.
    let mut later = kept.acquire().await.expect("acquire");
    later.reusable();
    backend(&mut later).await;
    drop(later);
    assert_eq!(kept.kept(), 0, "not kept");
    released_becomes(&released, 2).await;

    // A statement given up half-way (its future dropped) leaves the connection mid-answer.
    let mut cut = kept.acquire().await.expect("acquire");
    let sleep = sqlx::query("SELECT pg_sleep(0.5)").execute(&mut *cut);
    assert!(tokio::time::timeout(Duration::from_millis(50), sleep).await.is_err());
    drop(cut);
    assert_eq!(kept.kept(), 0, "not kept");
    released_becomes(&released, 3).await;
}

#[tokio::test]
async fn an_unused_kept_connection_goes_back_to_the_pool_by_itself() {
    let (pool, released) = counting_pool(4).await;
    let kept = KeptConnections::new(pool.clone());
    drop(used_cleanly(&kept).await);
    assert_eq!(kept.kept(), 1);
    // Nobody asks here again: the trim gives it back within twice the idle limit.
    tokio::time::sleep(IDLE_FOR_AT_MOST * 2 + Duration::from_millis(200)).await;
    assert_eq!(kept.kept(), 0);
    released_becomes(&released, 1).await;
    assert_eq!(pool.num_idle(), 1, "idle in the pool, for anyone");
}

#[tokio::test]
async fn a_few_are_kept_and_none_while_the_pool_is_exhausted() {
    let (pool, released) = counting_pool(KEEP_AT_MOST as u32 + 2).await;
    let kept = KeptConnections::new(pool.clone());
    let mut held = Vec::new();
    for _ in 0..=KEEP_AT_MOST {
        held.push(used_cleanly(&kept).await.0);
    }
    drop(held);
    assert_eq!(kept.kept(), KEEP_AT_MOST);
    released_becomes(&released, 1).await;

    // A pool of one: keeping its only connection would make its other users wait.
    let (pool, released) = counting_pool(1).await;
    let kept = KeptConnections::new(pool.clone());
    drop(used_cleanly(&kept).await);
    assert_eq!(kept.kept(), 0);
    released_becomes(&released, 1).await;
    let mut other = tokio::time::timeout(Duration::from_secs(1), pool.acquire())
        .await
        .expect("the pool's other users are not kept waiting")
        .expect("acquire");
    backend(&mut other).await;
}
