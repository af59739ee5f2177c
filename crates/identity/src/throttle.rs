//! Login throttling against password guessing. Failures are rows in Postgres, so the limit
//! holds across replicas: per account (workspace + email) and per client address.

use kernel::error::ApiError;
use sqlx::PgPool;

use crate::AuthSettings;

/// The throttling keys of one login attempt.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    account: String,
    client: Option<String>,
}

impl LoginKeys {
    pub fn new(workspace: &str, email: &str, client: Option<std::net::IpAddr>) -> Self {
        Self {
            account: format!("acct:{}:{}", workspace.trim().to_lowercase(), email.trim().to_lowercase()),
            client: client.map(|ip| format!("ip:{ip}")),
        }
    }

    fn all(&self) -> Vec<String> {
        std::iter::once(self.account.clone()).chain(self.client.clone()).collect()
    }
}

/// Refuses the attempt before the password is even checked when either key is over its limit.
pub async fn check(pool: &PgPool, keys: &LoginKeys, settings: &AuthSettings) -> Result<(), ApiError> {
    let rows = sqlx::query!(
        r#"SELECT key AS "key!", count(*) AS "failures!",
                  EXTRACT(EPOCH FROM min(failed_at) + make_interval(secs => $2) - now())::float8 AS "retry_after!"
           FROM identity.login_failures
           WHERE key = ANY($1) AND failed_at > now() - make_interval(secs => $2)
           GROUP BY key"#,
        &keys.all(),
        settings.login_window_secs as f64,
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        let limit =
            if row.key == keys.account { settings.login_max_failures } else { settings.login_max_failures_per_ip };
        if row.failures >= i64::from(limit) {
            return Err(ApiError::TooManyRequests {
                message: "too many failed login attempts; try again later".into(),
                retry_after_secs: row.retry_after.ceil().max(1.0) as u64,
            });
        }
    }
    Ok(())
}

pub async fn record_failure(pool: &PgPool, keys: &LoginKeys, settings: &AuthSettings) -> Result<(), ApiError> {
    let all = keys.all();
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "DELETE FROM identity.login_failures WHERE key = ANY($1) AND failed_at <= now() - make_interval(secs => $2)",
        &all,
        settings.login_window_secs as f64,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("INSERT INTO identity.login_failures (key) SELECT unnest($1::text[])", &all).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A successful login forgives the account's failures (not the address's).
pub async fn clear_account(pool: &PgPool, keys: &LoginKeys) -> Result<(), ApiError> {
    sqlx::query!("DELETE FROM identity.login_failures WHERE key = $1", keys.account).execute(pool).await?;
    Ok(())
}
