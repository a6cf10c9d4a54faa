//! Postgres stopped for 4 s and started again while jobs are enqueued and
//! run: every job the API acknowledged with 201 runs, the API answers 503
//! (after waiting 3 s for a connection) while the database is down, and the
//! worker resumes by itself. A test
//! binary of its own: restarting the shared server would break tests
//! running beside it.

use std::time::{Duration, Instant};
use weir_tests::{all_succeed, post_through_outage, postgres_sandbox, postgres_url, wait_until};

/// Stops Postgres, holds it down longer than the broker waits for a
/// connection (3 s), and starts it again.
fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("a Postgres cluster under /etc/postgresql");
    let cluster = |action: &str| {
        let status = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", action])
            .status()
            .expect("pg_ctlcluster");
        assert!(status.success(), "pg_ctlcluster {action} failed");
    };
    cluster("stop");
    std::thread::sleep(Duration::from_secs(4));
    cluster("start");
}

#[tokio::test]
async fn a_postgres_restart_loses_no_acknowledged_job() {
    let Some(url) = postgres_url() else { return };
    let (sandbox, _cleanup) = postgres_sandbox(&url);
    let api = sandbox.api().await;
    let worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "20"]);

    let http = weir_tests::http_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let endpoint = format!("{}/v1/jobs", api.base);
    let mut acked = Vec::new();
    let mut unavailable = 0;
    let started = Instant::now();
    // The restart runs on a thread beside the enqueues.
    let mut restart = None;
    while started.elapsed() < Duration::from_secs(8) || restart.is_some() {
        if restart.is_none() && started.elapsed() > Duration::from_millis(1500) && acked.len() > 10
        {
            restart = Some(std::thread::spawn(restart_postgres));
        }
        if restart.as_ref().is_some_and(|t| t.is_finished())
            && let Some(t) = restart.take()
        {
            t.join().expect("restart thread");
        }
        match post_through_outage(&http, &endpoint).await {
            Some(id) => acked.push(id),
            None => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(
        unavailable > 0,
        "the API answered 503 while Postgres was down"
    );
    assert!(
        wait_until(Duration::from_secs(20), || async {
            api.get("/readyz").await.0 == 200
        })
        .await,
        "ready again"
    );
    let all_done = all_succeed(&api, &acked).await;
    assert!(
        all_done,
        "some acknowledged jobs never ran ({} acked)\n{}",
        acked.len(),
        worker.log()
    );
    let mut worker = worker;
    assert!(
        worker.child.try_wait().ok().flatten().is_none(),
        "the worker kept running through the outage"
    );
    eprintln!("{} acknowledged, {unavailable} answered 503", acked.len());
}
