//! The dashboard's reads over a large backlog: 1,000,000 jobs enqueued in
//! bulk, then `GET /v1/jobs` pages (first, filtered, 100 pages deep by
//! cursor, a filter that matches nothing) and `GET /v1/queues` (what each
//! open dashboard page reads every 2 s), timed against `weir api` on
//! SQLite and on Redis.

use anyhow::{Result, bail};
use serde_json::Value;
use std::time::Instant;
use weir_tests::Sandbox;

const JOBS: u64 = 1_000_000;
const SAMPLES: usize = 20;

async fn time(http: &reqwest::Client, url: &str) -> Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let r = http.get(url).send().await?;
        if !r.status().is_success() {
            bail!("{url}: {}", r.status());
        }
        r.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[SAMPLES / 2], ms[SAMPLES * 95 / 100]))
}

async fn run(name: &str, redis: Option<&str>) -> Result<()> {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled").set("WEIR_LOG", "warn");
    let _cleanup = redis.map(|url| {
        let prefix = format!("weirbench{}", uuid::Uuid::now_v7().simple());
        sandbox
            .set("WEIR_BROKER_URL", url)
            .set("WEIR_REDIS_PREFIX", &prefix);
        weir_shared::broker::redis::PrefixCleanup {
            url: url.to_owned(),
            prefix,
        }
    });
    let started = Instant::now();
    let out = sandbox.cli(&[
        "enqueue",
        "weir.noop",
        "--queue",
        "pipeline",
        "--count",
        &JOBS.to_string(),
    ]);
    if !out.status.success() {
        bail!("enqueue: {}", String::from_utf8_lossy(&out.stderr));
    }
    let enqueue_s = started.elapsed().as_secs_f64();
    let api = sandbox.api().await;
    let http = weir_tests::http_client();
    let base = api.base.clone();
    // Follow the cursor 100 pages deep.
    let mut cursor = String::new();
    for _ in 0..100 {
        let page: Value = http
            .get(format!("{base}/v1/jobs?limit=50{cursor}"))
            .send()
            .await?
            .json()
            .await?;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => bail!("the listing ended early"),
        }
    }
    println!("### {name}: {JOBS} queued jobs (enqueued in {enqueue_s:.0} s)\n");
    println!("| request | p50 | p95 |");
    println!("|---|---|---|");
    for (label, path) in [
        (
            "first page, `GET /v1/jobs?limit=50`",
            "/v1/jobs?limit=50".to_owned(),
        ),
        (
            "filtered, `?queue=pipeline&state=queued&limit=50`",
            "/v1/jobs?queue=pipeline&state=queued&limit=50".to_owned(),
        ),
        (
            "100 pages deep by cursor",
            format!("/v1/jobs?limit=50{cursor}"),
        ),
        (
            "a filter that matches nothing (`?task=absent`, bounded scan)",
            "/v1/jobs?task=absent&limit=50".to_owned(),
        ),
        (
            "`GET /v1/queues` (a dashboard page's read)",
            "/v1/queues".to_owned(),
        ),
    ] {
        let (p50, p95) = time(&http, &format!("{base}{path}")).await?;
        println!("| {label} | {p50:.1} ms | {p95:.1} ms |");
    }
    println!();
    Ok(())
}

pub(crate) async fn report() -> Result<()> {
    println!("## Listing over a large backlog (`weir-bench list`)\n");
    run("SQLite", None).await?;
    run("Redis", Some(&super::redis_bench::url())).await
}
