use serde::Deserialize;

/// `[auth]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a login session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Failed logins for one account within the window before further attempts get 429.
    pub login_max_failures: u32,
    /// Failed logins from one client address within the window before it gets 429.
    pub login_max_failures_per_ip: u32,
    /// The sliding window for counting failed logins, in seconds.
    pub login_window_secs: u64,
    /// Mark cookies `Secure`: set when the service is reached over HTTPS.
    pub secure_cookies: bool,
}

impl AuthSettings {
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.session_ttl_secs < 60 {
            return Err(("auth.session_ttl_secs", "must be at least 60"));
        }
        if self.login_max_failures == 0 {
            return Err(("auth.login_max_failures", "must be at least 1"));
        }
        if self.login_max_failures_per_ip == 0 {
            return Err(("auth.login_max_failures_per_ip", "must be at least 1"));
        }
        if self.login_window_secs == 0 {
            return Err(("auth.login_window_secs", "must be at least 1"));
        }
        Ok(())
    }
}
