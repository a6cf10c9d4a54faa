//! `weir celery-ingress` against a real Celery producer (celery[redis]
//! from PyPI in a venv that `scripts/celery-python` makes) on Redis
//! (`WEIR_TEST_REDIS_URL`, database 13, a key prefix per test): every task
//! becomes one weir job whose id is the task id, with its arguments,
//! priority, eta and expiry; a kill -9 of the ingress mid-stream and the
//! leftovers of a crash between take and enqueue lose and double nothing;
//! `AsyncResult(id).get()` reads results and failures; pickle, compressed
//! and chord messages become failed jobs holding the raw message while the
//! ingress keeps going.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;
use weir_shared::broker::conformance::service_url;
use weir_tests::{Dev, Proc, Sandbox, wait_until};

const PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/celery-python");
const PRODUCER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/celery_producer.py");

/// The Redis database of these tests, and a key prefix of this test's.
fn redis() -> Option<(String, String)> {
    let base = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379")?;
    let url = format!("{}/13", base.trim_end_matches('/').trim_end_matches("/0"));
    Some((url, format!("wt{}:", uuid::Uuid::now_v7().simple())))
}

/// Runs the producer script; its JSON lines.
fn python(args: &[&str]) -> Vec<Value> {
    let out = Command::new(PYTHON)
        .arg(PRODUCER)
        .args(args)
        .output()
        .expect("run scripts/celery-python");
    assert!(
        out.status.success(),
        "celery_producer.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Deletes the test's keys (its prefix, and the result records of `ids`).
fn cleanup(url: &str, prefix: &str, ids: &[String]) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut conn)
        .unwrap_or_default();
    keys.extend(ids.iter().map(|id| format!("celery-task-meta-{id}")));
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

fn ingress(sandbox: &Sandbox, name: &str, url: &str, prefix: &str) -> Proc {
    sandbox.spawn(
        name,
        &[
            "celery-ingress",
            "--from",
            url,
            "-Q",
            "dataset,mail",
            "--key-prefix",
            prefix,
            "--results",
            url,
            "--recover-after",
            "2s",
        ],
    )
}

async fn job(api: &Dev, id: &str) -> Value {
    api.get(&format!("/v1/jobs/{id}")).await.1
}

fn ended(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

fn millis(job: &Value, field: &str) -> i64 {
    job[field]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_millis())
}

#[tokio::test]
async fn every_celery_task_is_one_weir_job_across_a_crash_with_its_result() {
    let Some((url, prefix)) = redis() else { return };
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_CONCURRENCY", "32")
        .config("[tasks.\"weir.fail\"]\nmax_retries = 0\n");
    let api = sandbox.dev().await;

    // A crash between take and enqueue leaves messages in the in-flight
    // hash: two of them, one there twice (taken again after an enqueue
    // whose clean-up was lost).
    let mut sent = python(&["send", &url, &prefix, "4"]);
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client.get_connection().expect("redis");
    let inflight = format!("{prefix}weir-ingress:mail:inflight");
    let index = format!("{prefix}weir-ingress:mail:index");
    let mut left = Vec::new();
    for _ in 0..2 {
        let raw: Option<String> = redis::cmd("RPOP")
            .arg(format!("{prefix}mail"))
            .query(&mut conn)
            .expect("rpop");
        left.push(raw.expect("a message to leave in flight"));
    }
    for (tag, raw) in [
        ("crashed:1", &left[0]),
        ("crashed:2", &left[1]),
        ("crashed:3", &left[1]),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(&inflight)
            .arg(tag)
            .arg(format!("{prefix}mail\n{raw}"))
            .query(&mut conn)
            .expect("hset");
        let _: () = redis::cmd("ZADD")
            .arg(&index)
            .arg(0)
            .arg(tag)
            .query(&mut conn)
            .expect("zadd");
    }

    // 1,000 more while the ingress runs; it is killed mid-stream and
    // another takes over.
    let mut first = ingress(&sandbox, "ingress-1", &url, &prefix);
    let producer = std::process::Command::new(PYTHON)
        .arg(PRODUCER)
        .args(["send", &url, &prefix, "1000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("producer");
    let midway = wait_until(Duration::from_secs(60), || async {
        api.get("/v1/jobs?limit=200").await.1["data"]
            .as_array()
            .is_some_and(|d| d.len() >= 100)
    })
    .await;
    assert!(midway, "{}", first.log());
    first.signal("KILL");
    first.wait_exit(Duration::from_secs(5));
    let second = ingress(&sandbox, "ingress-2", &url, &prefix);
    let out = producer.wait_with_output().expect("producer output");
    assert!(out.status.success());
    sent.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok()),
    );
    assert_eq!(sent.len(), 1004);
    let remaining: i64 = redis::cmd("LLEN")
        .arg(format!("{prefix}mail"))
        .query(&mut conn)
        .unwrap_or(0);
    eprintln!("messages still in Celery's mail list when the producer ended: {remaining}");

    let ids: Vec<String> = sent
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let all_ended = wait_until(Duration::from_secs(90), || async {
        for id in ids.iter().rev() {
            if !ended(&job(&api, id).await) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all_ended, "{}\n{}", second.log(), api.proc.log());

    let jobs = sandbox.all_jobs();
    assert_eq!(jobs.len(), 1004, "one job per task, none doubled");
    let by_id: HashMap<&str, &Value> = jobs
        .iter()
        .filter_map(|j| Some((j["id"].as_str()?, j)))
        .collect();
    for s in &sent {
        let id = s["id"].as_str().expect("id");
        let (_, j) = api.get(&format!("/v1/jobs/{id}")).await;
        assert!(by_id.contains_key(id), "task {id} has no job");
        assert_eq!(j["queue"], s["queue"], "{j}");
        let p = s["priority"].as_i64().expect("priority");
        assert_eq!(j["priority"], weir_shared::celery::priority(p), "{s} {j}");
        match s["kind"].as_str().expect("kind") {
            "expired" => assert_eq!(j["state"], "cancelled", "{j}"),
            "fails" => assert_eq!(j["state"], "failed", "{j}"),
            kind => {
                assert_eq!(j["state"], "succeeded", "{kind}: {j}");
                assert_eq!(j["attempts"], 1, "ran once: {j}");
                assert_eq!(j["payload"]["args"][0], s["i"], "{j}");
                assert_eq!(j["payload"]["kwargs"]["n"], s["i"], "{j}");
                if kind == "countdown" || kind == "eta" {
                    // The eta is absolute (Celery adds a countdown to the
                    // time of sending), whenever the message was taken.
                    let eta = s["eta_ms"].as_i64().expect("eta_ms");
                    let eta = eta.max(millis(&j, "created_at"));
                    let run_at = millis(&j, "run_at");
                    assert!((run_at - eta).abs() < 1_000, "{kind} honoured: {s} {j}");
                    assert!(millis(&j, "started_at") >= run_at, "{j}");
                }
            }
        }
    }

    // What a producer reads back through Celery's own AsyncResult.
    let kinds: HashMap<&str, &str> = sent
        .iter()
        .filter_map(|s| Some((s["id"].as_str()?, s["kind"].as_str()?)))
        .collect();
    let sample: Vec<&String> = ids
        .iter()
        .filter(|id| kinds[id.as_str()] != "plain")
        .chain(ids.iter().take(20))
        .collect();
    let file = sandbox.dir.path().join("ids.txt");
    std::fs::write(
        &file,
        sample
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("ids");
    let read = python(&["results", &url, &file.display().to_string()]);
    assert_eq!(read.len(), sample.len());
    for r in &read {
        let id = r["id"].as_str().expect("id");
        match kinds[id] {
            "fails" => {
                assert_eq!(r["state"], "FAILURE", "{r}");
                assert_eq!(r["error"], "WeirTaskError", "{r}");
                assert!(
                    r["message"].as_str().unwrap_or("").contains("weir.fail"),
                    "{r}"
                );
            }
            "expired" => assert_eq!(r["state"], "REVOKED", "{r}"),
            _ => {
                assert_eq!(r["state"], "SUCCESS", "{r}");
                assert_eq!(r["result"]["args"], by_id[id]["payload"]["args"], "{r}");
            }
        }
    }
    drop(second);
    cleanup(&url, &prefix, &ids);
}

#[tokio::test]
async fn refused_messages_are_kept_as_failed_jobs_and_the_ingress_goes_on() {
    let Some((url, prefix)) = redis() else { return };
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.dev().await;
    let refused = python(&["reject", &url, &prefix]);
    let refused = refused.first().cloned().unwrap_or(Value::Null);
    let sent = python(&["send", &url, &prefix, "10"]);
    let metrics_addr = format!("127.0.0.1:{}", weir_tests::free_port());
    sandbox.set("WEIR_METRICS_ADDR", &metrics_addr);
    let ingress = ingress(&sandbox, "ingress", &url, &prefix);
    for (kind, reason) in [
        ("pickle", "is not JSON"),
        ("gzip", "compressed"),
        ("chord", "chords are not taken"),
    ] {
        let id = refused[kind].as_str().expect("id");
        let done = wait_until(Duration::from_secs(30), || async {
            job(&api, id).await["state"] == "failed"
        })
        .await;
        assert!(done, "{kind}: {}\n{}", ingress.log(), api.proc.log());
        let j = job(&api, id).await;
        assert_eq!(j["task"], "celery.rejected", "{j}");
        assert!(
            j["error"].as_str().unwrap_or("").contains(reason),
            "{kind}: {j}"
        );
        let raw: Value =
            serde_json::from_str(j["payload"]["raw"].as_str().expect("raw")).expect("raw JSON");
        assert_eq!(raw["headers"]["id"], json!(id), "the raw message is kept");
    }
    for s in &sent {
        let id = s["id"].as_str().expect("id");
        let done = wait_until(Duration::from_secs(30), || async {
            ended(&job(&api, id).await)
        })
        .await;
        assert!(done, "{s}: {}", ingress.log());
    }
    let scrape = weir_tests::http_client()
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("the ingress serves /metrics")
        .text()
        .await
        .expect("metrics text");
    let line = |outcome: &str| {
        scrape
            .lines()
            .find(|l| {
                l.starts_with("weir_celery_messages_total")
                    && l.contains("queue=\"mail\"")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(line("rejected"), Some(3.0), "{scrape}");
    assert!(line("taken").is_some_and(|n| n >= 5.0), "{scrape}");
    let mut ids: Vec<String> = sent
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    ids.extend(
        ["pickle", "gzip", "chord"]
            .iter()
            .filter_map(|k| refused[*k].as_str().map(str::to_owned)),
    );
    drop(ingress);
    cleanup(&url, &prefix, &ids);
}

#[test]
fn an_undeclared_queue_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let out = sandbox.cli(&[
        "celery-ingress",
        "--from",
        "redis://127.0.0.1:6379/13",
        "-Q",
        "nightly",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`nightly`") && stderr.contains("declared"),
        "{stderr}"
    );
}

/// A task routed to an HTTP endpoint in configuration: its payload is
/// POSTed, the answer's body is the result, a 4xx fails it at once.
#[tokio::test]
async fn a_task_body_behind_an_http_endpoint() {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/sum",
            post(
                |headers: axum::http::HeaderMap, body: axum::Json<Value>| async move {
                    let sum: i64 = body["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_i64)
                        .sum();
                    let job = headers
                        .get("x-weir-job-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    axum::Json(json!({"sum": sum, "job": job}))
                },
            ),
        )
        .route(
            "/refuse",
            post(|| async { (axum::http::StatusCode::BAD_REQUEST, "no such thing") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_HTTP_ALLOW_HOSTS", "127.0.0.1")
        .config(&format!(
            "[tasks.\"tasks.sum\"]\nurl = \"http://127.0.0.1:{port}/sum\"\n\n[tasks.\"tasks.refuse\"]\nurl = \"http://127.0.0.1:{port}/refuse\"\nmax_retries = 3\n"
        ));
    let api = sandbox.dev().await;
    let (status, sum) = api
        .post(
            "/v1/jobs",
            &json!({"task": "tasks.sum", "payload": {"args": [1, 2, 39], "kwargs": {}}}),
        )
        .await;
    assert_eq!(status, 201, "{sum}");
    let id = sum["id"].as_str().expect("id");
    let done = api
        .wait_state(id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(done["result"], json!({"sum": 42, "job": id}), "{done}");
    let (_, refused) = api
        .post("/v1/jobs", &json!({"task": "tasks.refuse", "payload": {}}))
        .await;
    let id = refused["id"].as_str().expect("id");
    let failed = api.wait_state(id, "failed", Duration::from_secs(30)).await;
    assert_eq!(failed["attempts"], 1, "a 4xx is not retried: {failed}");
    assert!(
        failed["error"].as_str().unwrap_or("").contains("HTTP 400"),
        "{failed}"
    );
}

/// Celery task bodies in the Python runner: request id, retry with
/// countdown, max retries, a custom `__call__`, a print, a failure, a
/// runner that dies, recycling after N tasks.
#[tokio::test]
async fn celery_task_bodies_run_in_the_python_runner() {
    let status = Command::new(PYTHON)
        .args(["-c", "import celery"])
        .status()
        .expect("scripts/celery-python");
    assert!(status.success());
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/tools/venv-celery/bin/python"
    );
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_CONCURRENCY", "1")
        .set("WEIR_MAX_TASKS_PER_CHILD", "3")
        .set("WEIR_PYTHON", python)
        .set("WEIR_PYTHON_APP", "tasks_app:app")
        .set("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .config(
            r#"
[tasks."py.add"]
runner = "python"
[tasks."py.flaky"]
runner = "python"
max_retries = 5
retry_delay = "100ms"
[tasks."py.hopeless"]
runner = "python"
max_retries = 5
retry_delay = "100ms"
[tasks."py.boom"]
runner = "python"
[tasks."py.crash"]
runner = "python"
max_retries = 0
[tasks."py.report"]
runner = "python"
[tasks."py.slow"]
runner = "python"
"#,
        );
    let api = sandbox.dev().await;
    let enqueue = |task: &str, args: Value| {
        let body = json!({"task": task, "payload": {"args": args, "kwargs": {}}});
        let api = &api;
        async move {
            let (status, job) = api.post("/v1/jobs", &body).await;
            assert_eq!(status, 201, "{job}");
            job["id"].as_str().expect("id").to_owned()
        }
    };
    let wait = Duration::from_secs(120);
    let mut pids = std::collections::HashSet::new();
    for i in 0..6 {
        let id = enqueue("py.add", json!([i, 40])).await;
        let done = api.wait_state(&id, "succeeded", wait).await;
        assert_eq!(done["result"]["sum"], i + 40, "{done}");
        assert_eq!(
            done["result"]["id"],
            json!(id),
            "self.request.id is the job: {done}"
        );
        assert_eq!(
            done["result"]["wrapped"], "yes",
            "the task's own __call__ ran: {done}"
        );
        pids.insert(done["result"]["pid"].as_u64().unwrap_or(0));
    }
    assert!(
        pids.len() >= 2,
        "runners are recycled after 3 tasks: {pids:?}"
    );

    let id = enqueue("py.flaky", json!([2])).await;
    let done = api.wait_state(&id, "succeeded", wait).await;
    assert_eq!(done["attempts"], 3, "two retries, then success: {done}");
    assert_eq!(done["result"]["retries"], 2, "{done}");

    let id = enqueue("py.hopeless", json!([])).await;
    let failed = api.wait_state(&id, "failed", wait).await;
    assert_eq!(
        failed["attempts"], 2,
        "the task's max_retries=1 holds: {failed}"
    );
    assert!(
        failed["error"].as_str().unwrap_or("").contains("never"),
        "{failed}"
    );

    let id = enqueue("py.boom", json!([])).await;
    let failed = api.wait_state(&id, "failed", wait).await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert_eq!(failed["error"], "ValueError: boom", "{failed}");

    let id = enqueue("py.report", json!([])).await;
    let done = api.wait_state(&id, "succeeded", wait).await;
    assert_eq!(done["result"], "reported");
    assert_eq!(
        done["progress"],
        json!({"state": "PROGRESS", "meta": {"done": 1, "total": 2}}),
        "self.update_state is the job's progress: {done}"
    );
    let id = enqueue("py.slow", json!([])).await;
    let done = api.wait_state(&id, "succeeded", wait).await;
    assert_eq!(
        done["result"], "cleaned up",
        "the soft time limit fired: {done}"
    );

    let id = enqueue("py.crash", json!([])).await;
    let failed = api.wait_state(&id, "failed", wait).await;
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("exited during the task"),
        "{failed}"
    );
    // And the next task gets a fresh runner.
    let id = enqueue("py.add", json!([1, 1])).await;
    let done = api.wait_state(&id, "succeeded", wait).await;
    assert_eq!(done["result"]["sum"], 2);
    assert!(
        api.proc.log().contains("adding 1 1"),
        "a task's print goes to the log"
    );
}

/// Celery's priorities order the work in weir: with the queue paused while
/// the ingress takes every message, one slot then starts them from Celery's
/// most urgent (0 on Redis) to its least (9).
#[tokio::test]
async fn celery_priorities_order_the_work() {
    let Some((url, prefix)) = redis() else { return };
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_CONCURRENCY", "1");
    let api = sandbox.dev().await;
    let paused = sandbox.cli(&["queues", "pause", "mail"]);
    assert!(paused.status.success());
    let sent = python(&["priorities", &url, &prefix]);
    let ingress = ingress(&sandbox, "ingress", &url, &prefix);
    let ids: Vec<String> = sent
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let taken = wait_until(Duration::from_secs(30), || async {
        for id in &ids {
            if job(&api, id).await["state"] != "queued" {
                return false;
            }
        }
        true
    })
    .await;
    assert!(taken, "{}", ingress.log());
    let resumed = sandbox.cli(&["queues", "resume", "mail"]);
    assert!(resumed.status.success());
    let mut started = Vec::new();
    for s in &sent {
        let id = s["id"].as_str().expect("id");
        let j = api
            .wait_state(id, "succeeded", Duration::from_secs(30))
            .await;
        started.push((
            millis(&j, "started_at"),
            s["priority"].as_i64().unwrap_or(0),
        ));
    }
    started.sort();
    let order: Vec<i64> = started.iter().map(|(_, p)| *p).collect();
    let mapped: Vec<u8> = order
        .iter()
        .map(|p| weir_shared::celery::priority(*p))
        .collect();
    assert!(
        mapped.windows(2).all(|w| w[0] >= w[1]),
        "started in Celery priority order: {order:?}"
    );
    assert_eq!(order.first(), Some(&0), "{order:?}");
    assert_eq!(order.last(), Some(&9), "{order:?}");
    drop(ingress);
    cleanup(&url, &prefix, &ids);
}
