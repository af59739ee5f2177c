//! Status callbacks at volume: those that arrive together share transactions (group commit) and
//! still keep delivery tracking's promises — each is applied once, a redelivery is a duplicate,
//! an envelope that fails never takes the rest of its batch down with it — and the Twilio auth
//! tokens they are verified with are kept in memory only until the channel changes.

use cpaas_sim::CallbackStatus;
use serde_json::{Value, json};

use crate::delivery::{provider_events, send, sms, wait_for};
use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim};

/// `count` SMS, each handed to the simulated Twilio: (message id, Twilio's SID).
async fn sent_messages(app: &TestApp, tenant: &TestTenant, round: usize, count: usize) -> Vec<(String, String)> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let body = json!({"to": {"phone": format!("+49151{round:02}{n:05}")}, "channels": "sms", "content": {"text": format!("n {n}")}});
        ids.push(send(app, tenant, body).await);
    }
    let mut sent = Vec::with_capacity(count);
    for id in ids {
        let message = wait_for(app, tenant, &id, "sent").await;
        let sid = message["provider_message_id"].as_str().unwrap_or_else(|| panic!("{message}")).to_owned();
        sent.push((id, sid));
    }
    sent
}

/// Posts each (SID, status) callback, all at once; what the simulator saw of each answer.
async fn post_all_at_once(sim: &cpaas_sim::SimHandle, posts: &[(String, CallbackStatus)]) -> Vec<Result<(), String>> {
    let posts: Vec<_> = posts
        .iter()
        .map(|(sid, status)| {
            let (sim, sid, status) = (sim.clone(), sid.clone(), *status);
            tokio::spawn(async move { sim.post_status_callbacks(&sid, &[status]).await.map_err(|e| format!("{e:#}")) })
        })
        .collect();
    let mut answers = Vec::with_capacity(posts.len());
    for post in posts {
        answers.push(post.await.expect("the post's task"));
    }
    answers
}

async fn deliver_all_at_once(sim: &cpaas_sim::SimHandle, sids: &[String]) -> Vec<Result<(), String>> {
    let posts: Vec<(String, CallbackStatus)> =
        sids.iter().map(|sid| (sid.clone(), CallbackStatus::Delivered)).collect();
    post_all_at_once(sim, &posts).await
}

#[tokio::test]
async fn callbacks_that_arrive_together_share_transactions_and_each_counts_once() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("batched-callbacks").await;
    sms(&app, &tenant).await;
    let sent = sent_messages(&app, &tenant, 0, 30).await;
    // Each message's `sent` and `delivered`, the latter twice (a redelivery in the same batch or
    // the next), all side by side; every fifth message fails instead (the careful path, in the
    // same batches as the plain reports: it hands over).
    let mut posts: Vec<(String, CallbackStatus)> = Vec::new();
    for (n, (_, sid)) in sent.iter().enumerate() {
        posts.push((sid.clone(), CallbackStatus::Sent));
        if n % 5 == 4 {
            posts.push((sid.clone(), CallbackStatus::Failed));
        } else {
            posts.extend([(sid.clone(), CallbackStatus::Delivered), (sid.clone(), CallbackStatus::Delivered)]);
        }
    }
    let answers = post_all_at_once(&sim, &posts).await;
    assert!(answers.iter().all(Result::is_ok), "every callback answered 200: {answers:?}");

    for (n, (id, _)) in sent.iter().enumerate() {
        let message: Value = app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
        let mut reported = provider_events(&message);
        reported.sort();
        if n % 5 == 4 {
            // Twilio's 30008 is worth another try: handed over to a successor, as ever.
            assert_eq!(message["status"], "superseded", "{message:#}");
            assert_eq!(reported, ["failed", "sent", "superseded"], "{message:#}");
        } else {
            assert_eq!(message["status"], "delivered", "applied before the 200: {message:#}");
            assert_eq!(reported, ["delivered", "sent"], "one trail event per callback, copies none: {message:#}");
            assert!(message["delivered_at"].is_string() && message["sent_at"].is_string(), "{message:#}");
            assert!(message["status_reason"].is_null(), "{message:#}");
        }
    }
    let (envelopes, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM communications.webhook_envelopes
         WHERE tenant_id = $1 AND kind = 'status' AND outcome = 'applied'",
    )
    .bind(tenant.id)
    .fetch_one(&app.pool)
    .await
    .expect("envelopes");
    assert_eq!(envelopes, 30 + 24 + 6, "sent, delivered and failed each stored and applied once, copies none");
    // Rows written in one transaction share its id (`xmin`): one per envelope would be 60.
    assert!(transactions < envelopes / 2, "{envelopes} envelopes in {transactions} transactions");
}

#[tokio::test]
async fn an_envelope_that_fails_is_recorded_alone_and_its_batch_goes_on_without_it() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("poisoned-callback").await;
    sms(&app, &tenant).await;
    // The database refuses one chosen envelope, and counts (in a sequence, which no rollback
    // undoes) the times it came after other envelopes in its transaction: in a shared batch.
    sqlx::raw_sql(
        "CREATE TABLE public.poisoned (provider_id text PRIMARY KEY);
         CREATE SEQUENCE public.poisoned_in_shared_batch;
         CREATE FUNCTION public.refuse_poisoned() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE
           before integer := coalesce(nullif(current_setting('test.envelopes_in_tx', true), ''), '0')::integer;
         BEGIN
           PERFORM set_config('test.envelopes_in_tx', (before + 1)::text, true);
           IF EXISTS (SELECT 1 FROM public.poisoned WHERE provider_id = NEW.provider_id) THEN
             IF before > 0 THEN
               PERFORM nextval('public.poisoned_in_shared_batch');
             END IF;
             RAISE EXCEPTION 'poisoned envelope %', NEW.provider_id;
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poisoned BEFORE INSERT ON communications.webhook_envelopes
           FOR EACH ROW EXECUTE FUNCTION public.refuse_poisoned();",
    )
    .execute(&app.pool)
    .await
    .expect("the poison");

    // The poisoned callback shares a batch unless it comes alone or first; a few rounds make
    // sure the shared case was the one tested. (Our StatusCallback URL asks Twilio to retry a
    // failed callback: the simulator does, in the background, and the poison refuses each.)
    for round in 1..=5 {
        let sent = sent_messages(&app, &tenant, round, 20).await;
        let (poisoned_id, poisoned_sid) = sent[7].clone();
        sqlx::query("INSERT INTO public.poisoned VALUES ($1)")
            .bind(format!("status:{poisoned_sid}:delivered"))
            .execute(&app.pool)
            .await
            .expect("poison one");
        let sids: Vec<String> = sent.iter().map(|(_, sid)| sid.clone()).collect();
        let answers = deliver_all_at_once(&sim, &sids).await;

        for ((id, sid), answer) in sent.iter().zip(&answers) {
            let message: Value =
                app.get(&format!("/api/v1/messages/{id}"), &tenant.api_key).await.json().await.unwrap();
            if *id == poisoned_id {
                assert!(answer.is_err(), "the poisoned callback is refused (the provider retries it): {answer:?}");
                assert_eq!(message["status"], "sent", "nothing of it applied: {message:#}");
            } else {
                assert!(answer.is_ok(), "{sid}: {answer:?}");
                assert_eq!(message["status"], "delivered", "applied when answered: {message:#}");
            }
        }
        let shared: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.poisoned_in_shared_batch",
        )
        .fetch_one(&app.pool)
        .await
        .expect("shared");
        if shared > 0 {
            return;
        }
    }
    panic!("in five rounds the poisoned callback never shared a batch: the path under test did not run");
}

#[tokio::test]
async fn a_changed_twilio_auth_token_counts_for_the_next_callback() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let tenant = app.create_tenant("rotating-token").await;
    let account = app.active_channel(&tenant, crate::helpers::sim_twilio_sms()).await;
    let provider_url = format!(
        "/api/v1/channel-accounts/{}/providers/{}",
        account["id"].as_str().unwrap(),
        account["providers"][0]["id"].as_str().unwrap()
    );
    let set_token = |token: &'static str| {
        let request = app.client.patch(app.url(&provider_url)).bearer_auth(&tenant.api_key);
        async move {
            let patched = request.json(&json!({"config": {"auth_token": token}})).send().await.unwrap();
            assert_eq!(patched.status(), 200, "{}", patched.text().await.unwrap_or_default());
        }
    };
    let sent = sent_messages(&app, &tenant, 0, 2).await;
    // Verified with the token the simulator signs with: now it is kept.
    sim.post_status_callbacks(&sent[0].1, &[CallbackStatus::Delivered]).await.expect("the sim's token");

    // Another token on the account: the kept one no longer verifies, at once (not a TTL later).
    set_token("a-rotated-token").await;
    let refused = sim.post_status_callbacks(&sent[1].1, &[CallbackStatus::Delivered]).await;
    let refused = refused.expect_err("signed with the token the account no longer has");
    assert!(format!("{refused:#}").contains("403 Forbidden"), "{refused:#}");

    set_token("sim-twilio-auth-token").await;
    sim.post_status_callbacks(&sent[1].1, &[CallbackStatus::Sent]).await.expect("the token is back");
    wait_for(&app, &tenant, &sent[0].0, "delivered").await;
}
