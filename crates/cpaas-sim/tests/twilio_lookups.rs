#![allow(clippy::unwrap_used)]
//! Reading Twilio Message resources back: the list (filters, order, paging envelope) and a
//! single message, with the status the callbacks advanced it to.

mod common;

use common::*;
use cpaas_sim::{CallbackStatus, FailureKind, FailureRule, InboundSpec, SimConfig, SimHandle};
use serde_json::Value;

async fn get(sim: &SimHandle, path_and_query: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path_and_query}", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .send()
        .await
        .unwrap()
}

async fn list(sim: &SimHandle, query: &str) -> Value {
    let response = get(sim, &format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json?{query}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn sids(page: &Value) -> Vec<String> {
    page["messages"].as_array().unwrap().iter().map(|m| m["sid"].as_str().unwrap().to_owned()).collect()
}

async fn send(sim: &SimHandle, to: &str) -> String {
    twilio_send(sim, to).await.json::<Value>().await.unwrap()["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_message_reads_back_with_the_status_its_callbacks_reached() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    let sid = send(&sim, "+15558675310").await;
    let path = format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/{sid}.json");
    let queued: Value = get(&sim, &path).await.json().await.unwrap();
    assert_eq!((queued["status"].as_str(), queued["date_sent"].as_str()), (Some("queued"), None));
    assert_eq!(queued["direction"], "outbound-api");
    assert_eq!(queued["body"], "Hello");
    assert_eq!(queued["uri"], path);

    sim.post_status_callbacks(&sid, &[CallbackStatus::Sent, CallbackStatus::Delivered]).await.unwrap();
    let delivered: Value = get(&sim, &path).await.json().await.unwrap();
    assert_eq!(delivered["status"], "delivered");
    assert!(delivered["date_sent"].as_str().unwrap().ends_with("+0000"));
    assert!(delivered["error_code"].is_null());

    // An undeliverable message ends `undelivered` with its error code, even when the
    // callback itself never got through.
    sim.add_failure(FailureRule {
        provider: Some("twilio".into()),
        recipient: None,
        kind: FailureKind::Undeliverable,
        probability: 1.0,
        remaining: Some(1),
    });
    let failing = send(&sim, "+15558675311").await;
    receiver.refuse_next(1, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    sim.post_status_callbacks(&failing, &[CallbackStatus::Failed]).await.unwrap_err();
    let undelivered: Value =
        get(&sim, &format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/{failing}.json")).await.json().await.unwrap();
    assert_eq!(
        (undelivered["status"].as_str(), undelivered["error_code"].as_u64()),
        (Some("undelivered"), Some(30003))
    );

    let missing = get(&sim, &format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/SM{}.json", "0".repeat(32))).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], 20404);
    let unauthorised =
        client().get(format!("{}{path}", sim.base_url())).basic_auth(TWILIO_SID, Some("wrong")).send().await.unwrap();
    assert_eq!(unauthorised.status(), 401);
    let operations: Vec<String> = sim.ledger().into_iter().map(|e| e.operation + ":" + &e.outcome).collect();
    assert!(operations.contains(&"fetch_message:error:20404".to_owned()), "{operations:?}");
    assert!(operations.contains(&"fetch_message:error:20003".to_owned()), "{operations:?}");
}

#[tokio::test]
async fn the_list_filters_orders_newest_first_and_pages() {
    let (sim, _receiver) = start_with_receiver(SimConfig::default()).await;
    let first = send(&sim, "+15558675310").await;
    let other = send(&sim, "+15550000000").await;
    let second = send(&sim, "+15558675310").await;
    sim.post_inbound(InboundSpec::Twilio {
        account_sid: TWILIO_SID.into(),
        from: "+15558675310".into(),
        to: "+15005550006".into(),
        body: "reply".into(),
    })
    .await
    .unwrap();

    let to = list(&sim, "To=%2B15558675310").await;
    assert_eq!(sids(&to), [second.clone(), first.clone()], "not sent yet: newest first, by creation");
    for key in ["first_page_uri", "next_page_uri", "previous_page_uri", "page", "page_size", "uri", "start", "end"] {
        assert!(to.get(key).is_some(), "{key} missing from {to:#}");
    }
    assert_eq!(to["page_size"], 50);
    assert_eq!(
        to["uri"],
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json?To=%2B15558675310&PageSize=50&Page=0")
    );
    assert!(to["next_page_uri"].is_null() && to["previous_page_uri"].is_null());

    let from_them = list(&sim, "From=%2B15558675310").await;
    assert_eq!(from_them["messages"][0]["direction"], "inbound");
    assert_eq!(from_them["messages"][0]["status"], "received");

    // Messages not sent yet have no date_sent, so a DateSent filter cannot find them.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let sent_today = list(&sim, &format!("To=%2B15558675310&DateSent={today}")).await;
    assert!(sids(&sent_today).is_empty());
    sim.post_status_callbacks(&first, &[CallbackStatus::Sent]).await.unwrap();
    assert_eq!(sids(&list(&sim, &format!("To=%2B15558675310&DateSent%3E={today}")).await), [first.as_str()]);
    assert_eq!(sids(&list(&sim, "DateSent%3C=2000-01-01").await), Vec::<String>::new());
    // Sent messages sort by date_sent, after the unsent ones.
    assert_eq!(sids(&list(&sim, "To=%2B15558675310").await), [second.clone(), first.clone()]);

    // One per page, following next_page_uri to the end.
    let mut page = list(&sim, "PageSize=1").await;
    let mut seen = sids(&page);
    while let Some(next) = page["next_page_uri"].as_str() {
        let response = get(&sim, next).await;
        page = response.json().await.unwrap();
        seen.extend(sids(&page));
        assert_eq!(page["page_size"], 1);
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.contains(&other));
    assert_eq!(page["page"], 3);
    assert!(page["previous_page_uri"].as_str().unwrap().contains("Page=2"));

    let bad_date = get(&sim, &format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json?DateSent=soon")).await;
    assert_eq!(bad_date.status(), 400);
    let unauthorised = client()
        .get(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
}
