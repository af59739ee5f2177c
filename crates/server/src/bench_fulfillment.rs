//! `switchboard bench-fulfillment`: scheduling under load, through the real HTTP API.
//!
//! 1. Availability of one resource over 30 days holding 500 appointments (p50/p95/p99).
//! 2. 200 concurrent reservations of one slot: exactly one hold, the rest 409, no 5xx.
//! 3. Sustained bookings: clients book distinct free slots for a while; the rate, and how long
//!    the appointment events (confirmations, reminders, calendar sync) take to drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::Application;
use crate::bench_inbox::Percentiles;
use crate::database::Database;
use crate::settings::Settings;

#[derive(Debug, Clone, clap::Args)]
pub struct FulfillmentBenchArgs {
    /// Appointments already booked on the measured resource.
    #[arg(long, default_value_t = 500)]
    pub appointments: usize,
    /// Availability requests measured.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Concurrent reservations of one slot.
    #[arg(long, default_value_t = 200)]
    pub contenders: usize,
    /// Bookings made in the sustained phase, by `--clients` concurrent clients.
    #[arg(long, default_value_t = 2_000)]
    pub bookings: usize,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to wait for the calendar sync to catch up after the bookings.
    #[arg(long, default_value_t = 180)]
    pub sync_wait_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct FulfillmentBenchReport {
    pub appointments: usize,
    pub availability_30_days: Percentiles,
    pub slots_per_answer: usize,
    pub contenders: usize,
    pub contention_holds: usize,
    pub contention_conflicts: usize,
    pub contention_other: usize,
    pub contention_ms: f64,
    pub bookings: usize,
    pub bookings_per_second: f64,
    pub booking_latency: Percentiles,
    pub booking_errors: usize,
    /// From the last booking's answer until every appointment event was relayed.
    pub events_drained_ms: f64,
    pub events_relayed: i64,
    /// Appointments shown in the Google calendar and in Jobber, and the seconds from the first
    /// booking until then (or until `--sync-wait-secs` ran out).
    pub google_synced: i64,
    pub jobber_synced: i64,
    pub sync_seconds: f64,
}

pub async fn run(settings: &mut Settings, database: &Database, args: FulfillmentBenchArgs) -> anyhow::Result<()> {
    if args.samples < 1 || args.contenders < 2 || args.clients < 1 {
        bail!("need --samples ≥ 1, --contenders ≥ 2, --clients ≥ 1");
    }
    settings.http.bind = "127.0.0.1:0".parse()?;
    settings.dispatch.in_serve = false;
    // The calendar vendors, simulated in this process.
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_url = format!("http://{}", sim_listener.local_addr()?);
    let sim_config = cpaas_sim::SimConfig::default();
    let calendars = &mut settings.calendars;
    calendars.google_api_url = sim_url.clone();
    calendars.google_token_url = format!("{sim_url}/token");
    calendars.jobber_graphql_url = format!("{sim_url}/api/graphql");
    calendars.jobber_token_url = format!("{sim_url}/api/oauth/token");
    calendars.google_client_id = sim_config.google_client_id.clone();
    calendars.google_client_secret = sim_config.google_client_secret.clone().into();
    calendars.jobber_client_id = sim_config.jobber_client_id.clone();
    calendars.jobber_client_secret = sim_config.jobber_client_secret.clone().into();
    let app = Application::build(settings, database.pool.clone()).await?;
    let base = format!("http://{}", app.local_addr());
    let (router, sim) =
        cpaas_sim::Simulator::router(cpaas_sim::SimConfig { webhook_base: Some(base.clone()), ..sim_config })?;
    sim.set_base_url(&sim_url);
    tokio::spawn(async move { axum::serve(sim_listener, router).await });
    let relay = crate::app::spawn_appointment_relay(&app.fulfillment(), app.communications());
    let sync = crate::app::spawn_calendar_sync(&app.fulfillment());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(app.run_until_stopped(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let pool = &database.pool;
    let slug = format!("fulfil-{}", uuid::Uuid::now_v7().simple());
    let slug = identity::tenants::Slug::parse(&slug[..30]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tenant =
        identity::tenants::create(pool, "Fulfillment benchmark", &slug).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = identity::api_keys::issue(pool, tenant.id, "bench").await.map_err(|e| anyhow::anyhow!("{e}"))?.secret;
    let api = Api { http: reqwest::Client::new(), base: base.clone(), key };

    // Every day 06:00–20:00 Berlin, a 30-minute service with a 10-minute buffer: 500
    // appointments leave about one slot in ten free.
    let week: Vec<Value> = (1..=7).map(|d| json!({"weekday": d, "starts": "06:00", "ends": "20:00"})).collect();
    let resource = api
        .post("/api/v1/resources", json!({"name": "Measured", "time_zone": "Europe/Berlin", "working_hours": week}))
        .await?;
    let service = api
        .post("/api/v1/services", json!({"name": "Visit", "duration_minutes": 30, "buffer_after_minutes": 10}))
        .await?;
    let (resource, service) = (id(&resource)?, id(&service)?);
    let from =
        (Utc::now() + chrono::Duration::days(1)).date_naive().and_hms_opt(0, 0, 0).context("midnight")?.and_utc();
    let to = from + chrono::Duration::days(30);

    // 1. Fill the month with appointments at slots availability offers, then measure it.
    let offered = slots(&api, &service, &resource, from, to, 15).await?;
    // Spread over the month, each at least the service's span (with its buffer) after the last.
    let step = (offered.len() / (args.appointments.max(1) * 3)).max(1);
    let mut booked = 0;
    let mut last: Option<DateTime<Utc>> = None;
    for start in offered.iter().step_by(step) {
        let at = DateTime::parse_from_rfc3339(start)?.with_timezone(&Utc);
        if last.is_some_and(|last| at < last + chrono::Duration::minutes(40)) {
            continue;
        }
        if booked == args.appointments {
            break;
        }
        api.post("/api/v1/appointments", json!({"service_id": service, "resource_id": resource, "start": start}))
            .await?;
        (booked, last) = (booked + 1, Some(at));
    }
    let url = format!(
        "{base}/api/v1/availability?service_id={service}&resource_id={resource}&from={}&to={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut millis = Vec::with_capacity(args.samples);
    let mut slots_per_answer = 0;
    for _ in 0..args.samples {
        let started = Instant::now();
        let answer: Value = api.http.get(&url).bearer_auth(&api.key).send().await?.error_for_status()?.json().await?;
        millis.push(started.elapsed().as_secs_f64() * 1000.0);
        slots_per_answer = answer["resources"][0]["slots"].as_array().map_or(0, Vec::len);
    }
    let availability_30_days = Percentiles::of(millis);

    // 2. One slot, many takers at once.
    let contested =
        slots(&api, &service, &resource, from, to, 30).await?.into_iter().next().context("no free slot left")?;
    let started = Instant::now();
    let mut handles = Vec::with_capacity(args.contenders);
    for _ in 0..args.contenders {
        let (http, url, key) = (api.http.clone(), format!("{base}/api/v1/reservations"), api.key.clone());
        let body = json!({"service_id": service, "resource_id": resource, "start": contested});
        handles.push(tokio::spawn(async move {
            http.post(url).bearer_auth(key).json(&body).send().await.map(|r| r.status().as_u16())
        }));
    }
    let (mut holds, mut conflicts, mut other) = (0, 0, 0);
    for handle in handles {
        match handle.await? {
            Ok(201) => holds += 1,
            Ok(409) => conflicts += 1,
            answer => {
                eprintln!("a contender got {answer:?}");
                other += 1;
            }
        }
    }
    let contention_ms = started.elapsed().as_secs_f64() * 1000.0;

    // 3. Sustained: clients book distinct free slots of a second resource as fast as they can.
    let week: Vec<Value> = (1..=7).map(|d| json!({"weekday": d, "starts": "00:00", "ends": "24:00"})).collect();
    let busy =
        api.post("/api/v1/resources", json!({"name": "Busy", "time_zone": "UTC", "working_hours": week})).await?;
    let busy = id(&busy)?;
    // Its appointments go to a Google calendar and a Jobber account while they are booked.
    let google = sim.oauth_grant(cpaas_sim::Vendor::Google);
    api.post(
        "/api/v1/calendar-connections",
        json!({"provider": "google", "display_name": "Busy's calendar", "resource_id": busy, "calendar_id": "busy@bench.example",
               "refresh_token": google.refresh_token}),
    )
    .await?;
    let jobber = sim.oauth_grant(cpaas_sim::Vendor::Jobber);
    api.post(
        "/api/v1/calendar-connections",
        json!({"provider": "jobber", "display_name": "Jobber", "refresh_token": jobber.refresh_token}),
    )
    .await?;
    let starts: Arc<Vec<String>> = Arc::new(
        (0..args.bookings)
            .map(|n| {
                (from + chrono::Duration::minutes(40 * n as i64)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (api, starts, next, errors, service, busy) =
            (api.clone(), starts.clone(), next.clone(), errors.clone(), service.clone(), busy.clone());
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(start) = starts.get(n) else { return latencies };
                let began = Instant::now();
                let body = json!({"service_id": service, "resource_id": busy, "start": start, "location": "Hauptstr. 1, Berlin"});
                let ok = api
                    .http
                    .post(format!("{}/api/v1/appointments", api.base))
                    .bearer_auth(&api.key)
                    .json(&body)
                    .send()
                    .await;
                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                if !ok.is_ok_and(|r| r.status().as_u16() == 201) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let drained_from = Instant::now();
    let deadline = drained_from + Duration::from_secs(120);
    let relayed = loop {
        let (pending, relayed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FILTER (WHERE published_at IS NOT NULL)
             FROM fulfillment.outbox WHERE tenant_id = $1",
        )
        .bind(tenant.id.0)
        .fetch_one(pool)
        .await?;
        if pending == 0 || Instant::now() > deadline {
            break relayed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let events_drained_ms = drained_from.elapsed().as_secs_f64() * 1000.0;
    // The calendar sync: every appointment shown in both, rate over the whole phase.
    let sync_deadline = Instant::now() + Duration::from_secs(args.sync_wait_secs);
    let (google_synced, jobber_synced) = loop {
        let (google, jobber): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE c.provider = 'google' AND s.state = 'synced'),
                    count(*) FILTER (WHERE c.provider = 'jobber' AND s.state = 'synced')
             FROM fulfillment.appointment_sync s JOIN fulfillment.calendar_connections c ON c.id = s.connection_id
             WHERE s.tenant_id = $1",
        )
        .bind(tenant.id.0)
        .fetch_one(pool)
        .await?;
        if (google as usize >= args.bookings && jobber as usize >= args.bookings) || Instant::now() > sync_deadline {
            break (google, jobber);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sync_seconds = started.elapsed().as_secs_f64();
    let report = FulfillmentBenchReport {
        appointments: booked,
        availability_30_days,
        slots_per_answer,
        contenders: args.contenders,
        contention_holds: holds,
        contention_conflicts: conflicts,
        contention_other: other,
        contention_ms,
        bookings: args.bookings,
        bookings_per_second: args.bookings as f64 / elapsed,
        booking_latency: Percentiles::of(latencies),
        booking_errors: errors.load(Ordering::Relaxed),
        events_drained_ms,
        events_relayed: relayed,
        google_synced,
        jobber_synced,
        sync_seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    relay.abort();
    sync.iter().for_each(tokio::task::JoinHandle::abort);
    let _ = stop.send(true);
    serving.await.context("the service panicked")??;
    if report.contention_holds != 1 || report.contention_other != 0 {
        bail!("{} concurrent reservations of one slot gave {} holds and {} errors", args.contenders, holds, other);
    }
    Ok(())
}

fn print_text(r: &FulfillmentBenchReport) {
    let p = |x: &Percentiles| {
        format!("p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} samples)", x.p50, x.p95, x.p99, x.samples)
    };
    println!("fulfillment benchmark");
    println!(
        "  availability, one resource, 30 days, {} appointments ({} slots per answer): {}",
        r.appointments,
        r.slots_per_answer,
        p(&r.availability_30_days)
    );
    println!(
        "  {} concurrent reservations of one slot: {} hold, {} conflicts (409), {} other, in {:.0} ms",
        r.contenders, r.contention_holds, r.contention_conflicts, r.contention_other, r.contention_ms
    );
    println!(
        "  sustained bookings: {} in total, {:.0}/s, {}; {} errors",
        r.bookings,
        r.bookings_per_second,
        p(&r.booking_latency),
        r.booking_errors
    );
    println!(
        "  appointment events relayed: {} (drained {:.0} ms after the last booking)",
        r.events_relayed, r.events_drained_ms
    );
    println!(
        "  calendar sync: {} in Google ({:.0}/s), {} in Jobber ({:.0}/s), {:.1} s from the first booking",
        r.google_synced,
        r.google_synced as f64 / r.sync_seconds,
        r.jobber_synced,
        r.jobber_synced as f64 / r.sync_seconds,
        r.sync_seconds
    );
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(&body).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }
}

fn id(value: &Value) -> anyhow::Result<String> {
    Ok(value["id"].as_str().context("an answer without id")?.to_owned())
}

async fn slots(
    api: &Api,
    service: &str,
    resource: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: u32,
) -> anyhow::Result<Vec<String>> {
    let url = format!(
        "{}/api/v1/availability?service_id={service}&resource_id={resource}&from={}&to={}&interval_minutes={interval}",
        api.base,
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let answer: Value = api.http.get(url).bearer_auth(&api.key).send().await?.error_for_status()?.json().await?;
    Ok(answer["resources"][0]["slots"]
        .as_array()
        .context("no slots")?
        .iter()
        .filter_map(|s| s["start"].as_str().map(str::to_owned))
        .collect())
}
