//! Merging contacts from the side panel: the contact found is merged into the open
//! conversation's contact, which then shows both identifiers and conversations.

use std::time::Duration;

use cpaas_sim::InboundSpec;
use serde_json::Value;

use super::{Browser, inbound};
use crate::delivery::{auto_callbacks, email, whatsapp};
use crate::helpers::spawn_app_with_sim_config;

#[tokio::test]
async fn an_agent_merges_the_customers_email_contact_into_their_whatsapp_contact_from_the_side_panel() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    email(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    inbound(&sim, "Is the 9:00 bus on time?").await;
    let chat = app.newest_conversation(&tenant, 1).await;
    sim.post_inbound(InboundSpec::SesInbound {
        from: "ann.customer@example.org".into(),
        to: "support@mail.alpine.example".into(),
        subject: "Bus".into(),
        text: "Same question by mail.".into(),
        in_reply_to: None,
    })
    .await
    .unwrap();
    let mail = app.newest_conversation(&tenant, 1).await;
    assert_ne!(chat, mail);
    let contact_of = |id: String| {
        let app = &app;
        let key = tenant.api_key.clone();
        async move {
            let conversation: Value = app.get(&format!("/api/v1/conversations/{id}"), &key).await.json().await.unwrap();
            conversation["contact_id"].as_str().unwrap().to_owned()
        }
    };
    let (survivor, merged) = (contact_of(chat.clone()).await, contact_of(mail.clone()).await);

    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={chat}"))).await;
    browser.find("#live.online").await;
    browser.click(".side details.merge summary").await;
    browser.type_into("#merge-q", "ann.customer").await;
    browser.wait_for_text("#merge-results .kind", "ann.customer@example.org", Duration::from_secs(5)).await;

    // A live change to the open conversation refreshes the panel but keeps the search as typed.
    inbound(&sim, "Hello again").await;
    browser.wait_for_text("#thread .messages", "Hello again", Duration::from_secs(5)).await;
    let kept = browser
        .script("const q = document.querySelector('#merge-q'); arguments[0]([q.value, document.activeElement === q]);")
        .await;
    assert_eq!(kept, serde_json::json!(["ann.customer", true]), "the refresh lost the merge search");

    browser.click(&format!("#merge-results [data-merge-pick='{merged}']")).await;
    browser.wait_for_text("#merge-question", "cannot be undone", Duration::from_secs(5)).await;
    browser.screenshot("merge-confirm").await;
    browser.click("[data-merge-confirm]").await;
    browser.wait_for_text(".side .identifiers", "ann.customer@example.org", Duration::from_secs(5)).await;
    browser.wait_for_text(".side .identifiers", "phone +4915112345678", Duration::from_secs(5)).await;
    browser.wait_for_text(".side .others", "email", Duration::from_secs(5)).await;
    browser.screenshot("merged").await;

    let gone: Value = app.get(&format!("/api/v1/contacts/{merged}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(gone["merged_into"], survivor.as_str(), "the contact found is merged into the open one");
    assert_eq!(contact_of(mail.clone()).await, survivor, "its conversation moved to the survivor");
    // The other conversation opens from the panel, with the same contact.
    browser.click(&format!(".side .others a[data-id='{mail}']")).await;
    browser.wait_for_text("#thread .messages", "Same question by mail.", Duration::from_secs(5)).await;
    browser.wait_for_text(".side .identifiers", "phone +4915112345678", Duration::from_secs(5)).await;
}
