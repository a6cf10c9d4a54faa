//! `/openapi.json`: served without a key, built from the router itself, so
//! every route the API serves is documented; every reference resolves;
//! the job request lists exactly the fields the parser accepts.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use weir_api::AppState;
use weir_shared::broker::sqlite::{Durability, SqliteBroker};
use weir_shared::config::Settings;

/// Every `$ref` in `value` (recursively).
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push(r.to_owned());
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_covers_every_route_and_resolves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.db");
    let broker = SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
        .await
        .expect("broker");
    // Keys are required: the document is served without one all the same.
    let settings = Settings::load(&|k| {
        (k == "WEIR_API_KEYS").then(|| format!("ops:{}:admin", "k".repeat(32)))
    })
    .expect("settings");
    assert!(settings.auth.required());
    let state = AppState::new(Arc::new(broker), Arc::new(settings));
    let (status, _, doc) = common::respond(
        &state,
        Request::get("/openapi.json")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "served without a key: {doc}");
    let (jobs, _, _) = common::respond(
        &state,
        Request::get("/v1/jobs")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(
        jobs,
        StatusCode::UNAUTHORIZED,
        "the API itself still needs one"
    );
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    assert_eq!(
        doc,
        serde_json::to_value(weir_api::openapi_document()).expect("json")
    );

    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                served.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    // The interface's routes this API serves (workflows, datasets and the
    // dashboard arrive with their own issues).
    for route in [
        "POST /v1/jobs",
        "GET /v1/jobs",
        "POST /v1/jobs/batch",
        "POST /v1/jobs/bulk",
        "GET /v1/jobs/{id}",
        "DELETE /v1/jobs/{id}",
        "POST /v1/jobs/{id}/retry",
        "GET /v1/jobs/{id}/explain",
        "GET /v1/jobs/{id}/events",
        "POST /v1/workflows",
        "GET /v1/workflows",
        "GET /v1/workflows/{id}",
        "DELETE /v1/workflows/{id}",
        "POST /v1/workflows/{id}/retry",
        "GET /v1/workflows/{id}/events",
        "GET /v1/datasets",
        "GET /v1/datasets/{name}/documents",
        "POST /v1/datasets/{name}/search",
        "DELETE /v1/datasets/{name}/documents/{document_id}",
        "GET /v1/queues",
        "GET /v1/queues/{name}",
        "POST /v1/queues/{name}/pause",
        "POST /v1/queues/{name}/resume",
        "POST /v1/queues/{name}/purge",
        "GET /v1/workers",
        "GET /v1/providers",
        "GET /v1/limits",
        "GET /v1/schedules",
        "POST /v1/schedules/{name}/trigger",
        "POST /v1/schedules/{name}/pause",
        "POST /v1/schedules/{name}/resume",
        "GET /metrics",
        "GET /healthz",
        "GET /readyz",
        "GET /ui",
    ] {
        assert!(
            served.contains(route),
            "{route} is not documented: {served:?}"
        );
    }
    assert_eq!(
        served.len(),
        35,
        "every documented route is one the API serves: {served:?}"
    );

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
    let fields: BTreeSet<&str> = doc["components"]["schemas"]["JobSubmission"]["properties"]
        .as_object()
        .expect("JobSubmission")
        .keys()
        .map(String::as_str)
        .collect();
    let accepted: BTreeSet<&str> = weir_shared::input::JOB_FIELDS.iter().copied().collect();
    assert_eq!(
        fields, accepted,
        "the documented request is what the parser takes"
    );
    let job: BTreeSet<&str> = doc["components"]["schemas"]["Job"]["properties"]
        .as_object()
        .expect("Job")
        .keys()
        .map(String::as_str)
        .collect();
    for field in [
        "id",
        "task",
        "queue",
        "state",
        "attempts",
        "result",
        "error",
        "created_at",
    ] {
        assert!(job.contains(field), "Job has {field}: {job:?}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        doc["paths"]["/healthz"]["get"]["security"]
            .as_array()
            .is_some_and(|s| s
                .iter()
                .any(|x| x.as_object().is_some_and(|o| o.is_empty()))),
        "the probes need no key: {}",
        doc["paths"]["/healthz"]
    );
}
