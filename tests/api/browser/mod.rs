//! The agent web UI in a real Chromium, driven through Debian's `chromedriver` (W3C WebDriver,
//! spoken here over reqwest: a dozen commands need no client library). As root Chromium needs
//! `--no-sandbox`. These tests do not skip: without Chromium they fail and say how to install it.
//! The driver and the first tests are here; each later feature has a module of its own.

mod accessibility;
mod attachments;
mod latency;
mod merge;
mod missed_call;
mod pages;
mod queues;
mod restart;
mod webchat;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cpaas_sim::InboundSpec;
use serde_json::{Value, json};

use crate::delivery::{auto_callbacks, whatsapp};
use crate::helpers::{TestApp, TestTenant, spawn_app_with_sim_config};

/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// A browser asking for English pages.
    pub async fn start() -> Self {
        Self::start_in("en-US,en").await
    }

    /// A browser whose `Accept-Language` is `languages` (e.g. "de-DE,de"). Headless Chromium
    /// ignores `--lang` for the header; the `intl.accept_languages` preference sets it.
    pub async fn start_in(languages: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: apt-get install chromium chromium-driver (.ci/run installs them)");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lang = languages.split(',').next().unwrap_or("en-US");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        // The console log, for tests that a page loads without errors (a 404 shows there).
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "args": ["--headless", "--no-sandbox", "--window-size=1280,800", format!("--lang={lang}")],
            "prefs": {"intl.accept_languages": languages},
        }}}});
        let session: Value =
            http.post(format!("{root}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let id = session["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}")).to_owned();
        Self { driver, base: format!("{root}/session/{id}"), http }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.base));
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// The first element matching `css`, waiting up to 10 s for it to appear.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
                .await;
            // An error answers an object too, without the element key.
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css`. A live refresh may replace the element between
    /// finding and clicking it (a stale element), and a toast may cover it for a moment: then
    /// it is found and clicked again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.find(css).await;
            let answer =
                self.command(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
            match answer["error"].as_str() {
                None => return,
                Some("stale element reference" | "element click intercepted") if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some(error) => panic!("clicking {css}: {error}: {}", answer["message"]),
            }
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/value"), Some(json!({"text": text}))).await;
    }

    /// Runs `script` (a function body) in the page and answers its return value.
    pub async fn script(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/async", Some(json!({"script": script, "args": []}))).await
    }

    /// Presses and releases `key` (a WebDriver key code such as "\u{E004}", Tab) as the keyboard
    /// does: it goes to whatever has the focus.
    pub async fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.command(reqwest::Method::POST, "/actions", Some(actions)).await;
    }

    /// Every element matching `css`, as WebDriver references (none: empty).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .command(reqwest::Method::POST, "/elements", Some(json!({"using": "css selector", "value": css})))
            .await;
        found
            .as_array()
            .map(|all| all.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// The element's accessible name, as the browser computes it for assistive technology.
    pub async fn accessible_name(&self, element: &str) -> String {
        let label = self.command(reqwest::Method::GET, &format!("/element/{element}/computedlabel"), None).await;
        label.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body) with `element` as `arguments[0]`; answers its return value.
    pub async fn script_on(&self, element: &str, script: &str) -> Value {
        let body = json!({"script": script, "args": [{ELEMENT: element}]});
        self.command(reqwest::Method::POST, "/execute/sync", Some(body)).await
    }

    /// The text of the first element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        let found = self
            .script(&format!(
                "const done = arguments[0]; const e = document.querySelector({css:?}); done(e ? e.textContent : '');"
            ))
            .await;
        found.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page's text of `css` contains `expected`.
    pub async fn wait_for_text(&self, css: &str, expected: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .script(&format!(
                    "const done = arguments[0]; const e = document.querySelector({css:?}); done(e ? e.textContent : '');"
                ))
                .await;
            if found.as_str().is_some_and(|text| text.contains(expected)) {
                return;
            }
            if Instant::now() >= deadline {
                let source = self.command(reqwest::Method::GET, "/source", None).await;
                let source = source.as_str().unwrap_or_default();
                panic!(
                    "{css} never showed {expected:?}; it shows {found}; the page: {}",
                    &source[..source.len().min(3000)]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The console's errors since the last call (chromedriver's log endpoint, which empties it).
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self.command(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"}))).await;
        log.as_array()
            .unwrap_or_else(|| panic!("no browser log: {log}"))
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Saves what the browser shows under `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap_or_default()).unwrap();
        let dir = crate::helpers::repo_root().join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    pub async fn login(&self, app: &TestApp, tenant: &TestTenant, email: &str, password: &str) {
        self.goto(&app.url("/login")).await;
        self.type_into("#workspace", &tenant.slug).await;
        self.type_into("#email", email).await;
        self.type_into("#password", password).await;
        self.click("button[type=submit]").await;
        self.find("main.inbox").await;
    }
}

impl Drop for Browser {
    /// Ends the session first, so chromedriver closes its Chromium (killing chromedriver alone
    /// leaves the browser's dozen processes running), then stops chromedriver. Plain blocking
    /// HTTP: a destructor cannot await.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if let Some(rest) = self.base.strip_prefix("http://")
            && let Some((host, path)) = rest.split_once('/')
            && let Ok(mut stream) = std::net::TcpStream::connect(host)
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request =
                format!("DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            // chromedriver answers once the browser has quit; the answer's first bytes are enough
            // (it may keep the connection open whatever we ask).
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0u8; 512]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub(super) async fn inbound(sim: &cpaas_sim::SimHandle, text: &str) {
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915112345678".into(),
        text: text.into(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_agent_logs_in_claims_from_unassigned_and_replies_until_it_is_read() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.screenshot("inbox-empty").await;

    browser.goto(&app.url("/inbox?view=unassigned")).await;
    browser.find("#live.online").await;
    // A message arrives while the list is open: it shows up without a reload.
    inbound(&sim, "Is my seat booked?").await;
    browser.wait_for_text("#list", "Is my seat booked?", Duration::from_secs(5)).await;
    browser.click("a.conversation").await;
    browser.wait_for_text("#thread .messages", "Is my seat booked?", Duration::from_secs(5)).await;
    browser.click("button[data-action=claim]").await;
    browser.wait_for_text(".thread-head .meta", "you", Duration::from_secs(5)).await;
    // \u{E007} is WebDriver's Enter key: Enter sends.
    browser.type_into("#reply", "Yes, seat 12A.\u{E007}").await;
    browser.wait_for_text("#thread .messages", "Yes, seat 12A.", Duration::from_secs(5)).await;
    // The simulator delivers and reads it; its callbacks move the tick live.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = browser
            .script("const done = arguments[0]; const t = [...document.querySelectorAll('.tick')].pop(); done(t ? t.dataset.status : '');")
            .await;
        if status == "read" {
            break;
        }
        assert!(Instant::now() < deadline, "the tick never reached read: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent =
        sim.ledger().into_iter().any(|e| e.operation == "send_message" && e.body["text"]["body"] == "Yes, seat 12A.");
    assert!(sent, "the reply reached the simulator (its tick is read: the simulator's callbacks came)");
    browser.screenshot("thread").await;

    // Search from the header finds the conversation by its words (stemmed: "booked" → "book").
    browser.type_into("#search", "book\u{E007}").await;
    browser.wait_for_text("#list", "Is my seat booked?", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn hostile_content_is_shown_as_text_and_a_write_without_the_csrf_token_is_refused() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    let hostile = r#"<script>window.pwned=1</script><img src=x onerror="window.pwned=2"><a href="javascript:window.pwned=3">x</a>"#;
    inbound(&sim, hostile).await;
    let id = app.newest_conversation(&tenant, 1).await;
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.wait_for_text("#thread .messages", "<script>window.pwned=1</script>", Duration::from_secs(5)).await;
    let pwned = browser.script("arguments[0](window.pwned === undefined ? 'safe' : String(window.pwned));").await;
    assert_eq!(pwned, "safe", "message content ran as markup");
    let links =
        browser.script("arguments[0](document.querySelectorAll('.messages a[href^=javascript]').length);").await;
    assert_eq!(links, 0);
    let status = browser
        .script(&format!(
            "fetch('/api/v1/conversations/{id}/claim', {{method: 'POST', credentials: 'same-origin'}}).then(r => arguments[0](r.status));"
        ))
        .await;
    assert_eq!(status, 403, "a cookie write without the CSRF token");
    browser.screenshot("hostile").await;
}

#[tokio::test]
async fn two_agents_see_each_others_claims_live_and_snooze_and_resolve_move_conversations_between_views() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let ann = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    let bob = app.create_agent(&tenant, "bob@alpine.example", "agent").await;
    inbound(&sim, "Two agents, one question").await;
    let id = app.newest_conversation(&tenant, 1).await;
    let (first, second) = tokio::join!(Browser::start(), Browser::start());
    first.login(&app, &tenant, &ann.email, &ann.password).await;
    second.login(&app, &tenant, &bob.email, &bob.password).await;
    second.goto(&app.url("/inbox?view=unassigned")).await;
    second.find("#live.online").await;
    second.wait_for_text("#list", "Two agents, one question", Duration::from_secs(5)).await;

    // Ann claims it; Bob's open Unassigned list loses it without a reload.
    first.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    first.click("button[data-action=claim]").await;
    first.wait_for_text(".thread-head .meta", "you", Duration::from_secs(5)).await;
    second.wait_for_text("#list", "Nothing here", Duration::from_secs(5)).await;

    // Snooze (a preset) moves it to Snoozed; resolve moves it to Resolved.
    first.click("details.snooze summary").await;
    first.click("button[data-snooze='1h']").await;
    first.wait_for_text(".thread-head .status", "Snoozed", Duration::from_secs(5)).await;
    second.goto(&app.url("/inbox?view=snoozed")).await;
    second.wait_for_text("#list", "Two agents, one question", Duration::from_secs(5)).await;
    first.click("button[data-action=resolve]").await;
    first.wait_for_text(".thread-head .status", "Resolved", Duration::from_secs(5)).await;
    second.wait_for_text("#list", "Nothing here", Duration::from_secs(5)).await;
    let conversation: Value =
        app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(conversation["status"], "resolved");
    assert_eq!(conversation["assignee_id"], ann.id.as_str());
    first.screenshot("resolved").await;
}

#[tokio::test]
async fn an_admin_assigns_a_conversation_to_an_agent_by_name() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let admin = app.create_agent(&tenant, "boss@alpine.example", "admin").await;
    let bob = app.create_agent(&tenant, "bob@alpine.example", "agent").await;
    inbound(&sim, "Who takes this one?").await;
    let id = app.newest_conversation(&tenant, 1).await;
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &admin.email, &admin.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    let chosen = browser
        .script(&format!(
            "const s = document.querySelector('select[data-assign]'); s.value = {:?}; \
             s.dispatchEvent(new Event('change', {{bubbles: true}})); arguments[0](s.value);",
            bob.id
        ))
        .await;
    assert_eq!(chosen, bob.id.as_str());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let conversation: Value =
            app.get(&format!("/api/v1/conversations/{id}"), &tenant.api_key).await.json().await.unwrap();
        if conversation["assignee_id"] == bob.id.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "not assigned: {conversation}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The holder is shown by name (the test helper names every agent "Test Agent").
    browser.wait_for_text(".thread-head .meta", "Test Agent", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn outside_whatsapps_window_the_composer_sends_a_template_with_variables() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let template = json!({"name": "follow_up", "default_locale": "en", "variants": [
        {"channel": "whatsapp", "locale": "en", "body": {"text": "Hello {{ name }}, your seat is {{ seat }}."}}]});
    assert_eq!(app.post("/api/v1/templates", &tenant.api_key, template).await.status(), 201);
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    inbound(&sim, "Old question").await;
    let id = app.newest_conversation(&tenant, 1).await;
    sqlx::query(
        "UPDATE communications.conversations SET last_inbound_at = now() - interval '25 hours' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.wait_for_text(".composer .warning", "24 hours", Duration::from_secs(5)).await;
    browser.script("document.querySelector('#template').value = 'follow_up'; arguments[0](true);").await;
    browser.type_into("#variables", "name=Anna\nseat=12A").await;
    browser.click(".composer button[type=submit]").await;
    browser.wait_for_text("#thread .messages", "Hello Anna, your seat is 12A.", Duration::from_secs(5)).await;
    // Shown as soon as accepted; dispatched a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sim.ledger().into_iter().any(|e| e.body["text"]["body"] == "Hello Anna, your seat is 12A.") {
        assert!(Instant::now() < deadline, "the rendered template never reached Meta");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
