//! `GET /v1/queues` with `Cache-Control: max-age=N` may answer counts up to
//! N seconds old (what the dashboard asks, so open pages share one count);
//! without it the counts are read fresh.

mod common;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use std::sync::Arc;
use weir_api::AppState;
use weir_shared::broker::sqlite::{Durability, SqliteBroker};
use weir_shared::config::Settings;

async fn queued(state: &AppState, max_age: Option<&str>) -> u64 {
    let mut request = Request::get("/v1/queues");
    if let Some(v) = max_age {
        request = request.header("cache-control", v);
    }
    let (_, _, body) = common::respond(state, request.body(Body::empty()).expect("request")).await;
    body["data"]
        .as_array()
        .and_then(|d| d.iter().find(|q| q["name"] == "default"))
        .and_then(|q| q["counts"]["queued"].as_u64())
        .unwrap_or_else(|| panic!("default queue: {body}"))
}

async fn enqueue(state: &AppState) {
    let (status, _, body) = common::respond(
        state,
        Request::post("/v1/jobs")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"task": "weir.noop"}"#))
            .expect("request"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let _: &Value = &body;
}

#[tokio::test]
async fn queue_counts_are_fresh_unless_the_caller_accepts_older() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.db");
    let broker = SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
        .await
        .expect("broker");
    let settings =
        Settings::load(&|k| (k == "WEIR_AUTH").then(|| "disabled".to_owned())).expect("settings");
    let state = AppState::new(Arc::new(broker), Arc::new(settings));
    enqueue(&state).await;
    assert_eq!(queued(&state, Some("max-age=60")).await, 1);
    enqueue(&state).await;
    assert_eq!(
        queued(&state, Some("max-age=60")).await,
        1,
        "a caller that accepts a minute-old answer gets the cached one"
    );
    assert_eq!(queued(&state, None).await, 2, "everyone else reads fresh");
    assert_eq!(queued(&state, Some("no-cache")).await, 2);
}
