//! Email attachments in the composer: picked with the file input, listed, removable, refused
//! before sending when too large, and shown in the thread both ways.

use std::time::{Duration, Instant};

use cpaas_sim::InboundSpec;

use super::Browser;
use crate::delivery::{auto_callbacks, email};
use crate::helpers::spawn_app_with_sim_config;

#[tokio::test]
async fn an_agent_attaches_files_to_an_email_reply_and_ses_receives_them() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    email(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    sim.post_inbound(InboundSpec::SesInbound {
        from: "ann.customer@example.org".into(),
        to: "support@mail.alpine.example".into(),
        subject: "Seat map".into(),
        text: "My booking is attached.".into(),
        in_reply_to: None,
    })
    .await
    .unwrap();
    let id = app.newest_conversation(&tenant, 1).await;
    // The simulator's inbound mail has no attachments: give the stored message one, in the shape
    // the inbound MIME parser stores (name, type and size; the bytes stay with the provider).
    sqlx::query(
        r#"UPDATE communications.messages SET content = content || '{"attachments": [
               {"filename": "booking.pdf", "content_type": "application/pdf", "size": 24576}]}'::jsonb
           WHERE conversation_id = $1::uuid"#,
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();

    let dir = std::env::temp_dir().join(format!("switchboard-attach-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let seat_map = dir.join("seat-map.txt");
    std::fs::write(&seat_map, "Row 12, seat A: window.").unwrap();
    let extra = dir.join("extra.txt");
    std::fs::write(&extra, "not this one").unwrap();
    // Beyond what the default 2 MiB request can carry once base64-encoded.
    let huge = dir.join("huge.bin");
    std::fs::write(&huge, vec![0u8; 1_800_000]).unwrap();

    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.wait_for_text("#thread .messages .attachments", "booking.pdf", Duration::from_secs(5)).await;
    browser.wait_for_text("#thread .messages .attachments", "24.6 kB", Duration::from_secs(5)).await;

    // The picker is a real file input (keyboard-reachable) with a visible label.
    let label = browser.text("label[for=attach]").await;
    assert_eq!(label, "Attach files");
    let reachable = browser.script("const i = document.querySelector('#attach'); arguments[0](i.type === 'file' && i.tabIndex >= 0 && !i.disabled);").await;
    assert_eq!(reachable, true);

    // Too large: said at once, and sending is refused without a request.
    browser.type_into("#attach", huge.to_str().unwrap()).await;
    browser.wait_for_text("#attach-error", "Too large to send", Duration::from_secs(5)).await;
    browser.type_into("#reply", "Here it is.\u{E007}").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replies: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM communications.messages WHERE conversation_id = $1::uuid AND direction = 'outbound'",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(replies, 0, "a reply too large for the server was sent anyway");
    browser.click("#picked button[aria-label='Remove huge.bin']").await;
    assert!(browser.text("#picked").await.is_empty());
    let error_hidden = browser.script("arguments[0](document.querySelector('#attach-error').hidden);").await;
    assert_eq!(error_hidden, true, "the error stays after removing the file");

    // Two files picked at once (WebDriver takes one path per line), one removed again.
    browser.type_into("#attach", &format!("{}\n{}", seat_map.display(), extra.display())).await;
    browser.wait_for_text("#picked", "extra.txt", Duration::from_secs(5)).await;
    browser.wait_for_text("#picked", "seat-map.txt", Duration::from_secs(5)).await;
    browser.click("#picked button[aria-label='Remove extra.txt']").await;
    let listed = browser.text("#picked").await;
    assert!(listed.contains("seat-map.txt") && listed.contains("23 byte"), "{listed}");
    assert!(!listed.contains("extra.txt"), "{listed}");
    browser.screenshot("composer-attachments").await;

    browser.click(".composer button[type=submit]").await;
    browser.wait_for_text("#thread .messages .outbound .attachments", "seat-map.txt", Duration::from_secs(5)).await;
    assert!(browser.text("#picked").await.is_empty(), "the sent files stay picked");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mime = loop {
        let sent = sim.ledger().into_iter().find(|entry| entry.operation == "SendEmail");
        if let Some(mail) = sent {
            break mail.body["Content"]["Raw"]["Data"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "the reply never reached SES");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(mime.contains("Content-Disposition: attachment; filename=\"seat-map.txt\""), "{mime}");
    // "Row 12, seat A: window." in base64, as the MIME part carries it.
    assert!(mime.contains("Um93IDEyLCBzZWF0IEE6IHdpbmRvdy4="), "{mime}");
    assert!(!mime.contains("extra.txt") && !mime.contains("huge.bin"), "{mime}");
    browser.screenshot("thread-attachments").await;
    let _ = std::fs::remove_dir_all(&dir);
}
