//! Notification templates: CRUD, field-naming validation, strict rendering with locale
//! fallback, escaping, WhatsApp template parameters, tenant isolation and roles.

use reqwest::Response;
use serde_json::{Value, json};

use crate::delivery::{send, wait_for};
use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app, test_settings};

fn booking_confirmed() -> Value {
    json!({
        "name": "booking.confirmed",
        "description": "Sent when a booking is paid",
        "trigger_event": "booking.confirmed",
        "default_locale": "en",
        "variants": [
            {"channel": "sms", "locale": "en", "body": {"text": "Booking {{ booking.ref }}: departs {{ booking.departure }}"}},
            {"channel": "sms", "locale": "de", "body": {"text": "Buchung {{ booking.ref }}: Abfahrt {{ booking.departure }}"}},
            {"channel": "email", "locale": "en", "body": {
                "subject": "Your trip {{ booking.ref }} with {{ operator }}",
                "html": "<p>Hello {{ passenger.first_name }}, see you at {{ booking.departure }}.</p>",
                "text": "Hello {{ passenger.first_name }}, see you at {{ booking.departure }}."}},
            {"channel": "whatsapp", "locale": "de", "body": {"meta_template": {
                "name": "booking_confirmation",
                "body_parameters": ["{{ booking.ref }}", "{{ passenger.first_name }}"],
                "components": [{"type": "header", "parameters": [{"type": "text", "text": "Alpine"}]}]}}}
        ]
    })
}

fn variables() -> Value {
    json!({"booking": {"ref": "AB12", "departure": "09:15"}, "passenger": {"first_name": "Eva"}, "operator": "Alpine"})
}

async fn create(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    let response = app.post("/api/v1/templates", &tenant.api_key, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn patch(app: &TestApp, tenant: &TestTenant, id: &str, body: Value) -> Response {
    app.client
        .patch(app.url(&format!("/api/v1/templates/{id}")))
        .bearer_auth(&tenant.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn delete(app: &TestApp, tenant: &TestTenant, id: &str) -> Response {
    app.delete(&format!("/api/v1/templates/{id}"), &tenant.api_key).await
}

async fn preview(app: &TestApp, tenant: &TestTenant, id: &str, body: Value) -> Response {
    app.post(&format!("/api/v1/templates/{id}/preview"), &tenant.api_key, body).await
}

fn module(app: &TestApp) -> communications::Communications {
    let settings = test_settings("postgres://unused");
    communications::Communications::new(app.pool.clone(), std::sync::Arc::new(settings.secrets.keyring().unwrap()))
}

fn tenant_id(tenant: &TestTenant) -> kernel::ids::TenantId {
    kernel::ids::TenantId(tenant.id)
}

#[tokio::test]
async fn operators_create_read_update_and_delete_templates() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let created = create(&app, &tenant, booking_confirmed()).await;
    assert_eq!(created["name"], "booking.confirmed");
    assert_eq!(created["trigger_event"], "booking.confirmed");
    assert_eq!(created["default_locale"], "en");
    let variants = created["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 4);
    assert_eq!(variants[3]["channel"], "whatsapp");
    assert_eq!(variants[3]["body"]["meta_template"]["language"], "de", "defaults to the variant's locale");
    let id = created["id"].as_str().unwrap().to_owned();

    let fetched: Value = app.get(&format!("/api/v1/templates/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(fetched, created);

    let reminder = create(
        &app,
        &tenant,
        json!({"name": "departure-reminder", "trigger_event": "departure.upcoming", "default_locale": "de_at",
               "variants": [{"channel": "sms", "locale": "DE-at", "body": {"text": "Morgen um {{ time }}"}}]}),
    )
    .await;
    assert_eq!(reminder["default_locale"], "de-AT", "locales are normalised");
    assert_eq!(reminder["variants"][0]["locale"], "de-AT");

    let page: Value = app.get("/api/v1/templates?limit=1", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], created["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value =
        app.get(&format!("/api/v1/templates?limit=1&cursor={cursor}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(rest["items"][0]["id"], reminder["id"]);
    assert!(rest.get("next_cursor").is_none());
    let filtered: Value =
        app.get("/api/v1/templates?trigger_event=departure.upcoming", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["items"][0]["name"], "departure-reminder");

    let conflict = app.post("/api/v1/templates", &tenant.api_key, booking_confirmed()).await;
    assert_eq!(assert_error(conflict, 409, "conflict").await["error"]["field"], "name");

    // Only what is sent changes; `null` clears; variants are replaced as a whole.
    let updated = patch(&app, &tenant, &id, json!({"description": null, "default_locale": "de"})).await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["default_locale"], "de");
    assert_eq!(updated["trigger_event"], "booking.confirmed");
    assert_eq!(updated["variants"].as_array().unwrap().len(), 4);
    let replaced: Value = patch(
        &app,
        &tenant,
        &id,
        json!({"trigger_event": null, "variants": [{"channel": "sms", "locale": "de", "body": {"text": "Neu {{ x }}"}}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(replaced["trigger_event"], Value::Null);
    assert_eq!(replaced["variants"], json!([{"channel": "sms", "locale": "de", "body": {"text": "Neu {{ x }}"}}]));
    let module = module(&app);
    assert!(module.templates_for_event(tenant_id(&tenant), "booking.confirmed").await.unwrap().is_empty());
    let upcoming = module.templates_for_event(tenant_id(&tenant), "departure.upcoming").await.unwrap();
    assert_eq!(upcoming.len(), 1);
    assert_eq!(upcoming[0].variants.len(), 1);

    assert_eq!(delete(&app, &tenant, &id).await.status(), 204);
    assert_error(app.get(&format!("/api/v1/templates/{id}"), &tenant.api_key).await, 404, "not_found").await;
    assert_error(delete(&app, &tenant, &id).await, 404, "not_found").await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.template_variants WHERE template_id = $1")
        .bind(uuid::Uuid::parse_str(&id).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "variants go with their template");
}

#[tokio::test]
async fn invalid_templates_are_422_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let sms = json!({"channel": "sms", "locale": "en", "body": {"text": "Hi"}});
    let with = |field: &str, value: Value| {
        let mut body = json!({"name": "t", "default_locale": "en", "variants": [sms.clone()]});
        body[field] = value;
        body
    };
    let variants = |list: Value| with("variants", list);
    let cases = [
        (with("name", json!("Booking Confirmed")), "name"),
        (with("name", json!("")), "name"),
        (with("default_locale", json!("english")), "default_locale"),
        (with("trigger_event", json!("Booking Confirmed")), "trigger_event"),
        (with("colour", json!("red")), "colour"),
        (variants(json!([])), "variants"),
        (
            variants(json!([sms.clone(), {"channel": "fax", "locale": "en", "body": {"text": "x"}}])),
            "variants[1].channel",
        ),
        (variants(json!([{"channel": "sms", "locale": "en_", "body": {"text": "x"}}])), "variants[0].locale"),
        (
            variants(json!([sms.clone(), {"channel": "sms", "locale": "EN", "body": {"text": "x"}}])),
            "variants[1].locale",
        ),
        (variants(json!([{"channel": "sms", "locale": "en", "body": {}}])), "variants[0].body.text"),
        (
            variants(json!([{"channel": "sms", "locale": "en", "body": {"text": "x", "subject": "y"}}])),
            "variants[0].body.subject",
        ),
        (variants(json!([{"channel": "sms", "locale": "en", "body": "Hi"}])), "variants[0].body"),
        (variants(json!([{"channel": "email", "locale": "en", "body": {"text": "x"}}])), "variants[0].body.subject"),
        (variants(json!([{"channel": "email", "locale": "en", "body": {"subject": "S"}}])), "variants[0].body.text"),
        (
            variants(json!([{"channel": "email", "locale": "en", "body": {"subject": "a\nb", "text": "x"}}])),
            "variants[0].body.subject",
        ),
        (variants(json!([{"channel": "whatsapp", "locale": "en", "body": {}}])), "variants[0].body.text"),
        (
            variants(
                json!([{"channel": "whatsapp", "locale": "en", "body": {"text": "x", "meta_template": {"name": "a"}}}]),
            ),
            "variants[0].body.meta_template",
        ),
        (
            variants(
                json!([{"channel": "whatsapp", "locale": "en", "body": {"meta_template": {"name": "Booking Confirmation"}}}]),
            ),
            "variants[0].body.meta_template.name",
        ),
    ];
    for (body, field) in cases {
        let response = app.post("/api/v1/templates", &tenant.api_key, body.clone()).await;
        let error = assert_error(response, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "for {body}: {error}");
    }
    let list: Value = app.get("/api/v1/templates", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn templates_with_syntax_errors_are_never_stored() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let broken = json!({"name": "t", "default_locale": "en", "variants": [
        {"channel": "sms", "locale": "en", "body": {"text": "fine {{ a }}"}},
        {"channel": "email", "locale": "en", "body": {"subject": "S", "html": "<p>{% if a %}x</p>"}}
    ]});
    let error =
        assert_error(app.post("/api/v1/templates", &tenant.api_key, broken).await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "variants[1].body.html");
    assert!(error["error"]["message"].as_str().unwrap().contains("syntax error"), "{error}");

    let meta = json!({"name": "t", "default_locale": "en", "variants": [{"channel": "whatsapp", "locale": "en",
        "body": {"meta_template": {"name": "x", "body_parameters": ["{{ a }}", "{{ b "]}}}]});
    let error =
        assert_error(app.post("/api/v1/templates", &tenant.api_key, meta).await, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "variants[0].body.meta_template.body_parameters[1]");

    let created = create(
        &app,
        &tenant,
        json!({"name": "t", "default_locale": "en", "variants": [{"channel": "sms", "locale": "en", "body": {"text": "ok"}}]}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let update = patch(
        &app,
        &tenant,
        id,
        json!({"variants": [{"channel": "sms", "locale": "en", "body": {"text": "{{ unclosed"}}]}),
    )
    .await;
    assert_eq!(assert_error(update, 422, "validation_failed").await["error"]["field"], "variants[0].body.text");
    let unchanged: Value = app.get(&format!("/api/v1/templates/{id}"), &tenant.api_key).await.json().await.unwrap();
    assert_eq!(unchanged, created);
}

#[tokio::test]
async fn preview_falls_back_from_region_to_language_to_default_locale() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let created = create(&app, &tenant, booking_confirmed()).await;
    let id = created["id"].as_str().unwrap();
    let cases = [
        (json!("de-AT"), "de", "Buchung AB12: Abfahrt 09:15"),
        (json!("de"), "de", "Buchung AB12: Abfahrt 09:15"),
        (json!("fr-CH"), "en", "Booking AB12: departs 09:15"),
        (Value::Null, "en", "Booking AB12: departs 09:15"),
    ];
    for (locale, used, text) in cases {
        let response =
            preview(&app, &tenant, id, json!({"channel": "sms", "locale": locale, "variables": variables()})).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["locale"], used, "{locale}");
        assert_eq!(body["content"], json!({"type": "text", "text": text}), "{locale}");
    }
    // No whatsapp variant for fr or en: the channel cannot be served.
    let none =
        preview(&app, &tenant, id, json!({"channel": "whatsapp", "locale": "fr", "variables": variables()})).await;
    let error = assert_error(none, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "channel");
    let bad =
        preview(&app, &tenant, id, json!({"channel": "sms", "locale": "français", "variables": variables()})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "locale");
    let bad = preview(&app, &tenant, id, json!({"channel": "sms", "variables": ["not", "an", "object"]})).await;
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "variables");
}

#[tokio::test]
async fn a_missing_variable_is_422_naming_its_path() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let created = create(&app, &tenant, booking_confirmed()).await;
    let id = created["id"].as_str().unwrap();
    let variables = json!({"booking": {"ref": "AB12"}, "passenger": {"first_name": "Eva"}, "operator": "Alpine"});
    let response = preview(&app, &tenant, id, json!({"channel": "sms", "variables": variables})).await;
    let error = assert_error(response, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "variables.booking.departure", "{error}");
    let response = preview(&app, &tenant, id, json!({"channel": "email", "variables": {}})).await;
    assert_eq!(assert_error(response, 422, "validation_failed").await["error"]["field"], "variables.booking.ref");

    // The send path names the send request's fields.
    let module = module(&app);
    let channel = communications::messages::model::Channel::Sms;
    let error = module
        .render_template(tenant_id(&tenant), "booking.confirmed", Some("de"), &variables, channel)
        .await
        .unwrap_err();
    match error {
        kernel::error::ApiError::Validation { field, .. } => {
            assert_eq!(field, "content.template.variables.booking.departure")
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn email_html_is_escaped_but_text_and_subject_are_not() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let created = create(&app, &tenant, booking_confirmed()).await;
    let id = created["id"].as_str().unwrap();
    let mut vars = variables();
    vars["passenger"]["first_name"] = json!("<script>alert('x')</script>");
    vars["operator"] = json!("Berg & Tal");
    let body: Value = preview(&app, &tenant, id, json!({"channel": "email", "locale": "en", "variables": vars}))
        .await
        .json()
        .await
        .unwrap();
    let content = &body["content"];
    assert_eq!(content["type"], "email");
    assert_eq!(content["subject"], "Your trip AB12 with Berg & Tal");
    assert_eq!(content["text"], "Hello <script>alert('x')</script>, see you at 09:15.");
    let html = content["html"].as_str().unwrap();
    assert!(html.starts_with("<p>Hello &lt;script&gt;"), "{html}");
    assert!(!html.contains("<script>"), "{html}");
    assert_eq!(content["attachments"], json!([]));
}

#[tokio::test]
async fn whatsapp_meta_template_parameters_are_rendered() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    create(&app, &tenant, booking_confirmed()).await;
    let module = module(&app);
    let channel = communications::messages::model::Channel::Whatsapp;
    let content = module
        .render_template(tenant_id(&tenant), "booking.confirmed", Some("de-AT"), &variables(), channel)
        .await
        .unwrap();
    assert_eq!(
        content,
        communications::messages::content::MessageContent::WhatsappTemplate {
            name: "booking_confirmation".into(),
            language: "de".into(),
            body_parameters: vec!["AB12".into(), "Eva".into()],
            components: Some(json!([{"type": "header", "parameters": [{"type": "text", "text": "Alpine"}]}])),
        }
    );
    let error =
        module.render_template(tenant_id(&tenant), "no-such-template", None, &variables(), channel).await.unwrap_err();
    assert!(matches!(error, kernel::error::ApiError::Validation { ref field, .. } if field == "content.template.name"));
    // English has no WhatsApp variant, and neither has the default locale.
    let error = module
        .render_template(tenant_id(&tenant), "booking.confirmed", Some("en"), &variables(), channel)
        .await
        .unwrap_err();
    assert!(matches!(error, kernel::error::ApiError::Validation { ref field, .. } if field == "content.template"));
    let sms = module
        .render_template(
            tenant_id(&tenant),
            "booking.confirmed",
            None,
            &json!({"booking": {"ref": "X", "departure": "d".repeat(1600)}}),
            communications::messages::model::Channel::Sms,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(sms, kernel::error::ApiError::Validation { ref field, .. } if field == "content.template.variables")
    );
}

#[tokio::test]
async fn another_tenants_templates_do_not_exist() {
    let app = spawn_app().await;
    let alpine = app.create_tenant("alpine").await;
    let other = app.create_tenant("other").await;
    let created = create(&app, &alpine, booking_confirmed()).await;
    let id = created["id"].as_str().unwrap();
    assert_error(app.get(&format!("/api/v1/templates/{id}"), &other.api_key).await, 404, "not_found").await;
    assert_error(patch(&app, &other, id, json!({"description": "mine"})).await, 404, "not_found").await;
    assert_error(delete(&app, &other, id).await, 404, "not_found").await;
    let peek = preview(&app, &other, id, json!({"channel": "sms", "variables": variables()})).await;
    assert_error(peek, 404, "not_found").await;
    let list: Value = app.get("/api/v1/templates", &other.api_key).await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
    let error = module(&app)
        .render_template(
            tenant_id(&other),
            "booking.confirmed",
            None,
            &variables(),
            communications::messages::model::Channel::Sms,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, kernel::error::ApiError::Validation { ref field, .. } if field == "content.template.name"));
    // Names are unique per workspace only.
    create(&app, &other, booking_confirmed()).await;
    let still: Value = app.get(&format!("/api/v1/templates/{id}"), &alpine.api_key).await.json().await.unwrap();
    assert_eq!(still, created);
}

#[tokio::test]
async fn agents_read_and_preview_templates_but_only_admins_change_them() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let created = create(&app, &tenant, booking_confirmed()).await;
    let id = created["id"].as_str().unwrap();
    let agent = app.create_agent(&tenant, "agent@alpine.test", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    assert_eq!(client.get(app.url("/api/v1/templates")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(app.url(&format!("/api/v1/templates/{id}"))).send().await.unwrap().status(), 200);
    let previewed = client
        .post(app.url(&format!("/api/v1/templates/{id}/preview")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"channel": "sms", "variables": variables()}))
        .send()
        .await
        .unwrap();
    assert_eq!(previewed.status(), 200);
    let mut second = booking_confirmed();
    second["name"] = json!("second");
    let create =
        client.post(app.url("/api/v1/templates")).header("x-csrf-token", &csrf).json(&second).send().await.unwrap();
    assert_error(create, 403, "forbidden").await;
    let change = client
        .patch(app.url(&format!("/api/v1/templates/{id}")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(change, 403, "forbidden").await;
    let remove =
        client.delete(app.url(&format!("/api/v1/templates/{id}"))).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_error(remove, 403, "forbidden").await;

    let admin = app.create_agent(&tenant, "admin@alpine.test", "admin").await;
    let (client, csrf) = app.session_client(&tenant, &admin).await;
    let create =
        client.post(app.url("/api/v1/templates")).header("x-csrf-token", &csrf).json(&second).send().await.unwrap();
    assert_eq!(create.status(), 201);
}

/// Compiled templates live with the cached template record: an edit replaces both, so the next
/// send renders what the template says now.
#[tokio::test]
async fn a_send_after_an_edit_renders_the_edited_template() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("edits").await;
    let template = json!({"name": "greeting", "default_locale": "en",
        "variants": [{"channel": "sms", "locale": "en", "body": {"text": "Hello {{ name }}"}}]});
    let id = create(&app, &tenant, template).await["id"].as_str().unwrap().to_owned();
    let text_sent = async |app: &TestApp| {
        let body = json!({"to": {"phone": "+4915112345678"}, "channels": "sms",
            "content": {"template": {"name": "greeting", "variables": {"name": "Ada"}}}});
        let id = send(app, &tenant, body).await;
        // No dispatch runs in this app: the message stays queued, as rendered when accepted.
        let message = wait_for(app, &tenant, &id, "queued").await;
        message["content"]["text"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(text_sent(&app).await, "Hello Ada");
    let edit = json!({"variants": [{"channel": "sms", "locale": "en", "body": {"text": "Welcome back, {{ name }}"}}]});
    assert_eq!(patch(&app, &tenant, &id, edit).await.status(), 200);
    assert_eq!(text_sent(&app).await, "Welcome back, Ada");
}
