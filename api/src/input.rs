//! Request bodies and query strings, checked field by field. Malformed JSON
//! and wrong types are 400; well-typed values that cannot be accepted
//! (unknown queue or task, out-of-range numbers, unknown fields) are 422.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::Value;
use weir_shared::broker::EnqueueRequest;
use weir_shared::input::{Catalog, InputError, job_request};

/// Most jobs in one batch request.
pub(crate) const MAX_BATCH: usize = 1000;

/// A body as JSON, or the error for why it is not: 413 past the size
/// limit, 400 for anything that is not JSON.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is larger than WEIR_MAX_PAYLOAD_BYTES",
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    weir_shared::input::parse_json(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// `{"jobs": [...]}`: every job checked before any is enqueued.
pub(crate) fn batch_request(
    catalog: Catalog<'_>,
    tenant: &str,
    value: Value,
) -> Result<Vec<EnqueueRequest>, ApiError> {
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad_request("the body must be {\"jobs\": [...]}"));
    };
    if let Some(field) = map.keys().find(|k| k.as_str() != "jobs") {
        return Err(ApiError::invalid(
            "invalid_field",
            format!(
                "unknown field `{}`; the body is {{\"jobs\": [...]}}",
                weir_shared::input::shown(field)
            ),
        ));
    }
    let Some(Value::Array(jobs)) = map.remove("jobs") else {
        return Err(ApiError::bad_request("`jobs` must be an array of jobs"));
    };
    if jobs.is_empty() || jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "invalid_field",
            format!("a batch holds 1 to {MAX_BATCH} jobs, got {}", jobs.len()),
        ));
    }
    jobs.into_iter()
        .enumerate()
        .map(|(i, job)| {
            job_request(catalog, tenant, job, &format!("jobs[{i}]: ")).map_err(|e| match e {
                // In a batch every bad job is 422, naming its index.
                InputError::Malformed(message) => ApiError::invalid("invalid_field", message),
                invalid => ApiError::from(invalid),
            })
        })
        .collect()
}

/// A listing's `limit` query value: `default` when absent, else 1 to `max`.
pub(crate) fn page_limit(
    text: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match text {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::invalid("invalid_field", format!("limit must be 1 to {max}"))),
    }
}

/// A listing's `cursor` query value: the id a previous page handed out.
pub(crate) fn page_cursor(
    text: Option<String>,
    what: &str,
) -> Result<Option<weir_shared::job::JobId>, ApiError> {
    text.filter(|c| !c.is_empty())
        .map(|c| c.parse::<weir_shared::job::JobId>())
        .transpose()
        .map_err(|_| {
            ApiError::invalid(
                "invalid_field",
                format!("cursor is not a {what} id; pass next_cursor back as it came"),
            )
        })
}
