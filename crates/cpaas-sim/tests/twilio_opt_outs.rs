#![allow(clippy::unwrap_used)]
//! Twilio's default opt-out handling: a single-word STOP (or another opt-out keyword) texted to
//! one of our numbers blocks that number's sends to the handset (400, code 21610) until the
//! handset texts START; the keyword message still reaches our webhook.

mod common;

use common::*;
use cpaas_sim::{InboundSpec, SimConfig, SimHandle, TwilioOptOut};
use serde_json::Value;

const HANDSET: &str = "+15558675310";
const OUR_NUMBER: &str = "+15005550006";
const OTHER_NUMBER: &str = "+15005550007";

async fn text_us(sim: &SimHandle, from: &str, body: &str) {
    sim.post_inbound(InboundSpec::Twilio {
        account_sid: TWILIO_SID.into(),
        from: from.into(),
        to: OUR_NUMBER.into(),
        body: body.into(),
    })
    .await
    .unwrap();
}

async fn send(sim: &SimHandle, fields: &[(&str, &str)]) -> (u16, Value) {
    let response = client()
        .post(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .form(fields)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn send_from(sim: &SimHandle, from: &str, to: &str) -> (u16, Value) {
    send(sim, &[("To", to), ("From", from), ("Body", "Your appointment is confirmed")]).await
}

fn assert_unsubscribed((status, body): &(u16, Value)) {
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["code"], 21610);
    assert_eq!(body["message"], "Attempt to send to unsubscribed recipient");
    assert_eq!(body["more_info"], "https://www.twilio.com/docs/errors/21610");
    assert_eq!(body["status"], 400);
}

async fn opt_outs_over_http(sim: &SimHandle) -> Vec<TwilioOptOut> {
    client().get(format!("{}/sim/twilio/opt-outs", sim.base_url())).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn stop_blocks_our_number_until_start() {
    let (sim, receiver) = start_with_receiver(SimConfig::default()).await;
    assert_eq!(send_from(&sim, OUR_NUMBER, HANDSET).await.0, 201);

    text_us(&sim, HANDSET, "STOP").await;
    // The keyword still reaches the webhook.
    let inbound = receiver.posts().pop().unwrap().form_map();
    assert_eq!((inbound["Body"].as_str(), inbound["From"].as_str()), ("STOP", HANDSET));

    sim.clear_ledger();
    assert_unsubscribed(&send_from(&sim, OUR_NUMBER, HANDSET).await);
    let ledger = sim.ledger();
    assert!(ledger.iter().all(|e| e.operation == "create_message" && e.outcome == "error:21610"), "{ledger:#?}");
    assert!(ledger.iter().all(|e| e.provider_message_id.is_none()), "no message is created");
    assert_eq!(ledger[0].recipient.as_deref(), Some(HANDSET));

    // No Message resource was made for the refused sends.
    let listed: Value = client()
        .get(format!("{}/2010-04-01/Accounts/{TWILIO_SID}/Messages.json?From=%2B15005550006", sim.base_url()))
        .basic_auth(TWILIO_SID, Some("sim-twilio-auth-token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1, "only the send before STOP");

    // A send through a Messaging Service is refused too; another of our numbers is not blocked.
    let (status, body) =
        send(&sim, &[("To", HANDSET), ("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef"), ("Body", "x")])
            .await;
    assert_unsubscribed(&(status, body));
    assert_eq!(send_from(&sim, OTHER_NUMBER, HANDSET).await.0, 201);
    // Other handsets are not blocked either.
    assert_eq!(send_from(&sim, OUR_NUMBER, "+15558675311").await.0, 201);

    let blocks = opt_outs_over_http(&sim).await;
    assert_eq!(blocks, sim.twilio_opt_outs());
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        (
            blocks[0].account_sid.as_str(),
            blocks[0].number.as_str(),
            blocks[0].handset.as_str(),
            blocks[0].keyword.as_str()
        ),
        (TWILIO_SID, OUR_NUMBER, HANDSET, "STOP")
    );

    text_us(&sim, HANDSET, "start").await;
    assert_eq!(receiver.posts().pop().unwrap().form_map()["Body"], "start");
    assert_eq!(send_from(&sim, OUR_NUMBER, HANDSET).await.0, 201);
    assert!(opt_outs_over_http(&sim).await.is_empty());
}

#[tokio::test]
async fn only_a_single_keyword_opts_out() {
    let (sim, _receiver) = start_with_receiver(SimConfig::default()).await;
    text_us(&sim, HANDSET, "STOP PLEASE").await;
    text_us(&sim, HANDSET, "please stop").await;
    text_us(&sim, HANDSET, "HELP").await;
    assert_eq!(send_from(&sim, OUR_NUMBER, HANDSET).await.0, 201);
    assert!(sim.twilio_opt_outs().is_empty());

    // Case and surrounding whitespace do not matter.
    text_us(&sim, HANDSET, " stop ").await;
    assert_unsubscribed(&send_from(&sim, OUR_NUMBER, HANDSET).await);
    assert_eq!(sim.ledger().last().unwrap().outcome, "error:21610");

    // Every opt-out keyword counts, every opt-in keyword lifts the block.
    for (out, back) in [("Unsubscribe", "YES"), ("revoke", "Unstop"), ("OPTOUT", "start"), ("\tEnd\n", "START")] {
        text_us(&sim, "+15558675399", out).await;
        assert_unsubscribed(&send_from(&sim, OUR_NUMBER, "+15558675399").await);
        text_us(&sim, "+15558675399", back).await;
        assert_eq!(send_from(&sim, OUR_NUMBER, "+15558675399").await.0, 201, "{back} after {out}");
    }
}

#[tokio::test]
async fn an_mms_keyword_opts_out_and_the_blocks_can_be_cleared() {
    let (sim, _receiver) = start_with_receiver(SimConfig::default()).await;
    sim.post_inbound(InboundSpec::TwilioMms {
        account_sid: TWILIO_SID.into(),
        webhook_id: Some("tenant-1".into()),
        from: HANDSET.into(),
        to: OUR_NUMBER.into(),
        body: "Quit".into(),
        media: vec!["image/jpeg".into()],
    })
    .await
    .unwrap();
    assert_unsubscribed(&send_from(&sim, OUR_NUMBER, HANDSET).await);
    assert_eq!(sim.twilio_opt_outs()[0].keyword, "QUIT");
    let cleared = client().delete(format!("{}/sim/twilio/opt-outs", sim.base_url())).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(send_from(&sim, OUR_NUMBER, HANDSET).await.0, 201);
}
