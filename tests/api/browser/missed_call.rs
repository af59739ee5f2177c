//! A missed call in the agent's inbox: the call and the automatic answers in the thread, and a
//! conversation the dialogue handed over carries the "needs agent" label in the list.

use std::time::Duration;

use cpaas_sim::DialOutcome;

use super::Browser;
use crate::helpers::spawn_app_with_sim;
use crate::missed_calls::{business, call, reply, wait_for_texts};

#[tokio::test]
async fn an_agent_sees_the_missed_call_the_answers_and_the_handover_label() {
    let (app, sim) = spawn_app_with_sim(|_| {}).await;
    let (tenant, _, _) = business(&app, false).await;
    let agent = app.create_agent(&tenant, "mia@plumbing.example", "agent").await;
    let caller = "+4915112345682";
    sim.place_call(call(&tenant, caller, DialOutcome::NoAnswer)).await.unwrap();
    wait_for_texts(&sim, caller, 1).await;
    reply(&sim, &tenant, caller, "Do you also fix <b>radiators</b>?").await;
    wait_for_texts(&sim, caller, 2).await;
    let conversation = app.newest_conversation(&tenant, 2).await;

    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=unassigned&c={conversation}"))).await;
    browser.wait_for_text("#thread .messages", "Missed call (no answer)", Duration::from_secs(5)).await;
    browser.wait_for_text("#thread .messages", "Sorry we missed your call! Reply 1 for", Duration::from_secs(5)).await;
    browser
        .wait_for_text("#thread .messages", "Someone from our team will get back to you", Duration::from_secs(5))
        .await;
    // The customer's markup stays text.
    browser.wait_for_text("#thread .messages", "<b>radiators</b>", Duration::from_secs(5)).await;
    browser.wait_for_text(".list .labels", "needs agent", Duration::from_secs(5)).await;
    browser.screenshot("missed-call").await;
}
