//! The record of a provider's answer (the sent-record) when the database refuses it. A deadlock's
//! victim is written again: a webhook's transaction adopting the same messages by correlation id
//! can take the row locks in another order. A message whose record cannot be written is given
//! back at once (`unknown`, for settlement to ask the provider), never left `sending` under its
//! live process's lease, where only the stuck rule would find it minutes later.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::crash_safety::sends_of;
use crate::delivery::{PHONE, send, sms, wait_for, wait_for_within};
use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim};

/// Makes the next `times` sent-records fail with SQLSTATE `code`. A sequence, which no rollback
/// undoes, counts the attempts.
async fn refuse_sent_records(app: &TestApp, code: &str, times: i64) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE SEQUENCE public.sent_record_attempts;
         CREATE FUNCTION public.refuse_sent_record() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.source = 'worker' AND NEW.status = 'sent'
              AND nextval('public.sent_record_attempts') <= {times} THEN
             RAISE EXCEPTION 'sent-record refused by the test' USING ERRCODE = '{code}';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_sent_record BEFORE INSERT ON communications.message_events
           FOR EACH ROW EXECUTE FUNCTION public.refuse_sent_record();"
    )))
    .execute(&app.pool)
    .await
    .expect("the refusal");
}

async fn attempts(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.sent_record_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn statuses(message: &Value) -> Vec<&str> {
    message["events"].as_array().unwrap().iter().filter_map(|event| event["status"].as_str()).collect()
}

/// A message due half a second from now: dispatched from its job, not at acceptance.
async fn send_soon(app: &TestApp, tenant: &TestTenant, text: &str) -> String {
    let at = (chrono::Utc::now() + chrono::Duration::milliseconds(500)).to_rfc3339();
    send(app, tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "scheduled_at": at, "content": {"text": text}}))
        .await
}

async fn message(app: &TestApp, tenant: &TestTenant, id: &str) -> Value {
    app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap()
}

#[tokio::test]
async fn a_sent_record_chosen_as_a_deadlocks_victim_is_written_again() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("deadlock-victim").await;
    sms(&app, &tenant).await;
    refuse_sent_records(&app, "40P01", 2).await;
    let now =
        send(&app, &tenant, json!({"to": {"phone": PHONE}, "channels": "sms", "content": {"text": "victim now"}}))
            .await;
    let sent = wait_for(&app, &tenant, &now, "sent").await;
    assert!(sent["provider_message_id"].is_string(), "{sent:#}");
    assert_eq!(statuses(&sent), ["queued", "sent"], "written again, never given up: {sent:#}");
    assert_eq!(attempts(&app).await, 3, "two refused, the third written");
    assert_eq!(sends_of(&sim, "victim now"), 1);

    // A job's dispatch (a scheduled message) the same way.
    sqlx::query("ALTER SEQUENCE public.sent_record_attempts RESTART").execute(&app.pool).await.unwrap();
    let later = send_soon(&app, &tenant, "victim later").await;
    let sent = wait_for(&app, &tenant, &later, "sent").await;
    assert_eq!(statuses(&sent), ["queued", "sent"], "{sent:#}");
    assert_eq!(attempts(&app).await, 3);
    assert_eq!(sends_of(&sim, "victim later"), 1);
}

#[tokio::test]
async fn a_job_whose_sent_record_cannot_be_written_is_given_back_for_settlement() {
    let (app, sim) = spawn_app_with_sim(|settings| {
        settings.dispatch.unknown_settle_secs = 2;
        settings.providers.request_timeout_secs = 1;
    })
    .await;
    let tenant = app.create_tenant("record-refused").await;
    sms(&app, &tenant).await;
    refuse_sent_records(&app, "P0001", i64::MAX).await;
    let id = send_soon(&app, &tenant, "record refused").await;
    // Twilio has it, but its answer cannot be written: given back at once, not left `sending`
    // for the stuck rule (five minutes).
    let deadline = Instant::now() + Duration::from_secs(15);
    let given_back = loop {
        let current = message(&app, &tenant, &id).await;
        if current["status"] != "queued" && current["status"] != "sending" {
            break current;
        }
        assert!(Instant::now() < deadline, "still {}: {current:#}", current["status"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(statuses(&given_back).contains(&"unknown"), "{given_back:#}");
    assert!(attempts(&app).await >= 1);

    // With the database writing again, settlement finds it at Twilio: not sent twice.
    sqlx::raw_sql("DROP TRIGGER refuse_sent_record ON communications.message_events").execute(&app.pool).await.unwrap();
    let settled = wait_for_within(&app, &tenant, &id, "sent", Duration::from_secs(30)).await;
    assert!(settled["provider_message_id"].is_string(), "{settled:#}");
    assert_eq!(sends_of(&sim, "record refused"), 1, "found at Twilio, not sent again");
}
