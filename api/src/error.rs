//! [`ApiError`]: user errors become 4xx with a code and a message that says
//! what to fix; broker outages become 503 with `Retry-After`; anything else
//! is a bare 500 whose detail goes to the log, not the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use weir_shared::broker::BrokerError;
use weir_shared::input::InputError;

/// The longest message an error answer carries.
const MAX_MESSAGE_BYTES: usize = 512;

/// An error answer of the API: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE_BYTES {
            // A message quoting the client's input (a parser's error) is
            // cut: the client has its input already.
            let mut end = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        ApiError {
            status,
            code,
            message,
        }
    }

    /// 400: the body is not JSON or a field has the wrong type.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: well-formed but not acceptable.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 404: no such job (or not the caller's).
    pub fn job_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "job not found")
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message shown to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        match e {
            InputError::Malformed(message) => ApiError::bad_request(message),
            InputError::Invalid { code, message } => ApiError::invalid(code, message),
        }
    }
}

/// Logs of broker outages, at most one a second: an outage under load
/// fails thousands of requests a second, and one line (with how many were
/// not logged since the last) says as much as all of them.
static OUTAGE_LOG: LogThrottle = LogThrottle::new();

/// Logs of refused connections and failed accepts, throttled the same way.
pub(crate) static REFUSAL_LOG: LogThrottle = LogThrottle::new();

/// Lets one log line through per second and counts the rest.
pub(crate) struct LogThrottle {
    last_second: AtomicI64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    const fn new() -> Self {
        LogThrottle {
            last_second: AtomicI64::new(i64::MIN),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines not logged since the last one)` when this one may be logged.
    pub(crate) fn admit(&self) -> Option<u64> {
        let second = weir_shared::job::now_ms().0 / 1000;
        let last = self.last_second.load(Ordering::Relaxed);
        if last != second
            && self
                .last_second
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The one place a broker error becomes an answer: each variant maps to
/// the interface's status code for it.
impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::NotFound => ApiError::job_not_found(),
            BrokerError::Conflict(state) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("job is {state}"))
            }
            BrokerError::UniqueKeyHeld { .. } => {
                ApiError::new(StatusCode::CONFLICT, "unique_key_held", e.to_string())
            }
            BrokerError::WorkflowNotFound => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "workflow not found")
            }
            BrokerError::WorkflowConflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            BrokerError::Invalid(message) => ApiError::invalid("invalid", message),
            BrokerError::Unavailable(detail) => {
                if let Some(suppressed) = OUTAGE_LOG.admit() {
                    tracing::warn!(error = %detail, suppressed, "Broker unavailable");
                }
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the broker is unavailable; nothing was changed, try again",
                )
            }
            BrokerError::Config(_) | BrokerError::Internal { .. } => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "Broker error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(id) = crate::access::current_request_id() {
            error["request_id"] = json!(&*id);
        }
        let body = json!({ "error": error });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The answer for a route that exists with another method: the same JSON
/// envelope as every other error, not an empty body.
pub(crate) async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}"),
    )
}

/// The answer for a path no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

impl From<weir_shared::provider::PoolError> for ApiError {
    fn from(e: weir_shared::provider::PoolError) -> Self {
        match e {
            weir_shared::provider::PoolError::Broker(b) => b.into(),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_is_503_with_retry_after() {
        let response =
            ApiError::from(BrokerError::Unavailable("connection refused".into())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn outage_logs_are_throttled_to_one_a_second() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.admit(), Some(0), "the first line is logged");
        let logged = (0..1000).filter_map(|_| throttle.admit()).count();
        // The loop may straddle one second boundary, never more.
        assert!(logged <= 1, "{logged} more lines logged within a second");
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let e = ApiError::from(BrokerError::internal("SELECT secret FROM x"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message(), "internal error");
    }

    /// Every variant of the seam's error, and the status the interface
    /// gives it. A new variant fails to compile here until it is mapped.
    #[test]
    fn every_broker_error_has_its_status() {
        use weir_shared::job::JobState;
        let table = [
            (BrokerError::Unavailable("down".into()), 503, "unavailable"),
            (BrokerError::NotFound, 404, "not_found"),
            (BrokerError::Conflict(JobState::Succeeded), 409, "conflict"),
            (
                BrokerError::UniqueKeyHeld { holder: None },
                409,
                "unique_key_held",
            ),
            (
                BrokerError::Invalid("tenant has a line break".into()),
                422,
                "invalid",
            ),
            (BrokerError::Config("bad URL".into()), 500, "internal"),
            (BrokerError::internal("bug"), 500, "internal"),
            (BrokerError::WorkflowNotFound, 404, "not_found"),
            (
                BrokerError::WorkflowConflict("it has ended".into()),
                409,
                "conflict",
            ),
        ];
        for (error, status, code) in table {
            // Exhaustive on purpose: adding a variant breaks this match.
            match &error {
                BrokerError::Unavailable(_)
                | BrokerError::NotFound
                | BrokerError::Conflict(_)
                | BrokerError::UniqueKeyHeld { .. }
                | BrokerError::Invalid(_)
                | BrokerError::Config(_)
                | BrokerError::WorkflowNotFound
                | BrokerError::WorkflowConflict(_)
                | BrokerError::Internal { .. } => {}
            }
            let shown = format!("{error:?}");
            let e = ApiError::from(error);
            assert_eq!(e.status().as_u16(), status, "{shown}");
            assert_eq!(e.code, code, "{shown}");
        }
    }
}
