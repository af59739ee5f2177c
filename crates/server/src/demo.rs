//! `switchboard demo`: the service with demo data and simulated providers. A cpaas-sim runs in
//! process on its own port; every provider endpoint points at it, platform SES/SNS defaults use
//! it, and its signed callbacks come back to our webhook routes, so everything a real operator
//! would do works offline, end to end.

use anyhow::Context;
use communications::Communications;
use communications::channels::ProviderKind;
use cpaas_sim::{SimConfig, Simulator};
use serde_json::json;

use crate::app::Application;
use crate::cli::DemoArgs;
use crate::commands::{self, DemoCredentials};
use crate::database::Database;
use crate::settings::Settings;

/// The simulator's SNS origination number (what `ListOriginationNumbers` reports).
const SIMULATED_SMS_NUMBER: &str = "+18005550199";

pub async fn run(settings: &mut Settings, args: DemoArgs, database: &Database) -> anyhow::Result<()> {
    if let Some(bind) = args.serve.bind {
        settings.http.bind = bind;
    }
    let sim_listener =
        tokio::net::TcpListener::bind("127.0.0.1:0").await.context("cannot bind the provider simulator")?;
    let sim_url = format!("http://{}", sim_listener.local_addr()?);
    let sim_config = SimConfig::default();
    point_providers_at(settings, &sim_url, &sim_config);

    let app = Application::build(settings, database.pool.clone()).await?;
    let (router, sim) = Simulator::router(SimConfig {
        webhook_base: Some(format!("http://{}", app.local_addr())),
        auto_callbacks: Some(std::time::Duration::from_millis(500)),
        ..sim_config
    })?;
    sim.set_base_url(&sim_url);
    tokio::spawn(async move { axum::serve(sim_listener, router).await });

    let keyring = std::sync::Arc::new(settings.secrets.keyring()?);
    let communications = Communications::new(database.pool.clone(), keyring);
    set_simulated_platform_defaults(&communications).await?;
    let credentials = commands::prepare_demo(&database.pool).await?;
    let tenant = identity::tenants::find_by_slug(&database.pool, &credentials.slug)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("the demo tenant vanished")?;
    let webchat = demo_webchat(&communications, tenant.id).await?;
    // Seeded through the API once it serves (requests wait in the listener's queue until then).
    // The banner waits for the seeding: the channel accounts it creates are what the printed
    // commands send through, and a send a moment too early would find none.
    let (seeded, banner_due) = tokio::sync::oneshot::channel();
    if args.empty {
        let _ = seeded.send(());
    } else {
        tokio::spawn(crate::demo_seed::seed_and_trickle(
            format!("http://{}", app.local_addr()),
            credentials.api_key.clone(),
            sim.clone(),
            tenant.id.0,
            std::time::Duration::from_secs(20),
            seeded,
        ));
    }

    super::log_listening(&app, database);
    let base = format!("http://{}", app.local_addr());
    tokio::spawn(async move {
        // A seeding that failed or hangs still gets the banner, a little late.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), banner_due).await;
        print_banner(&credentials, &base, &sim_url, webchat, tenant.id.0);
    });
    super::serve_with_workers(settings, app).await
}

/// Only here, for the simulator running in this process: its SNS certificate is served over
/// plain http from its own address, and its SES events and inbound mail come on its topics.
fn point_providers_at(settings: &mut Settings, sim_url: &str, sim: &SimConfig) {
    let providers = &mut settings.providers;
    providers.meta_graph_url = sim_url.to_owned();
    providers.twilio_api_url = sim_url.to_owned();
    providers.aws_endpoint_url = sim_url.to_owned();
    providers.meta_app_id = "1000000000000001".into();
    providers.meta_app_secret = sim.meta_app_secret.clone().into();
    let sim_host = sim_url.trim_start_matches("http://").to_owned();
    providers.sns_cert_hosts.push(sim_host);
    providers.sns_cert_allow_http = true;
    providers.sns_topic_arns.extend(sim.sns_topic_arns());
    let calendars = &mut settings.calendars;
    calendars.google_api_url = sim_url.to_owned();
    calendars.google_token_url = format!("{sim_url}/token");
    calendars.jobber_graphql_url = format!("{sim_url}/api/graphql");
    calendars.jobber_token_url = format!("{sim_url}/api/oauth/token");
    calendars.google_client_id = sim.google_client_id.clone();
    calendars.google_client_secret = sim.google_client_secret.clone().into();
    calendars.jobber_client_id = sim.jobber_client_id.clone();
    calendars.jobber_client_secret = sim.jobber_client_secret.clone().into();
}

/// Tenants that bring no AWS account of their own send email and SMS through these.
async fn set_simulated_platform_defaults(communications: &Communications) -> anyhow::Result<()> {
    let aws = json!({"access_key_id": "AKIASIMULATED0000001", "secret_access_key": "simulated-secret-access-key"});
    communications.set_platform_default(ProviderKind::Ses, &aws).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sns = aws.clone();
    sns["origination_number"] = json!(SIMULATED_SMS_NUMBER);
    communications.set_platform_default(ProviderKind::Sns, &sns).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The demo tenant's webchat channel (created and activated on the first start): its demo page
/// is a website with the widget, for chatting with the inbox as a visitor.
async fn demo_webchat(communications: &Communications, tenant: kernel::ids::TenantId) -> anyhow::Result<uuid::Uuid> {
    let fail = |e: kernel::error::ApiError| anyhow::anyhow!("{e}");
    let accounts = communications
        .channel_accounts(tenant, kernel::pagination::PageRequest { limit: 100, after: None })
        .await
        .map_err(fail)?;
    let existing = accounts.iter().find(|a| {
        a.channel_type == communications::channels::ChannelType::Webchat
            && a.status != communications::channels::ChannelStatus::Revoked
    });
    let account = match existing {
        Some(account) => account.clone(),
        None => {
            let input = communications::channels::service::CreateAccount {
                channel_type: communications::channels::ChannelType::Webchat,
                provider: None,
                display_name: "Demo Tours".into(),
                config: Some(json!({"greeting": "Hello! Ask us anything about your trip."})),
            };
            communications.create_channel_account(tenant, input).await.map_err(fail)?
        }
    };
    if account.status == communications::channels::ChannelStatus::PendingVerification {
        communications.verify_channel_account(tenant, account.id).await.map_err(fail)?;
    }
    Ok(account.id)
}

fn print_banner(demo: &DemoCredentials, address: &str, sim_url: &str, webchat: uuid::Uuid, tenant: uuid::Uuid) {
    let number = crate::demo_seed::DEMO_SMS_NUMBER;
    let account = format!("AC{}", "0123456789abcdef".repeat(2));
    let call =
        format!(r#"{{"account_sid":"{account}","webhook_id":"{tenant}","from":"+4915112345678","to":"{number}"}}"#);
    let reply = format!(
        r#"{{"provider":"twilio","account_sid":"{tenant}","from":"+4915112345678","to":"{number}","body":"1"}}"#
    );
    println!(
        "\nSwitchboard demo is running at {address}\n\
         \x20 workspace:  {slug}\n\
         \x20 admin:      {email}  password: {password}\n\
         \x20 inbox:      {address}/inbox (log in with the admin above)\n\
         \x20 webchat:    {address}/webchat/{webchat}/demo (a website with the chat widget)\n\
         \x20 calendars:  {sim_url}/sim/google/calendars/{calendar}/events and {sim_url}/sim/jobber/visits\n\
         \x20 API key:    {key}\n\
         \x20 try:        curl -H 'Authorization: Bearer {key}' {address}/api/v1/me\n\
         \x20 providers:  simulated at {sim_url} (requests: {sim_url}/sim/ledger)\n\
         \x20 missed call: curl -X POST {sim_url}/sim/calls -H 'content-type: application/json' -d '{call}'\n\
         \x20 answer 1:    curl -X POST {sim_url}/sim/inbound -H 'content-type: application/json' -d '{reply}'\n\
         These credentials are new on every start and are not shown again.\n",
        slug = demo.slug,
        email = demo.admin_email,
        password = demo.admin_password,
        key = demo.api_key,
        calendar = crate::demo_seed::DEMO_CALENDAR,
    );
}
