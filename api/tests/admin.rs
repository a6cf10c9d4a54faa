//! The operator's verbs over HTTP (admin keys only): bulk actions on jobs,
//! purge, and schedule trigger, pause and resume.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use weir_api::AppState;
use weir_shared::broker::sqlite::{Durability, SqliteBroker};
use weir_shared::config::Settings;

const ACME: &str = "weir_acmeAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OPS: &str = "weir_opsCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

async fn api(dir: &tempfile::TempDir) -> AppState {
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[[schedules]]\nname = \"warm\"\ncron = \"0 3 * * *\"\ntask = \"weir.noop\"\n",
    )
    .expect("config");
    let vars = [
        (
            "WEIR_API_KEYS".to_owned(),
            format!("acme:{ACME},ops:{OPS}:admin"),
        ),
        ("WEIR_CONFIG".to_owned(), config.display().to_string()),
    ];
    let settings = Settings::load(&|k| {
        vars.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    })
    .expect("settings");
    let broker = SqliteBroker::open(
        dir.path().join("weir.db").to_str().expect("utf-8"),
        Durability::Normal,
    )
    .await
    .expect("broker");
    AppState::new(Arc::new(broker), Arc::new(settings))
}

async fn call(state: &AppState, uri: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    // Every route here is a POST but the schedules listing.
    let method = if uri == "/v1/schedules" {
        Method::GET
    } else {
        Method::POST
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    let (status, _, body) = common::respond(state, request).await;
    (status, body)
}

#[tokio::test]
async fn operator_verbs_need_an_admin_key_and_do_what_the_cli_does() {
    let dir = tempfile::tempdir().expect("dir");
    let s = api(&dir).await;
    for i in 0..3 {
        let (status, _) = call(
            &s,
            "/v1/jobs",
            ACME,
            Some(json!({"task": "weir.noop", "queue": "dataset", "delay_ms": 60_000 + i})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let bulk = json!({"action": "cancel", "queue": "dataset", "state": "scheduled"});
    for (uri, body) in [
        ("/v1/jobs/bulk", Some(bulk.clone())),
        ("/v1/queues/dataset/purge", None),
        ("/v1/schedules/warm/trigger", None),
        ("/v1/schedules/warm/pause", None),
    ] {
        assert_eq!(
            call(&s, uri, ACME, body).await.0,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }

    let mut dry = bulk.clone();
    dry["dry_run"] = json!(true);
    let (status, out) = call(&s, "/v1/jobs/bulk", OPS, Some(dry)).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        (out["matched"].as_u64(), out["done"].as_u64()),
        (Some(3), Some(0))
    );
    let (_, out) = call(&s, "/v1/jobs/bulk", OPS, Some(bulk)).await;
    assert_eq!(out["done"], 3, "{out}");
    let (_, out) = call(
        &s,
        "/v1/jobs/bulk",
        OPS,
        Some(json!({"action": "delete", "queue": "dataset", "state": "cancelled"})),
    )
    .await;
    assert_eq!(out["done"], 3, "{out}");
    let (status, out) = call(
        &s,
        "/v1/jobs/bulk",
        OPS,
        Some(json!({"action": "retry", "queue": "dataset", "state": "queued"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{out}");

    for _ in 0..2 {
        call(
            &s,
            "/v1/jobs",
            ACME,
            Some(json!({"task": "weir.noop", "queue": "mail", "delay_ms": 60_000})),
        )
        .await;
    }
    let (status, out) = call(&s, "/v1/queues/mail/purge", OPS, None).await;
    assert_eq!((status, out["purged"].as_u64()), (StatusCode::OK, Some(2)));

    let (status, job) = call(&s, "/v1/schedules/warm/trigger", OPS, None).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    assert_eq!(job["task"], "weir.noop");
    let (_, out) = call(&s, "/v1/schedules/warm/pause", OPS, None).await;
    assert_eq!(out["paused"], true);
    let (_, listed) = call(&s, "/v1/schedules", OPS, None).await;
    assert_eq!(listed["data"][0]["paused"], true, "{listed}");
    let (_, out) = call(&s, "/v1/schedules/warm/resume", OPS, None).await;
    assert_eq!(out["paused"], false);
    assert_eq!(
        call(&s, "/v1/schedules/nope/trigger", OPS, None).await.0,
        StatusCode::NOT_FOUND
    );
}
