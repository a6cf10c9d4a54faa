//! The API's status codes and error bodies, case by case, through the real
//! router on a real SQLite broker (no socket: `oneshot`).

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;

use weir_api::AppState;
use weir_shared::broker::sqlite::{Durability, SqliteBroker};
use weir_shared::config::Settings;

struct Api {
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    api_with(&[]).await
}

async fn api_with(vars: &[(&str, &str)]) -> Api {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.db");
    let broker = SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
        .await
        .expect("broker");
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = Settings::load(&|k| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    })
    .expect("settings");
    Api {
        state: AppState::new(Arc::new(broker), Arc::new(settings)),
        _dir: dir,
    }
}

impl Api {
    async fn call(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        self.call_with(method, uri, &[("content-type", "application/json")], body)
            .await
    }

    /// A request with these headers (and `content-length` for the body).
    async fn call_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-length", body.len());
        }
        let request = request
            .body(
                body.map(|b| Body::from(b.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .expect("request");
        let (status, _, value) = common::respond(&self.state, request).await;
        (status, value)
    }

    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(&body.to_string())).await
    }

    async fn total_jobs(&self) -> u64 {
        let (_, queues) = self.call(Method::GET, "/v1/queues", None).await;
        queues["data"]
            .as_array()
            .expect("queues")
            .iter()
            .flat_map(|q| q["counts"].as_object().expect("counts").values())
            .map(|n| n.as_u64().expect("count"))
            .sum()
    }
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn enqueue_returns_201_and_the_job() {
    let api = api().await;
    let (status, job) = api
        .post(
            "/v1/jobs",
            json!({"task": "weir.echo", "payload": {"hello": "world"}, "priority": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(job["task"], "weir.echo");
    assert_eq!(job["queue"], "default");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["priority"], 7);
    assert_eq!(job["payload"], json!({"hello": "world"}));
    assert_eq!(job["attempts"], 0);
    assert_eq!(job["max_retries"], 3);
    assert_eq!(job["result"], Value::Null);
    let id = job["id"].as_str().expect("id");
    let (status, shown) = api.call(Method::GET, &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown, job);
}

#[tokio::test]
async fn delayed_job_is_scheduled() {
    let api = api().await;
    let (status, job) = api
        .post("/v1/jobs", json!({"task": "weir.noop", "delay_ms": 60000}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(job["state"], "scheduled");
}

#[tokio::test]
async fn unique_key_returns_200_and_the_holder() {
    let api = api().await;
    let body = json!({"task": "weir.noop", "unique_key": "warm-app-1"});
    let (first, a) = api.post("/v1/jobs", body.clone()).await;
    let (second, b) = api.post("/v1/jobs", body).await;
    assert_eq!(first, StatusCode::CREATED);
    assert_eq!(second, StatusCode::OK);
    assert_eq!(a["id"], b["id"]);
    assert_eq!(api.total_jobs().await, 1);
}

#[tokio::test]
async fn bad_input_gets_the_interface_status_and_enqueues_nothing() {
    let api = api().await;
    let cases: Vec<(&str, StatusCode, &str)> = vec![
        ("{not json", StatusCode::BAD_REQUEST, "bad_request"),
        ("[1, 2]", StatusCode::BAD_REQUEST, "bad_request"),
        (r#"{"payload": {}}"#, StatusCode::BAD_REQUEST, "bad_request"),
        (r#"{"task": 5}"#, StatusCode::BAD_REQUEST, "bad_request"),
        (
            r#"{"task": "weir.noop", "priority": "high"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            r#"{"task": "nope"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_task",
        ),
        (
            r#"{"task": "weir.noop", "queue": "nowhere"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_queue",
        ),
        (
            r#"{"task": "weir.noop", "priority": 10}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "priority": -1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "delay_ms": -5}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "delay_ms": 1, "run_at": "2030-01-01T00:00:00Z"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "run_at": "tomorrow"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "max_retries": 99}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "timeout_ms": 0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "unique_key": ""}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "state": "succeeded"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            r#"{"task": "weir.noop", "tenant": "other"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (body, want, code) in cases {
        let (status, value) = api.call(Method::POST, "/v1/jobs", Some(body)).await;
        assert_error(status, &value, want, code);
    }
    assert_eq!(api.total_jobs().await, 0);
}

/// A value of the wrong type is named by where it is, so the caller knows
/// which field to fix: in a job, in a batch and in a workflow's step.
#[tokio::test]
async fn a_wrong_type_names_its_field() {
    let api = api().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/jobs",
            json!({"task": "weir.noop", "priority": "high"}),
            "priority: invalid type: string \"high\"",
        ),
        (
            "/v1/jobs",
            json!({"task": "weir.noop", "max_retries": [1]}),
            "max_retries: invalid type: sequence",
        ),
        (
            "/v1/jobs/batch",
            json!({"jobs": [{"task": "weir.noop"}, {"task": "weir.noop", "delay_ms": "soon"}]}),
            "jobs[1]: delay_ms: invalid type: string \"soon\"",
        ),
        (
            "/v1/workflows",
            json!({"steps": [{"id": "a", "task": "weir.noop", "priority": true}]}),
            "priority: invalid type: boolean `true`",
        ),
    ];
    for (path, body, names) in cases {
        let (status, value) = api.post(path, body).await;
        assert!(status.is_client_error(), "{path}: {status} {value}");
        let message = value["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{path}: {message}");
    }
    assert_eq!(api.total_jobs().await, 0);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let api = api_with(&[("WEIR_MAX_PAYLOAD_BYTES", "1024")]).await;
    let big = json!({"task": "weir.echo", "payload": {"blob": "x".repeat(2000)}});
    let (status, value) = api.post("/v1/jobs", big).await;
    assert_error(
        status,
        &value,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(api.total_jobs().await, 0);
}

#[tokio::test]
async fn batch_is_all_or_nothing() {
    let api = api().await;
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"task": "weir.echo", "payload": {"i": i}}))
        .collect();
    let (status, body) = api.post("/v1/jobs/batch", json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["ids"].as_array().expect("ids").len(), 5);

    let bad = json!({"jobs": [{"task": "weir.echo"}, {"task": "weir.echo"}, {"task": "weir.echo", "priority": 12}]});
    let (status, body) = api.post("/v1/jobs/batch", bad).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("jobs[2]"),
        "{body}"
    );
    let typed = json!({"jobs": [{"task": "weir.echo"}, {"task": 1}]});
    let (status, body) = api.post("/v1/jobs/batch", typed).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("jobs[1]"),
        "{body}"
    );
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"task": "weir.noop"})).collect();
    let (status, body) = api.post("/v1/jobs/batch", json!({"jobs": too_many})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    );
    let (status, body) = api
        .call(Method::POST, "/v1/jobs/batch", Some("{\"jobs\": 3}"))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(api.total_jobs().await, 5);
}

#[tokio::test]
async fn unknown_jobs_are_404() {
    let api = api().await;
    let missing = "0193b2e4-0000-7000-8000-000000000000";
    for (method, uri) in [
        (Method::GET, format!("/v1/jobs/{missing}")),
        (Method::DELETE, format!("/v1/jobs/{missing}")),
        (Method::POST, format!("/v1/jobs/{missing}/retry")),
        (Method::GET, format!("/v1/jobs/{missing}/events")),
        (Method::GET, "/v1/jobs/not-an-id".to_owned()),
        (Method::GET, "/v1/queues/nowhere".to_owned()),
    ] {
        let (status, body) = api.call(method, &uri, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
}

/// A route called with a method it does not take is 405 with the same JSON
/// error envelope as every other error, not an empty body.
#[tokio::test]
async fn a_wrong_method_is_405_with_the_error_envelope() {
    let api = api().await;
    for (method, uri) in [
        (Method::PUT, "/v1/jobs"),
        (Method::PATCH, "/v1/queues/default"),
        (Method::POST, "/healthz"),
    ] {
        let (status, body) = api.call(method.clone(), uri, None).await;
        assert_error(
            status,
            &body,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(method.as_str()), "{message}");
    }
}

#[tokio::test]
async fn cancel_and_retry_follow_the_state_rules() {
    let api = api().await;
    let (_, job) = api
        .post("/v1/jobs", json!({"task": "weir.noop", "delay_ms": 60000}))
        .await;
    let id = job["id"].as_str().expect("id");
    let (status, body) = api
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = api
        .call(Method::DELETE, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "cancelled");
    let (status, body) = api
        .call(Method::DELETE, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "conflict");
    let (status, body) = api
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "queued");
}

#[tokio::test]
async fn listing_pages_newest_first() {
    let api = api().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, job) = api.post("/v1/jobs", json!({"task": "weir.noop"})).await;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    let (status, page) = api.call(Method::GET, "/v1/jobs?limit=3", None).await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|j| j["id"].as_str().expect("id"))
        .collect();
    assert_eq!(got, [ids[4].as_str(), ids[3].as_str(), ids[2].as_str()]);
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, next) = api
        .call(
            Method::GET,
            &format!("/v1/jobs?limit=3&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(next["data"].as_array().expect("data").len(), 2);
    assert_eq!(next["has_more"], false);
    let (_, filtered) = api
        .call(
            Method::GET,
            "/v1/jobs?state=queued&queue=default&task=weir.noop",
            None,
        )
        .await;
    assert_eq!(filtered["data"].as_array().expect("data").len(), 5);
    for bad in [
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=501",
        "/v1/jobs?state=done",
        "/v1/jobs?cursor=xyz",
    ] {
        let (status, body) = api.call(Method::GET, bad, None).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
    }
}

#[tokio::test]
async fn queues_pause_and_resume() {
    let api = api().await;
    let (status, q) = api.call(Method::POST, "/v1/queues/mail/pause", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["paused"], true);
    let (_, q) = api.call(Method::GET, "/v1/queues/mail", None).await;
    assert_eq!(q["paused"], true);
    assert_eq!(q["counts"]["queued"], 0);
    let (_, q) = api.call(Method::POST, "/v1/queues/mail/resume", None).await;
    assert_eq!(q["paused"], false);
    let (status, body) = api
        .call(Method::POST, "/v1/queues/nowhere/pause", None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn health_and_readiness() {
    let api = api().await;
    assert_eq!(
        api.call(Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call(Method::GET, "/readyz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call(Method::GET, "/metrics", None).await.0,
        StatusCode::OK
    );
    let (status, body) = api.call(Method::GET, "/v1/workers", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!([]));
}

/// Strict input: a key named twice is 400 (a proxy could read the first
/// and weir the last); a huge name is not echoed back; a body declared as
/// something other than JSON is 415 (JSON, no type, and `curl -d`'s form
/// type are read as JSON); a write from another site's page is 403.
#[tokio::test]
async fn input_is_read_strictly() {
    let api = api().await;
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/jobs",
            Some(r#"{"task": "weir.echo", "task": "weir.fail"}"#),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("duplicate key `task`")),
        "{body}"
    );

    let huge = "t".repeat(900_000);
    let (status, body) = api.post("/v1/jobs", json!({"task": huge})).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_task",
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.len() < 600, "{} bytes echoed", message.len());
    assert!(message.contains("(900000 bytes)"), "{message}");

    let job = r#"{"task": "weir.echo"}"#;
    for (content_type, want) in [
        ("application/json; charset=utf-8", StatusCode::CREATED),
        ("application/x-www-form-urlencoded", StatusCode::CREATED),
        ("application/vnd.api+json", StatusCode::CREATED),
        ("text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "multipart/form-data; boundary=x",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let (status, body) = api
            .call_with(
                Method::POST,
                "/v1/jobs",
                &[("content-type", content_type)],
                Some(job),
            )
            .await;
        assert_eq!(status, want, "{content_type}: {body}");
        if want == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            assert_eq!(body["error"]["code"], "unsupported_media_type");
        }
    }
    let (status, _) = api
        .call_with(Method::POST, "/v1/jobs", &[], Some(job))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "no Content-Type is read as JSON"
    );

    let (status, body) = api
        .call_with(
            Method::POST,
            "/v1/jobs",
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "https://evil.example"),
            ],
            Some(job),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "cross_site");
    let (status, _) = api
        .call_with(
            Method::POST,
            "/v1/jobs",
            &[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:8080"),
            ],
            Some(job),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "the same origin may write");
    assert_eq!(
        api.total_jobs().await,
        5,
        "only the accepted requests enqueued"
    );
}
