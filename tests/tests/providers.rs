//! Provider key pools end to end: the real binary against the
//! OpenAI-compatible mock of `weir_tests::mock_openai`. A key that answers
//! 429 cools for every node and costs no attempt; a revoked key is set
//! aside; when every key cools, jobs wait (snoozed, slot freed) and
//! recover; `rpm` holds across two worker nodes; and no key ever shows in
//! a log, a job or an answer.

use serde_json::{Value, json};
use std::time::Duration;
use weir_tests::mock_openai::{MockOpenAi, Mode};
use weir_tests::{Dev, Sandbox, all_succeed, wait_until, wait_workers};

const GOOD_1: &str = "sk-mock-good-key-0001";
const GOOD_2: &str = "sk-mock-good-key-0002";
const HOT: &str = "sk-mock-hot-key-0003";
const REVOKED: &str = "sk-mock-revoked-key-0004";

fn sandbox(mock: &MockOpenAi, keys: &str, extra: &str) -> Sandbox {
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .set("MOCK_KEYS", keys)
        .set("REVOKED_KEYS", REVOKED)
        .config(&format!(
            r#"
[providers.mock]
base_url = "{url}"
keys_env = "MOCK_KEYS"
cooldown = "30s"
{extra}

[providers.revoked]
base_url = "{url}"
keys_env = "REVOKED_KEYS"
"#,
            url = mock.url
        ));
    sandbox
}

fn chat(provider: &str, text: &str) -> Value {
    json!({
        "task": "http.request",
        "max_retries": 0,
        "payload": {
            "provider": provider,
            "path": "/v1/chat/completions",
            "body": {"model": "gpt-mock", "messages": [{"role": "user", "content": text}]}
        }
    })
}

async fn enqueue(api: &Dev, n: usize, provider: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (status, job) = api
            .post("/v1/jobs", &chat(provider, &format!("hi {i}")))
            .await;
        assert_eq!(status, 201, "{job}");
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    ids
}

fn assert_no_key(what: &str, text: &str) {
    for key in [GOOD_1, GOOD_2, HOT, REVOKED] {
        assert!(!text.contains(key), "{what} shows the key {key}: {text}");
    }
}

#[tokio::test]
async fn a_throttled_key_cools_for_everyone_and_costs_no_attempt() {
    let mock = MockOpenAi::start().await;
    mock.set_mode(HOT, Mode::Throttle(Some(30)));
    mock.set_mode(REVOKED, Mode::Unauthorized);
    let sandbox = sandbox(&mock, &format!("{GOOD_1}, {GOOD_2},{HOT}"), "");
    let api = sandbox.dev().await;

    let ids = enqueue(&api, 30, "mock").await;
    assert!(all_succeed(&api, &ids).await, "{}", api.proc.log());
    for (i, id) in ids.iter().enumerate() {
        let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
        assert_eq!(
            job["result"]["body"]["choices"][0]["message"]["content"],
            format!("echo: hi {i}"),
            "{job}"
        );
        assert_eq!(job["result"]["status"], 200);
        assert_no_key("a job", &job.to_string());
    }
    let hot = mock.count(HOT, Some(429));
    assert!(
        (1..=4).contains(&hot),
        "the hot key is tried, then skipped by every slot while it cools: {hot} tries"
    );
    assert_eq!(
        mock.count(GOOD_1, Some(200)) + mock.count(GOOD_2, Some(200)),
        30,
        "the good keys served every call"
    );

    // Each process writes its counters once a second.
    let counted = wait_until(Duration::from_secs(5), || async {
        let (_, view) = api.get("/v1/providers").await;
        let requests: i64 = view["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["provider"] == "mock")
            .flat_map(|p| p["keys"].as_array().cloned().unwrap_or_default())
            .filter_map(|k| k["requests"].as_i64())
            .sum();
        requests >= 31
    })
    .await;
    let (status, providers) = api.get("/v1/providers").await;
    assert_eq!(status, 200, "{providers}");
    assert!(counted, "every call is counted: {providers}");
    let mock_view = providers["data"]
        .as_array()
        .and_then(|d| d.iter().find(|p| p["provider"] == "mock"))
        .expect("the mock provider is listed")
        .clone();
    let keys = mock_view["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3, "{mock_view}");
    let hot_view = keys
        .iter()
        .find(|k| k["key"] == "...0003")
        .expect("the hot key, masked to its last 4 characters");
    assert_eq!(hot_view["state"], "cooling", "{hot_view}");
    assert!(hot_view["throttled"].as_i64() >= Some(1), "{hot_view}");
    assert!(
        keys.iter()
            .filter(|k| k["state"] == "ok")
            .all(|k| k["tokens_last_minute"].as_i64() > Some(0)),
        "tokens come from the answers' usage: {mock_view}"
    );

    // A pool whose only key is refused fails the job at once, and the
    // body that quoted the key is masked.
    let (_, job) = api.post("/v1/jobs", &chat("revoked", "hello")).await;
    let id = job["id"].as_str().expect("id").to_owned();
    let failed = api.wait_state(&id, "failed", Duration::from_secs(20)).await;
    let error = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("every key of `revoked` was refused") && error.contains("...0004"),
        "{failed}"
    );
    assert_no_key("a failed job", &failed.to_string());

    let cli = sandbox.cli_json(&["providers", "--json"]);
    assert_eq!(
        cli["data"].as_array().map(Vec::len),
        providers["data"].as_array().map(Vec::len),
        "the CLI lists what the API lists: {cli}"
    );
    let table = sandbox.cli(&["providers"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("...0003") && table.contains("cooling"),
        "{table}"
    );
    let (_, metrics) = api.get("/metrics").await;
    let metrics = metrics
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| metrics.to_string());
    for text in [
        cli.to_string(),
        table,
        providers.to_string(),
        api.proc.log(),
        metrics,
    ] {
        assert_no_key("an answer or log", &text);
    }
}

#[tokio::test]
async fn when_every_key_cools_jobs_snooze_and_recover() {
    let mock = MockOpenAi::start().await;
    mock.set_mode(GOOD_1, Mode::Throttle(Some(8)));
    mock.set_mode(GOOD_2, Mode::Throttle(None));
    let sandbox = sandbox(&mock, &format!("{GOOD_1},{GOOD_2}"), "");
    let api = sandbox.dev().await;
    let ids = enqueue(&api, 3, "mock").await;
    let snoozed = wait_until(Duration::from_secs(20), || async {
        let (_, job) = api.get(&format!("/v1/jobs/{}", ids[0])).await;
        job["state"] == "retrying"
            && job["error"]
                .as_str()
                .is_some_and(|e| e.contains("waiting for a key of `mock`: 2 cooling"))
    })
    .await;
    assert!(
        snoozed,
        "{}",
        api.get(&format!("/v1/jobs/{}", ids[0])).await.1
    );
    let (_, workers) = api.get("/v1/workers").await;
    assert_eq!(
        workers["data"][0]["slots"]["busy"], 0,
        "a snoozed job holds no slot: {workers}"
    );
    mock.set_mode(GOOD_1, Mode::Ok);
    mock.set_mode(GOOD_2, Mode::Ok);
    assert!(all_succeed(&api, &ids).await, "{}", api.proc.log());
    for id in &ids {
        let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
        let outcomes: Vec<&str> = job["history"]
            .as_array()
            .map(|h| h.iter().filter_map(|a| a["outcome"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            outcomes.contains(&"snoozed"),
            "a job allowed no retry waited without spending one: {job}"
        );
    }
}

/// `rpm = 120` per key (a GCRA: 12 at once, then one every 500 ms): two
/// worker nodes on one broker share each key's budget, so the requests
/// the mock sees with one key never run ahead of it.
#[tokio::test]
async fn rpm_holds_across_two_worker_nodes() {
    let mock = MockOpenAi::start().await;
    let sandbox = sandbox(&mock, &format!("{GOOD_1},{GOOD_2}"), "rpm = 120");
    let api = sandbox.dev().await;
    let _second = sandbox.spawn("worker2", &["worker"]);
    wait_workers(&api, 2).await;
    let ids = enqueue(&api, 60, "mock").await;
    assert!(all_succeed(&api, &ids).await, "{}", api.proc.log());
    let mut nodes = std::collections::BTreeSet::new();
    for id in &ids {
        let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
        // `node/pid`: the node and the child process that ran it.
        if let Some(w) = job["history"][0]["worker"].as_str() {
            nodes.insert(w.split('/').next().unwrap_or(w).to_owned());
        }
    }
    assert_eq!(nodes.len(), 2, "both nodes made calls: {nodes:?}");
    for key in [GOOD_1, GOOD_2] {
        let hits: Vec<_> = mock.hits().into_iter().filter(|h| h.key == key).collect();
        let first = hits.first().expect("the key was used").at;
        for (i, h) in hits.iter().enumerate() {
            let allowed = 12.0 + 2.0 * h.at.duration_since(first).as_secs_f64() + 1.0;
            assert!(
                (i + 1) as f64 <= allowed,
                "key {}: {} requests by {:?}, over the rpm",
                &key[key.len() - 4..],
                i + 1,
                h.at.duration_since(first)
            );
        }
    }
}
