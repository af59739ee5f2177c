//! A property test over the HTTP API: random holds, bookings, confirmations, cancellations,
//! reschedules, lapsing holds and bursts of concurrent requests, against one resource. After
//! every step: no two live appointments overlap (with buffers), every slot shown is clear, and
//! a slot that availability showed free was never refused. Seeds are printed on failure.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, spawn_app};

/// A tiny deterministic generator (xorshift64*): the run is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const DAY_FROM: &str = "2027-05-03T00:00:00Z";
const DAY_TO: &str = "2027-05-04T00:00:00Z";

async fn free_slots(app: &TestApp, tenant: &TestTenant, service: &str, resource: &str) -> Vec<String> {
    let url = format!(
        "/api/v1/availability?service_id={service}&resource_id={resource}&from={DAY_FROM}&to={DAY_TO}&interval_minutes=15"
    );
    let body: Value = app.get(&url, &tenant.api_key).await.json().await.unwrap();
    body["resources"][0]["slots"].as_array().unwrap().iter().map(|s| s["start"].as_str().unwrap().to_owned()).collect()
}

/// Live appointments (booked, or held and not lapsed) whose blocked spans overlap: must be none.
async fn overlaps(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        r#"SELECT count(*) FROM fulfillment.appointments a JOIN fulfillment.appointments b
             ON a.resource_id = b.resource_id AND a.id < b.id AND a.blocks && b.blocks
           WHERE (a.status = 'booked' OR (a.status = 'held' AND a.expires_at > now()))
             AND (b.status = 'booked' OR (b.status = 'held' AND b.expires_at > now()))"#,
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    n
}

/// Shown slots that overlap a live appointment's span (with the slot's own buffer): none.
async fn shown_but_taken(app: &TestApp, slots: &[String]) -> i64 {
    let starts: Vec<chrono::DateTime<chrono::Utc>> =
        slots.iter().map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc)).collect();
    let (n,): (i64,) = sqlx::query_as(
        r#"SELECT count(*) FROM unnest($1::timestamptz[]) AS s(start) JOIN fulfillment.appointments a
             ON a.blocks && tstzrange(s.start, s.start + interval '40 minutes')
           WHERE a.status = 'booked' OR (a.status = 'held' AND a.expires_at > now())"#,
    )
    .bind(&starts)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    n
}

/// Appointment ids in one of the states the steps pick from.
async fn ids_with(app: &TestApp, which: &str) -> Vec<String> {
    let live_holds_only = which == "live holds";
    let statuses: Vec<&str> = match which {
        "live" => vec!["held", "booked"],
        "booked" => vec!["booked"],
        _ => vec!["held"],
    };
    sqlx::query_scalar::<_, uuid::Uuid>(
        "SELECT id FROM fulfillment.appointments WHERE status = ANY($1) AND (NOT $2 OR expires_at > now()) ORDER BY id",
    )
    .bind(&statuses)
    .bind(live_holds_only)
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|id| id.to_string())
    .collect()
}

#[tokio::test]
async fn random_bookings_never_overlap_and_a_free_slot_is_never_refused() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let week: Vec<Value> = (1..=5).map(|d| json!({"weekday": d, "starts": "08:00", "ends": "17:00"})).collect();
    let resource: Value = app
        .post(
            "/api/v1/resources",
            &tenant.api_key,
            json!({"name": "Ada", "time_zone": "Europe/Berlin", "working_hours": week}),
        )
        .await
        .json()
        .await
        .unwrap();
    let service: Value = app
        .post(
            "/api/v1/services",
            &tenant.api_key,
            json!({"name": "Check", "duration_minutes": 30, "buffer_after_minutes": 10}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (resource, service) = (resource["id"].as_str().unwrap().to_owned(), service["id"].as_str().unwrap().to_owned());

    for seed in [0x5EED_0001_u64, 0xB00C_4B1E, 0xDEAD_BEEF_1234] {
        let mut rng = Rng(seed);
        for step in 0..45 {
            let slots = free_slots(&app, &tenant, &service, &resource).await;
            let op = rng.below(7);
            let context = format!("seed {seed:#x} step {step} op {op}");
            match op {
                // Hold or book a slot that is shown free: it must be taken.
                0 | 1 if !slots.is_empty() => {
                    let start = &slots[rng.below(slots.len())];
                    let path = if op == 0 { "/api/v1/reservations" } else { "/api/v1/appointments" };
                    let body = json!({"service_id": service, "resource_id": resource, "start": start});
                    let response = app.post(path, &tenant.api_key, body).await;
                    assert_eq!(
                        response.status(),
                        201,
                        "{context}: a free slot {start} was refused: {}",
                        response.text().await.unwrap()
                    );
                }
                // A burst of concurrent holds on random starts (free or not): overlaps decide.
                2 => {
                    let mut handles = Vec::new();
                    for _ in 0..8 {
                        let minutes = 15 * rng.below(36) as i64;
                        let start = chrono::DateTime::parse_from_rfc3339("2027-05-03T06:00:00Z").unwrap()
                            + chrono::Duration::minutes(minutes);
                        let (client, url, key) =
                            (app.client.clone(), app.url("/api/v1/reservations"), tenant.api_key.clone());
                        let body = json!({"service_id": service, "resource_id": resource, "start": start.to_rfc3339()});
                        handles.push(tokio::spawn(async move {
                            client.post(url).bearer_auth(key).json(&body).send().await.unwrap().status()
                        }));
                    }
                    for handle in handles {
                        let status = handle.await.unwrap().as_u16();
                        assert!(matches!(status, 201 | 409 | 422), "{context}: {status}");
                    }
                }
                // Cancel something live.
                3 => {
                    let live = ids_with(&app, "live").await;
                    if !live.is_empty() {
                        let id = &live[rng.below(live.len())];
                        let response =
                            app.post(&format!("/api/v1/appointments/{id}/cancel"), &tenant.api_key, json!({})).await;
                        assert!(matches!(response.status().as_u16(), 200 | 409), "{context}");
                    }
                }
                // Move a booking to a slot shown free (must work) or onto a taken one (409).
                4 => {
                    let booked = ids_with(&app, "booked").await;
                    if !booked.is_empty() && !slots.is_empty() {
                        let id = &booked[rng.below(booked.len())];
                        let start = &slots[rng.below(slots.len())];
                        let response = app
                            .post(
                                &format!("/api/v1/appointments/{id}/reschedule"),
                                &tenant.api_key,
                                json!({"start": start}),
                            )
                            .await;
                        assert_eq!(
                            response.status(),
                            200,
                            "{context}: a move to free {start}: {}",
                            response.text().await.unwrap()
                        );
                    }
                }
                // Time passes for a hold.
                5 => {
                    let held = ids_with(&app, "live holds").await;
                    if !held.is_empty() {
                        let id = &held[rng.below(held.len())];
                        sqlx::query("UPDATE fulfillment.appointments SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
                            .bind(id)
                            .execute(&app.pool)
                            .await
                            .unwrap();
                    }
                }
                // Confirm a hold: live → 200, lapsed → 410.
                _ => {
                    let held = ids_with(&app, "holds").await;
                    if !held.is_empty() {
                        let id = &held[rng.below(held.len())];
                        let response =
                            app.post(&format!("/api/v1/reservations/{id}/confirm"), &tenant.api_key, json!({})).await;
                        assert!(matches!(response.status().as_u16(), 200 | 410), "{context}: {}", response.status());
                    }
                }
            }
            assert_eq!(overlaps(&app).await, 0, "{context}: live appointments overlap");
            let shown = free_slots(&app, &tenant, &service, &resource).await;
            assert_eq!(shown_but_taken(&app, &shown).await, 0, "{context}: a taken slot is shown free");
        }
        // Clear the day for the next seed.
        sqlx::query("UPDATE fulfillment.appointments SET status = 'canceled' WHERE status IN ('held', 'booked')")
            .execute(&app.pool)
            .await
            .unwrap();
    }
}
