//! weir distributed on Postgres, end to end with the real binary: an API
//! and two worker nodes as separate processes, one killed with kill -9 mid
//! run; a global cap across nodes; a transaction-scoped enqueue; bad
//! configuration refused at start. (A Postgres restart under load is in
//! `postgres_restart.rs`, a test binary of its own, so it runs alone.)

use serde_json::{Value, json};
use std::time::Duration;
use weir_shared::broker::postgres::{PostgresBroker, PostgresConfig};
use weir_shared::broker::{Broker, ClaimRequest, EnqueueRequest, Retention};
use weir_shared::job::JobState;
use weir_tests::{
    Proc, default_counts, jobs_of, max_overlap, postgres_sandbox, postgres_url,
    two_nodes_finish_every_job_when_one_is_killed, wait_until, wait_workers,
};

#[tokio::test]
async fn two_worker_nodes_finish_every_job_when_one_is_killed() {
    let Some(url) = postgres_url() else { return };
    let (sandbox, _cleanup) = postgres_sandbox(&url);
    two_nodes_finish_every_job_when_one_is_killed(&sandbox).await;
}

#[tokio::test]
async fn a_global_cap_holds_across_two_nodes() {
    let Some(url) = postgres_url() else { return };
    let (mut sandbox, _cleanup) = postgres_sandbox(&url);
    sandbox.set("WEIR_CONCURRENCY_LIMITS", "weir.sleep=3");
    let api = sandbox.api().await;
    let _nodes: Vec<Proc> = ["a", "b"]
        .iter()
        .map(|n| {
            sandbox.spawn(
                &format!("worker-{n}"),
                &["worker", "--processes", "2", "-c", "8"],
            )
        })
        .collect();
    wait_workers(&api, 2).await;
    let jobs: Vec<Value> = (0..60)
        .map(|_| json!({"task": "weir.sleep", "payload": {"ms": 100}}))
        .collect();
    let (status, body) = api.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        wait_until(Duration::from_secs(60), || async {
            default_counts(&api).await["succeeded"].as_u64() == Some(60)
        })
        .await,
        "every capped job runs: {}",
        default_counts(&api).await
    );
    let jobs = jobs_of(&api, "weir.sleep").await;
    assert_eq!(jobs.len(), 60);
    assert_eq!(max_overlap(&jobs), 3, "the cap is used, and never exceeded");
    assert!(
        jobs.iter().all(|j| j.attempts == 1),
        "waiting spent no attempt"
    );
}

/// Four brokers on one schema (as four processes would be) claim 5,000
/// jobs at once: every job is claimed exactly once.
#[tokio::test]
async fn concurrent_claimers_never_share_a_job() {
    let Some(url) = postgres_url() else { return };
    let (_sandbox, cleanup) = postgres_sandbox(&url);
    let config = PostgresConfig {
        url: url.clone(),
        schema: cleanup.schema.clone(),
        notify: false,
        pool: 4,
        limiter_url: None,
        retention: Retention::default(),
    };
    let mut brokers = Vec::new();
    for _ in 0..4 {
        brokers.push(std::sync::Arc::new(
            PostgresBroker::open(&config).await.expect("broker"),
        ));
    }
    let requests: Vec<EnqueueRequest> = (0..5000)
        .map(|i| {
            let mut r = weir_shared::broker::conformance::request("t", "default");
            r.tenant = format!("tenant-{}", i % 7);
            r
        })
        .collect();
    brokers[0].enqueue(requests).await.expect("enqueue");
    let claimers = brokers.iter().enumerate().map(|(i, b)| {
        let b = b.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = b
                    .claim(ClaimRequest {
                        worker: format!("w{i}"),
                        queues: vec!["default".into()],
                        limit: 25,
                        lease: Duration::from_secs(60),
                        limits: Default::default(),
                        tasks: None,
                    })
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.lease.id));
            }
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.expect("claimer"));
    }
    let distinct: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 5000, "every job claimed");
    assert_eq!(distinct.len(), 5000, "no job claimed twice");
}

/// A job enqueued inside the caller's transaction exists only if the
/// caller commits.
#[tokio::test]
async fn enqueue_in_a_transaction_follows_the_commit() {
    let Some(url) = postgres_url() else { return };
    let (_sandbox, cleanup) = postgres_sandbox(&url);
    let broker = PostgresBroker::open(&PostgresConfig {
        url,
        schema: cleanup.schema.clone(),
        notify: true,
        pool: 2,
        limiter_url: None,
        retention: Retention::default(),
    })
    .await
    .expect("broker");
    let request = || weir_shared::broker::conformance::request("mail.send", "mail");
    let mut tx = broker.begin().await.expect("begin");
    let rolled = broker
        .enqueue_in(&mut tx, vec![request()])
        .await
        .expect("enqueue")
        .remove(0)
        .job;
    tx.rollback().await.expect("rollback");
    let mut tx = broker.begin().await.expect("begin");
    let kept = broker
        .enqueue_in(&mut tx, vec![request()])
        .await
        .expect("enqueue")
        .remove(0)
        .job;
    tx.commit().await.expect("commit");
    broker.announce();
    use weir_shared::broker::{Inspect, Scope};
    assert!(
        broker
            .get(&Scope::All, rolled.id)
            .await
            .expect("get")
            .is_none(),
        "rolled back: no job"
    );
    let stored = broker.get(&Scope::All, kept.id).await.expect("get");
    assert_eq!(stored.map(|j| j.state), Some(JobState::Queued));
}

/// The value of the unlabelled gauge `name` on the API's `/metrics` page.
async fn gauge(api: &weir_tests::Dev, name: &str) -> Option<f64> {
    let page = weir_tests::http_client()
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("page");
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// A transaction left open on the broker's database (here a repeatable
/// read, as an analytics query takes) shows in
/// `weir_postgres_oldest_xact_age_seconds`, the gauge the
/// `WeirPostgresOldTransaction` alert watches, and leaves it once ended.
#[tokio::test]
async fn a_transaction_left_open_shows_in_the_oldest_transaction_gauge() {
    let Some(url) = postgres_url() else { return };
    let (sandbox, _cleanup) = postgres_sandbox(&url);
    let api = sandbox.api().await;
    let held_for = Duration::from_secs(3);
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("a second connection");
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .execute(&mut other)
        .await
        .expect("open a transaction");
    tokio::time::sleep(held_for).await;
    let held = gauge(&api, "weir_postgres_oldest_xact_age_seconds").await;
    assert!(
        held.is_some_and(|age| age >= held_for.as_secs_f64() - 0.5),
        "the open transaction's age shows: {held:?}"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");
    // The gauges are read at most once a second.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            gauge(&api, "weir_postgres_oldest_xact_age_seconds")
                .await
                .is_some_and(|age| age < 1.0)
        })
        .await,
        "ended, it no longer shows: {:?}",
        gauge(&api, "weir_postgres_oldest_xact_age_seconds").await
    );
}

#[tokio::test]
async fn bad_configuration_stops_the_process_with_what_to_fix() {
    let Some(url) = postgres_url() else { return };
    // A malformed URL.
    let (mut sandbox, _cleanup) = postgres_sandbox(&url);
    sandbox.set("WEIR_BROKER_URL", "postgres://weir@127.0.0.1:notaport/test");
    let out = sandbox.cli(&["queues"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("WEIR_BROKER_URL"), "{err}");

    // A role that may log in but not create weir's tables.
    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
    let role = format!("weir_norights_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(&admin)
        .await
        .expect("create role");
    let limited = url.replacen("postgres@", &format!("{role}@"), 1);
    let (mut sandbox, _cleanup) = postgres_sandbox(&limited);
    sandbox.set("WEIR_POSTGRES_SCHEMA", "weir_norights");
    let addr = format!("127.0.0.1:{}", weir_tests::free_port());
    let mut api = sandbox.spawn("api", &["api", "--addr", &addr]);
    let status = api.wait_exit(Duration::from_secs(20));
    let log = api.log();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE {role}")))
        .execute(&admin)
        .await;
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(log.contains("GRANT CREATE"), "{log}");
    assert!(log.contains("WEIR_POSTGRES_SCHEMA"), "{log}");
}

/// Behind PgBouncer in transaction mode LISTEN does not work:
/// `WEIR_POSTGRES_NOTIFY=false` polls instead, and jobs (due now and
/// delayed) still run.
#[tokio::test]
async fn poll_only_mode_runs_jobs() {
    let Some(url) = postgres_url() else { return };
    let (mut sandbox, _cleanup) = postgres_sandbox(&url);
    sandbox.set("WEIR_POSTGRES_NOTIFY", "false");
    let api = sandbox.api().await;
    let _worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "16"]);
    wait_workers(&api, 1).await;
    let mut jobs: Vec<Value> = (0..200).map(|_| json!({"task": "weir.noop"})).collect();
    jobs.push(json!({"task": "weir.noop", "delay_ms": 300}));
    let (status, body) = api.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            default_counts(&api).await["succeeded"].as_u64() == Some(201)
        })
        .await,
        "every job runs without notifications: {}",
        default_counts(&api).await
    );
}
