//! Serial keys end to end with the real binary, on every broker: the jobs
//! of one run (one tenant, one serial key) start one at a time in enqueue
//! order across two worker nodes, while another key runs beside them.

use serde_json::{Value, json};
use std::time::Duration;
use weir_shared::broker::conformance::service_url;
use weir_shared::job::{Job, JobState};
use weir_tests::{
    Dev, Sandbox, jobs_of, max_overlap, postgres_sandbox, postgres_url, redis_sandbox, wait_until,
    wait_workers,
};

/// Enqueues 20 jobs of key `run-1` and 20 of `run-2` interleaved, with
/// two worker nodes; checks order, one at a time per key, and overlap
/// between the keys.
async fn one_lane_at_a_time(sandbox: &Sandbox, api: &Dev) {
    let _a = sandbox.spawn("worker-a", &["worker", "--processes", "1", "-c", "8"]);
    let _b = sandbox.spawn("worker-b", &["worker", "--processes", "1", "-c", "8"]);
    wait_workers(api, 2).await;
    let jobs: Vec<Value> = (0..40)
        .map(|i| {
            json!({"task": "weir.sleep", "payload": {"ms": 30, "n": i},
                   "serial_key": if i % 2 == 0 { "run-1" } else { "run-2" },
                   "priority": i % 10})
        })
        .collect();
    let (status, body) = api.post("/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 201, "{body}");
    assert!(
        wait_until(Duration::from_secs(60), || async {
            jobs_of(api, "weir.sleep")
                .await
                .iter()
                .filter(|j| j.state == JobState::Succeeded)
                .count()
                == 40
        })
        .await,
        "every serial job runs"
    );
    let all = jobs_of(api, "weir.sleep").await;
    for key in ["run-1", "run-2"] {
        let mut lane: Vec<&Job> = all
            .iter()
            .filter(|j| j.serial_key.as_deref() == Some(key))
            .collect();
        assert_eq!(lane.len(), 20);
        let owned: Vec<Job> = lane.iter().map(|j| (*j).clone()).collect();
        assert_eq!(max_overlap(&owned), 1, "{key}: one at a time");
        lane.sort_by_key(|j| j.started_at);
        let order: Vec<i64> = lane
            .iter()
            .map(|j| j.payload["n"].as_i64().unwrap_or(-1))
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{key}: in enqueue order, not by priority");
    }
    assert!(max_overlap(&all) >= 2, "the two keys run beside each other");
    // A bad key is refused with the field named, nothing enqueued.
    let (status, body) = api
        .post("/v1/jobs", &json!({"task": "weir.noop", "serial_key": ""}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("serial_key"), "{body}");
}

#[tokio::test]
async fn serial_keys_on_sqlite() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.api().await;
    one_lane_at_a_time(&sandbox, &api).await;
}

#[tokio::test]
async fn serial_keys_on_redis() {
    let Some(url) = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15") else {
        return;
    };
    let (sandbox, _cleanup) = redis_sandbox(&url);
    let api = sandbox.api().await;
    one_lane_at_a_time(&sandbox, &api).await;
}

#[tokio::test]
async fn serial_keys_on_postgres() {
    let Some(url) = postgres_url() else { return };
    let (sandbox, _cleanup) = postgres_sandbox(&url);
    let api = sandbox.api().await;
    one_lane_at_a_time(&sandbox, &api).await;
}
