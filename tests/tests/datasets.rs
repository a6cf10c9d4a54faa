//! `document.index` and the dataset routes end to end with the real
//! binary: the local embedder through `weir dev` with nothing else
//! installed (text, Markdown, HTML and PDF), an OpenAI-compatible provider
//! (the mock, with latency and injected 429s) whose calls are batched
//! across concurrent jobs and skipped for cached segments, tenants that
//! cannot see each other's datasets, and bad input that fails with its
//! reason while the previous version stays searchable.

use serde_json::{Value, json};
use std::time::Duration;
use weir_tests::mock_openai::MockOpenAi;
use weir_tests::{Dev, Sandbox, all_succeed, http_client, serve_files};

const WAIT: Duration = Duration::from_secs(60);

/// A document of `lines` lines about `topic`, each line its own words.
fn document(topic: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{topic} note {i}: the {topic} handbook explains step {i} in detail."))
        .collect::<Vec<_>>()
        .join("\n")
}

fn index_job(dataset: &str, id: &str, text: &str) -> Value {
    json!({
        "task": "document.index",
        "payload": {
            "dataset": dataset,
            "document_id": id,
            "text": text,
            "splitter": {"max_tokens": 40, "overlap": 0}
        }
    })
}

async fn enqueue(api: &Dev, jobs: &[Value]) -> Vec<String> {
    let mut ids = Vec::new();
    for job in jobs {
        let (status, answer) = api.post("/v1/jobs", job).await;
        assert_eq!(status, 201, "{answer}");
        ids.push(answer["id"].as_str().expect("id").to_owned());
    }
    ids
}

async fn results(api: &Dev, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        let (_, job) = api.get(&format!("/v1/jobs/{id}")).await;
        out.push(job["result"].clone());
    }
    out
}

async fn search(api: &Dev, dataset: &str, query: &str) -> (u16, Value) {
    api.post(
        &format!("/v1/datasets/{dataset}/search"),
        &json!({"query": query, "top_k": 3}),
    )
    .await
}

#[tokio::test]
async fn a_provider_batches_across_jobs_survives_429s_and_embeds_nothing_twice() {
    let mock = MockOpenAi::start().await;
    mock.set_latency(Duration::from_millis(20));
    mock.throttle_next(3);
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .set("WEIR_CONCURRENCY", "20")
        .set("MOCK_KEYS", "sk-mock-embed-key-0001")
        .config(&format!(
            r#"
[providers.mock]
base_url = "{}"
keys_env = "MOCK_KEYS"
embedding_model = "mock-embed"
max_batch = 64

[datasets]
embedding = "mock"
"#,
            mock.url
        ));
    let api = sandbox.dev().await;
    let topics = [
        "astronomy",
        "baking",
        "chess",
        "diving",
        "espresso",
        "falconry",
        "gardening",
        "hiking",
        "ikebana",
        "juggling",
        "kayaking",
        "linguistics",
        "mycology",
        "origami",
        "pottery",
        "quilting",
        "rowing",
        "sailing",
        "tango",
        "welding",
    ];
    let jobs: Vec<Value> = topics
        .iter()
        .map(|t| index_job("kb", t, &document(t, 12)))
        .collect();
    let ids = enqueue(&api, &jobs).await;
    assert!(all_succeed(&api, &ids).await, "{}", api.proc.log());
    let first = results(&api, &ids).await;
    let segments: u64 = first
        .iter()
        .map(|r| r["segments"].as_u64().unwrap_or(0))
        .sum();
    let embedded: u64 = first
        .iter()
        .map(|r| r["embedded"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        segments >= 40,
        "every document is cut in several segments: {first:?}"
    );
    assert_eq!(
        embedded, segments,
        "the first run embeds every segment: {first:?}"
    );
    assert!(first.iter().all(|r| r["cached"] == 0), "{first:?}");
    let throttled = mock.hits().iter().filter(|h| h.status == 429).count();
    assert_eq!(throttled, 3, "the injected 429s were met and moved past");
    let (calls, inputs) = mock.embedding_calls();
    assert_eq!(inputs as u64, segments, "one input per segment, none twice");
    assert!(
        calls < topics.len(),
        "20 concurrent jobs share calls: {calls} calls for {inputs} inputs"
    );
    assert!(inputs > calls, "more than one input per call on average");

    let (status, hits) = search(&api, "kb", "falconry handbook").await;
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits["data"][0]["document_id"], "falconry", "{hits}");
    let (_, docs) = api.get("/v1/datasets/kb/documents").await;
    assert_eq!(docs["data"].as_array().map(Vec::len), Some(20), "{docs}");
    // The query was embedded by the provider too: one call, one input.
    assert_eq!(mock.embedding_calls(), (calls + 1, inputs + 1));
    let (calls, inputs) = mock.embedding_calls();

    // The same documents again: every segment comes from the cache.
    let again = enqueue(&api, &jobs).await;
    assert!(all_succeed(&api, &again).await, "{}", api.proc.log());
    let second = results(&api, &again).await;
    assert!(
        second
            .iter()
            .all(|r| r["embedded"] == 0 && r["cached"] == r["segments"]),
        "{second:?}"
    );
    assert_eq!(
        mock.embedding_calls(),
        (calls, inputs),
        "re-indexing unchanged documents makes no embedding call"
    );
    let (_, docs) = api.get("/v1/datasets/kb/documents").await;
    let falconry = docs["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["document_id"] == "falconry")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        falconry["job_id"], again[5],
        "the newer job's version stands"
    );
}

#[tokio::test]
async fn weir_dev_indexes_every_format_with_the_local_embedder_and_deletes() {
    let files = serve_files(vec![
        (
            "/guide.md",
            "text/markdown",
            b"# Leases\n\nA worker holds a **lease** on each job it runs.\n\n- renewed every second\n- fenced by a token\n".to_vec(),
        ),
        (
            "/page",
            "text/html; charset=utf-8",
            b"<html><head><script>var tracking = 1;</script></head><body><h1>Dead letters</h1><p>Jobs that failed for good wait in the dead letter list.</p></body></html>".to_vec(),
        ),
        (
            "/manual.pdf",
            "application/octet-stream",
            weir_shared::index::minimal_pdf("Cron schedules fire once however many schedulers run"),
        ),
    ])
    .await;
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1");
    let api = sandbox.dev().await;
    let jobs = vec![
        json!({"task": "document.index", "payload": {"dataset": "docs", "document_id": "retries", "text": "Failed jobs are retried with exponential backoff and jitter."}}),
        json!({"task": "document.index", "payload": {"dataset": "docs", "document_id": "leases", "url": format!("{files}/guide.md")}}),
        json!({"task": "document.index", "payload": {"dataset": "docs", "document_id": "dead", "url": format!("{files}/page"), "format": "html"}}),
        json!({"task": "document.index", "payload": {"dataset": "docs", "document_id": "cron", "url": format!("{files}/manual.pdf")}}),
    ];
    let ids = enqueue(&api, &jobs).await;
    assert!(all_succeed(&api, &ids).await, "{}", api.proc.log());
    let (_, job) = api.get(&format!("/v1/jobs/{}", ids[0])).await;
    assert_eq!(job["progress"]["stage"], "writing", "{job}");
    assert_eq!(job["result"]["segments"], 1, "{job}");

    for (query, expected) in [
        ("how are failed jobs retried with backoff", "retries"),
        ("lease renewed fenced token", "leases"),
        ("dead letter list", "dead"),
        ("cron schedules fire once", "cron"),
    ] {
        let (status, hits) = search(&api, "docs", query).await;
        assert_eq!(status, 200, "{hits}");
        assert_eq!(hits["data"][0]["document_id"], expected, "{query}: {hits}");
    }
    let (_, hits) = search(&api, "docs", "tracking").await;
    assert!(
        hits["data"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|h| !h["text"].as_str().unwrap_or("").contains("tracking")),
        "a script's text is not indexed: {hits}"
    );

    let listed = sandbox.cli_json(&["datasets", "list", "--json"]);
    assert_eq!(listed[0]["name"], "docs", "{listed}");
    assert_eq!(listed[0]["documents"], 4, "{listed}");
    assert_eq!(listed[0]["model"], "local/hash-v1/384", "{listed}");
    let found = sandbox.cli_json(&[
        "datasets",
        "search",
        "docs",
        "exponential backoff",
        "--top-k",
        "1",
        "--json",
    ]);
    assert_eq!(found[0]["document_id"], "retries", "{found}");
    let table = sandbox.cli(&["datasets", "search", "docs", "dead letter"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("SCORE"));

    let out = sandbox.cli(&["datasets", "delete", "docs", "retries"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = sandbox.cli(&["datasets", "delete", "docs", "retries"]);
    assert_eq!(again.status.code(), Some(1), "a second delete is refused");
    let (status, gone) = api
        .post(
            "/v1/datasets/docs/search",
            &json!({"query": "exponential backoff"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        gone["data"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|h| h["document_id"] != "retries"),
        "{gone}"
    );
    let deleted = http_client()
        .delete(format!("{}/v1/datasets/docs/documents/leases", api.base))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 200);
    let (_, docs) = api.get("/v1/datasets/docs/documents").await;
    let left: Vec<&str> = docs["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["document_id"].as_str())
        .collect();
    assert_eq!(left, vec!["cron", "dead"]);

    let (status, _) = api.get("/v1/datasets/nope/documents").await;
    assert_eq!(status, 404);
    let (status, body) = search(&api, "nope", "anything").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api
        .post("/v1/datasets/docs/search", &json!({"query": " "}))
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = api
        .post(
            "/v1/datasets/docs/search",
            &json!({"query": "x", "top_k": 0}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = api
        .post("/v1/datasets/docs/search", &json!({"q": "x"}))
        .await;
    assert_eq!(status, 400, "{body}");
    let bad = sandbox.cli(&["datasets", "search", "docs", "x", "--top-k", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test]
async fn bad_input_fails_with_its_reason_and_the_previous_version_stays() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled").config(
        r#"
[datasets]
names = ["kb"]
"#,
    );
    let api = sandbox.dev().await;
    let good = enqueue(
        &api,
        &[json!({"task": "document.index", "payload": {"dataset": "kb", "document_id": "d1", "text": "Weir keeps every acknowledged job."}})],
    )
    .await;
    assert!(all_succeed(&api, &good).await, "{}", api.proc.log());

    let cases = [
        (
            json!({"dataset": "other", "document_id": "d1", "text": "x"}),
            "unknown dataset `other`",
        ),
        (
            json!({"dataset": "kb", "document_id": "d1", "text": "  \n\n  "}),
            "no text to index",
        ),
        (
            json!({"dataset": "kb", "document_id": "d1", "text": "%PDF-1.4 not really", "format": "pdf"}),
            "unreadable PDF",
        ),
        (
            json!({"dataset": "kb", "document_id": "d1", "url": "http://169.254.169.254/latest/meta-data"}),
            "169.254.169.254",
        ),
        (
            json!({"dataset": "kb", "document_id": "d1"}),
            "exactly one of `text` or `url`",
        ),
        (
            json!({"dataset": "kb", "document_id": "d1", "text": "x", "format": "docx"}),
            "`format` `docx`",
        ),
    ];
    for (payload, reason) in cases {
        let ids = enqueue(
            &api,
            &[json!({"task": "document.index", "payload": payload})],
        )
        .await;
        let job = api.wait_state(&ids[0], "failed", WAIT).await;
        let error = job["error"].as_str().unwrap_or("");
        assert!(
            error.contains(reason),
            "{payload}: wanted `{reason}` in `{error}`"
        );
        assert_eq!(job["attempts"], 1, "bad input is not retried: {job}");
    }
    let (status, hits) = search(&api, "kb", "acknowledged job").await;
    assert_eq!(status, 200);
    assert_eq!(hits["data"][0]["document_id"], "d1", "{hits}");
    assert_eq!(
        hits["data"][0]["text"],
        "Weir keeps every acknowledged job."
    );
}

#[tokio::test]
async fn another_tenant_cannot_see_or_search_a_dataset() {
    const ACME: &str = "acme-key-0123456789abcdef";
    const GLOBEX: &str = "globex-key-0123456789abcdef";
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_API_KEYS", &format!("acme:{ACME},globex:{GLOBEX}"));
    let api = sandbox.dev().await;
    let http = http_client();
    let as_tenant = |key: &'static str, method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", api.base))
            .bearer_auth(key)
    };
    let created: Value = as_tenant(ACME, reqwest::Method::POST, "/v1/jobs")
        .json(&json!({"task": "document.index", "payload": {"dataset": "secret", "document_id": "plan", "text": "The launch is on Tuesday."}}))
        .send()
        .await
        .expect("enqueue")
        .json()
        .await
        .expect("job");
    let id = created["id"].as_str().expect("id").to_owned();
    let done = weir_tests::wait_until(WAIT, || async {
        let job: Value = as_tenant(ACME, reqwest::Method::GET, &format!("/v1/jobs/{id}"))
            .send()
            .await
            .expect("job")
            .json()
            .await
            .unwrap_or_default();
        job["state"] == "succeeded"
    })
    .await;
    assert!(done, "{}", api.proc.log());

    let status = |r: reqwest::Response| r.status().as_u16();
    let search = json!({"query": "launch"});
    let mine = as_tenant(ACME, reqwest::Method::POST, "/v1/datasets/secret/search")
        .json(&search)
        .send()
        .await
        .expect("search");
    assert_eq!(mine.status().as_u16(), 200);
    let theirs: Value = as_tenant(GLOBEX, reqwest::Method::GET, "/v1/datasets")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["data"], json!([]), "{theirs}");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/datasets/secret/documents"),
        (reqwest::Method::POST, "/v1/datasets/secret/search"),
        (
            reqwest::Method::DELETE,
            "/v1/datasets/secret/documents/plan",
        ),
    ] {
        let answer = as_tenant(GLOBEX, method.clone(), path)
            .json(&search)
            .send()
            .await
            .expect("call");
        assert_eq!(status(answer), 404, "{method} {path}");
    }
    let still = sandbox.cli_json(&[
        "datasets",
        "documents",
        "secret",
        "--tenant",
        "acme",
        "--json",
    ]);
    assert_eq!(still[0]["document_id"], "plan", "{still}");
    let none = sandbox.cli(&["datasets", "documents", "secret", "--tenant", "globex"]);
    assert_eq!(none.status.code(), Some(1));
    let listed = sandbox.cli(&["datasets", "list", "--tenant", "globex"]);
    assert_eq!(listed.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("secret"));
    assert!(
        String::from_utf8_lossy(&listed.stderr).contains("no datasets for tenant `globex` yet"),
        "an empty list says how to make a dataset: {listed:?}"
    );
}
