//! Channel accounts: provisioning input, lifecycle, providers with priority, secrets at rest.

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, TestTenant, assert_error, spawn_app, test_settings};

const META_CODE: &str = "AQBx-signup-code-4f1e";
const TWILIO_TOKEN: &str = "twilio-auth-token-9d8c7b6a";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn twilio_sid() -> String {
    format!("AC{}", "0123456789abcdef".repeat(2))
}

fn whatsapp() -> Value {
    json!({"channel_type": "whatsapp", "display_name": "Alpine WhatsApp",
           "config": {"phone_number_id": "106540352242922", "waba_id": "102290129340398", "signup_code": META_CODE, "pin": "123456"}})
}

fn email() -> Value {
    json!({"channel_type": "email", "provider": "ses", "display_name": "Alpine mail",
           "config": {"domain": "mail.alpine.example", "from_address": "tours@mail.alpine.example",
                      "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": AWS_SECRET}})
}

fn sms_twilio() -> Value {
    json!({"channel_type": "sms", "provider": "twilio", "display_name": "Alpine SMS",
           "config": {"account_sid": twilio_sid(), "auth_token": TWILIO_TOKEN, "from": "+15005550006"}})
}

async fn create(app: &TestApp, tenant: &TestTenant, body: Value) -> Value {
    let response = app.post("/api/v1/channel-accounts", &tenant.api_key, body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn activate(pool: &PgPool, id: &str) {
    // Verification flows talk to providers (see the verification tests); here only the state matters.
    sqlx::query("UPDATE communications.channel_accounts SET status = 'active' WHERE id = $1::uuid")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn operators_create_channel_accounts_and_see_only_masks() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let wa = create(&app, &tenant, whatsapp()).await;
    assert_eq!(wa["status"], "pending_verification");
    assert_eq!(wa["sender"], "106540352242922");
    assert_eq!(wa["providers"][0]["provider"], "meta", "meta is WhatsApp's default provider");
    assert_eq!(wa["providers"][0]["priority"], 0);
    assert_eq!(wa["providers"][0]["secrets"]["signup_code"], "…4f1e");
    assert_eq!(wa["providers"][0]["settings"]["waba_id"], "102290129340398");

    let mail = create(&app, &tenant, email()).await;
    assert_eq!(mail["sender"], "mail.alpine.example");
    assert_eq!(mail["providers"][0]["secrets"]["secret_access_key"], "…EKEY");
    let sms = create(&app, &tenant, sms_twilio()).await;
    assert_eq!(sms["providers"][0]["secrets"]["auth_token"], "…7b6a");
    let chat = create(&app, &tenant, json!({"channel_type": "webchat", "display_name": "Site chat"})).await;
    assert_eq!(chat["providers"], json!([]));

    let list: Value = app.get("/api/v1/channel-accounts", &tenant.api_key).await.json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    let text = list.to_string();
    for secret in [META_CODE, TWILIO_TOKEN, AWS_SECRET, "\"123456\""] {
        assert!(!text.contains(secret), "{secret} leaked into the API");
    }
    let fetched: Value = app
        .get(&format!("/api/v1/channel-accounts/{}", sms["id"].as_str().unwrap()), &tenant.api_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, sms);
}

#[tokio::test]
async fn one_account_per_channel_type_until_revoked() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let first = create(&app, &tenant, sms_twilio()).await;
    let second = app.post("/api/v1/channel-accounts", &tenant.api_key, sms_twilio()).await;
    assert_eq!(assert_error(second, 409, "conflict").await["error"]["field"], "channel_type");
    let revoked = app
        .post(
            &format!("/api/v1/channel-accounts/{}/revoke", first["id"].as_str().unwrap()),
            &tenant.api_key,
            json!({"reason": "moved"}),
        )
        .await;
    assert_eq!(revoked.status(), 200);
    create(&app, &tenant, sms_twilio()).await;
    let other = app.create_tenant("other").await;
    create(&app, &other, sms_twilio()).await;
}

#[tokio::test]
async fn invalid_configuration_is_422_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let cases = [
        (
            json!({"channel_type": "email", "display_name": "x", "config": {"domain": "mail.alpine.example", "from_address": "a@elsewhere.example"}}),
            "config.from_address",
        ),
        (
            json!({"channel_type": "email", "display_name": "x", "config": {"domain": "not a domain", "from_address": "a@b.example"}}),
            "config.domain",
        ),
        (
            json!({"channel_type": "sms", "provider": "twilio", "display_name": "x", "config": {"account_sid": twilio_sid(), "auth_token": "t", "from": "0151 1234"}}),
            "config.from",
        ),
        (
            json!({"channel_type": "sms", "provider": "twilio", "display_name": "x", "config": {"account_sid": "AC1", "auth_token": "t", "from": "+15005550006"}}),
            "config.account_sid",
        ),
        (
            json!({"channel_type": "sms", "provider": "sns", "display_name": "x", "config": {"sender_id": "1234"}}),
            "config.sender_id",
        ),
        (
            json!({"channel_type": "whatsapp", "display_name": "x", "config": {"waba_id": "1", "access_token": "t"}}),
            "config.phone_number_id",
        ),
        (
            json!({"channel_type": "whatsapp", "display_name": "x", "config": {"phone_number_id": "1", "waba_id": "2"}}),
            "config.signup_code",
        ),
        (json!({"channel_type": "whatsapp", "provider": "ses", "display_name": "x", "config": {}}), "provider"),
        (json!({"channel_type": "webchat", "provider": "twilio", "display_name": "x"}), "provider"),
        (json!({"channel_type": "sms", "display_name": "x"}), "config"),
        (json!({"channel_type": "fax", "display_name": "x"}), "channel_type"),
        (json!({"channel_type": "sms", "display_name": " ", "config": {}}), "display_name"),
    ];
    for (body, field) in cases {
        let response = app.post("/api/v1/channel-accounts", &tenant.api_key, body.clone()).await;
        let error = assert_error(response, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
    }
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM communications.channel_accounts").fetch_one(&app.pool).await.unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn lifecycle_moves_are_checked() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(&app, &tenant, sms_twilio()).await;
    let id = account["id"].as_str().unwrap();
    let url = |action: &str| format!("/api/v1/channel-accounts/{id}/{action}");

    let error = assert_error(app.post(&url("suspend"), &tenant.api_key, json!({})).await, 409, "conflict").await;
    assert!(error["error"]["message"].as_str().unwrap().contains("pending_verification"), "{error}");
    assert_error(app.post(&url("reactivate"), &tenant.api_key, json!({})).await, 409, "conflict").await;

    activate(&app.pool, id).await;
    let suspended: Value =
        app.post(&url("suspend"), &tenant.api_key, json!({"reason": "billing"})).await.json().await.unwrap();
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["status_reason"], "billing");
    let reactivated: Value = app
        .client
        .post(app.url(&url("reactivate")))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reactivated["status"], "active");
    assert_eq!(reactivated["status_reason"], Value::Null);
    let revoked: Value = app
        .client
        .post(app.url(&url("revoke")))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    for action in ["revoke", "suspend", "reactivate"] {
        assert_error(app.post(&url(action), &tenant.api_key, json!({})).await, 409, "conflict").await;
    }
    let rename = app
        .client
        .patch(app.url(&format!("/api/v1/channel-accounts/{id}")))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"display_name": "New"}))
        .send()
        .await
        .unwrap();
    assert_error(rename, 409, "conflict").await;
}

#[tokio::test]
async fn concurrent_lifecycle_changes_have_one_winner() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(&app, &tenant, sms_twilio()).await;
    let id = account["id"].as_str().unwrap().to_owned();
    activate(&app.pool, &id).await;
    let mut requests = Vec::new();
    for _ in 0..8 {
        let (client, url, key) =
            (app.client.clone(), app.url(&format!("/api/v1/channel-accounts/{id}/suspend")), tenant.api_key.clone());
        requests.push(tokio::spawn(async move {
            client.post(url).bearer_auth(key).json(&json!({})).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
}

#[tokio::test]
async fn providers_fail_over_by_priority_and_config_edits_keep_secrets() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    let account = create(
        &app,
        &tenant,
        json!({"channel_type": "sms", "display_name": "SMS", "config": {"origination_number": "+4915112345678"}}),
    )
    .await;
    assert_eq!(account["providers"][0]["provider"], "sns", "sns is SMS's default provider");
    let id = account["id"].as_str().unwrap();
    let providers = format!("/api/v1/channel-accounts/{id}/providers");

    let backup = app.post(&providers, &tenant.api_key, json!({"provider": "twilio", "config": {"account_sid": twilio_sid(), "auth_token": TWILIO_TOKEN, "from": "+15005550006"}})).await;
    assert_eq!(backup.status(), 201);
    let backup: Value = backup.json().await.unwrap();
    assert_eq!(backup["priority"], 1, "appended after the primary");
    let clash = app.post(&providers, &tenant.api_key, json!({"provider": "twilio", "priority": 1, "config": {"account_sid": twilio_sid(), "auth_token": "x", "from": "+15005550006"}})).await;
    assert_eq!(assert_error(clash, 409, "conflict").await["error"]["field"], "priority");
    let wrong = app.post(&providers, &tenant.api_key, json!({"provider": "meta", "config": {}})).await;
    assert_eq!(assert_error(wrong, 422, "validation_failed").await["error"]["field"], "provider");

    let backup_url = format!("{providers}/{}", backup["id"].as_str().unwrap());
    let patched = app
        .client
        .patch(app.url(&backup_url))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"enabled": false, "config": {"from": "+15005550010"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["settings"]["from"], "+15005550010");
    assert_eq!(patched["secrets"]["auth_token"], "…7b6a", "the secret survived a partial edit");
    let bad = app
        .client
        .patch(app.url(&backup_url))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"config": {"from": "nope"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(assert_error(bad, 422, "validation_failed").await["error"]["field"], "config.from");

    // The account's own PATCH edits the primary provider, secrets untouched.
    let account_url = app.url(&format!("/api/v1/channel-accounts/{id}"));
    let patched = app
        .client
        .patch(&account_url)
        .bearer_auth(&tenant.api_key)
        .json(&json!({"display_name": "Alpine SMS", "config": {"sender_id": "Alpine"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["display_name"], "Alpine SMS");
    assert_eq!(patched["providers"][0]["settings"]["sender_id"], "Alpine");
    assert_eq!(patched["providers"][0]["settings"]["origination_number"], "+4915112345678");
    let empty = app.client.patch(&account_url).bearer_auth(&tenant.api_key).json(&json!({})).send().await.unwrap();
    assert_error(empty, 422, "validation_failed").await;

    let shown: Value = app.get(&format!("/api/v1/channel-accounts/{id}"), &tenant.api_key).await.json().await.unwrap();
    let order: Vec<&str> =
        shown["providers"].as_array().unwrap().iter().map(|p| p["provider"].as_str().unwrap()).collect();
    assert_eq!(order, ["sns", "twilio"]);

    let primary_url = format!("{providers}/{}", shown["providers"][0]["id"].as_str().unwrap());
    assert_eq!(app.delete(&primary_url, &tenant.api_key).await.status(), 204);
    let last = app.delete(&backup_url, &tenant.api_key).await;
    assert_error(last, 409, "conflict").await;
}

/// Every text column of every table in the database, as one string.
async fn database_text(pool: &PgPool) -> String {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables
         WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut text = String::new();
    for (schema, table) in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT t::text FROM \"{schema}\".\"{table}\" t")))
                .fetch_all(pool)
                .await
                .unwrap();
        text.push_str(&rows.join("\n"));
    }
    text
}

#[tokio::test]
async fn no_secret_is_stored_in_plaintext_and_envelopes_are_bound_to_their_row() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    create(&app, &tenant, whatsapp()).await;
    create(&app, &tenant, email()).await;
    create(&app, &tenant, sms_twilio()).await;
    let text = database_text(&app.pool).await;
    assert!(text.contains("mail.alpine.example"), "the scan sees the rows");
    for secret in [META_CODE, TWILIO_TOKEN, AWS_SECRET, "\"123456\""] {
        assert!(!text.contains(secret), "{secret} is stored in plaintext");
    }
    let kids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT e.value->>'kid' FROM communications.provider_configs p, jsonb_each(p.secrets) e",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kids, ["dev"]);

    // The envelopes open in place, but not when copied onto another row.
    let module = communications_module(&app);
    let rows = provider_rows(&module, &tenant).await;
    let twilio = rows.iter().find(|r| r.provider == communications::channels::ProviderKind::Twilio).unwrap();
    assert_eq!(module.provider_secrets(twilio).await.unwrap()["auth_token"], TWILIO_TOKEN);
    let mut moved = rows.iter().find(|r| r.provider == communications::channels::ProviderKind::Ses).unwrap().clone();
    moved.secrets = twilio.secrets.clone();
    assert!(module.provider_secrets(&moved).await.is_err(), "a copied envelope must not open");
    let mut other_account = twilio.clone();
    other_account.channel_account_id = Some(uuid::Uuid::now_v7());
    assert!(module.provider_secrets(&other_account).await.is_err(), "bound to its channel account");
    let mut other_tenant = twilio.clone();
    other_tenant.tenant_id = Some(uuid::Uuid::now_v7());
    assert!(module.provider_secrets(&other_tenant).await.is_err(), "bound to its tenant");
}

fn communications_module(app: &TestApp) -> communications::Communications {
    let settings = test_settings("postgres://unused");
    communications::Communications::new(app.pool.clone(), std::sync::Arc::new(settings.secrets.keyring().unwrap()))
}

async fn provider_rows(
    module: &communications::Communications,
    tenant: &TestTenant,
) -> Vec<communications::channels::repository::ProviderRow> {
    let tenant_id = kernel::ids::TenantId(tenant.id);
    let accounts = communications::channels::repository::list_accounts(
        &module.pool,
        tenant_id,
        kernel::pagination::PageParams::default().parse().unwrap(),
    )
    .await
    .unwrap();
    let ids: Vec<uuid::Uuid> = accounts.iter().map(|a| a.id).collect();
    communications::channels::repository::providers_of(&module.pool, tenant_id, &ids).await.unwrap()
}

#[tokio::test]
async fn another_tenants_channel_accounts_are_404() {
    let app = spawn_app().await;
    let a = app.create_tenant("tenant-a").await;
    let b = app.create_tenant("tenant-b").await;
    let account = create(&app, &a, sms_twilio()).await;
    let id = account["id"].as_str().unwrap();
    let provider_id = account["providers"][0]["id"].as_str().unwrap();
    assert_error(app.get(&format!("/api/v1/channel-accounts/{id}"), &b.api_key).await, 404, "not_found").await;
    for action in ["suspend", "reactivate", "revoke"] {
        assert_error(
            app.post(&format!("/api/v1/channel-accounts/{id}/{action}"), &b.api_key, json!({})).await,
            404,
            "not_found",
        )
        .await;
    }
    let add = app
        .post(&format!("/api/v1/channel-accounts/{id}/providers"), &b.api_key, json!({"provider": "sns", "config": {}}))
        .await;
    assert_error(add, 404, "not_found").await;
    let patch = app
        .client
        .patch(app.url(&format!("/api/v1/channel-accounts/{id}/providers/{provider_id}")))
        .bearer_auth(&b.api_key)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_error(patch, 404, "not_found").await;
    let rename = app
        .client
        .patch(app.url(&format!("/api/v1/channel-accounts/{id}")))
        .bearer_auth(&b.api_key)
        .json(&json!({"display_name": "Mine"}))
        .send()
        .await
        .unwrap();
    assert_error(rename, 404, "not_found").await;
    let delete = app
        .client
        .delete(app.url(&format!("/api/v1/channel-accounts/{id}/providers/{provider_id}")))
        .bearer_auth(&b.api_key)
        .send()
        .await
        .unwrap();
    assert_error(delete, 404, "not_found").await;
    let list: Value = app.get("/api/v1/channel-accounts", &b.api_key).await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
    let still: Value = app.get(&format!("/api/v1/channel-accounts/{id}"), &a.api_key).await.json().await.unwrap();
    assert_eq!(still["status"], "pending_verification");
    assert_eq!(still["providers"][0]["enabled"], true);
}

#[tokio::test]
async fn agents_read_channels_but_only_admins_change_them() {
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    create(&app, &tenant, sms_twilio()).await;
    let agent = app.create_agent(&tenant, "agent@alpine.test", "agent").await;
    let (client, csrf) = app.session_client(&tenant, &agent).await;
    assert_eq!(client.get(app.url("/api/v1/channel-accounts")).send().await.unwrap().status(), 200);
    let create = client
        .post(app.url("/api/v1/channel-accounts"))
        .header("x-csrf-token", csrf)
        .json(&email())
        .send()
        .await
        .unwrap();
    assert_error(create, 403, "forbidden").await;
}

#[tokio::test]
async fn keys_rotate_reseals_every_secret_under_the_new_key() {
    use base64::Engine;
    let app = spawn_app().await;
    let tenant = app.create_tenant("alpine").await;
    create(&app, &tenant, sms_twilio()).await;
    create(&app, &tenant, email()).await;
    let database_url = sqlx_url(&app).await;
    let new_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let output = crate::helpers::switchboard(
        &["keys", "rotate"],
        &[
            ("DATABASE_URL", &database_url),
            ("SWITCHBOARD__SECRETS__ACTIVE_KEY", "k2"),
            ("SWITCHBOARD__SECRETS__KEYS__K2", &new_key),
        ],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("re-sealed 2 provider configuration(s) under key `k2`"));
    let kids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT e.value->>'kid' FROM communications.provider_configs p, jsonb_each(p.secrets) e",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kids, ["k2"]);

    // Only the new key is needed now.
    let only_new = kernel::crypto::Keyring::from_base64("k2", [("k2", new_key.as_str())]).unwrap();
    let module = communications::Communications::new(app.pool.clone(), std::sync::Arc::new(only_new));
    for row in provider_rows(&module, &tenant).await {
        let secrets = module.provider_secrets(&row).await.unwrap();
        assert!(secrets.values().any(|v| v == TWILIO_TOKEN || v == AWS_SECRET));
    }
    let again = crate::helpers::switchboard(
        &["keys", "rotate"],
        &[
            ("DATABASE_URL", &database_url),
            ("SWITCHBOARD__SECRETS__ACTIVE_KEY", "k2"),
            ("SWITCHBOARD__SECRETS__KEYS__K2", &new_key),
        ],
    )
    .output()
    .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("re-sealed 0"), "idempotent");
}

/// The URL of the test's database (the pool knows it; the binary needs it).
async fn sqlx_url(app: &TestApp) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&app.pool).await.unwrap();
    crate::helpers::url_for(&name)
}

#[tokio::test]
async fn the_public_dev_key_is_refused_in_production() {
    let output = crate::helpers::switchboard(&["migrate"], &[("SWITCHBOARD_ENV", "production")]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("secrets.active_key"));
}
