//! Celery's result records (`celery-task-meta-<id>` in the result
//! backend's Redis), in the shape Celery 5 writes and reads.

use serde_json::{Value, json};

/// The states weir writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultState {
    /// The job succeeded.
    Success,
    /// The job failed for good.
    Failure,
    /// The job was cancelled, or expired before it ran.
    Revoked,
}

/// The record of a task's end: `result` is the job's result for a success;
/// for a failure or a revocation, `error` becomes the exception Celery
/// raises in `get()` (`WeirTaskError` with the message, or `TaskRevokedError`).
pub fn meta(celery_id: &str, state: ResultState, result: &Value, error: &str) -> Value {
    let date_done = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let (status, result, traceback) = match state {
        ResultState::Success => ("SUCCESS", result.clone(), Value::Null),
        ResultState::Failure => (
            "FAILURE",
            json!({"exc_type": "WeirTaskError", "exc_message": [error], "exc_module": "builtins"}),
            json!(format!("weir: {error}")),
        ),
        ResultState::Revoked => (
            "REVOKED",
            json!({"exc_type": "TaskRevokedError", "exc_message": [error], "exc_module": "celery.exceptions"}),
            Value::Null,
        ),
    };
    json!({
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": date_done,
        "task_id": celery_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_have_celerys_shape() {
        let ok = meta("id-1", ResultState::Success, &json!({"n": 1}), "");
        assert_eq!(ok["status"], "SUCCESS");
        assert_eq!(ok["result"]["n"], 1);
        assert_eq!(ok["task_id"], "id-1");
        assert_eq!(ok["children"], json!([]));
        let failed = meta("id-2", ResultState::Failure, &Value::Null, "boom");
        assert_eq!(failed["status"], "FAILURE");
        assert_eq!(failed["result"]["exc_type"], "WeirTaskError");
        assert_eq!(failed["result"]["exc_message"], json!(["boom"]));
        let revoked = meta("id-3", ResultState::Revoked, &Value::Null, "expired");
        assert_eq!(revoked["status"], "REVOKED");
    }
}
