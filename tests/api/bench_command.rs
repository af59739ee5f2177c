//! `switchboard bench`, the documented benchmark, through the real binary: each way it drives
//! the pipeline (sends, sends with an Idempotency-Key each, Hasura events, paced, with status
//! callbacks) runs against a database of its own, and its report accounts for every message by
//! the simulator's ledger and carries the figures the benchmark exists for. Slow paths and wrong
//! numbers are for the benchmark itself to show; here it must run, and count right.

use serde_json::Value;

use crate::binary::run_json;
use crate::helpers::fresh_database;

const MESSAGES: u64 = 120;

fn number(report: &Value, path: &[&str]) -> f64 {
    let value = path.iter().fold(report, |value, key| &value[*key]);
    value.as_f64().unwrap_or_else(|| panic!("{path:?} is not a number in {report}"))
}

#[tokio::test]
async fn every_mode_of_the_benchmark_runs_and_accounts_for_every_message() {
    let messages = MESSAGES.to_string();
    for (api, extra) in [
        ("send", &[][..]),
        ("send with keys", &["--idempotency-keys"][..]),
        ("events", &["--events"][..]),
        ("send", &["--rate", "400"][..]),
        ("events", &["--events", "--recipients", "7"][..]),
        ("send", &["--status-callbacks"][..]),
    ] {
        let database_url = fresh_database().await;
        let mut args = vec!["bench", "--messages", &messages, "--clients", "8", "--warm-up", "30", "--json"];
        args.extend_from_slice(extra);
        let report = run_json(&args, &database_url, None);
        let run = format!("{api} {extra:?}: {report}");

        assert_eq!(report["api"], api, "{run}");
        assert_eq!(report["target"], "in-process", "{run}");
        assert_eq!(report["messages"].as_u64(), Some(MESSAGES), "{run}");
        assert_eq!(report["warm_up"].as_u64(), Some(30), "{run}");
        assert_eq!((report["lost"].as_u64(), report["duplicated"].as_u64()), (Some(0), Some(0)), "{run}");
        for rate in ["accepted_per_second", "dispatched_per_second", "end_to_end_per_second"] {
            assert!(number(&report, &[rate]) > 0.0, "{rate} of {run}");
        }
        for latency in ["latency_ms", "request_to_provider_ms"] {
            let [p50, p95, p99] = ["p50", "p95", "p99"].map(|p| number(&report, &[&format!("{latency}_{p}")]));
            assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{latency} of {run}");
        }
        // Enqueue comes after the client's request, so the one latency holds the other.
        assert!(number(&report, &["latency_ms_p50"]) <= number(&report, &["request_to_provider_ms_p50"]), "{run}");

        // In process, the service's figures hold the simulator's and the driver's.
        assert!(number(&report, &["cpu", "machine_ms_per_message"]) > 0.0, "{run}");
        // CPU time comes in clock ticks (10 ms): a short run's PostgreSQL may show none. Its
        // context switches are counted one by one, so they show that its processes were found.
        assert!(number(&report, &["cpu", "postgres_ms_per_message"]) >= 0.0, "{run}");
        assert!(number(&report, &["cpu", "service_ms_per_message"]) > 0.0, "{run}");
        assert!(report["cpu"]["sim_ms_per_message"].is_null(), "{run}");
        let switches = &report["cpu"]["switches_per_message"];
        for party in ["machine", "postgres", "service"] {
            assert!(number(switches, &[party]) > 0.0, "{party} switches of {run}");
        }
        assert!(switches["sim"].is_null() && switches["driver"].is_null(), "{run}");

        // Each tenant's messages (the warm-up's and the run's) went to seven numbers in turn,
        // or each to one of its own: so many contacts, and the accounting above still exact.
        let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
        let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM communications.contacts")
            .fetch_one(&pool)
            .await
            .expect("contacts");
        pool.close().await;
        match extra {
            [.., "--recipients", count] => {
                assert_eq!(report["recipients"].as_u64(), count.parse().ok(), "{run}");
                assert_eq!(contacts, 2 * 7, "{run}");
            }
            _ => {
                assert!(report["recipients"].is_null(), "{run}");
                assert_eq!(contacts, 30 + MESSAGES as i64, "{run}");
            }
        }
        match extra {
            ["--rate", rate] => {
                assert_eq!(report["rate"].as_f64(), rate.parse().ok(), "{run}");
                assert!(report["max_lag_ms"].is_number(), "{run}");
            }
            _ => assert!(report["rate"].is_null() && report["max_lag_ms"].is_null(), "{run}"),
        }
        // With the simulator's callbacks the run lasts until each message is delivered, as the
        // database says too; without them no message is.
        let pool = sqlx::PgPool::connect(&database_url).await.expect("connect");
        let delivered: i64 =
            sqlx::query_scalar("SELECT count(*) FROM communications.messages WHERE status = 'delivered'")
                .fetch_one(&pool)
                .await
                .expect("delivered");
        pool.close().await;
        match extra {
            ["--status-callbacks"] => {
                assert_eq!(report["delivered"].as_u64(), Some(MESSAGES), "{run}");
                assert_eq!(delivered, 30 + MESSAGES as i64, "warm-up's and run's messages delivered: {run}");
            }
            _ => {
                assert!(report["delivered"].is_null(), "{run}");
                assert_eq!(delivered, 0, "{run}");
            }
        }
    }
}
