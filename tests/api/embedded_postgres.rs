//! The embedded PostgreSQL default, through the real binary: first start, reuse by the CLI,
//! data kept across restarts, and no `postgres` process left after any kind of stop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::helpers::{RunningServer, switchboard};

/// A data directory under /tmp that the `postgres` user can reach (tempdirs are 0700).
fn scratch_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix("sb-embedded-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("pg");
    (dir, data_dir)
}

/// Pids of live `postgres` processes serving `data_dir`.
fn postgres_processes(data_dir: &Path) -> Vec<u32> {
    let needle = data_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
            (!zombie && cmdline.contains("postgres") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}

fn assert_no_postgres_left(data_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !postgres_processes(data_dir).is_empty() {
        assert!(Instant::now() < deadline, "postgres still running: {:?}", postgres_processes(data_dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn embedded_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    vec![("SWITCHBOARD__DATABASE__DATA_DIR", data_dir.to_string_lossy().into_owned())]
}

fn start(data_dir: &Path) -> RunningServer {
    let env = embedded_env(data_dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    RunningServer::start(&["serve"], &env)
}

fn cli(args: &[&str], data_dir: &Path) -> std::process::Output {
    let env = embedded_env(data_dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    switchboard(args, &env).output().unwrap()
}

async fn me(server: &RunningServer, api_key: &str) -> reqwest::StatusCode {
    reqwest::Client::new().get(server.url("/api/v1/me")).bearer_auth(api_key).send().await.unwrap().status()
}

#[tokio::test]
async fn starts_shares_with_the_cli_keeps_data_and_stops_cleanly() {
    let (_dir, data_dir) = scratch_dir();
    let server = start(&data_dir);
    let ready = reqwest::get(server.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(!postgres_processes(&data_dir).is_empty(), "the cluster runs");

    // The CLI uses the running cluster and leaves it running.
    let output = cli(&["tenant", "create", "--name", "Acme", "--slug", "acme", "--json"], &data_dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let tenant: Value = serde_json::from_slice(&output.stdout).unwrap();
    let api_key = tenant["api_key"].as_str().unwrap().to_owned();
    assert_eq!(me(&server, &api_key).await, 200);

    // Ctrl-C: clean exit, no postgres left.
    let status = server.stop(Signal::SIGINT);
    assert!(status.success(), "{status}");
    assert_no_postgres_left(&data_dir);

    // The next start reuses the data directory: the tenant is still there.
    let server = start(&data_dir);
    assert_eq!(me(&server, &api_key).await, 200);
    let status = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    assert_no_postgres_left(&data_dir);
}

#[test]
fn the_cli_starts_and_stops_its_own_cluster_when_none_runs() {
    let (_dir, data_dir) = scratch_dir();
    let output = cli(&["tenant", "create", "--name", "Solo", "--slug", "solo", "--json"], &data_dir);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_no_postgres_left(&data_dir);
    let again = cli(&["tenant", "create", "--name", "Solo", "--slug", "solo"], &data_dir);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "the data was kept");
    assert_no_postgres_left(&data_dir);
}

#[test]
fn a_killed_switchboard_leaves_no_postgres_behind() {
    let (_dir, data_dir) = scratch_dir();
    let server = start(&data_dir);
    assert!(!postgres_processes(&data_dir).is_empty());
    server.stop(Signal::SIGKILL);
    assert_no_postgres_left(&data_dir);
}

#[test]
fn missing_server_binaries_give_one_clear_error() {
    let (_dir, data_dir) = scratch_dir();
    let mut env = embedded_env(&data_dir);
    env.push(("SWITCHBOARD__DATABASE__PG_BIN_DIR", "/nonexistent/pg/bin".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = switchboard(&["migrate"], &env).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("initdb") && stderr.contains("apt-get install postgresql"), "{stderr}");
}
