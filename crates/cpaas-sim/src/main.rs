//! `cpaas-sim`: runs the provider simulator as a standalone server until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use cpaas_sim::{SimConfig, Simulator, SnsBackoff, SnsDeliveryPolicy};

#[derive(Debug, Parser)]
#[command(
    name = "cpaas-sim",
    about = "Simulates Meta WhatsApp, Amazon SES/SNS, Twilio, Google Calendar and Jobber for tests and demos"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    bind: SocketAddr,
    /// Where signed callbacks and inbound webhooks go, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    webhook_base: Option<String>,
    /// If set, post sent→delivered(→read) status callbacks this many milliseconds apart after each accepted send.
    #[arg(long)]
    auto_callbacks_ms: Option<u64>,
    /// Signs Meta webhooks (X-Hub-Signature-256).
    #[arg(long, default_value = "sim-meta-app-secret")]
    meta_app_secret: String,
    /// Signs Twilio webhooks and is the expected Basic-auth password.
    #[arg(long, default_value = "sim-twilio-auth-token")]
    twilio_auth_token: String,
    /// SNS SignatureVersion: 1 (SHA1withRSA) or 2 (SHA256withRSA).
    #[arg(long, default_value_t = 1)]
    sns_signature_version: u8,
    /// AWS region used in ARNs.
    #[arg(long, default_value = "eu-central-1")]
    aws_region: String,
    /// Meta: wait before the first redelivery of a failed webhook, in ms; it doubles each time.
    #[arg(long, default_value_t = 1000)]
    meta_retry_base_ms: u64,
    /// Meta: longest wait between redeliveries, in ms.
    #[arg(long, default_value_t = 30_000)]
    meta_retry_max_ms: u64,
    /// Meta: stop redelivering this many seconds after the first attempt (real Meta: 7 days).
    #[arg(long, default_value_t = 3600)]
    meta_retry_window_s: u64,
    /// SNS delivery policy: retries after the first attempt (AWS default 3).
    #[arg(long, default_value_t = 3)]
    sns_retries: u32,
    /// SNS delivery policy: wait before the first retry, in ms (AWS default 20 s).
    #[arg(long, default_value_t = 20_000)]
    sns_retry_delay_ms: u64,
    /// SNS delivery policy: wait before the last retry, in ms; defaults to --sns-retry-delay-ms.
    #[arg(long)]
    sns_retry_max_delay_ms: Option<u64>,
    /// SNS delivery policy: how the waits grow from the first to the last retry.
    #[arg(long, value_enum, default_value_t = Backoff::Linear)]
    sns_backoff: Backoff,
    /// Google OAuth client id the token endpoint expects.
    #[arg(long, default_value = "sim-google-client-id.apps.googleusercontent.com")]
    google_client_id: String,
    /// Google OAuth client secret the token endpoint expects.
    #[arg(long, default_value = "sim-google-client-secret")]
    google_client_secret: String,
    /// Jobber OAuth client id the token endpoint expects.
    #[arg(long, default_value = "sim-jobber-client-id")]
    jobber_client_id: String,
    /// Jobber OAuth client secret; it also signs Jobber webhooks (X-Jobber-Hmac-SHA256).
    #[arg(long, default_value = "sim-jobber-client-secret")]
    jobber_client_secret: String,
    /// Lifetime of Google and Jobber access tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    access_token_ttl_s: u64,
    /// Google: sync tokens older than this many seconds answer 410 fullSyncRequired.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    google_sync_token_ttl_s: u64,
    /// Jobber: query-cost points when the budget is full.
    #[arg(long, default_value_t = 10_000)]
    jobber_cost_maximum: u32,
    /// Jobber: query-cost points restored per second.
    #[arg(long, default_value_t = 500)]
    jobber_restore_rate: u32,
    /// Jobber: where webhooks go (default {webhook-base}/api/webhooks/jobber).
    #[arg(long)]
    jobber_webhook_url: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backoff {
    Linear,
    Exponential,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = SimConfig {
        webhook_base: args.webhook_base,
        meta_app_secret: args.meta_app_secret,
        twilio_auth_token: args.twilio_auth_token,
        sns_signature_version: args.sns_signature_version,
        auto_callbacks: args.auto_callbacks_ms.map(Duration::from_millis),
        aws_region: args.aws_region,
        meta_retry_base: Duration::from_millis(args.meta_retry_base_ms),
        meta_retry_max_delay: Duration::from_millis(args.meta_retry_max_ms),
        meta_retry_window: Duration::from_secs(args.meta_retry_window_s),
        sns_delivery_policy: SnsDeliveryPolicy {
            num_retries: args.sns_retries,
            min_delay: Duration::from_millis(args.sns_retry_delay_ms),
            max_delay: Duration::from_millis(args.sns_retry_max_delay_ms.unwrap_or(args.sns_retry_delay_ms)),
            backoff: match args.sns_backoff {
                Backoff::Linear => SnsBackoff::Linear,
                Backoff::Exponential => SnsBackoff::Exponential,
            },
        },
        google_client_id: args.google_client_id,
        google_client_secret: args.google_client_secret,
        jobber_client_id: args.jobber_client_id,
        jobber_client_secret: args.jobber_client_secret,
        access_token_ttl: Duration::from_secs(args.access_token_ttl_s),
        google_sync_token_ttl: Duration::from_secs(args.google_sync_token_ttl_s),
        google_channel_ttl: SimConfig::default().google_channel_ttl,
        jobber_cost: cpaas_sim::JobberCost {
            maximum_available: args.jobber_cost_maximum,
            restore_rate: args.jobber_restore_rate,
        },
        jobber_webhook_url: args.jobber_webhook_url,
    };
    let handle = Simulator::start_on(config.clone(), args.bind).await?;
    // The topics are what a receiver must be told to trust; another process reads them here.
    tracing::info!(
        base_url = %handle.base_url(),
        webhook_base = ?config.webhook_base,
        sns_signing_cert_url = %handle.sns_signing_cert_url(),
        ses_events_topic_arn = %config.ses_events_topic_arn(),
        ses_inbound_topic_arn = %config.ses_inbound_topic_arn(),
        "cpaas-sim listening"
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("cpaas-sim stopping");
    Ok(())
}
