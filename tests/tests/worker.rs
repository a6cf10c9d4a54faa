//! `weir worker` end to end: child processes, a child killed with kill -9,
//! and a graceful SIGTERM.

use serde_json::Value;
use std::time::Duration;
use weir_tests::{Sandbox, signal, wait_until};

fn job(sandbox: &Sandbox, id: &str) -> Value {
    sandbox.cli_json(&["jobs", "show", id, "--json"])
}

async fn wait_state(sandbox: &Sandbox, id: &str, state: &str, timeout: Duration) -> Value {
    let reached = wait_until(timeout, || async { job(sandbox, id)["state"] == state }).await;
    let last = job(sandbox, id);
    assert!(reached, "job {id} never became {state}: {last}");
    last
}

fn enqueue_sleep(sandbox: &Sandbox, ms: u64) -> String {
    let job = sandbox.cli_json(&[
        "enqueue",
        "weir.sleep",
        "--payload",
        &format!("{{\"ms\":{ms}}}"),
        "--json",
    ]);
    job["id"].as_str().expect("id").to_owned()
}

/// Waits until exactly one live node is listed; panics with the node's log otherwise.
async fn wait_for_node(sandbox: &Sandbox, node: &weir_tests::Proc) {
    let up = wait_until(Duration::from_secs(15), || async {
        nodes(sandbox).len() == 1
    })
    .await;
    assert!(
        up,
        "the worker node never showed up in `weir workers`:\n{}",
        node.log()
    );
}

fn nodes(sandbox: &Sandbox) -> Vec<Value> {
    sandbox.nodes()
}

#[tokio::test]
async fn a_job_killed_with_its_child_runs_again() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_LEASE", "1s");
    let node = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "2"]);
    wait_for_node(&sandbox, &node).await;
    let id = enqueue_sleep(&sandbox, 2000);
    wait_state(&sandbox, &id, "running", Duration::from_secs(10)).await;
    let child = nodes(&sandbox)[0]["children"][0]["pid"]
        .as_u64()
        .expect("child pid");
    signal(u32::try_from(child).expect("pid"), "KILL");

    let done = wait_state(&sandbox, &id, "succeeded", Duration::from_secs(20)).await;
    assert_eq!(done["attempts"], 2, "{done}");
    // The lost attempt is in the history; the success left no error.
    assert_eq!(done["history"][0]["outcome"], "lease_expired", "{done}");
    assert!(
        done["history"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("lease expired during attempt 1"),
        "{done}"
    );
    assert_eq!(done["error"], serde_json::Value::Null, "{done}");
    // The supervisor replaced the dead child.
    let replaced = wait_until(Duration::from_secs(10), || async {
        nodes(&sandbox)
            .first()
            .and_then(|n| n["children"][0]["pid"].as_u64())
            .is_some_and(|pid| pid != child)
    })
    .await;
    assert!(replaced, "the dead child was not replaced");
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish() {
    let sandbox = Sandbox::new();
    let mut node = sandbox.spawn("worker", &["worker", "--processes", "2", "-c", "2"]);
    wait_for_node(&sandbox, &node).await;
    let ids = [enqueue_sleep(&sandbox, 1500), enqueue_sleep(&sandbox, 1500)];
    for id in &ids {
        wait_state(&sandbox, id, "running", Duration::from_secs(10)).await;
    }
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node stops");
    assert!(status.success(), "exit status {status}: {}", node.log());
    for id in &ids {
        let done = job(&sandbox, id);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1);
    }
    assert!(
        nodes(&sandbox).is_empty(),
        "a stopped node leaves the worker list"
    );
}

#[tokio::test]
async fn sigterm_hands_back_jobs_that_outlive_the_timeout() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_SHUTDOWN_TIMEOUT", "500ms");
    let mut node = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "1"]);
    wait_for_node(&sandbox, &node).await;
    let id = enqueue_sleep(&sandbox, 60_000);
    wait_state(&sandbox, &id, "running", Duration::from_secs(10)).await;
    node.signal("TERM");
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("the node stops");
    assert!(status.success());
    assert_eq!(
        job(&sandbox, &id)["state"],
        "queued",
        "handed back at once, not left to its lease"
    );
}

async fn probe(port: u16, path: &str) -> (u16, String) {
    match weir_tests::http_builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// `weir worker` and `weir scheduler` answer probes on `WEIR_METRICS_ADDR`:
/// healthy while up, ready while the broker answers and the role works,
/// and 503 once the broker is gone.
#[tokio::test]
async fn workers_and_schedulers_answer_probes_on_the_metrics_address() {
    let dir = tempfile::tempdir().expect("dir");
    let mut redis = weir_tests::PrivateRedis::start(dir.path());
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_BROKER_URL", &redis.url())
        .set("WEIR_AUTH", "disabled");
    let worker_port = weir_tests::free_port();
    let mut worker_env = Sandbox::new();
    worker_env.env = sandbox.env.clone();
    worker_env.set("WEIR_METRICS_ADDR", &format!("127.0.0.1:{worker_port}"));
    let worker = worker_env.spawn("worker", &["worker", "--processes", "2", "-c", "2"]);
    let scheduler_port = weir_tests::free_port();
    let mut scheduler_env = Sandbox::new();
    scheduler_env.env = sandbox.env.clone();
    scheduler_env.set("WEIR_METRICS_ADDR", &format!("127.0.0.1:{scheduler_port}"));
    let scheduler = scheduler_env.spawn("scheduler", &["scheduler"]);

    for (port, role, proc) in [
        (worker_port, "worker", &worker),
        (scheduler_port, "scheduler", &scheduler),
    ] {
        assert!(
            wait_until(Duration::from_secs(20), || async {
                probe(port, "/readyz").await.0 == 200
            })
            .await,
            "{role} never ready: {}",
            proc.log()
        );
        let (status, body) = probe(port, "/healthz").await;
        assert_eq!(status, 200);
        assert!(body.contains(role), "{body}");
        assert_eq!(probe(port, "/metrics").await.0, 200);
    }
    redis.kill();
    for port in [worker_port, scheduler_port] {
        assert!(
            wait_until(Duration::from_secs(10), || async {
                probe(port, "/readyz").await.0 == 503
            })
            .await,
            "readyz fails while the broker is gone"
        );
        assert_eq!(
            probe(port, "/healthz").await.0,
            200,
            "the process still answers"
        );
    }
}
