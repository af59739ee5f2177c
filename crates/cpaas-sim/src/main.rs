//! `cpaas-sim`: runs the provider simulator as a standalone server until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use cpaas_sim::{SimConfig, Simulator, SnsBackoff, SnsDeliveryPolicy};

#[derive(Debug, Parser)]
#[command(name = "cpaas-sim", about = "Simulates Meta WhatsApp, Amazon SES/SNS and Twilio for tests and demos")]
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
