//! `weir dev` end to end: HTTP in, a worker in the same process, results
//! out; retries, dead letters, replay by hand, and restarts.

use serde_json::json;
use std::time::Duration;
use weir_tests::Sandbox;

/// Retries come back quickly in these tests.
const FAST_RETRY: &str = "[tasks.\"weir.fail\"]\nretry_delay = \"100ms\"\n";

#[tokio::test]
async fn a_job_goes_from_http_to_a_worker_and_back() {
    let sandbox = Sandbox::new();
    let dev = sandbox.dev().await;
    let (status, job) = dev
        .post(
            "/v1/jobs",
            &json!({"task": "weir.echo", "payload": {"hello": "world"}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("id");
    let done = dev
        .wait_state(id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(done["result"], json!({"hello": "world"}));
    assert_eq!(done["attempts"], 1);
    assert!(done["finished_at"].is_string());

    // The event stream of a finished job replays its end and closes.
    let body = dev
        .events(id, Duration::from_secs(10))
        .await
        .expect("the stream closes after the terminal state");
    assert!(body.contains("event: state"), "{body}");
    assert!(body.contains("\"state\":\"succeeded\""), "{body}");
    assert!(
        body.contains("event: result\ndata: {\"hello\":\"world\"}"),
        "{body}"
    );
}

#[tokio::test]
async fn the_event_stream_follows_a_job_to_its_end() {
    let sandbox = Sandbox::new();
    let dev = sandbox.dev().await;
    let (_, job) = dev
        .post(
            "/v1/jobs",
            &json!({"task": "weir.sleep", "payload": {"ms": 600}}),
        )
        .await;
    let id = job["id"].as_str().expect("id");
    let body = dev
        .events(id, Duration::from_secs(10))
        .await
        .expect("the stream ends after the terminal state");
    let running = body.find("\"state\":\"running\"").expect("a running event");
    let succeeded = body
        .find("\"state\":\"succeeded\"")
        .expect("a succeeded event");
    assert!(running < succeeded, "{body}");
    assert!(body.contains("event: result"), "{body}");
}

#[tokio::test]
async fn weir_fail_with_times_succeeds_on_attempt_three() {
    let mut sandbox = Sandbox::new();
    sandbox.config(FAST_RETRY);
    let dev = sandbox.dev().await;
    let (_, job) = dev
        .post(
            "/v1/jobs",
            &json!({"task": "weir.fail", "payload": {"times": 2}}),
        )
        .await;
    let id = job["id"].as_str().expect("id");
    let done = dev
        .wait_state(id, "succeeded", Duration::from_secs(15))
        .await;
    assert_eq!(done["attempts"], 3);
}

#[tokio::test]
async fn weir_fail_dies_after_its_retries_and_is_retried_by_hand() {
    let mut sandbox = Sandbox::new();
    sandbox.config(FAST_RETRY);
    let dev = sandbox.dev().await;
    let (_, job) = dev
        .post("/v1/jobs", &json!({"task": "weir.fail", "max_retries": 2}))
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let dead = dev.wait_state(&id, "failed", Duration::from_secs(15)).await;
    assert_eq!(dead["attempts"], 3, "max_retries + 1 attempts");
    assert_eq!(dead["error"], "weir.fail: planned failure");

    // Dead letters are listed and can be retried by hand, from the CLI.
    let page = sandbox.cli_json(&["jobs", "list", "--state", "failed", "--json"]);
    assert_eq!(page["data"][0]["id"], id.as_str());
    let retried = sandbox.cli_json(&["jobs", "retry", &id, "--json"]);
    assert_eq!(retried["state"], "queued");
    let dead_again = dev.wait_state(&id, "failed", Duration::from_secs(15)).await;
    assert_eq!(
        dead_again["attempts"], 6,
        "a replay gets a fresh set of retries"
    );
    // Every attempt is in the history, with the worker that ran it.
    let outcomes: Vec<&str> = dead_again["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|a| a["outcome"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        outcomes,
        [
            "retried", "retried", "failed", "retried", "retried", "failed"
        ],
        "{dead_again}"
    );
    assert!(
        dead_again["history"][0]["worker"]
            .as_str()
            .is_some_and(|w| !w.is_empty())
    );
    let shown = sandbox.cli(&["jobs", "show", &id]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("6 (max retries 2; 3 since the retry by hand)"),
        "{shown}"
    );
    assert!(
        shown.contains("ATTEMPT") && shown.contains("planned failure"),
        "{shown}"
    );
    let again = sandbox.cli(&["jobs", "retry", &id]);
    assert!(again.status.success());
    let not_now = sandbox.cli(&["jobs", "cancel", &id]);
    assert!(not_now.status.success(), "a queued job can be cancelled");
    let refused = sandbox.cli(&["jobs", "retry", &id]);
    assert!(refused.status.success(), "a cancelled job can be retried");
    let done = dev.wait_state(&id, "failed", Duration::from_secs(15)).await;
    let conflict = sandbox.cli(&["jobs", "cancel", &id]);
    assert_eq!(
        conflict.status.code(),
        Some(1),
        "a wrong state is a refusal, not a usage error: {done}"
    );
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("cannot cancel a job that is failed")
    );
}

#[tokio::test]
async fn jobs_survive_kill_9_and_delayed_jobs_run_after_a_restart() {
    let sandbox = Sandbox::new();
    let mut dev = sandbox.dev().await;
    let (status, job) = dev
        .post(
            "/v1/jobs",
            &json!({"task": "weir.echo", "payload": 7, "delay_ms": 2500}),
        )
        .await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().expect("id").to_owned();
    // Killed right after the 201: the job must be on disk.
    dev.proc.signal("KILL");
    dev.proc
        .wait_exit(Duration::from_secs(5))
        .expect("weir dev died");

    let shown = sandbox.cli_json(&["jobs", "show", &id, "--json"]);
    assert_eq!(shown["state"], "scheduled");
    let dev = sandbox.dev().await;
    let done = dev
        .wait_state(&id, "succeeded", Duration::from_secs(15))
        .await;
    assert_eq!(done["result"], 7);
    assert!(
        done["started_at"].as_str() >= done["run_at"].as_str(),
        "{done}"
    );
}

#[tokio::test]
async fn a_paused_queue_holds_its_jobs_until_resumed() {
    let sandbox = Sandbox::new();
    let dev = sandbox.dev().await;
    let (status, _) = dev.post("/v1/queues/mail/pause", &json!({})).await;
    assert_eq!(status, 200);
    let (_, job) = dev
        .post("/v1/jobs", &json!({"task": "weir.noop", "queue": "mail"}))
        .await;
    let id = job["id"].as_str().expect("id");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, still) = dev.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(still["state"], "queued");
    let out = sandbox.cli(&["queues", "resume", "mail"]);
    assert!(out.status.success());
    dev.wait_state(id, "succeeded", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn weir_dev_runs_the_schedules_on_sqlite() {
    let mut sandbox = Sandbox::new();
    sandbox.config(
        r#"
[[schedules]]
name = "heartbeat"
cron = "* * * * * *"
task = "weir.echo"
payload = { from = "cron" }
"#,
    );
    let dev = sandbox.dev().await;
    let ran = weir_tests::wait_until(Duration::from_secs(10), || async {
        let (_, page) = dev.get("/v1/jobs?task=weir.echo&state=succeeded").await;
        page["data"].as_array().is_some_and(|d| d.len() >= 2)
    })
    .await;
    assert!(ran, "ticks were enqueued and run by the in-process worker");
    let (status, schedules) = dev.get("/v1/schedules").await;
    assert_eq!(status, 200);
    let s = &schedules["data"][0];
    assert_eq!(s["name"], "heartbeat");
    assert_eq!(s["tz"], "UTC");
    assert!(
        s["last_job"].is_string() && s["next_fire"].is_string(),
        "{s}"
    );
    let (_, job) = dev
        .get(&format!(
            "/v1/jobs/{}",
            s["last_job"].as_str().unwrap_or("-")
        ))
        .await;
    assert_eq!(job["payload"]["from"], "cron");
}

/// One access line per request (route template, status, tenant, request
/// id; never the key), the request id echoed in the header and in error
/// bodies, and the job's own log lines carrying its id, queue and tenant.
#[tokio::test]
async fn requests_and_jobs_are_logged_with_their_ids() {
    let mut sandbox = Sandbox::new();
    sandbox.set(
        "WEIR_API_KEYS",
        "acme:weir_accessLogKeyAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let dev = sandbox.dev().await;
    let response = dev
        .http
        .post(format!("{}/v1/jobs", dev.base))
        .bearer_auth("weir_accessLogKeyAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .header("x-request-id", "trace-42")
        .json(&json!({"task": "weir.fail", "max_retries": 0}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let job: serde_json::Value = response.json().await.expect("job");
    let id = job["id"].as_str().expect("id").to_owned();

    let missing = dev
        .http
        .get(format!(
            "{}/v1/jobs/00000000-0000-0000-0000-000000000000",
            dev.base
        ))
        .bearer_auth("weir_accessLogKeyAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .send()
        .await
        .expect("GET");
    let generated = missing.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: serde_json::Value = missing.json().await.expect("error body");
    assert_eq!(body["error"]["request_id"], generated.as_str());

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = dev.proc.log();
        if log.contains(&format!("job_id={id}")) && log.contains("Attempt failed") {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let access: Vec<&str> = log.lines().filter(|l| l.contains("weir::access")).collect();
    assert!(
        access.iter().any(|l| l.contains("route=/v1/jobs ")
            && l.contains("status=201")
            && l.contains("tenant=acme")
            && l.contains("request_id=trace-42")),
        "{access:#?}"
    );
    assert!(
        access
            .iter()
            .any(|l| l.contains("route=/v1/jobs/{id}") && l.contains("status=404")),
        "the route template, not the id: {access:#?}"
    );
    assert!(!log.contains("accessLogKey"), "the key is never logged");
    let failed = log
        .lines()
        .find(|l| l.contains("Attempt failed"))
        .expect("the failure is logged");
    for field in [
        format!("job_id={id}"),
        "queue=default".into(),
        "tenant=acme".into(),
    ] {
        assert!(failed.contains(&field), "{field} in {failed}");
    }
}

/// A rolling deploy: the API knows a task (declared in configuration) that
/// the running worker has no handler for yet. Its jobs wait, queued with no
/// attempt spent, `explain` says why, and other jobs keep running.
#[tokio::test]
async fn a_task_without_a_handler_waits_instead_of_failing() {
    let mut sandbox = Sandbox::new();
    sandbox.config("[tasks.\"deploy.later\"]\nqueue = \"default\"\n");
    let dev = sandbox.dev().await;
    let (status, waiting) = dev.post("/v1/jobs", &json!({"task": "deploy.later"})).await;
    assert_eq!(status, 201, "{waiting}");
    let waiting = waiting["id"].as_str().expect("id").to_owned();
    let (_, other) = dev
        .post("/v1/jobs", &json!({"task": "weir.echo", "payload": 1}))
        .await;
    let other = other["id"].as_str().expect("id").to_owned();
    dev.wait_state(&other, "succeeded", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, job) = dev.get(&format!("/v1/jobs/{waiting}")).await;
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["attempts"], 0, "{job}");
    let (_, why) = dev.get(&format!("/v1/jobs/{waiting}/explain")).await;
    let codes: Vec<&str> = why["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(codes.contains(&"no_handler"), "{why}");
    let (_, workers) = dev.get("/v1/workers").await;
    let tasks = &workers["data"][0]["tasks"];
    assert!(
        tasks
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x == "weir.echo")),
        "the node advertises its handlers: {workers}"
    );
}
