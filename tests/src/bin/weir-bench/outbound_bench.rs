//! The outbound part of the benchmark: `http.request` against the
//! OpenAI-compatible mock server of the test harness, in this process, on
//! 127.0.0.1. Throughput of one worker node (`--processes 1 -c 512`) at
//! 50 ms of server latency against the latency bound (512 / 50 ms = 10,240
//! calls/s), as webhooks and as provider calls through a key pool (4 keys,
//! no rpm: the pool's reads and counters are the cost), on SQLite and on
//! Redis; and the cost per call against a bare reqwest loop at the same
//! concurrency with no server latency.

use super::redis_bench;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_shared::job::Millis;
use weir_tests::mock_openai::MockOpenAi;
use weir_tests::{Sandbox, wait_until};

const CALLS: u64 = 20_000;
const SLOTS: u32 = 512;
const KEYS: &str =
    "sk-bench-key-000001,sk-bench-key-000002,sk-bench-key-000003,sk-bench-key-000004";

fn payload(mock: &MockOpenAi, provider: bool) -> Value {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]});
    if provider {
        json!({"provider": "mock", "path": "/v1/chat/completions", "body": body})
    } else {
        json!({"url": format!("{}/v1/chat/completions", mock.url), "body": body})
    }
}

/// Drains `CALLS` `http.request` jobs with one node; calls per second from
/// the jobs' own start and finish times.
async fn drain(mock: &MockOpenAi, provider: bool, redis: Option<&str>) -> Result<f64> {
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .set("MOCK_KEYS", KEYS)
        .set("WEIR_LOG", "warn")
        .config(&format!(
            "[providers.mock]\nbase_url = \"{}\"\nkeys_env = \"MOCK_KEYS\"\n",
            mock.url
        ));
    let _cleanup = match redis {
        Some(url) => {
            let prefix = format!("weirbench{}", uuid::Uuid::now_v7().simple());
            sandbox
                .set("WEIR_BROKER_URL", url)
                .set("WEIR_REDIS_PREFIX", &prefix);
            Some(weir_shared::broker::redis::PrefixCleanup {
                url: url.to_owned(),
                prefix,
            })
        }
        None => None,
    };
    let out = sandbox.cli(&[
        "enqueue",
        "http.request",
        "--count",
        &CALLS.to_string(),
        "--payload",
        &payload(mock, provider).to_string(),
    ]);
    if !out.status.success() {
        bail!("enqueue failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _node = sandbox.spawn(
        "worker",
        &["worker", "--processes", "1", "-c", &SLOTS.to_string()],
    );
    let counts = || async {
        let out = sandbox.cli(&["queues", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let done = wait_until(Duration::from_secs(300), || async {
        let q = counts().await;
        q["data"]
            .as_array()
            .and_then(|d| d.iter().find(|q| q["name"] == "default"))
            .is_some_and(|d| d["counts"]["succeeded"].as_u64() == Some(CALLS))
    })
    .await;
    if !done {
        bail!("the drain did not finish: {}", counts().await);
    }
    let jobs = sandbox.all_jobs();
    let time = |j: &Value, field: &str| serde_json::from_value::<Millis>(j[field].clone()).ok();
    let first = jobs.iter().filter_map(|j| time(j, "started_at")).min();
    let last = jobs.iter().filter_map(|j| time(j, "finished_at")).max();
    let (Some(first), Some(last)) = (first, last) else {
        bail!("no timestamps");
    };
    Ok(CALLS as f64 / ((last.0 - first.0) as f64 / 1000.0))
}

/// `CALLS` calls from `concurrency` reqwest tasks in this process.
async fn bare(mock: &MockOpenAi, concurrency: u64) -> Result<f64> {
    let http = weir_tests::http_client();
    let url = Arc::new(format!("{}/v1/chat/completions", mock.url));
    let body = Arc::new(payload(mock, false)["body"].to_string());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, body) = (http.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..CALLS / concurrency {
                let r = http
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await?;
                r.bytes().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((CALLS / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn report() -> Result<()> {
    let mock = MockOpenAi::start().await;
    let redis = redis_bench::url();
    println!("## Outbound: `http.request` against a local OpenAI-compatible mock\n");
    println!(
        "{} calls, one worker node `--processes 1 -c {SLOTS}`, the mock in the benchmark's process.\n",
        CALLS
    );
    mock.set_latency(Duration::from_millis(50));
    let bound = f64::from(SLOTS) / 0.050;
    println!("| at 50 ms server latency | calls/s | of the bound ({bound:.0}/s) |");
    println!("|---|---|---|");
    let bare50 = bare(&mock, u64::from(SLOTS)).await?;
    println!(
        "| bare reqwest, {SLOTS} tasks | {bare50:.0} | {:.0}% |",
        bare50 / bound * 100.0
    );
    for (name, provider, broker) in [
        ("webhook form, SQLite", false, None),
        ("provider form (4 pooled keys), SQLite", true, None),
        ("webhook form, Redis", false, Some(redis.as_str())),
        (
            "provider form (4 pooled keys), Redis",
            true,
            Some(redis.as_str()),
        ),
    ] {
        let rate = drain(&mock, provider, broker).await?;
        println!("| {name} | {rate:.0} | {:.0}% |", rate / bound * 100.0);
    }
    println!();
    mock.set_latency(Duration::ZERO);
    println!("| no server latency | calls/s | wall time per call on this machine |");
    println!("|---|---|---|");
    let bare0 = bare(&mock, u64::from(SLOTS)).await?;
    println!(
        "| bare reqwest, {SLOTS} tasks | {bare0:.0} | {:.0} µs |",
        1e6 / bare0
    );
    for (name, provider, broker) in [
        ("webhook form, SQLite", false, None),
        ("provider form, SQLite", true, None),
        ("webhook form, Redis", false, Some(redis.as_str())),
        ("provider form, Redis", true, Some(redis.as_str())),
    ] {
        let rate = drain(&mock, provider, broker).await?;
        println!(
            "| {name} | {rate:.0} | {:.0} µs (+{:.0} µs) |",
            1e6 / rate,
            1e6 / rate - 1e6 / bare0
        );
    }
    println!();
    Ok(())
}
