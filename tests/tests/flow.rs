//! Flow control end to end on Redis with the real binary: a global cap
//! across two worker nodes (and a node killed while it holds permits), a
//! task rate across nodes, fair share between tenants, and `explain`.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_shared::broker::conformance::service_url;
use weir_tests::{
    Dev, Proc, Sandbox, jobs_of, kill_node, max_overlap, redis_sandbox, wait_until, wait_workers,
};

fn redis_url() -> Option<String> {
    service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
}

async fn enqueue(api: &Dev, jobs: Vec<Value>) -> Vec<String> {
    let (status, body) = api.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 201, "{body}");
    body["ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn succeeded(api: &Dev, task: &str, n: usize, within: Duration) -> bool {
    wait_until(within, || async {
        jobs_of(api, task)
            .await
            .iter()
            .filter(|j| j.state == weir_shared::job::JobState::Succeeded)
            .count()
            == n
    })
    .await
}

async fn reasons(api: &Dev, id: &str) -> Vec<String> {
    let (status, why) = api.get(&format!("/v1/jobs/{id}/explain")).await;
    assert_eq!(status, 200, "{why}");
    why["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_cap_holds_across_nodes_and_frees_a_killed_nodes_permits() {
    let Some(url) = redis_url() else { return };
    let (mut sandbox, _cleanup) = redis_sandbox(&url);
    sandbox.set("WEIR_CONCURRENCY_LIMITS", "weir.sleep=3");
    let api = sandbox.api().await;
    let nodes: Vec<Proc> = ["a", "b"]
        .iter()
        .map(|n| {
            sandbox.spawn(
                &format!("worker-{n}"),
                &["worker", "--processes", "1", "-c", "8"],
            )
        })
        .collect();
    wait_workers(&api, 2).await;

    let ids = enqueue(
        &api,
        (0..30)
            .map(|_| json!({"task": "weir.sleep", "payload": {"ms": 200}}))
            .collect(),
    )
    .await;
    // While the cap is full, a waiting job says so and names the holders.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            reasons(&api, &ids[29])
                .await
                .contains(&"cap_full".to_owned())
        })
        .await,
        "explain names the full cap"
    );
    let (_, why) = api.get(&format!("/v1/jobs/{}/explain", ids[29])).await;
    let cap = why["reasons"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["code"] == "cap_full").cloned())
        .expect("cap_full reason");
    assert!(
        cap["holders"].as_array().is_some_and(|h| !h.is_empty()),
        "{cap}"
    );
    assert!(succeeded(&api, "weir.sleep", 30, Duration::from_secs(30)).await);
    let jobs = jobs_of(&api, "weir.sleep").await;
    assert_eq!(max_overlap(&jobs), 3, "the cap is used, and never exceeded");
    assert!(
        jobs.iter().all(|j| j.attempts == 1),
        "waiting spent no attempt"
    );

    // Long jobs now; kill -9 a node that holds permits.
    enqueue(
        &api,
        (0..9)
            .map(|_| json!({"task": "weir.sleep", "payload": {"ms": 4000}}))
            .collect(),
    )
    .await;
    let holders = || async {
        let (_, limits) = api.get("/v1/limits").await;
        limits["data"][0]["holders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            holders().await.len() == 3
        })
        .await,
        "the cap fills"
    );
    let (_, workers) = api.get("/v1/workers").await;
    let workers = workers["data"].as_array().cloned().unwrap_or_default();
    let held_by = |w: &Value, h: &[Value]| {
        let id = w["id"].as_str().unwrap_or("-");
        h.iter()
            .filter(|h| h["worker"].as_str().is_some_and(|o| o.starts_with(id)))
            .count()
    };
    let now = holders().await;
    let victim = workers
        .iter()
        .find(|w| held_by(w, &now) > 0)
        .expect("a node holds permits");
    let victim_pid = victim["pid"].as_u64().expect("pid");
    let victim_id = victim["id"].as_str().expect("id").to_owned();
    let node = nodes
        .iter()
        .find(|n| u64::from(n.pid()) == victim_pid)
        .expect("the node process");
    kill_node(node);
    let killed = Instant::now();
    // Within the lease (2 s) and a reaper pass, the survivor holds all 3.
    assert!(
        wait_until(Duration::from_secs(8), || async {
            let h = holders().await;
            h.len() == 3
                && h.iter()
                    .all(|h| !h["worker"].as_str().unwrap_or("").starts_with(&victim_id))
        })
        .await,
        "the cap is full again with other jobs: {:?}",
        holders().await
    );
    eprintln!("cap refilled {:?} after the kill", killed.elapsed());
    assert!(succeeded(&api, "weir.sleep", 39, Duration::from_secs(60)).await);
    let jobs = jobs_of(&api, "weir.sleep").await;
    assert!(max_overlap(&jobs) <= 3);
}

#[tokio::test]
async fn a_rate_holds_across_nodes() {
    let Some(url) = redis_url() else { return };
    let (mut sandbox, _cleanup) = redis_sandbox(&url);
    sandbox.set("WEIR_RATE_LIMITS", "weir.noop=10/s");
    let api = sandbox.api().await;
    let _a = sandbox.spawn("worker-a", &["worker", "--processes", "1", "-c", "4"]);
    let _b = sandbox.spawn("worker-b", &["worker", "--processes", "2", "-c", "4"]);
    wait_workers(&api, 2).await;
    let started = Instant::now();
    let ids = enqueue(
        &api,
        (0..50).map(|_| json!({"task": "weir.noop"})).collect(),
    )
    .await;
    assert!(
        wait_until(Duration::from_secs(3), || async {
            reasons(&api, &ids[49])
                .await
                .contains(&"rate_limited".to_owned())
        })
        .await,
        "explain says the rate holds it"
    );
    assert!(succeeded(&api, "weir.noop", 50, Duration::from_secs(15)).await);
    let took = started.elapsed();
    eprintln!("50 jobs at 10/s took {took:?}");
    assert!(
        took >= Duration::from_millis(4500) && took <= Duration::from_millis(6500),
        "50 jobs at 10/s took {took:?}"
    );
    let jobs = jobs_of(&api, "weir.noop").await;
    assert!(
        jobs.iter().all(|j| j.attempts == 1),
        "throttling spent no attempt"
    );
}

#[tokio::test]
async fn a_small_tenant_is_not_stuck_behind_a_large_one() {
    let Some(url) = redis_url() else { return };
    let (sandbox, _cleanup) = redis_sandbox(&url);
    let api = sandbox.api().await;
    let _w = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "4"]);
    wait_workers(&api, 1).await;
    for (tenant, count) in [("a", "2000"), ("b", "10")] {
        let out = sandbox.cli(&[
            "enqueue",
            "weir.sleep",
            "--payload",
            r#"{"ms": 5}"#,
            "--tenant",
            tenant,
            "--count",
            count,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(succeeded(&api, "weir.sleep", 2010, Duration::from_secs(120)).await);
    let jobs = jobs_of(&api, "weir.sleep").await;
    let finished = |tenant: &str| {
        let mut f: Vec<i64> = jobs
            .iter()
            .filter(|j| j.tenant == tenant)
            .filter_map(|j| j.finished_at.map(|t| t.0))
            .collect();
        f.sort_unstable();
        f
    };
    let (a, b) = (finished("a"), finished("b"));
    assert_eq!((a.len(), b.len()), (2000, 10));
    let last_b = b[9];
    let a_before = a.iter().filter(|t| **t < last_b).count();
    eprintln!("{a_before} of a's jobs finished before b's last");
    assert!(
        a_before < 200,
        "{a_before} of a's jobs finished before b's last"
    );
}

#[tokio::test]
async fn explain_names_schedule_pause_consumer_tenant_share_and_queue() {
    let Some(url) = redis_url() else { return };
    let (mut sandbox, _cleanup) = redis_sandbox(&url);
    sandbox.set("WEIR_TENANT_CONCURRENCY_LIMITS", "weir.sleep=1");
    let api = sandbox.api().await;
    let _w = sandbox.spawn(
        "worker",
        &["worker", "-Q", "default", "--processes", "1", "-c", "4"],
    );
    wait_workers(&api, 1).await;

    let delayed = enqueue(&api, vec![json!({"task": "weir.noop", "delay_ms": 60000})]).await;
    assert_eq!(reasons(&api, &delayed[0]).await[0], "scheduled");

    // No worker serves `mail`: flagged by explain, `weir queues` and /metrics.
    let mail = enqueue(
        &api,
        (0..3)
            .map(|_| json!({"task": "weir.noop", "queue": "mail"}))
            .collect(),
    )
    .await;
    let why = reasons(&api, &mail[2]).await;
    assert!(why.contains(&"no_consumer".to_owned()), "{why:?}");
    assert!(why.contains(&"jobs_ahead".to_owned()), "{why:?}");
    let (_, q) = api.get("/v1/queues/mail").await;
    assert_eq!(q["unconsumed"], true);
    let table = sandbox.cli(&["queues"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("NO CONSUMER"));
    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"weir_queue_unconsumed{queue="mail"} 1"#),
        "{metrics}"
    );

    // A paused queue.
    api.post("/v1/queues/default/pause", &json!({})).await;
    let paused = enqueue(&api, vec![json!({"task": "weir.noop"})]).await;
    assert!(
        reasons(&api, &paused[0])
            .await
            .contains(&"queue_paused".to_owned())
    );
    api.post("/v1/queues/default/resume", &json!({})).await;

    // A tenant at its share: the CLI explains it too.
    for _ in 0..2 {
        let out = sandbox.cli(&[
            "enqueue",
            "weir.sleep",
            "--payload",
            r#"{"ms": 3000}"#,
            "--tenant",
            "acme",
        ]);
        assert!(out.status.success());
    }
    let acme = |state: &'static str| {
        let sandbox: &Sandbox = &sandbox;
        async move {
            let page = sandbox.cli_json(&[
                "jobs",
                "list",
                "--state",
                state,
                "--task",
                "weir.sleep",
                "--json",
            ]);
            page["data"].as_array().cloned().unwrap_or_default()
        }
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            acme("running").await.len() == 1
        })
        .await
    );
    let waiting = acme("queued").await;
    assert_eq!(waiting.len(), 1, "the second waits for the tenant's share");
    let id = waiting[0]["id"].as_str().expect("id");
    let why = sandbox.cli_json(&["jobs", "explain", id, "--json"]);
    let codes: Vec<&str> = why["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(codes.contains(&"tenant_share"), "{why}");
    let text = sandbox.cli(&["jobs", "explain", id]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("tenant `acme` already runs 1"));
}
