//! The demo's inbox, seeded through the real paths so it looks like a working day: channel
//! accounts activated on the simulator, customers writing in over WhatsApp, SMS and email (the
//! simulator posts their signed webhooks), conversations claimed, answered, labelled, snoozed,
//! resolved and linked to a booking — and then a slow trickle of new messages so the inbox moves
//! while someone watches. Seeded once: a demo that already has conversations is left as it is.

use std::time::Duration;

use anyhow::Context;
use cpaas_sim::{InboundSpec, SimHandle};
use serde_json::{Value, json};

/// Customers of the demo: name (the sender's profile), WhatsApp number, what they write.
const CUSTOMERS: &[(&str, &str)] = &[
    ("4915112340001", "Hallo, ist mein Platz im Bus nach Salzburg gebucht?"),
    ("4915112340002", "Can I bring my bicycle on the 9:15 to Innsbruck?"),
    ("4915112340003", "Wir sind 4 Personen statt 3 – geht das noch?"),
    ("4915112340004", "My flight lands late, can the pickup wait 30 minutes?"),
    ("4915112340005", "Bitte die Rechnung an meine Firma adressieren."),
    ("4915112340006", "Is there a wheelchair space on Saturday's tour?"),
    ("4915112340007", "Ich habe meine Fahrkarte verloren."),
    ("4915112340008", "Refund please, the trip was cancelled."),
    ("4915112340009", "Wann fährt der Bus morgen ab?"),
    ("4915112340010", "Do you have a child seat for a 3 year old?"),
    ("4915112340011", "Gepäck: darf ich zwei Koffer mitnehmen?"),
    ("4915112340012", "Where exactly is the meeting point?"),
    ("4915112340013", "Können wir die Tour auf Sonntag verschieben?"),
    ("4915112340014", "Thanks, the driver was great!"),
    ("4915112340015", "Ist das Hotel im Preis inbegriffen?"),
    ("4915112340016", "Can I pay the rest in cash on the day?"),
    ("4915112340017", "Der Link zur Buchung funktioniert nicht."),
    ("4915112340018", "What happens if it snows?"),
    ("4915112340019", "Gibt es einen Rabatt für Studenten?"),
    ("4915112340020", "Could you send the itinerary again?"),
];

const SMS_CUSTOMERS: &[(&str, &str)] = &[
    ("+4917012340021", "Running 10 min late to the pickup, please wait!"),
    ("+4917012340022", "STOP reminders for this trip please"),
    ("+4917012340023", "Bus steht nicht am Treffpunkt?"),
    ("+4917012340024", "Is the 18:00 return still on?"),
];

const MAILS: &[(&str, &str, &str)] = &[
    (
        "lena.berger@example.org",
        "Gruppenreise im Mai",
        "Wir planen eine Reise für 25 Personen im Mai. Können Sie ein Angebot machen?",
    ),
    ("tom.hughes@example.com", "Invoice 2026-114", "Hello, the invoice shows the wrong date. Could you correct it?"),
    ("sara.conti@example.net", "Lost umbrella", "I think I left a red umbrella on the bus yesterday."),
];

/// Seeds the demo tenant's inbox once, then keeps a message arriving every `trickle`.
pub async fn seed_and_trickle(
    base: String,
    api_key: String,
    sim: SimHandle,
    tenant_id: uuid::Uuid,
    trickle: Duration,
    seeded: tokio::sync::oneshot::Sender<()>,
) {
    match seed(&base, &api_key, &sim, tenant_id).await {
        Ok(true) => tracing::info!("demo inbox seeded"),
        Ok(false) => tracing::info!("demo inbox kept as it was"),
        Err(error) => tracing::warn!(%error, "seeding the demo inbox failed"),
    }
    let _ = seeded.send(());
    let follow_ups = ["Any news?", "Noch eine Frage…", "Thanks!", "Danke für die schnelle Antwort.", "One more thing:"];
    let mut n = 0usize;
    loop {
        tokio::time::sleep(trickle).await;
        let (from, _) = CUSTOMERS[(n * 7) % CUSTOMERS.len()];
        let text = format!("{} ({})", follow_ups[n % follow_ups.len()], chrono::Utc::now().format("%H:%M"));
        if let Err(error) = sim.post_inbound(meta(from, &text)).await {
            tracing::debug!(%error, "demo trickle message failed");
        }
        n += 1;
    }
}

fn meta(from: &str, text: &str) -> InboundSpec {
    InboundSpec::Meta { phone_number_id: "106540352242922".into(), from: from.into(), text: text.into() }
}

/// Answers whether it seeded (false: the demo had conversations already).
async fn seed(base: &str, key: &str, sim: &SimHandle, tenant_id: uuid::Uuid) -> anyhow::Result<bool> {
    let api = Api { http: reqwest::Client::new(), base: base.to_owned(), key: key.to_owned() };
    let existing = api.get("/api/v1/conversations?limit=1").await?;
    if existing["items"].as_array().is_some_and(|items| !items.is_empty()) {
        return Ok(false);
    }
    for account in [
        json!({"channel_type": "whatsapp", "display_name": "WhatsApp", "config": {"phone_number_id": "106540352242922", "waba_id": "102290129340398", "signup_code": "AQB-demo"}}),
        json!({"channel_type": "sms", "provider": "twilio", "display_name": "SMS", "config": {"account_sid": format!("AC{}", "0123456789abcdef".repeat(2)), "auth_token": "sim-twilio-auth-token", "from": "+15005550006"}}),
        json!({"channel_type": "email", "display_name": "Email", "config": {"domain": "mail.demo-tours.example", "from_address": "hello@mail.demo-tours.example", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "secret"}}),
    ] {
        let created = api.post("/api/v1/channel-accounts", account).await?;
        let id = created["id"].as_str().context("a channel account without id")?.to_owned();
        for _ in 0..2 {
            if api.post(&format!("/api/v1/channel-accounts/{id}/verify"), json!({})).await?["status"] == "active" {
                break;
            }
        }
    }
    // A booking the sidebar can show: the Hasura event a trigger would have sent.
    let booking = json!({"id": "demo-booking-1", "created_at": chrono::Utc::now().to_rfc3339(),
        "trigger": {"name": "booking_changed"}, "table": {"schema": "commerce", "name": "bookings"},
        "event": {"op": "UPDATE", "data": {"old": null, "new": {"id": "BK-2041", "status": "confirmed",
            "route": "Munich → Salzburg", "departure": "2026-12-03T09:15:00", "seats": 2}}}});
    api.post("/api/v1/events", booking).await?;
    for (from, text) in CUSTOMERS {
        sim.post_inbound(meta(from, text)).await?;
    }
    for (from, body) in SMS_CUSTOMERS {
        sim.post_inbound(InboundSpec::Twilio {
            account_sid: tenant_id.to_string(),
            from: (*from).into(),
            to: "+15005550006".into(),
            body: (*body).into(),
        })
        .await?;
    }
    for (from, subject, text) in MAILS {
        sim.post_inbound(InboundSpec::SesInbound {
            from: (*from).into(),
            to: "hello@mail.demo-tours.example".into(),
            subject: (*subject).into(),
            text: (*text).into(),
            in_reply_to: None,
        })
        .await?;
    }
    // Let the webhooks land, then work some conversations as agents would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = api.get("/api/v1/conversations?limit=100").await?;
    let ids: Vec<String> = list["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|c| c["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let agents = api.get("/api/v1/agents").await?;
    let admin = agents["items"][0]["id"].as_str().map(str::to_owned);
    let mut labels = Vec::new();
    for (name, color) in [("VIP", "#b8860b"), ("Refund", "#a3161a"), ("Booking change", "#1f5fbf")] {
        let label = api.post("/api/v1/labels", json!({"name": name, "color": color})).await?;
        labels.extend(label["id"].as_str().map(str::to_owned));
    }
    for (code, text) in [
        ("thanks", "Thank you for your message — we'll get back to you shortly."),
        ("pickup", "Your driver waits at the meeting point 10 minutes before departure."),
        ("danke", "Vielen Dank für Ihre Nachricht – wir melden uns in Kürze."),
    ] {
        api.post("/api/v1/canned-responses", json!({"short_code": code, "text": text})).await?;
    }
    for (n, id) in ids.iter().enumerate() {
        let path = |action: &str| format!("/api/v1/conversations/{id}/{action}");
        match n % 6 {
            0 => {
                api.post(&path("assign"), json!({"agent_id": admin})).await?;
                api.post(&path("messages"), json!({"content": {"text": "Thanks for writing — I'm looking into it."}}))
                    .await?;
            }
            1 => {
                let until = chrono::Utc::now() + chrono::Duration::hours(3 + n as i64);
                api.post(&path("snooze"), json!({"until": until.to_rfc3339()})).await?;
            }
            2 => {
                api.post(&path("messages"), json!({"content": {"text": "All sorted, have a great trip!"}})).await?;
                api.post(&path("resolve"), json!({})).await?;
            }
            3 => {
                api.put(&path("labels"), json!({"labels": [labels[n % labels.len()].clone()]})).await?;
            }
            4 => {
                api.post(&path("notes"), json!({"text": "Called the customer, waiting for their answer."})).await?;
            }
            _ => {}
        }
    }
    if let Some(first) = ids.first() {
        api.put(&format!("/api/v1/conversations/{first}/link"), json!({"booking_id": "BK-2041"})).await?;
    }
    if let Err(error) = seed_fulfillment(&api, sim).await {
        tracing::warn!(%error, "seeding the demo's scheduling failed");
    }
    Ok(true)
}

/// A plumber with Berlin working hours and a 60-minute service, connected to the simulated
/// Google calendar and Jobber account, with a few appointments already booked.
async fn seed_fulfillment(api: &Api, sim: &SimHandle) -> anyhow::Result<()> {
    let week: Vec<Value> = (1..=5)
        .flat_map(|d| {
            [
                json!({"weekday": d, "starts": "08:00", "ends": "12:00"}),
                json!({"weekday": d, "starts": "13:00", "ends": "17:00"}),
            ]
        })
        .collect();
    let resource = api
        .post(
            "/api/v1/resources",
            json!({"name": "Jonas (plumber)", "time_zone": "Europe/Berlin", "working_hours": week}),
        )
        .await?;
    let resource = resource["id"].as_str().context("resource id")?.to_owned();
    let service = api
        .post(
            "/api/v1/services",
            json!({"name": "Boiler service", "duration_minutes": 60, "buffer_after_minutes": 15, "price_cents": 12000}),
        )
        .await?;
    let service = service["id"].as_str().context("service id")?.to_owned();
    // A call to the SMS number rings the plumber's mobile; missed, the caller gets the next
    // three slots by SMS and books by answering with a number.
    api.patch(
        "/api/v1/messaging-policy",
        json!({"time_zone": "Europe/Berlin", "quiet_hours": {"start": "21:00", "end": "08:00"},
               "help_text": "Demo Plumbing: call +49 30 901820 or reply here. Reply STOP to opt out.",
               "missed_call": {"forward_to": DEMO_OWNER_PHONE, "dial_timeout_secs": 20},
               "booking": {"service_id": service, "slots": 3}}),
    )
    .await?;
    api.post(
        "/api/v1/surcharges",
        json!({"name": "Friday afternoon", "weekdays": [5], "starts": "13:00", "ends": "17:00", "percent": 20}),
    )
    .await?;
    let google = sim.oauth_grant(cpaas_sim::Vendor::Google);
    api.post(
        "/api/v1/calendar-connections",
        json!({"provider": "google", "display_name": "Jonas's Google calendar", "resource_id": resource,
               "calendar_id": DEMO_CALENDAR, "refresh_token": google.refresh_token}),
    )
    .await?;
    let jobber = sim.oauth_grant(cpaas_sim::Vendor::Jobber);
    api.post(
        "/api/v1/calendar-connections",
        json!({"provider": "jobber", "display_name": "Demo Plumbing on Jobber", "refresh_token": jobber.refresh_token}),
    )
    .await?;
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    let to = tomorrow + chrono::Duration::days(7);
    let slots = api
        .get(&format!(
            "/api/v1/availability?service_id={service}&resource_id={resource}&from={}&to={}",
            tomorrow.format("%Y-%m-%dT00:00:00Z"),
            to.format("%Y-%m-%dT00:00:00Z")
        ))
        .await?;
    let starts: Vec<String> = slots["resources"][0]["slots"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["start"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    for (n, start) in starts.iter().step_by(5).take(4).enumerate() {
        api.post(
            "/api/v1/appointments",
            json!({"service_id": service, "resource_id": resource, "start": start,
                   "title": format!("Boiler service #{}", n + 1), "location": "Invalidenstr. 117, 10115 Berlin"}),
        )
        .await?;
    }
    Ok(())
}

/// The plumber's own phone: missed calls are first forwarded there.
pub const DEMO_OWNER_PHONE: &str = "+4930901820";

/// The demo's Twilio number (the SMS channel's sender).
pub const DEMO_SMS_NUMBER: &str = "+15005550006";

/// The simulated Google calendar of the demo's plumber.
pub const DEMO_CALENDAR: &str = "jonas@demo-plumbing.example";

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request.bearer_auth(&self.key).send().await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("{status}: {body}");
        }
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(&body)).await
    }
}
