//! weir distributed on Redis, end to end with the real binary: an API and
//! worker nodes as separate processes; a node killed with kill -9; Redis
//! itself killed and restarted under load.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_shared::broker::conformance::service_url;
use weir_shared::broker::redis::PrefixCleanup;
use weir_tests::{
    PrivateRedis, Sandbox, all_succeed, post_through_outage, redis_sandbox,
    two_nodes_finish_every_job_when_one_is_killed,
};

fn on_redis(url: &str) -> (Sandbox, PrefixCleanup) {
    redis_sandbox(url)
}

#[tokio::test]
async fn two_worker_nodes_finish_every_job_when_one_is_killed() {
    let Some(url) = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15") else {
        return;
    };
    let (sandbox, _cleanup) = on_redis(&url);
    two_nodes_finish_every_job_when_one_is_killed(&sandbox).await;
}

#[tokio::test]
async fn a_redis_restart_loses_no_acknowledged_job() {
    if service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15").is_none() {
        return; // no Redis on this machine at all
    }
    let sandbox_dir = tempfile::tempdir().expect("dir");
    let mut redis = PrivateRedis::start(sandbox_dir.path());
    let (sandbox, _cleanup) = on_redis(&redis.url());
    let api = sandbox.api().await;
    let worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "20"]);

    let http = weir_tests::http_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let url = format!("{}/v1/jobs", api.base);
    let mut acked = Vec::new();
    let mut unavailable = 0;
    let started = Instant::now();
    let mut restarted = false;
    let mut killed_at = None;
    while started.elapsed() < Duration::from_secs(6) {
        if killed_at.is_none() && started.elapsed() > Duration::from_millis(1500) {
            redis.kill();
            killed_at = Some(Instant::now());
        }
        if !restarted && killed_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            redis.restart();
            restarted = true;
        }
        match post_through_outage(&http, &url).await {
            Some(id) => acked.push(id),
            None => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(unavailable > 0, "the API answered 503 while Redis was down");
    let (ready, _) = api.get("/readyz").await;
    assert_eq!(ready, 200);

    // Every job acknowledged with 201 runs, on the same worker processes.
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
}

/// A Redis at its `maxmemory` under `noeviction` refuses writes: that is an
/// outage the caller can wait out (503 with Retry-After, nothing stored),
/// never a 500, and `/readyz` says not ready; once memory is free again the
/// same request succeeds.
#[tokio::test]
async fn a_full_redis_is_503_not_500() {
    if service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15").is_none() {
        return; // no Redis on this machine at all
    }
    let dir = tempfile::tempdir().expect("dir");
    let redis = PrivateRedis::start(dir.path());
    let (sandbox, _cleanup) = on_redis(&redis.url());
    let api = sandbox.api().await;
    let (status, _) = api.post("/v1/jobs", &json!({"task": "weir.noop"})).await;
    assert_eq!(status, 201, "Redis has room");

    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let config = |key: &'static str, value: &'static str| {
        redis::cmd("CONFIG").arg("SET").arg(key).arg(value).clone()
    };
    let _: () = config("maxmemory-policy", "noeviction")
        .query_async(&mut conn)
        .await
        .expect("policy");
    let _: () = config("maxmemory", "1")
        .query_async(&mut conn)
        .await
        .expect("maxmemory");

    let http = weir_tests::http_client();
    let response = http
        .post(format!("{}/v1/jobs", api.base))
        .json(&json!({"task": "weir.noop"}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status().as_u16(), 503, "a full Redis is an outage");
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    let (ready, _) = api.get("/readyz").await;
    assert_eq!(ready, 503, "not ready while Redis refuses writes");

    let _: () = config("maxmemory", "0")
        .query_async(&mut conn)
        .await
        .expect("maxmemory");
    let (status, _) = api.post("/v1/jobs", &json!({"task": "weir.noop"})).await;
    assert_eq!(status, 201, "the same request succeeds once Redis has room");
    let (ready, _) = api.get("/readyz").await;
    assert_eq!(ready, 200, "ready again");
    let (_, q) = api.get("/v1/queues/default").await;
    assert_eq!(
        q["counts"]["queued"], 2,
        "the refused request stored nothing"
    );
}
