//! Authentication, tenant isolation and API rate limits, through the real
//! router: the auth matrix and the 429 sequence, on the in-process limiter
//! and on the Redis one shared by two API replicas.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use weir_api::{AppState, router};
use weir_shared::broker::conformance::service_url;
use weir_shared::broker::redis::{PrefixCleanup, RedisBroker};
use weir_shared::broker::sqlite::{Durability, SqliteBroker};
use weir_shared::broker::{ClaimRequest, SharedBroker};
use weir_shared::config::Settings;
use weir_shared::limit::BrokerRateLimiter;

const ACME: &str = "weir_acmeAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const GLOBEX: &str = "weir_globexBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const OPS: &str = "weir_opsCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

struct Api {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn settings(extra: &[(&str, &str)]) -> Settings {
    let keys = format!("acme:{ACME},globex:{GLOBEX},ops:{OPS}:admin");
    let mut vars: Vec<(String, String)> = vec![("WEIR_API_KEYS".into(), keys)];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::load(&|k| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    })
    .expect("settings")
}

async fn api(extra: &[(&str, &str)]) -> Api {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = SqliteBroker::open(
        dir.path().join("weir.db").to_str().expect("utf-8"),
        Durability::Normal,
    )
    .await
    .expect("broker");
    Api {
        state: AppState::new(Arc::new(broker), Arc::new(settings(extra))),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    body: Value,
    headers: axum::http::HeaderMap,
}

async fn call(
    state: &AppState,
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let request = request
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    send(state, request).await
}

async fn send(state: &AppState, request: Request<Body>) -> Answer {
    let (status, headers, body) = common::respond(state, request).await;
    Answer {
        status,
        body,
        headers,
    }
}

#[tokio::test]
async fn the_auth_matrix() {
    let api = api(&[]).await;
    let s = &api.state;
    let enqueue = json!({"task": "weir.noop", "delay_ms": 60000});

    // No key, wrong key: the same 401, with a challenge.
    for key in [None, Some("weir_notAKeyAtAllXXXXXXXXXXXXXXXXXXXXXXXXXXX")] {
        let a = call(s, Method::POST, "/v1/jobs", key, Some(enqueue.clone())).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.body["error"]["code"], "unauthorized");
        assert_eq!(
            a.headers.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        assert_eq!(
            call(s, Method::GET, "/v1/jobs", key, None).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Health needs no key.
    assert_eq!(
        call(s, Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    // Metrics name the deployment's queues and tasks: admin keys only.
    for (key, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(ACME), StatusCode::FORBIDDEN),
        (Some(OPS), StatusCode::OK),
    ] {
        let a = call(s, Method::GET, "/metrics", key, None).await;
        assert_eq!(a.status, want, "/metrics with {key:?}");
    }

    // The tenant comes from the key.
    let a = call(
        s,
        Method::POST,
        "/v1/jobs",
        Some(ACME),
        Some(enqueue.clone()),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["tenant"], "acme");
    let id = a.body["id"].as_str().expect("id").to_owned();
    let spoof = call(
        s,
        Method::POST,
        "/v1/jobs",
        Some(GLOBEX),
        Some(json!({"task": "weir.noop", "tenant": "acme"})),
    )
    .await;
    assert_eq!(
        spoof.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a body cannot choose the tenant"
    );

    // Another tenant: 404 on every verb, and absent from its listing.
    for (method, uri) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::DELETE, format!("/v1/jobs/{id}")),
        (Method::POST, format!("/v1/jobs/{id}/retry")),
        (Method::GET, format!("/v1/jobs/{id}/events")),
        (Method::GET, format!("/v1/jobs/{id}/explain")),
    ] {
        let a = call(s, method.clone(), &uri, Some(GLOBEX), None).await;
        assert_eq!(
            a.status,
            StatusCode::NOT_FOUND,
            "{method} {uri}: {}",
            a.body
        );
    }
    let listed = call(s, Method::GET, "/v1/jobs", Some(GLOBEX), None).await;
    assert_eq!(listed.body["data"], json!([]));
    let mine = call(s, Method::GET, "/v1/jobs", Some(ACME), None).await;
    assert_eq!(mine.body["data"][0]["id"], id.as_str());
    assert_eq!(
        call(s, Method::GET, &format!("/v1/jobs/{id}"), Some(ACME), None)
            .await
            .status,
        StatusCode::OK
    );

    // Admin routes: 403 for tenant keys, 200 for admin keys.
    for (method, uri) in [
        (Method::POST, "/v1/queues/mail/pause"),
        (Method::POST, "/v1/queues/mail/resume"),
        (Method::GET, "/v1/workers"),
        (Method::GET, "/v1/limits"),
        (Method::GET, "/v1/schedules"),
    ] {
        let a = call(s, method.clone(), uri, Some(ACME), None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(a.body["error"]["code"], "forbidden");
        assert_eq!(
            call(s, method, uri, Some(OPS), None).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
    // An admin sees every tenant's jobs.
    assert_eq!(
        call(s, Method::GET, &format!("/v1/jobs/{id}"), Some(OPS), None)
            .await
            .status,
        StatusCode::OK
    );
    // The owner can cancel.
    let cancelled = call(
        s,
        Method::DELETE,
        &format!("/v1/jobs/{id}"),
        Some(ACME),
        None,
    )
    .await;
    assert_eq!(cancelled.body["state"], "cancelled");
}

/// Sends `n` enqueues with `key` through `states` in turn; returns the answers.
async fn burst(states: &[&AppState], key: &str, n: usize) -> Vec<Answer> {
    let mut out = Vec::new();
    for i in 0..n {
        let state = states[i % states.len()];
        out.push(
            call(
                state,
                Method::POST,
                "/v1/jobs",
                Some(key),
                Some(json!({"task": "weir.noop"})),
            )
            .await,
        );
    }
    out
}

fn assert_limited_after(answers: &[Answer], limit: usize) {
    for (i, a) in answers.iter().enumerate() {
        if i < limit {
            assert_eq!(a.status, StatusCode::CREATED, "request {i}: {}", a.body);
            assert_eq!(
                a.headers
                    .get("ratelimit-limit")
                    .and_then(|v| v.to_str().ok()),
                Some(limit.to_string().as_str())
            );
            let remaining = (limit - 1 - i).to_string();
            assert_eq!(
                a.headers
                    .get("ratelimit-remaining")
                    .and_then(|v| v.to_str().ok()),
                Some(remaining.as_str()),
                "request {i}"
            );
        } else {
            assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "request {i}");
            assert_eq!(a.body["error"]["code"], "rate_limited");
            let retry: u64 = a
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            assert_eq!(
                a.headers
                    .get("ratelimit-remaining")
                    .and_then(|v| v.to_str().ok()),
                Some("0")
            );
        }
    }
}

#[tokio::test]
async fn the_key_limit_answers_429_with_retry_after() {
    let api = api(&[("WEIR_RATE_LIMIT_KEY", "3/m")]).await;
    let answers = burst(&[&api.state], ACME, 5).await;
    assert_limited_after(&answers, 3);
    // Another key of another tenant has its own budget.
    assert_eq!(
        burst(&[&api.state], GLOBEX, 1).await[0].status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn the_tenant_limit_spans_its_keys() {
    let api = api(&[("WEIR_RATE_LIMIT_TENANT", "2/m")]).await;
    let answers = burst(&[&api.state], ACME, 3).await;
    assert_limited_after(&answers, 2);
}

#[tokio::test]
async fn api_replicas_share_the_limit_through_redis() {
    let Some(url) = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15") else {
        return;
    };
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let _cleanup = PrefixCleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let settings = Arc::new(settings(&[("WEIR_RATE_LIMIT_KEY", "4/m")]));
    let replica = || {
        let broker: SharedBroker = Arc::new(
            RedisBroker::open(&url, &prefix, weir_shared::broker::Retention::default())
                .expect("broker"),
        );
        let mut state = AppState::new(broker.clone(), settings.clone());
        state.limiter = Arc::new(BrokerRateLimiter(broker));
        state
    };
    let (a, b) = (replica(), replica());
    let answers = burst(&[&a, &b], ACME, 6).await;
    assert_limited_after(&answers, 4);
}

/// When a cap is full, a tenant's `explain` shows its own holders only:
/// another tenant's job id, tenant name and worker never appear, only how
/// many of its jobs hold permits. The operator sees them all.
#[tokio::test]
async fn explain_shows_a_tenant_no_other_tenants_holders() {
    let api = api(&[("WEIR_CONCURRENCY_LIMITS", "weir.sleep=1")]).await;
    let job = json!({"task": "weir.sleep", "payload": {"ms": 1}});
    let held = call(
        &api.state,
        Method::POST,
        "/v1/jobs",
        Some(GLOBEX),
        Some(job.clone()),
    )
    .await;
    let held_id = held.body["id"].as_str().expect("id").to_owned();
    let claimed = api
        .state
        .broker
        .claim(ClaimRequest {
            worker: "globex-host:4242/1".into(),
            queues: vec!["default".into()],
            limit: 10,
            lease: Duration::from_secs(60),
            limits: Arc::new(api.state.settings.limits.clone()),
            tasks: None,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "globex's job holds the only permit");
    let waiting = call(&api.state, Method::POST, "/v1/jobs", Some(ACME), Some(job)).await;
    let uri = format!(
        "/v1/jobs/{}/explain",
        waiting.body["id"].as_str().expect("id")
    );

    let seen = call(&api.state, Method::GET, &uri, Some(ACME), None).await;
    assert_eq!(seen.status, StatusCode::OK);
    let cap = seen.body["reasons"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["code"] == "cap_full").cloned())
        .expect("cap_full reason");
    assert!(
        cap.get("holders").is_none(),
        "no foreign holder listed: {cap}"
    );
    assert_eq!(cap["other_holders"], 1);
    let text = seen.body.to_string();
    for secret in [held_id.as_str(), "globex", "globex-host"] {
        assert!(!text.contains(secret), "`{secret}` leaked to acme: {text}");
    }

    let operator = call(&api.state, Method::GET, &uri, Some(OPS), None).await;
    let text = operator.body.to_string();
    assert!(
        text.contains(&held_id) && text.contains("globex-host"),
        "{text}"
    );
}

/// The authorization scheme is case-insensitive: `bearer KEY` and
/// `BEARER KEY` are the same as `Bearer KEY`; another scheme is 401.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let api = api(&[]).await;
    for (header, expected) in [
        (format!("bearer {ACME}"), StatusCode::OK),
        (format!("BEARER {ACME}"), StatusCode::OK),
        (format!("Basic {ACME}"), StatusCode::UNAUTHORIZED),
        (ACME.to_owned(), StatusCode::UNAUTHORIZED),
    ] {
        let request = Request::builder()
            .method(Method::GET)
            .uri("/v1/jobs")
            .header("authorization", &header)
            .body(Body::empty())
            .expect("request");
        let response = router(api.state.clone())
            .oneshot(request)
            .await
            .expect("response");
        assert_eq!(response.status(), expected, "{header}");
    }
}

async fn from_address(state: &AppState, address: [u8; 4], key: &str) -> Answer {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/v1/jobs")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request");
    let peer = std::net::SocketAddr::from((address, 40000));
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    send(state, request).await
}

/// Guessing keys from one address: after the allowed failures that address
/// is 429 with `Retry-After` before its key is checked (a right key too,
/// so a guess that happens to be right tells nothing); another address is
/// not affected.
#[tokio::test]
async fn failed_logins_from_one_address_are_429_after_the_limit() {
    let api = api(&[("WEIR_AUTH_FAILURE_LIMIT", "5/m")]).await;
    let attacker = [192, 0, 2, 7];
    for i in 0..5 {
        let answer = from_address(&api.state, attacker, &format!("weir_guess{i}")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let answer = from_address(&api.state, attacker, "weir_guess5").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.body["error"]["code"], "too_many_failed_logins");
    let retry: u64 = answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        from_address(&api.state, attacker, ACME).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a right key from a blocked address is not checked"
    );
    assert_eq!(
        from_address(&api.state, [192, 0, 2, 8], ACME).await.status,
        StatusCode::OK,
        "another address is not blocked"
    );
}
