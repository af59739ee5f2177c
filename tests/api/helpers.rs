//! The test harness: databases, a spawned app, and helpers for tenants, agents and keys.

use std::path::PathBuf;
use std::sync::OnceLock;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use switchboard::app::Application;
use switchboard::settings::Settings;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The server every test database lives on (a superuser URL to its `postgres` database).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_DATABASE_URL is not set: run the tests with `scripts/test`, which starts a throwaway \
             PostgreSQL, or point TEST_DATABASE_URL at a PostgreSQL superuser URL"
        )
    })
}

pub fn url_for(database: &str) -> String {
    let admin = admin_url();
    let (base, query) = admin.split_once('?').map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A name that changes whenever a migration does, so a stale template is never used.
fn template_name() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for migration in switchboard::database::migrator().iter() {
            for byte in migration.version.to_le_bytes().iter().chain(migration.checksum.iter()) {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("switchboard_template_{hash:016x}")
    })
    .clone()
}

/// Builds the migrated template once per server (serialised by an advisory lock, published by
/// an atomic rename), then clones it: a fresh, migrated database in milliseconds.
pub async fn fresh_database() -> String {
    let template = template_name();
    let mut admin = PgConnection::connect(&admin_url()).await.expect("connect to TEST_DATABASE_URL");
    sqlx::query("SELECT pg_advisory_lock(727274)").execute(&mut admin).await.expect("advisory lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&template)
        .fetch_one(&mut admin)
        .await
        .expect("look up template");
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {building}")))
            .execute(&mut admin)
            .await
            .expect("drop half-built template");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {building}")))
            .execute(&mut admin)
            .await
            .expect("create template");
        let pool = PgPool::connect(&url_for(&building)).await.expect("connect to template");
        switchboard::database::migrate(&pool).await.expect("migrate template");
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {building} RENAME TO {template}")))
            .execute(&mut admin)
            .await
            .expect("publish template");
    }
    sqlx::query("SELECT pg_advisory_unlock(727274)").execute(&mut admin).await.expect("advisory unlock");

    let name = format!("switchboard_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {template}")))
        .execute(&mut admin)
        .await
        .expect("clone template");
    let _ = admin.close().await;
    url_for(&name)
}

/// Settings as `config/default.toml` gives them, pointed at `database_url`, on a free port.
pub fn test_settings(database_url: &str) -> Settings {
    let env = [("DATABASE_URL".to_owned(), database_url.to_owned())];
    let mut settings = Settings::load_from(&repo_root().join("config"), env).expect("default settings load");
    settings.http.bind = "127.0.0.1:0".parse().expect("address");
    settings
}

#[derive(Debug)]
pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    /// No cookie store: tests that need a session use [`TestApp::session_client`].
    pub client: Client,
    http: HttpServer,
}

/// The app's HTTP server, which a test can stop and start again on the same address and
/// database ([`TestApp::stop_http`], [`TestApp::start_http`]): a server restart as browsers and
/// webhooks see it. Workers started with the app keep running throughout.
#[derive(Debug, Clone)]
struct HttpServer(std::sync::Arc<tokio::sync::Mutex<HttpState>>);

#[derive(Debug)]
struct HttpState {
    /// What a restart builds from: the settings with the bound address, no dispatch lanes.
    settings: Settings,
    pool: PgPool,
    running: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

impl HttpServer {
    fn serve(app: Application, settings: &Settings, pool: PgPool) -> Self {
        let mut settings = settings.clone();
        settings.http.bind = app.local_addr();
        settings.dispatch.in_serve = false;
        Self(std::sync::Arc::new(tokio::sync::Mutex::new(HttpState { settings, pool, running: Some(run(app)) })))
    }
}

fn run(app: Application) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        // Dropping the TestApp without stopping it leaves the server running, as it always did.
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    (stop, server)
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(configure, false).await
}

async fn spawn(configure: impl FnOnce(&mut Settings), with_workers: bool) -> TestApp {
    init_test_logging();
    let database_url = fresh_database().await;
    let mut settings = test_settings(&database_url);
    configure(&mut settings);
    // Without workers, this process runs no dispatch lanes (so /readyz does not wait for them).
    settings.dispatch.in_serve &= with_workers;
    let options: PgConnectOptions = database_url.parse().expect("database url");
    let pool = PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .connect_with(options)
        .await
        .expect("connect test database");
    let app = Application::build(&settings, pool.clone()).await.expect("build app");
    let address = format!("http://{}", app.local_addr());
    if let Some(health) = app.dispatch_health() {
        let communications = app.communications();
        switchboard::app::spawn_cron_triggers(&settings, communications.clone());
        switchboard::app::spawn_rematcher(&settings, communications.clone());
        switchboard::app::spawn_snooze_wakeups(&settings, communications.clone());
        switchboard::app::spawn_appointment_relay(&app.fulfillment(), communications.clone());
        switchboard::app::spawn_calendar_sync(&app.fulfillment());
        switchboard::app::spawn_dialogue(&settings, communications.clone());
        switchboard::app::spawn_gauges(&settings, pool.clone());
        let worker_settings = settings.clone();
        tokio::spawn(async move {
            switchboard::app::run_workers(&worker_settings, communications, health, None, std::future::pending()).await
        });
    }
    let http = HttpServer::serve(app, &settings, pool.clone());
    TestApp { address, pool, client: Client::new(), http }
}

/// The app with its dispatch workers, every provider pointed at a fresh simulator.
pub async fn spawn_app_with_sim(configure: impl FnOnce(&mut Settings)) -> (TestApp, cpaas_sim::SimHandle) {
    spawn_app_with_sim_config(configure, cpaas_sim::SimConfig::default()).await
}

/// As [`spawn_app_with_sim`], with the simulator configured (e.g. automatic callbacks); its
/// callbacks come back to the app's webhook routes.
pub async fn spawn_app_with_sim_config(
    configure: impl FnOnce(&mut Settings),
    sim_config: cpaas_sim::SimConfig,
) -> (TestApp, cpaas_sim::SimHandle) {
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator");
    let sim_address = sim_listener.local_addr().expect("simulator address");
    let base = format!("http://{sim_address}");
    let meta_secret = sim_config.meta_app_secret.clone();
    let sim_topics = sim_config.sns_topic_arns();
    let calendar_apps = (
        sim_config.google_client_id.clone(),
        sim_config.google_client_secret.clone(),
        sim_config.jobber_client_id.clone(),
        sim_config.jobber_client_secret.clone(),
    );
    let app = spawn(
        |settings| {
            let providers = &mut settings.providers;
            providers.meta_graph_url = base.clone();
            providers.twilio_api_url = base.clone();
            providers.aws_endpoint_url = base.clone();
            providers.meta_app_id = "1096153271234567".into();
            providers.meta_app_secret = meta_secret.into();
            providers.sns_cert_hosts = vec![sim_address.to_string()];
            providers.sns_cert_allow_http = true;
            // As an operator of the platform configures its SES topics.
            providers.sns_topic_arns = sim_topics;
            settings.dispatch.retry_base_delay_ms = 100;
            // The platform's calendar apps, as the simulated vendors know them.
            let calendars = &mut settings.calendars;
            calendars.google_api_url = base.clone();
            calendars.google_token_url = format!("{base}/token");
            calendars.jobber_graphql_url = format!("{base}/api/graphql");
            calendars.jobber_token_url = format!("{base}/api/oauth/token");
            (calendars.google_client_id, calendars.jobber_client_id) = (calendar_apps.0, calendar_apps.2);
            (calendars.google_client_secret, calendars.jobber_client_secret) =
                (calendar_apps.1.into(), calendar_apps.3.into());
            configure(settings);
        },
        true,
    )
    .await;
    let (router, sim) =
        cpaas_sim::Simulator::router(cpaas_sim::SimConfig { webhook_base: Some(app.address.clone()), ..sim_config })
            .expect("simulator router");
    sim.set_base_url(&base);
    tokio::spawn(async move { axum::serve(sim_listener, router).await });
    (app, sim)
}

/// Logs go to the test output only when TEST_LOG is set.
fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    }
}

/// A tenant made through the same code as the CLI, with its first API key.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: uuid::Uuid,
    pub slug: String,
    pub api_key: String,
}

/// An agent with the password it was created with.
#[derive(Debug, Clone)]
pub struct TestAgent {
    pub id: String,
    pub email: String,
    pub password: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    /// Stops the HTTP server as a shutdown does: live streams end, open requests finish, new
    /// connections are refused.
    pub async fn stop_http(&self) {
        let (stop, server) = self.http.0.lock().await.running.take().expect("the HTTP server is running");
        let _ = stop.send(());
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), server).await;
        stopped.expect("the HTTP server stops within 30 s").expect("server task").expect("served");
    }

    /// Starts a new HTTP server — a new application, with its own change feed — on the address
    /// and database this app had.
    pub async fn start_http(&self) {
        let mut state = self.http.0.lock().await;
        assert!(state.running.is_none(), "the HTTP server is running already");
        let app = Application::build(&state.settings, state.pool.clone()).await.expect("build app again");
        state.running = Some(run(app));
    }

    /// The URL of this app's database (for processes the test starts).
    pub fn database_url(&self) -> String {
        let options = self.pool.connect_options();
        let database = options.get_database().unwrap_or("postgres").to_owned();
        url_for(&database)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        let slug_parsed = identity::tenants::Slug::parse(slug).expect("valid slug");
        let tenant =
            identity::tenants::create(&self.pool, &format!("Tenant {slug}"), &slug_parsed).await.expect("tenant");
        let key = identity::api_keys::issue(&self.pool, tenant.id, "test").await.expect("api key");
        TestTenant { id: tenant.id.0, slug: tenant.slug, api_key: key.secret }
    }

    pub async fn get(&self, path: &str, api_key: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(api_key).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, api_key: &str, body: Value) -> Response {
        self.client.post(self.url(path)).bearer_auth(api_key).json(&body).send().await.expect("request")
    }

    pub async fn put(&self, path: &str, api_key: &str, body: Value) -> Response {
        self.client.put(self.url(path)).bearer_auth(api_key).json(&body).send().await.expect("request")
    }

    pub async fn patch_json(&self, path: &str, api_key: &str, body: Value) -> Response {
        self.client.patch(self.url(path)).bearer_auth(api_key).json(&body).send().await.expect("request")
    }

    /// Turns the tenant's quiet hours off: tests of bulk sending must not depend on the hour
    /// they run at (the default window is 21:00–08:00 UTC).
    pub async fn quiet_hours_off(&self, tenant: &TestTenant) {
        let response = self.patch_json("/api/v1/messaging-policy", &tenant.api_key, json!({"quiet_hours": null})).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    }

    pub async fn delete(&self, path: &str, api_key: &str) -> Response {
        self.client.delete(self.url(path)).bearer_auth(api_key).send().await.expect("request")
    }

    /// `POST /api/v1/auth/login` without a cookie store.
    pub async fn login(
        &self,
        workspace: impl AsRef<str>,
        email: impl AsRef<str>,
        password: impl AsRef<str>,
    ) -> Response {
        let body = json!({"workspace": workspace.as_ref(), "email": email.as_ref(), "password": password.as_ref()});
        self.client.post(self.url("/api/v1/auth/login")).json(&body).send().await.expect("login request")
    }

    /// Creates an agent through the API with the tenant's key.
    pub async fn create_agent(&self, tenant: &TestTenant, email: &str, role: &str) -> TestAgent {
        let response = self
            .post(
                "/api/v1/agents",
                &tenant.api_key,
                json!({"email": email, "name": "Test Agent", "role": role, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), 201, "create agent: {}", response.text().await.unwrap_or_default());
        let body: Value = response.json().await.expect("json");
        TestAgent {
            id: body["id"].as_str().expect("id").to_owned(),
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
        }
    }

    /// A client with a cookie store, logged in as `agent`; returns it with the CSRF token.
    pub async fn session_client(&self, tenant: &TestTenant, agent: &TestAgent) -> (Client, String) {
        let client = Client::builder().cookie_store(true).build().expect("client");
        let response = client
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"workspace": tenant.slug, "email": agent.email, "password": agent.password}))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200, "login");
        let body: Value = response.json().await.expect("json");
        (client, body["csrf_token"].as_str().expect("csrf token").to_owned())
    }
}

/// Channel accounts the provider simulator accepts (its own credentials).
pub fn sim_twilio_sms() -> Value {
    json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS",
           "config": {"account_sid": format!("AC{}", "0123456789abcdef".repeat(2)), "auth_token": "sim-twilio-auth-token", "from": "+15005550006"}})
}

/// An SMS account sending through SNS (which the simulator accepts with any credentials).
pub fn sim_sns_sms() -> Value {
    json!({"channel_type": "sms", "provider": "sns", "display_name": "SMS",
           "config": {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "secret", "origination_number": "+18005550199"}})
}

pub fn sim_whatsapp() -> Value {
    json!({"channel_type": "whatsapp", "display_name": "WA",
           "config": {"phone_number_id": "106540352242922", "waba_id": "102290129340398", "signup_code": "AQB-code"}})
}

pub fn sim_email() -> Value {
    json!({"channel_type": "email", "display_name": "Mail",
           "config": {"domain": "mail.alpine.example", "from_address": "tours@mail.alpine.example",
                      "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "secret"}})
}

impl TestApp {
    /// Creates a channel account and verifies it until it is active (SES needs a second look).
    pub async fn active_channel(&self, tenant: &TestTenant, body: Value) -> Value {
        let created = self.post("/api/v1/channel-accounts", &tenant.api_key, body).await;
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap_or_default());
        let created: Value = created.json().await.expect("json");
        let id = created["id"].as_str().expect("id").to_owned();
        for _ in 0..2 {
            let verified: Value = self
                .post(&format!("/api/v1/channel-accounts/{id}/verify"), &tenant.api_key, json!({}))
                .await
                .json()
                .await
                .expect("json");
            if verified["status"] == "active" {
                return verified;
            }
        }
        panic!("channel {id} did not activate");
    }
}

/// Asserts the JSON error shape and returns the body.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "error code in {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {body}");
    body
}

/// The app in process, on an existing database (e.g. one the CLI just wrote to).
pub async fn spawn_app_on(database_url: &str) -> TestApp {
    let settings = test_settings(database_url);
    let pool = PgPoolOptions::new().max_connections(5).connect(database_url).await.expect("connect");
    let app = Application::build(&settings, pool.clone()).await.expect("build app");
    let address = format!("http://{}", app.local_addr());
    let http = HttpServer::serve(app, &settings, pool.clone());
    TestApp { address, pool, client: Client::new(), http }
}

/// The real `switchboard` binary, run from the repository root with a clean configuration
/// environment plus `env`.
pub fn switchboard(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command.args(args).current_dir(repo_root());
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHBOARD") || key == "DATABASE_URL" || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// A running `switchboard serve`, its log lines collected as they come.
#[derive(Debug)]
pub struct RunningServer {
    pub child: std::process::Child,
    pub address: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RunningServer {
    /// Starts the binary (it must bind 127.0.0.1:0) and waits for its "listening" line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_until(args, env, "switchboard listening")
    }

    /// Starts `switchboard worker` and waits for its start line (it has no address).
    pub fn start_worker(env: &[(&str, &str)]) -> Self {
        Self::start_until(&["worker"], env, "switchboard dispatch workers running")
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_for_exit(&mut self, within: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Every line logged so far, one per line.
    pub fn logs(&self) -> String {
        self.lines().join("\n")
    }

    fn start_until(args: &[&str], env: &[(&str, &str)], ready: &str) -> Self {
        use std::io::BufRead;
        let mut env: Vec<(&str, &str)> = env.to_vec();
        env.push(("SWITCHBOARD__HTTP__BIND", "127.0.0.1:0"));
        env.push(("SWITCHBOARD__LOG__FORMAT", "json"));
        let mut child = switchboard(args, &env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        loop {
            let address = lines.lock().unwrap().iter().find_map(|line| {
                let value: Value = serde_json::from_str(line).ok()?;
                (value["message"].as_str()?.starts_with(ready))
                    .then(|| value["address"].as_str().unwrap_or_default().to_owned())
            });
            if let Some(address) = address {
                return Self { child, address: format!("http://{address}"), lines };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("switchboard exited ({status}) before listening: {:#?}", lines.lock().unwrap());
            }
            assert!(std::time::Instant::now() < deadline, "switchboard did not start: {:#?}", lines.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends `signal` and waits (up to 60 s) for the process to exit.
    pub fn stop(mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal switchboard");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "switchboard did not exit after {signal:?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    /// Posts `body` to the tenant's Meta webhook, signed with the simulator's app secret as Meta
    /// signs it; asserts the 200.
    pub async fn post_meta_signed(&self, tenant: &TestTenant, body: String) {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"sim-meta-app-secret").expect("any key length");
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let response = self
            .client
            .post(self.url(&format!("/api/webhooks/meta/{}", tenant.id)))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .expect("post the Meta webhook");
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap_or_default());
    }
}

impl TestApp {
    /// The tenant's newest conversation once it holds `inbound` inbound messages (waits up to
    /// 10 s for webhooks to land).
    pub async fn newest_conversation(&self, tenant: &TestTenant, inbound: i64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let row: Option<(uuid::Uuid, i64)> = sqlx::query_as(
                "SELECT id, inbound_count FROM communications.conversations WHERE tenant_id = $1
                 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(tenant.id)
            .fetch_optional(&self.pool)
            .await
            .expect("read conversations");
            if let Some((id, n)) = row
                && n >= inbound
            {
                return id.to_string();
            }
            assert!(std::time::Instant::now() < deadline, "no conversation with {inbound} inbound messages: {row:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
