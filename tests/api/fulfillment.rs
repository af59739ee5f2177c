//! Fulfillment over HTTP: resources with Berlin working hours, services, availability across
//! daylight-saving changes, holds that take slots and lapse, confirmation (410 once lapsed),
//! idempotent reservations, one winner among concurrent holds, atomic reschedules, quotes, and
//! bad input named by field.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app};

pub(crate) async fn berlin_plumber(app: &TestApp, tenant: &TestTenant) -> (String, String) {
    let week: Vec<Value> = (1..=5)
        .flat_map(|d| {
            [
                json!({"weekday": d, "starts": "08:00", "ends": "12:00"}),
                json!({"weekday": d, "starts": "13:00", "ends": "17:00"}),
            ]
        })
        .collect();
    let resource = app
        .post(
            "/api/v1/resources",
            &tenant.api_key,
            json!({"name": "Jonas (plumber)", "time_zone": "Europe/Berlin", "working_hours": week}),
        )
        .await;
    assert_eq!(resource.status(), 201, "{}", resource.text().await.unwrap());
    let resource: Value = resource.json().await.unwrap();
    let service = app
        .post(
            "/api/v1/services",
            &tenant.api_key,
            json!({"name": "Boiler service", "duration_minutes": 60, "buffer_after_minutes": 15, "price_cents": 12000}),
        )
        .await;
    assert_eq!(service.status(), 201);
    let service: Value = service.json().await.unwrap();
    (resource["id"].as_str().unwrap().to_owned(), service["id"].as_str().unwrap().to_owned())
}

async fn slots(app: &TestApp, tenant: &TestTenant, service: &str, resource: &str, from: &str, to: &str) -> Vec<String> {
    let url = format!("/api/v1/availability?service_id={service}&resource_id={resource}&from={from}&to={to}");
    let response = app.get(&url, &tenant.api_key).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    body["resources"][0]["slots"].as_array().unwrap().iter().map(|s| s["start"].as_str().unwrap().to_owned()).collect()
}

async fn hold(app: &TestApp, tenant: &TestTenant, service: &str, resource: &str, start: &str) -> reqwest::Response {
    app.post(
        "/api/v1/reservations",
        &tenant.api_key,
        json!({"service_id": service, "resource_id": resource, "start": start}),
    )
    .await
}

#[tokio::test]
async fn berlin_hours_stay_local_across_daylight_saving_and_a_hold_takes_its_slot_until_it_is_canceled() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;

    // The week of the spring change (28 March 2027): 08:00 Berlin is 07:00Z before, 06:00Z after.
    let week = slots(&app, &tenant, &service, &resource, "2027-03-26T00:00:00Z", "2027-03-30T00:00:00Z").await;
    assert_eq!(&week[..3], ["2027-03-26T07:00:00Z", "2027-03-26T08:00:00Z", "2027-03-26T09:00:00Z"]);
    assert!(week.contains(&"2027-03-29T06:00:00Z".to_owned()), "{week:?}");
    let monday: Vec<&String> = week.iter().filter(|s| s.starts_with("2027-03-29")).collect();
    assert_eq!(monday.first().map(|s| s.as_str()), Some("2027-03-29T06:00:00Z"), "08:00 summer time: {monday:?}");
    // A 60-minute service (buffers may reach outside working hours): 08:00 to 11:00 and 13:00
    // to 16:00 Berlin on the Friday.
    let friday: Vec<&String> = week.iter().filter(|s| s.starts_with("2027-03-26")).collect();
    assert_eq!(friday.len(), 8, "{friday:?}");
    // Autumn (31 October 2027): 08:00 Berlin is 06:00Z before, 07:00Z after.
    let autumn = slots(&app, &tenant, &service, &resource, "2027-10-29T00:00:00Z", "2027-11-02T00:00:00Z").await;
    assert_eq!(autumn[0], "2027-10-29T06:00:00Z");
    assert!(autumn.contains(&"2027-11-01T07:00:00Z".to_owned()), "{autumn:?}");
    assert!(!autumn.iter().any(|s| s.starts_with("2027-10-30") || s.starts_with("2027-10-31")), "no weekend slots");

    // A hold takes the slot (and, with the buffer, nothing else overlapping it).
    let held = hold(&app, &tenant, &service, &resource, "2027-03-26T08:00:00Z").await;
    assert_eq!(held.status(), 201);
    let held: Value = held.json().await.unwrap();
    assert_eq!(held["status"], "held");
    assert_eq!(held["local_start"], "2027-03-26T09:00:00+01:00");
    assert!(held["expires_at"].is_string());
    let after = slots(&app, &tenant, &service, &resource, "2027-03-26T00:00:00Z", "2027-03-27T00:00:00Z").await;
    assert!(!after.contains(&"2027-03-26T08:00:00Z".to_owned()), "{after:?}");
    assert_error(hold(&app, &tenant, &service, &resource, "2027-03-26T08:00:00Z").await, 409, "conflict").await;
    // Overlapping the held slot's buffer (09:00–09:15) is taken too.
    assert_error(hold(&app, &tenant, &service, &resource, "2027-03-26T08:30:00Z").await, 409, "conflict").await;

    let id = held["id"].as_str().unwrap();
    let booked: Value =
        app.post(&format!("/api/v1/reservations/{id}/confirm"), &tenant.api_key, json!({})).await.json().await.unwrap();
    assert_eq!(booked["status"], "booked");
    let again = app.post(&format!("/api/v1/reservations/{id}/confirm"), &tenant.api_key, json!({})).await;
    assert_eq!(again.status(), 200, "confirming twice answers the appointment");
    let listed: Value = app
        .get("/api/v1/appointments?from=2027-03-26T00:00:00Z&to=2027-03-27T00:00:00Z", &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    let canceled: Value =
        app.post(&format!("/api/v1/appointments/{id}/cancel"), &tenant.api_key, json!({})).await.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    let freed = slots(&app, &tenant, &service, &resource, "2027-03-26T00:00:00Z", "2027-03-27T00:00:00Z").await;
    assert!(freed.contains(&"2027-03-26T08:00:00Z".to_owned()));

    // A service or resource with appointments is retired, not deleted; an unused one goes.
    assert_error(app.delete(&format!("/api/v1/services/{service}"), &tenant.api_key).await, 409, "conflict").await;
    assert_error(app.delete(&format!("/api/v1/resources/{resource}"), &tenant.api_key).await, 409, "conflict").await;
    let spare: Value = app
        .post("/api/v1/services", &tenant.api_key, json!({"name": "Spare", "duration_minutes": 30}))
        .await
        .json()
        .await
        .unwrap();
    let spare = spare["id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/api/v1/services/{spare}"), &tenant.api_key).await.status(), 204);
    assert_error(app.get(&format!("/api/v1/services/{spare}"), &tenant.api_key).await, 404, "not_found").await;

    // Another tenant sees none of it.
    let other = app.create_tenant("rival").await;
    assert_error(app.get(&format!("/api/v1/appointments/{id}"), &other.api_key).await, 404, "not_found").await;
    assert_error(app.get(&format!("/api/v1/resources/{resource}"), &other.api_key).await, 404, "not_found").await;
    assert_error(hold(&app, &other, &service, &resource, "2027-03-26T10:00:00Z").await, 404, "not_found").await;
}

#[tokio::test]
async fn a_lapsed_hold_frees_its_slot_at_once_and_cannot_be_confirmed() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    let held: Value = hold(&app, &tenant, &service, &resource, "2027-04-05T07:00:00Z").await.json().await.unwrap();
    let id = held["id"].as_str().unwrap().to_owned();
    // Time passes: the hold's expiry is now behind us (no sweep has run).
    sqlx::query("UPDATE fulfillment.appointments SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let free = slots(&app, &tenant, &service, &resource, "2027-04-05T00:00:00Z", "2027-04-06T00:00:00Z").await;
    assert!(free.contains(&"2027-04-05T07:00:00Z".to_owned()), "a lapsed hold blocks nothing: {free:?}");
    assert_error(
        app.post(&format!("/api/v1/reservations/{id}/confirm"), &tenant.api_key, json!({})).await,
        410,
        "gone",
    )
    .await;
    let view: Value = app.get(&format!("/api/v1/reservations/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(view["status"], "expired");
    // Someone else takes it now.
    assert_eq!(hold(&app, &tenant, &service, &resource, "2027-04-05T07:00:00Z").await.status(), 201);
}

#[tokio::test]
async fn reservations_are_idempotent_and_concurrent_holds_of_one_slot_have_one_winner() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    let body = json!({"service_id": service, "resource_id": resource, "start": "2027-04-06T07:00:00Z"});
    let keyed = |key: &'static str, body: Value| {
        app.client
            .post(app.url("/api/v1/reservations"))
            .bearer_auth(&tenant.api_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first: Value = keyed("k-1", body.clone()).await.unwrap().json().await.unwrap();
    let second = keyed("k-1", body.clone()).await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.json::<Value>().await.unwrap()["id"], first["id"], "the repeat answers the first hold");
    let mut other = body.clone();
    other["start"] = json!("2027-04-06T09:00:00Z");
    let error = assert_error(keyed("k-1", other).await.unwrap(), 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "Idempotency-Key");

    // 120 requests for one slot at once: one hold, 119 conflicts, no errors (concurrent inserts
    // into an exclusion constraint deadlocked before the resource's lock: 500s).
    let mut handles = Vec::new();
    for _ in 0..120 {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/reservations"), tenant.api_key.clone());
        let body = json!({"service_id": service, "resource_id": resource, "start": "2027-04-07T07:00:00Z"});
        handles.push(tokio::spawn(async move {
            client.post(url).bearer_auth(key).json(&body).send().await.unwrap().status()
        }));
    }
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.unwrap().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 119, "{statuses:?}");
}

#[tokio::test]
async fn a_reschedule_moves_in_one_step_or_not_at_all() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    let book = |start: &'static str| {
        app.post(
            "/api/v1/appointments",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": start}),
        )
    };
    let a: Value = book("2027-04-08T07:00:00Z").await.json().await.unwrap();
    let b: Value = book("2027-04-08T09:00:00Z").await.json().await.unwrap();
    assert_eq!((a["status"].as_str(), b["status"].as_str()), (Some("booked"), Some("booked")));
    let path = format!("/api/v1/appointments/{}/reschedule", a["id"].as_str().unwrap());
    let move_a = |start: &'static str| app.post(&path, &tenant.api_key, json!({"start": start}));
    assert_error(move_a("2027-04-08T09:00:00Z").await, 409, "conflict").await;
    let unchanged: Value = app
        .get(&format!("/api/v1/appointments/{}", a["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unchanged["start"], "2027-04-08T07:00:00Z", "a refused move changes nothing");
    let moved = move_a("2027-04-08T12:00:00Z").await;
    assert_eq!(moved.status(), 200);
    assert_eq!(moved.json::<Value>().await.unwrap()["start"], "2027-04-08T12:00:00Z");
    let free = slots(&app, &tenant, &service, &resource, "2027-04-08T00:00:00Z", "2027-04-09T00:00:00Z").await;
    assert!(free.contains(&"2027-04-08T07:00:00Z".to_owned()), "the old slot is free: {free:?}");
    assert!(!free.contains(&"2027-04-08T12:00:00Z".to_owned()));
}

#[tokio::test]
async fn quotes_add_surcharges_by_local_weekday_and_time() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    let rule = app
        .post(
            "/api/v1/surcharges",
            &tenant.api_key,
            json!({"name": "Friday afternoon", "weekdays": [5], "starts": "13:00", "ends": "17:00", "percent": 20}),
        )
        .await;
    assert_eq!(rule.status(), 201);
    let base = format!("/api/v1/quotes?service_id={service}&resource_id={resource}&start=");
    let (app, tenant) = (&app, &tenant);
    let quote = |start: &'static str| {
        let url = format!("{base}{start}");
        async move { app.get(&url, &tenant.api_key).await }
    };
    // Friday 9 April 2027, 14:00 Berlin (12:00Z): +20 %.
    let friday: Value = quote("2027-04-09T12:00:00Z").await.json().await.unwrap();
    assert_eq!(
        (friday["total_cents"].as_i64(), friday["surcharges"][0]["name"].as_str()),
        (Some(14400), Some("Friday afternoon"))
    );
    let morning: Value = quote("2027-04-09T07:00:00Z").await.json().await.unwrap();
    assert_eq!(morning["total_cents"], 12000);
    let held: Value = hold(app, tenant, &service, &resource, "2027-04-09T12:00:00Z").await.json().await.unwrap();
    assert_eq!(held["price_cents"], 14400, "the hold keeps the quoted price");
}

#[tokio::test]
async fn bad_input_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("plumbing").await;
    let (resource, service) = berlin_plumber(&app, &tenant).await;
    let field = |response: reqwest::Response, name: &'static str| async move {
        let body = assert_error(response, 422, "validation_failed").await;
        assert_eq!(body["error"]["field"], name, "{body}");
    };
    field(
        app.post("/api/v1/resources", &tenant.api_key, json!({"name": "X", "time_zone": "Mars/Olympus"})).await,
        "time_zone",
    )
    .await;
    let late =
        json!({"name": "X", "time_zone": "UTC", "working_hours": [{"weekday": 1, "starts": "17:00", "ends": "08:00"}]});
    field(app.post("/api/v1/resources", &tenant.api_key, late).await, "working_hours[0].ends").await;
    let day =
        json!({"name": "X", "time_zone": "UTC", "working_hours": [{"weekday": 8, "starts": "08:00", "ends": "09:00"}]});
    field(app.post("/api/v1/resources", &tenant.api_key, day).await, "working_hours[0].weekday").await;
    field(
        app.post("/api/v1/services", &tenant.api_key, json!({"name": "X", "duration_minutes": 0})).await,
        "duration_minutes",
    )
    .await;
    let base = format!("/api/v1/availability?service_id={service}&resource_id={resource}");
    field(app.get(&format!("{base}&from=2027-04-10T00:00:00Z&to=2027-04-09T00:00:00Z"), &tenant.api_key).await, "to")
        .await;
    field(app.get(&format!("{base}&from=2027-01-01T00:00:00Z&to=2028-06-01T00:00:00Z"), &tenant.api_key).await, "to")
        .await;
    field(app.get(&format!("/api/v1/availability?resource_id={resource}"), &tenant.api_key).await, "service_id").await;
    // Not a slot: Sunday, 03:00 local, and the past.
    field(hold(&app, &tenant, &service, &resource, "2027-04-11T08:00:00Z").await, "start").await;
    field(hold(&app, &tenant, &service, &resource, "2027-04-12T01:00:00Z").await, "start").await;
    field(hold(&app, &tenant, &service, &resource, "2020-01-06T08:00:00Z").await, "start").await;
    let wrong = app
        .post(
            "/api/v1/reservations",
            &tenant.api_key,
            json!({"service_id": service, "resource_id": resource, "start": "tomorrow"}),
        )
        .await;
    assert_eq!(wrong.status(), 422);
}
