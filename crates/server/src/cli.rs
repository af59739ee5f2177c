//! The command line.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kernel::auth::Role;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Switchboard: omnichannel inbox, notification dispatcher and fulfillment for operators",
    long_about = "Switchboard: omnichannel inbox, notification dispatcher and fulfillment for operators.\n\n\
        With no DATABASE_URL (or database.url) it runs a private PostgreSQL cluster from the machine's \
        server binaries in database.data_dir. Configuration: config/default.toml < config/$SWITCHBOARD_ENV.toml \
        < SWITCHBOARD__SECTION__KEY environment variables."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default command).
    Serve(ServeArgs),
    /// Run only the dispatch workers (no HTTP), e.g. to scale sending separately.
    Worker,
    /// Apply database migrations, then exit.
    Migrate,
    /// Manage tenants (operator workspaces).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage agents (people who log into the inbox).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage operator API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Manage platform default providers (credentials tenants without their own inherit).
    #[command(subcommand, name = "platform-provider")]
    PlatformProvider(PlatformProviderCommand),
    /// Manage the master keys that seal secrets at rest.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Drive messages through the real pipeline against the provider simulator and report
    /// throughput, latency, and lost/duplicated counts.
    Bench(crate::bench::BenchArgs),
    /// Seed an inbox at volume and measure lists, search and inbound → live stream latency.
    #[command(name = "bench-inbox")]
    BenchInbox(crate::bench_inbox::InboxBenchArgs),
    /// Measure availability over a busy month, one slot under contention, and sustained bookings.
    #[command(name = "bench-fulfillment")]
    BenchFulfillment(crate::bench_fulfillment::FulfillmentBenchArgs),
    /// Measure the missed-call SLI (webhook → SMS request at the provider), idle and while a
    /// bulk campaign drains.
    #[command(name = "bench-missed-call")]
    BenchMissedCall(crate::bench_missed_call::MissedCallBenchArgs),
    /// Run the service with a demo tenant, an admin agent and an API key, printed once at start.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args, Default)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Leave the demo workspace's inbox empty (no seeded channels, conversations or trickle).
    #[arg(long)]
    pub empty: bool,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    /// Listen address; overrides http.bind (default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first API key.
    Create {
        /// Display name, e.g. "Alpine Coaches".
        #[arg(long)]
        name: String,
        /// Unique workspace slug used at login: a-z, 0-9 and '-'.
        #[arg(long)]
        slug: String,
        /// Print one JSON object: {"tenant_id","slug","api_key"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Agent,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Agent => Role::Agent,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent; the password is read from standard input.
    Create {
        /// The tenant's slug.
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password (at least 12 characters) from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Print one JSON object: {"agent_id"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a tenant; the key is shown once.
    Create {
        /// The tenant's slug.
        #[arg(long, value_name = "SLUG")]
        tenant: String,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// Print one JSON object: {"api_key_id","api_key"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every stored secret under secrets.active_key (older keys must still be
    /// configured until this has run).
    Rotate,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    Ses,
    Sns,
    Twilio,
}

#[derive(Debug, Subcommand)]
pub enum PlatformProviderCommand {
    /// Set (replace) the platform default for a provider, from a JSON configuration.
    Set {
        #[arg(long, value_enum)]
        provider: ProviderArg,
        /// e.g. '{"access_key_id":"AKIA…","secret_access_key":"…","region":"eu-central-1"}'
        #[arg(long, value_name = "JSON")]
        config: String,
    },
    /// List the platform defaults (secrets masked).
    List,
}
