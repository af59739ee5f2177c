//! The dispatch queue's table as we tune it: workers are woken after the commit (apalis's
//! in-transaction trigger is gone), and finished jobs do not pile up forever.

use std::time::Duration;

use communications::messages::queue::{BULK_QUEUE, URGENT_QUEUE};
use serde_json::{Value, json};
use sqlx::postgres::PgListener;

use crate::helpers::spawn_app;

const PHONE: &str = "+4915112345678";

async fn listener(app: &crate::helpers::TestApp) -> PgListener {
    let mut listener = PgListener::connect_with(&app.pool).await.expect("listen");
    listener.listen("apalis::job::insert").await.expect("listen");
    listener
}

async fn next_job_type(listener: &mut PgListener, within: Duration) -> Option<String> {
    let notification = tokio::time::timeout(within, listener.recv()).await.ok()?.expect("notification");
    let payload: Value = serde_json::from_str(notification.payload()).expect("json payload");
    Some(payload["job_type"].as_str().expect("job_type").to_owned())
}

#[tokio::test]
async fn accepting_a_message_wakes_its_lanes_workers_after_the_commit() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("wakeful").await;
    app.quiet_hours_off(&tenant).await;
    let mut listener = listener(&app).await;
    for (lane, queue) in [("urgent", URGENT_QUEUE), ("bulk", BULK_QUEUE)] {
        let body = json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "Hi"}, "lane": lane});
        let accepted = app.post("/api/v1/messages", &tenant.api_key, body).await;
        assert_eq!(accepted.status(), 202);
        assert_eq!(next_job_type(&mut listener, Duration::from_secs(5)).await.as_deref(), Some(queue), "{lane}");
    }
}

#[tokio::test]
async fn pushing_a_job_inside_a_transaction_notifies_nobody_by_itself() {
    // A notifying transaction serialises commits; the wake-up belongs after the commit.
    let app = spawn_app().await;
    let tenant = app.create_tenant("quiet").await;
    let mut listener = listener(&app).await;
    let mut tx = app.pool.begin().await.expect("begin");
    let job = communications::messages::queue::DispatchJob::new(uuid::Uuid::now_v7(), tenant.id, 0);
    communications::messages::queue::enqueue(&mut tx, communications::messages::model::Lane::Urgent, job, None)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert_eq!(next_job_type(&mut listener, Duration::from_millis(300)).await, None);
}

#[tokio::test]
async fn finished_jobs_are_purged_after_the_retention_and_no_others() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("tidy").await;
    for n in 0..4 {
        let body = json!({"to": {"phone": format!("+49151000000{n}")}, "channels": "sms", "content": {"text": "Hi"}});
        assert_eq!(app.post("/api/v1/messages", &tenant.api_key, body).await.status(), 202);
    }
    // Two finished long ago, one finished just now, one still pending.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '2 hours'
         WHERE id IN (SELECT id FROM apalis.jobs ORDER BY id LIMIT 2)",
    )
    .execute(&app.pool)
    .await
    .expect("age two jobs");
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now()
         WHERE id = (SELECT id FROM apalis.jobs WHERE status = 'Pending' ORDER BY id LIMIT 1)",
    )
    .execute(&app.pool)
    .await
    .expect("finish one");
    let queues = [URGENT_QUEUE, BULK_QUEUE];
    let retention = switchboard::queue_waker::FINISHED_JOB_RETENTION;
    let purged = switchboard::queue_waker::purge_finished(&app.pool, &queues, retention).await.expect("purge");
    assert_eq!(purged, 2);
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT status FROM apalis.jobs ORDER BY status").fetch_all(&app.pool).await.expect("jobs");
    assert_eq!(left, vec![("Done".to_owned(),), ("Pending".to_owned(),)]);
    // Other queues' jobs are not ours to delete.
    let none = switchboard::queue_waker::purge_finished(&app.pool, &["elsewhere"], Duration::ZERO).await;
    assert_eq!(none.expect("purge"), 0);
}
