//! Configuration layering and validation, in process. (Exit code 2 is tested in `binary`.)

use switchboard::settings::Settings;

use crate::helpers::repo_root;

fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Settings::load_from(&repo_root().join("config"), env).map_err(|e| e.to_string())
}

#[test]
fn defaults_come_from_config_default_toml() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.http.bind.to_string(), "127.0.0.1:8080");
    assert!(settings.database.external_url().is_none(), "embedded by default");
    assert_eq!(settings.database.data_dir.to_str(), Some("var/postgres"));
}

#[test]
fn environment_variables_override_files() {
    let settings = load(&[
        ("SWITCHBOARD__HTTP__BIND", "0.0.0.0:9000"),
        ("SWITCHBOARD__DATABASE__DATA_DIR", "/tmp/elsewhere"),
        ("SWITCHBOARD__AUTH__SECURE_COOKIES", "true"),
        ("SWITCHBOARD__HTTP__BODY_LIMIT_BYTES", "4096"),
    ])
    .unwrap();
    assert_eq!(settings.http.bind.to_string(), "0.0.0.0:9000");
    assert_eq!(settings.database.data_dir.to_str(), Some("/tmp/elsewhere"));
    assert!(settings.auth.secure_cookies);
    assert_eq!(settings.http.body_limit_bytes, 4096);
}

#[test]
fn the_environment_profile_file_applies_between_defaults_and_variables() {
    const OWN_KEY: [(&str, &str); 2] = [
        ("SWITCHBOARD__SECRETS__ACTIVE_KEY", "prod1"),
        ("SWITCHBOARD__SECRETS__KEYS__PROD1", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
    ];
    let settings = load(&[("SWITCHBOARD_ENV", "production"), OWN_KEY[0], OWN_KEY[1]]).unwrap();
    assert!(settings.auth.secure_cookies, "config/production.toml sets it");
    let settings = load(&[
        ("SWITCHBOARD_ENV", "production"),
        ("SWITCHBOARD__AUTH__SECURE_COOKIES", "false"),
        OWN_KEY[0],
        OWN_KEY[1],
    ])
    .unwrap();
    assert!(!settings.auth.secure_cookies, "a variable beats the profile");
    let missing = load(&[("SWITCHBOARD_ENV", "nosuchprofile")]).unwrap_err();
    assert!(missing.starts_with("SWITCHBOARD_ENV:"), "{missing}");
}

#[test]
fn database_url_is_honoured_and_never_printed() {
    let settings = load(&[("DATABASE_URL", "postgres://app:s3cr3t-pw@db.internal/switchboard")]).unwrap();
    assert_eq!(settings.database.external_url(), Some("postgres://app:s3cr3t-pw@db.internal/switchboard"));
    let debug = format!("{settings:?}");
    assert!(!debug.contains("s3cr3t-pw"), "{debug}");
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SWITCHBOARD__HTTP__BIND", "nope")], "http.bind"),
        (&[("SWITCHBOARD__HTTP__BODY_LIMIT_BYTES", "lots")], "http.body_limit_bytes"),
        (&[("SWITCHBOARD__HTTP__REQUEST_TIMEOUT_SECS", "0")], "http.request_timeout_secs"),
        (&[("SWITCHBOARD__LOG__FORMAT", "xml")], "log.format"),
        (&[("SWITCHBOARD__LOG__LEVEL", "info,=[")], "log.level"),
        (&[("SWITCHBOARD__AUTH__SESSION_TTL_SECS", "5")], "auth.session_ttl_secs"),
        (&[("DATABASE_URL", "mysql://x")], "database.url"),
        (&[("SWITCHBOARD__HTTP__BINDD", "x")], "bindd"),
    ];
    for (env, key) in cases {
        let error = load(env).unwrap_err();
        assert!(error.contains(key), "error for {env:?} should name {key}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

/// Environment variables are strings, so a list setting takes comma-separated items there.
#[test]
fn list_settings_come_from_the_environment_comma_separated() {
    let topics = "arn:aws:sns:eu-central-1:123456789012:ses-events, arn:aws:sns:eu-central-1:123456789012:ses-inbound";
    let settings = load(&[
        ("SWITCHBOARD__PROVIDERS__SNS_CERT_HOSTS", "127.0.0.1:9090, sim.internal ,"),
        ("SWITCHBOARD__PROVIDERS__SNS_TOPIC_ARNS", topics),
    ])
    .unwrap();
    assert_eq!(settings.providers.sns_cert_hosts, ["127.0.0.1:9090", "sim.internal"]);
    assert_eq!(
        settings.providers.sns_topic_arns,
        ["arn:aws:sns:eu-central-1:123456789012:ses-events", "arn:aws:sns:eu-central-1:123456789012:ses-inbound"]
    );
    let one = load(&[("SWITCHBOARD__PROVIDERS__SNS_CERT_HOSTS", "localhost")]).unwrap();
    assert_eq!(one.providers.sns_cert_hosts, ["localhost"]);
    // A lone item the environment source reads as a number is still an item.
    let number = load(&[("SWITCHBOARD__PROVIDERS__SNS_CERT_HOSTS", "9090")]).unwrap();
    assert_eq!(number.providers.sns_cert_hosts, ["9090"]);
    let empty = load(&[("SWITCHBOARD__PROVIDERS__SNS_CERT_HOSTS", "")]).unwrap();
    assert!(empty.providers.sns_cert_hosts.is_empty());
    let bad = load(&[("SWITCHBOARD__PROVIDERS__SNS_TOPIC_ARNS", "arn:aws:sns:eu-central-1:123456789012:ok,MyTopic")])
        .unwrap_err();
    assert!(bad.starts_with("providers.sns_topic_arns[1]:"), "{bad}");
}

/// docker-compose.yml, the Dockerfile and the simulator's environment file for compose configure
/// Switchboard only through the environment; every variable they set must be one the
/// configuration accepts. Compose's `${VAR…}` references are resolved as `docker compose` would
/// with config/compose/demo.env (which sets every variable compose requires).
#[test]
fn docker_files_use_valid_configuration() {
    let variables: std::collections::HashMap<String, String> =
        std::fs::read_to_string(repo_root().join("config/compose/demo.env"))
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
            .collect();
    let mut env = Vec::new();
    for file in ["docker-compose.yml", "Dockerfile", "config/compose/simulated-providers.env"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for line in text.lines() {
            let line = line.trim().trim_start_matches("ENV ").trim_end_matches('\\').trim();
            let Some((key, value)) = line.split_once([':', '=']) else { continue };
            let key = key.trim();
            if key.starts_with("SWITCHBOARD__") || key == "DATABASE_URL" {
                env.push((key.to_owned(), compose_interpolate(value.trim().trim_matches('"'), &variables)));
            }
        }
    }
    assert!(env.iter().any(|(k, _)| k == "DATABASE_URL"), "compose sets DATABASE_URL: {env:?}");
    assert!(env.len() >= 5, "{env:?}");
    let settings =
        Settings::load_from(&repo_root().join("config"), env.clone()).unwrap_or_else(|e| panic!("{e}: {env:?}"));
    assert_eq!(settings.http.bind.to_string(), "0.0.0.0:8080");
}

/// Compose's `${NAME}`, `${NAME:-default}`, `${NAME-default}` and `${NAME:?error}`: the variable's
/// value when set, else the default (else nothing).
fn compose_interpolate(value: &str, variables: &std::collections::HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let inner_and_rest = &rest[start + 2..];
        let Some(end) = inner_and_rest.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &inner_and_rest[..end];
        let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let (name, operator) = inner.split_at(name_len);
        let default = operator.strip_prefix(":-").or_else(|| operator.strip_prefix('-')).unwrap_or("");
        match variables.get(name).filter(|v| !v.is_empty()) {
            Some(set) => out.push_str(set),
            None => out.push_str(default),
        }
        rest = &inner_and_rest[end + 1..];
    }
    out.push_str(rest);
    out
}
