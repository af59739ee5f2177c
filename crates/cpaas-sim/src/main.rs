//! `cpaas-sim`: runs the provider simulator as a standalone server until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use cpaas_sim::{SimConfig, Simulator};

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
    };
    let handle = Simulator::start_on(config.clone(), args.bind).await?;
    tracing::info!(
        base_url = %handle.base_url(),
        webhook_base = ?config.webhook_base,
        sns_signing_cert_url = %handle.sns_signing_cert_url(),
        "cpaas-sim listening"
    );
    tokio::signal::ctrl_c().await?;
    tracing::info!("cpaas-sim stopping");
    Ok(())
}
