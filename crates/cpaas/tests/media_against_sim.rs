//! `cpaas::media` against the provider simulator: Meta's two-step download, Twilio's redirect to
//! storage (followed without credentials), the size cap, and URLs we refuse to send credentials to.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpaas::media::{MediaError, MediaFetcher, MediaSource};
use cpaas::{InboundContent, MetaConfig, Provider, ProviderEvent, TwilioConfig};
use cpaas_sim::{InboundSpec, SimConfig, SimHandle, Simulator, media_bytes};
use secrecy::SecretString;

const TWILIO_SID: &str = "ACe808b673a9ec8700fe049815e199bc06";

/// A sim whose webhooks land in the returned list (raw bodies).
async fn sim_with_receiver() -> (SimHandle, Arc<Mutex<Vec<Vec<u8>>>>) {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    let receiver = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            sink.lock().unwrap().push(body.to_vec());
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let config = SimConfig { webhook_base: Some(format!("http://{address}")), ..SimConfig::default() };
    (Simulator::start(config).await.unwrap(), received)
}

fn meta(base: &str) -> MetaConfig {
    MetaConfig {
        base_url: base.into(),
        api_version: "v21.0".into(),
        phone_number_id: "1122334455667".into(),
        waba_id: "102290129340398".into(),
        access_token: SecretString::from("EAAG-sim-token"),
        app_secret: SecretString::from("sim-meta-app-secret"),
        verify_token: SecretString::from("verify"),
    }
}

fn twilio(base: &str) -> TwilioConfig {
    TwilioConfig {
        base_url: base.into(),
        account_sid: TWILIO_SID.into(),
        auth_token: SecretString::from("sim-twilio-auth-token"),
        from: Some("+15005550006".into()),
        messaging_service_sid: None,
        status_callback_url: None,
    }
}

fn fetcher() -> MediaFetcher {
    MediaFetcher::new(Duration::from_secs(2), Duration::from_secs(10)).unwrap()
}

fn last_body(received: &Mutex<Vec<Vec<u8>>>) -> Vec<u8> {
    received.lock().unwrap().last().cloned().unwrap()
}

#[tokio::test]
async fn meta_media_is_looked_up_then_downloaded_and_capped() {
    let (sim, received) = sim_with_receiver().await;
    sim.post_inbound(InboundSpec::MetaMedia {
        phone_number_id: "1122334455667".into(),
        from: "4915112345678".into(),
        kind: "audio".into(),
        caption: None,
        mime_type: "audio/ogg; codecs=opus".into(),
        filename: None,
    })
    .await
    .unwrap();
    let events = cpaas::webhooks::meta::parse(&last_body(&received)).unwrap();
    let [ProviderEvent::InboundMessage { content: InboundContent::Media { media_id: Some(media_id), .. }, .. }] =
        events.as_slice()
    else {
        panic!("{events:?}")
    };
    let config = meta(&sim.base_url());
    let source = MediaSource::Meta { config: &config, media_id };
    let fetched = fetcher().fetch(source).await.unwrap();
    assert_eq!(fetched.content_type.as_deref(), Some("audio/ogg; codecs=opus"));
    assert_eq!(fetched.bytes().await.unwrap(), media_bytes(media_id));
    let lookup = sim.ledger().into_iter().find(|e| e.operation == "get_media").unwrap();
    assert_eq!(lookup.path, format!("/v21.0/{media_id}"));

    // Meta announces the size: a file over the cap is refused before its download starts.
    let downloads = || sim.ledger().iter().filter(|e| e.operation == "download_media").count();
    assert_eq!(downloads(), 1);
    let error = fetcher().with_limit(100).fetch(source).await.unwrap_err();
    assert!(matches!(error, MediaError::TooLarge { provider: Provider::Meta, limit: 100 }), "{error:?}");
    assert_eq!(downloads(), 1);

    // Unknown media and a media id that could change the URL's shape.
    let error = fetcher().fetch(MediaSource::Meta { config: &config, media_id: "../me" }).await.unwrap_err();
    assert!(matches!(error, MediaError::Invalid { .. }), "{error:?}");
}

#[tokio::test]
async fn twilio_media_follow_the_redirect_without_credentials_and_stay_on_the_account() {
    let (sim, received) = sim_with_receiver().await;
    sim.post_inbound(InboundSpec::TwilioMms {
        account_sid: TWILIO_SID.into(),
        webhook_id: None,
        from: "+4915112345678".into(),
        to: "+15005550006".into(),
        body: String::new(),
        media: vec!["image/gif".into()],
    })
    .await
    .unwrap();
    let form = cpaas::webhooks::twilio::parse_form(&last_body(&received));
    let url = form.iter().find(|(k, _)| k == "MediaUrl0").map(|(_, v)| v.clone()).unwrap();
    let config = twilio(&sim.base_url());
    let fetched = fetcher().fetch(MediaSource::Twilio { config: &config, url: &url }).await.unwrap();
    assert_eq!(fetched.content_type.as_deref(), Some("image/gif"));
    assert_eq!(fetched.bytes().await.unwrap(), media_bytes(url.rsplit('/').next().unwrap()));
    let storage = sim.ledger().into_iter().find(|e| e.operation == "download_media").unwrap();
    assert_eq!(storage.body["authorization"], false);

    // Storage answers with its length: over the cap is refused before the body is read.
    let error = fetcher().with_limit(10).fetch(MediaSource::Twilio { config: &config, url: &url }).await.unwrap_err();
    assert!(matches!(error, MediaError::TooLarge { provider: Provider::Twilio, .. }), "{error:?}");

    // The account's credentials go only to the account's own resources.
    for foreign in [
        "https://evil.example/2010-04-01/Accounts/ACe808b673a9ec8700fe049815e199bc06/Messages/MM1/Media/ME1".to_owned(),
        url.replace(TWILIO_SID, "AC00000000000000000000000000000000"),
        format!("{}/sim/ledger", sim.base_url()),
    ] {
        let error = fetcher().fetch(MediaSource::Twilio { config: &config, url: &foreign }).await.unwrap_err();
        assert!(matches!(error, MediaError::Invalid { provider: Provider::Twilio, .. }), "{foreign}: {error:?}");
    }
    // A medium Twilio does not have.
    let missing = url.rsplit_once('/').map(|(head, _)| format!("{head}/ME0")).unwrap();
    let error = fetcher().fetch(MediaSource::Twilio { config: &config, url: &missing }).await.unwrap_err();
    assert!(matches!(error, MediaError::Status { status: 404, .. }), "{error:?}");
}
