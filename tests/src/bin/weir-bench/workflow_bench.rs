//! Workflows: how long a step waits after its parent finished (a chain of
//! 200 `weir.noop` steps, at rest: one workflow at a time), and how fast a
//! 10,000-step fan-out / fan-in runs (10 workflows of a root, 989 leaves and
//! 10 joins, submitted at once), on SQLite, Redis and Postgres, with `weir
//! api` and one worker node (`--processes 1 -c 256`).

use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_shared::job::Job;
use weir_tests::{Dev, Sandbox};

const CHAIN: usize = 200;
const FAN_WORKFLOWS: usize = 10;
const LEAVES: usize = 989;
const JOINS: usize = 10;

async fn wait_ended(api: &Dev, id: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, w) = api.get(&format!("/v1/workflows/{id}")).await;
        if w["state"].is_string() && w["state"] != "running" {
            return Ok(w);
        }
        if Instant::now() > deadline {
            bail!("workflow {id} did not end: {}", w["state"]);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Parent finished -> child started, in ms, for each link of a chain.
async fn hops(api: &Dev) -> Result<Vec<f64>> {
    let steps: Vec<Value> = (0..CHAIN)
        .map(|i| {
            if i == 0 {
                json!({"id": "s0", "task": "weir.noop"})
            } else {
                json!({"id": format!("s{i}"), "task": "weir.noop", "needs": [format!("s{}", i - 1)]})
            }
        })
        .collect();
    let (status, wf) = api
        .post("/v1/workflows", &json!({"name": "chain", "steps": steps}))
        .await;
    if status != 201 {
        bail!("submit: {status} {wf}");
    }
    let id = wf["id"].as_str().unwrap_or_default().to_owned();
    let done = wait_ended(api, &id, Duration::from_secs(120)).await?;
    let mut jobs = Vec::with_capacity(CHAIN);
    for s in done["steps"].as_array().cloned().unwrap_or_default() {
        let (_, job) = api
            .get(&format!(
                "/v1/jobs/{}",
                s["job_id"].as_str().unwrap_or_default()
            ))
            .await;
        jobs.push(serde_json::from_value::<Job>(job)?);
    }
    let mut out = Vec::with_capacity(CHAIN);
    for pair in jobs.windows(2) {
        if let (Some(f), Some(s)) = (pair[0].finished_at, pair[1].started_at) {
            out.push((s.0 - f.0) as f64);
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Steps per second of FAN_WORKFLOWS fan-out / fan-in workflows at once.
async fn fan(api: &Dev) -> Result<f64> {
    let mut steps = vec![json!({"id": "root", "task": "weir.noop"})];
    for i in 0..LEAVES {
        steps.push(json!({"id": format!("leaf-{i}"), "task": "weir.noop", "needs": ["root"]}));
    }
    let per = LEAVES.div_ceil(JOINS);
    for g in 0..JOINS {
        let needs: Vec<String> = (g * per..((g + 1) * per).min(LEAVES))
            .map(|i| format!("leaf-{i}"))
            .collect();
        steps.push(json!({"id": format!("join-{g}"), "task": "weir.noop", "needs": needs}));
    }
    let body = json!({"name": "fan", "steps": steps});
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..FAN_WORKFLOWS {
        let (status, wf) = api.post("/v1/workflows", &body).await;
        if status != 201 {
            bail!("submit: {status} {wf}");
        }
        ids.push(wf["id"].as_str().unwrap_or_default().to_owned());
    }
    for id in &ids {
        let done = wait_ended(api, id, Duration::from_secs(300)).await?;
        if done["state"] != "succeeded" {
            let failed: Vec<&Value> = done["steps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|s| s["state"] == "failed")
                        .take(3)
                        .collect()
                })
                .unwrap_or_default();
            bail!("workflow {id} ended {}: {failed:?}", done["state"]);
        }
    }
    let total = FAN_WORKFLOWS * (1 + LEAVES + JOINS);
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn run(name: &str, mut sandbox: Sandbox) -> Result<()> {
    sandbox.set("WEIR_AUTH", "disabled").set("WEIR_LOG", "warn");
    let api = sandbox.api().await;
    let worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "256"]);
    weir_tests::wait_workers(&api, 1).await;
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(hops(&api).await?);
    }
    all.sort_by(f64::total_cmp);
    let rate = match fan(&api).await {
        Ok(rate) => rate,
        Err(e) => {
            let log = worker.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{e}\nworker log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
    };
    println!(
        "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {rate:.0} steps/s |",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0.0)
    );
    Ok(())
}

pub(crate) async fn report() -> Result<()> {
    println!("## Workflows\n");
    println!(
        "Hop: a step's `started_at` minus its parent's `finished_at` (ms clock), {} links of \
         chains of {CHAIN} `weir.noop` steps run one workflow at a time. Fan: {FAN_WORKFLOWS} \
         workflows of a root, {LEAVES} leaves and {JOINS} joins ({} steps) submitted at once, \
         first submit to last end.\n",
        3 * (CHAIN - 1),
        FAN_WORKFLOWS * (1 + LEAVES + JOINS)
    );
    println!("| broker | hop p50 | hop p99 | hop max | fan-out / fan-in |");
    println!("|---|---|---|---|---|");
    // WEIR_BENCH_BROKERS=redis,postgres runs only those.
    let only = std::env::var("WEIR_BENCH_BROKERS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|b| b == name);
    if wanted("sqlite") {
        run("SQLite", Sandbox::new()).await?;
    }
    if !wanted("redis") {
    } else if let Some(url) = weir_shared::broker::conformance::service_url(
        "WEIR_TEST_REDIS_URL",
        "redis://127.0.0.1:6379/15",
    ) {
        let (sandbox, _cleanup) = weir_tests::redis_sandbox(&url);
        run("Redis", sandbox).await?;
    }
    if !wanted("postgres") {
    } else if let Some(url) = weir_tests::postgres_url() {
        let (sandbox, _cleanup) = weir_tests::postgres_sandbox(&url);
        run("Postgres", sandbox).await?;
    }
    Ok(())
}
