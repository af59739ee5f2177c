use serde_json::{Value, json};

use crate::helpers::{PASSWORD, assert_error, spawn_app};

#[tokio::test]
async fn an_operator_creates_lists_and_reads_agents() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let response = app
        .post(
            "/api/v1/agents",
            &tenant.api_key,
            json!({"email": " Bea@Acme.TEST ", "name": "Bea", "role": "agent", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["email"], "bea@acme.test", "emails are normalised");
    assert_eq!(created["role"], "agent");
    assert_eq!(created["tenant_id"], tenant.id.to_string());
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());

    let id = created["id"].as_str().unwrap();
    let fetched: Value = app.get(&format!("/api/v1/agents/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(fetched, created);
    let list: Value = app.get("/api/v1/agents", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM identity.agents").fetch_one(&app.pool).await.unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
}

#[tokio::test]
async fn duplicate_email_in_a_tenant_is_409_but_fine_in_another() {
    let app = spawn_app().await;
    let acme = app.create_tenant("acme").await;
    let other = app.create_tenant("other").await;
    app.create_agent(&acme, "ann@x.test", "agent").await;
    let again = app
        .post(
            "/api/v1/agents",
            &acme.api_key,
            json!({"email": "ANN@x.test", "name": "Ann", "role": "agent", "password": PASSWORD}),
        )
        .await;
    assert_eq!(assert_error(again, 409, "conflict").await["error"]["field"], "email");
    app.create_agent(&other, "ann@x.test", "agent").await;
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let valid = json!({"email": "a@acme.test", "name": "A", "role": "agent", "password": PASSWORD});
    let cases = [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"name": "  "}), "name"),
        (json!({"role": "boss"}), "role"),
        (json!({"password": "short"}), "password"),
        (json!({"name": 42}), "name"),
    ];
    for (patch, field) in cases {
        let mut body = valid.clone();
        for (key, value) in patch.as_object().unwrap() {
            body[key] = value.clone();
        }
        let response = app.post("/api/v1/agents", &tenant.api_key, body).await;
        let error = assert_error(response, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let mut missing = valid.clone();
    missing.as_object_mut().unwrap().remove("password");
    let error =
        assert_error(app.post("/api/v1/agents", &tenant.api_key, missing).await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "password");
    let mut extra = valid.clone();
    extra["admin"] = json!(true);
    let error = assert_error(app.post("/api/v1/agents", &tenant.api_key, extra).await, 422, "validation_failed").await;
    assert!(error["error"]["message"].as_str().unwrap().contains("admin"), "{error}");

    let agents: i64 = sqlx::query_scalar("SELECT count(*) FROM identity.agents").fetch_one(&app.pool).await.unwrap();
    assert_eq!(agents, 0);
}

#[tokio::test]
async fn malformed_bodies_are_400_or_415() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let syntax = app
        .client
        .post(app.url("/api/v1/agents"))
        .bearer_auth(&tenant.api_key)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_error(syntax, 400, "bad_request").await;
    let not_json =
        app.client.post(app.url("/api/v1/agents")).bearer_auth(&tenant.api_key).body("email=a").send().await.unwrap();
    assert_error(not_json, 415, "unsupported_media_type").await;
    let array = app.post("/api/v1/agents", &tenant.api_key, json!([1, 2])).await;
    assert_error(array, 422, "validation_failed").await;
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let unknown = app.get(&format!("/api/v1/agents/{}", uuid::Uuid::now_v7()), &tenant.api_key).await;
    assert_error(unknown, 404, "not_found").await;
    assert_error(app.get("/api/v1/agents/not-a-uuid", &tenant.api_key).await, 404, "not_found").await;
}

#[tokio::test]
async fn agents_list_pages_through_with_a_cursor() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    for n in 0..3 {
        app.create_agent(&tenant, &format!("agent{n}@acme.test"), "agent").await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/agents?limit=2".to_owned();
    loop {
        let page: Value = app.get(&path, &tenant.api_key).await.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|a| a["email"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/agents?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["agent0@acme.test", "agent1@acme.test", "agent2@acme.test"]);
}

#[tokio::test]
async fn only_operators_and_admins_create_agents() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let plain = app.create_agent(&tenant, "plain@acme.test", "agent").await;
    let admin = app.create_agent(&tenant, "admin@acme.test", "admin").await;
    let body = json!({"email": "new@acme.test", "name": "New", "role": "agent", "password": PASSWORD});

    let (client, csrf) = app.session_client(&tenant, &plain).await;
    let refused = client.post(app.url("/api/v1/agents")).header("x-csrf-token", csrf).json(&body).send().await.unwrap();
    assert_error(refused, 403, "forbidden").await;
    assert_eq!(client.get(app.url("/api/v1/agents")).send().await.unwrap().status(), 200, "agents may list colleagues");

    let (client, csrf) = app.session_client(&tenant, &admin).await;
    let created = client.post(app.url("/api/v1/agents")).header("x-csrf-token", csrf).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn a_role_change_applies_to_existing_sessions() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("acme").await;
    let admin = app.create_agent(&tenant, "admin@acme.test", "admin").await;
    let (client, _) = app.session_client(&tenant, &admin).await;
    assert_eq!(client.get(app.url("/api/v1/api-keys")).send().await.unwrap().status(), 200);
    sqlx::query("UPDATE identity.agents SET role = 'agent'").execute(&app.pool).await.unwrap();
    assert_eq!(client.get(app.url("/api/v1/api-keys")).send().await.unwrap().status(), 403);
}
