//! The `document.index` part of the benchmark. Indexing: 1,000 documents
//! of about 2 KB through `weir api` and one worker node (`--processes 1 -c
//! 64`, so the batcher merges every job's inputs) against the mock
//! OpenAI-compatible server at 20 ms per call: documents per second, the
//! embedding calls made and inputs per call, then the same documents again
//! (all from the cache). Search: 100,000 segments of 384 dimensions written
//! straight into the embedded SQLite store, then `POST
//! /v1/datasets/NAME/search` latency through `weir api` (the query
//! embedded with `local`, the dataset's matrix held in memory).

use super::percentile;
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use weir_shared::embed::{LOCAL_MODEL, embed_local};
use weir_shared::vector::{self, Generation, ReplaceDocument, Segment};
use weir_tests::mock_openai::MockOpenAi;
use weir_tests::{Sandbox, http_client, wait_until};

const DOCUMENTS: usize = 1_000;
const SEARCH_SEGMENTS: usize = 100_000;
const SEARCHES: usize = 300;
/// Rounds of one write then one search.
const WRITE_ROUNDS: usize = 10;
const WORDS: [&str; 24] = [
    "queue",
    "worker",
    "lease",
    "retry",
    "backoff",
    "tenant",
    "dataset",
    "segment",
    "vector",
    "embedding",
    "provider",
    "schedule",
    "cron",
    "workflow",
    "step",
    "parent",
    "priority",
    "broker",
    "redis",
    "postgres",
    "sqlite",
    "metric",
    "alert",
    "dashboard",
];

/// About 2 KB of text: lines of words picked by a simple generator.
fn document(seed: usize, bytes: usize) -> String {
    let mut x = seed as u64 * 2_654_435_761 + 1;
    let mut out = String::new();
    let mut line = 0;
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = WORDS[(x % WORDS.len() as u64) as usize];
        out.push_str(word);
        out.push_str(&format!("{} ", x % 997));
        line += 1;
        if line % 12 == 0 {
            out.push('\n');
        }
    }
    out
}

async fn index_run(sandbox: &Sandbox, api: &str, offset: u64) -> Result<(Duration, Vec<Value>)> {
    let http = http_client();
    let jobs: Vec<Value> = (0..DOCUMENTS)
        .map(|i| {
            json!({"task": "document.index", "payload": {
                "dataset": "bench", "document_id": format!("doc-{i}"), "text": document(i, 2048)
            }})
        })
        .collect();
    let started = Instant::now();
    for chunk in jobs.chunks(100) {
        let answer = http
            .post(format!("{api}/v1/jobs/batch"))
            .json(&json!({"jobs": chunk}))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("batch enqueue: {}", answer.text().await?);
        }
    }
    let target = offset + DOCUMENTS as u64;
    let done = wait_until(Duration::from_secs(600), || async {
        super::succeeded(sandbox) >= target
    })
    .await;
    if !done {
        bail!("indexing did not finish");
    }
    let elapsed = started.elapsed();
    let listed: Value = http
        .get(format!("{api}/v1/jobs?task=document.index&limit=100"))
        .send()
        .await?
        .json()
        .await?;
    let results = listed["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| j["result"].clone())
        .collect();
    Ok((elapsed, results))
}

/// Document `d` of the search dataset (1,000 segments) at version `at_ms`.
fn one_document(d: usize, at_ms: i64) -> ReplaceDocument {
    let per_doc = 1_000;
    let segments = (0..per_doc)
        .map(|s| {
            let text = document(d * per_doc + s, 200);
            Segment {
                seq: s as u32,
                tokens: 50,
                sha256: format!("{d}-{s}"),
                vector: embed_local(&text),
                text,
            }
        })
        .collect();
    ReplaceDocument {
        tenant: "default".into(),
        dataset: "big".into(),
        document_id: format!("doc-{d}"),
        generation: Generation {
            at_ms,
            id: "bench".into(),
        },
        model: LOCAL_MODEL.into(),
        segments,
    }
}

/// Writes `SEARCH_SEGMENTS` segments (1,000 per document) into a SQLite
/// store at `url`.
async fn fill(url: &str) -> Result<()> {
    let store = vector::open(url, 1 << 30).await?;
    for d in 0..SEARCH_SEGMENTS / 1_000 {
        store.replace_document(&one_document(d, 1)).await?;
    }
    Ok(())
}

/// One search of the `big` dataset for its top 5, timed.
async fn search_top5(http: &reqwest::Client, api: &str, query: &str) -> Result<Duration> {
    let started = Instant::now();
    let answer = http
        .post(format!("{api}/v1/datasets/big/search"))
        .json(&json!({"query": query, "top_k": 5}))
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!("search: {}", answer.text().await?);
    }
    let hits: Value = answer.json().await?;
    if hits["data"].as_array().map_or(0, Vec::len) != 5 {
        bail!("search gave {hits}");
    }
    Ok(started.elapsed())
}

/// Prints the report.
pub async fn report() -> Result<()> {
    println!("## document.index ({})", super::machine());
    let mock = MockOpenAi::start().await;
    mock.set_latency(Duration::from_millis(20));
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_LOG", "warn")
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .set("MOCK_KEYS", "sk-bench-embed-0001,sk-bench-embed-0002")
        .config(&format!(
            "[providers.mock]\nbase_url = \"{}\"\nkeys_env = \"MOCK_KEYS\"\nembedding_model = \"mock-embed\"\n\n[datasets]\nembedding = \"mock\"\n",
            mock.url
        ));
    let api = sandbox.api().await;
    let _node = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "256"]);
    let (first, results) = index_run(&sandbox, &api.base, 0).await?;
    let (calls, inputs) = mock.embedding_calls();
    let segments: u64 = results.iter().filter_map(|r| r["segments"].as_u64()).sum();
    let (second, cached) = index_run(&sandbox, &api.base, DOCUMENTS as u64).await?;
    let (calls_after, _) = mock.embedding_calls();
    let all_cached = cached
        .iter()
        .all(|r| r["embedded"] == 0 && r["cached"] == r["segments"]);
    println!(
        "\n{DOCUMENTS} documents of ~2 KB, mock embeddings at 20 ms per call, `weir api` + one worker `--processes 1 -c 256`:\n"
    );
    println!("| run | wall | documents/s | embedding calls | inputs | inputs per call |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| first | {:.2} s | {:.0} | {calls} | {inputs} | {:.1} |",
        first.as_secs_f64(),
        DOCUMENTS as f64 / first.as_secs_f64(),
        inputs as f64 / calls.max(1) as f64
    );
    println!(
        "| again, unchanged | {:.2} s | {:.0} | {} | 0 | - |",
        second.as_secs_f64(),
        DOCUMENTS as f64 / second.as_secs_f64(),
        calls_after - calls
    );
    println!(
        "\n(the last 100 jobs' results: {segments} segments; second run all from the cache: {all_cached}; bar: calls <= inputs / 64 = {})",
        inputs / 64
    );
    drop(api);

    let dir = tempfile::tempdir()?;
    let store = format!("sqlite://{}/vectors.db", dir.path().display());
    let filling = Instant::now();
    fill(&store).await?;
    let filled = filling.elapsed();
    let mut search_box = Sandbox::new();
    search_box
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_LOG", "warn")
        .config(&format!("[datasets]\nvector_store = \"{store}\"\n"));
    let api = search_box.api().await;
    let http = http_client();
    let mut times = Vec::new();
    let mut load = Duration::ZERO;
    for i in 0..=SEARCHES {
        let took = search_top5(&http, &api.base, &document(1_000_000 + i, 60)).await?;
        if i == 0 {
            load = took;
        } else {
            times.push(took.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "\nSearch, {SEARCH_SEGMENTS} segments x 384 dims in the embedded SQLite store (written in {:.1} s), {SEARCHES} queries over HTTP, top 5:\n",
        filled.as_secs_f64()
    );
    println!("| first (loads the matrix) | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| {:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        load.as_secs_f64() * 1000.0,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(f64::NAN)
    );
    println!("\n(bar: p99 <= 50 ms)");

    // A search right after a write: one document of 1,000 segments
    // replaced (a newer version) through another connection, then one
    // query; the API brings its matrix up to date.
    let writer = vector::open(&store, 1 << 30).await?;
    let mut after_write = Vec::new();
    for round in 0..WRITE_ROUNDS {
        writer
            .replace_document(&one_document(round, round as i64 + 2))
            .await?;
        let took = search_top5(&http, &api.base, &document(2_000_000 + round, 60)).await?;
        after_write.push(took.as_secs_f64() * 1000.0);
    }
    after_write.sort_by(f64::total_cmp);
    println!(
        "\nA search right after one document (1,000 segments) of the dataset is written again, {WRITE_ROUNDS} rounds: p50 {:.1} ms, max {:.1} ms",
        percentile(&after_write, 0.5),
        after_write.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
