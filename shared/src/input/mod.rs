//! A job request as a client writes it (the JSON of `POST /v1/jobs`, or
//! `weir enqueue`), checked field by field against the configuration:
//! one parser for the API and the CLI, so both refuse the same input with
//! the same words.

use crate::broker::EnqueueRequest;
use crate::config::Settings;
use crate::job::{
    DEFAULT_MAX_RETRIES, DEFAULT_PRIORITY, MAX_DELAY_MS, MAX_PRIORITY, MAX_RETRIES_LIMIT,
    MAX_UNIQUE_KEY_LEN, Millis, now_ms,
};
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{Map, Value};

mod json;
mod workflow;
pub use json::parse_json;
pub use workflow::{STEP_FIELDS, workflow_request};

/// The most characters of a client's own text quoted back in a message.
const MAX_SHOWN_CHARS: usize = 64;

/// `text` as quoted back to whoever sent it: whole when short, else its
/// start and its length, so a 900 KB name is not echoed back.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()).into(),
    }
}

/// Why a job request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not a JSON object, or a field of the wrong type (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// Well-formed but not acceptable: unknown task or queue, a value out
    /// of range, an unknown field (HTTP 422).
    #[error("{message}")]
    Invalid {
        /// Machine-readable reason (`unknown_task`, `invalid_field`...).
        code: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// Fields a job request may carry.
pub const JOB_FIELDS: [&str; 10] = [
    "task",
    "queue",
    "payload",
    "priority",
    "delay_ms",
    "run_at",
    "max_retries",
    "timeout_ms",
    "unique_key",
    "serial_key",
];
/// Longest per-attempt timeout a job may ask for (24 h).
const MAX_TIMEOUT_MS: i64 = 24 * 3600 * 1000;

#[derive(Deserialize)]
struct JobBody {
    task: String,
    queue: Option<String>,
    payload: Option<Value>,
    priority: Option<i64>,
    delay_ms: Option<i64>,
    run_at: Option<String>,
    max_retries: Option<i64>,
    timeout_ms: Option<i64>,
    unique_key: Option<String>,
    serial_key: Option<String>,
}

/// The configuration a job request is checked against.
#[derive(Clone, Copy)]
pub struct Catalog<'a> {
    /// Declared queues and task settings.
    pub settings: &'a Settings,
    /// Task names handled by custom worker binaries.
    pub extra_tasks: &'a [String],
}

impl Catalog<'_> {
    fn knows_task(&self, name: &str) -> bool {
        self.settings.knows_task(name) || self.extra_tasks.iter().any(|t| t == name)
    }
}

/// Reads `value` as a `T`; a value of the wrong type is named by where it
/// is (`priority: invalid type: string "high", expected i64`).
pub fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })
}

/// One job request (the JSON of `POST /v1/jobs`), checked against the
/// configuration. `at` prefixes messages in a batch (`jobs[3]: `).
pub fn job_request(
    catalog: Catalog<'_>,
    tenant: &str,
    value: Value,
    at: &str,
) -> Result<EnqueueRequest, InputError> {
    let invalid = |code, msg: String| InputError::Invalid {
        code,
        message: format!("{at}{msg}"),
    };
    let Value::Object(map) = value else {
        return Err(InputError::Malformed(format!(
            "{at}a job must be a JSON object"
        )));
    };
    if let Some(field) = map.keys().find(|k| !JOB_FIELDS.contains(&k.as_str())) {
        return Err(invalid(
            "invalid_field",
            format!(
                "unknown field `{}`; a job takes {}",
                shown(field),
                JOB_FIELDS.join(", ")
            ),
        ));
    }
    let body: JobBody = typed(Value::Object(map))
        .map_err(|message| InputError::Malformed(format!("{at}{message}")))?;

    if !catalog.knows_task(&body.task) {
        return Err(invalid(
            "unknown_task",
            format!(
                "unknown task `{}`: declare it under [tasks.\"{}\"] in WEIR_CONFIG or use a built-in task",
                shown(&body.task),
                shown(&body.task)
            ),
        ));
    }
    let task = catalog.settings.task(&body.task);
    let queue = body
        .queue
        .or(task.queue)
        .unwrap_or_else(|| "default".to_owned());
    if !catalog.settings.declared_queues.contains(&queue) {
        return Err(invalid(
            "unknown_queue",
            format!(
                "unknown queue `{}`; declared queues: {}",
                shown(&queue),
                catalog.settings.declared_queues.join(", ")
            ),
        ));
    }
    let priority = body.priority.unwrap_or(i64::from(DEFAULT_PRIORITY));
    let priority = u8::try_from(priority)
        .ok()
        .filter(|p| *p <= MAX_PRIORITY)
        .ok_or_else(|| {
            invalid(
                "invalid_field",
                format!("priority must be 0 to 9, got {priority}"),
            )
        })?;
    let now = now_ms();
    let run_at = match (body.delay_ms, body.run_at) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "invalid_field",
                "give delay_ms or run_at, not both".into(),
            ));
        }
        (Some(delay), None) => {
            if !(0..=MAX_DELAY_MS).contains(&delay) {
                return Err(invalid(
                    "invalid_field",
                    format!("delay_ms must be 0 to {MAX_DELAY_MS} (30 days)"),
                ));
            }
            Some(Millis(now.0 + delay))
        }
        (None, Some(text)) => {
            let at_time = DateTime::parse_from_rfc3339(&text)
                .map_err(|e| {
                    invalid(
                        "invalid_field",
                        format!("run_at `{}` is not an RFC 3339 time: {e}", shown(&text)),
                    )
                })?
                .timestamp_millis();
            if at_time - now.0 > MAX_DELAY_MS {
                return Err(invalid(
                    "invalid_field",
                    "run_at is more than 30 days ahead".into(),
                ));
            }
            Some(Millis(at_time))
        }
        (None, None) => None,
    };
    let max_retries = body
        .max_retries
        .unwrap_or(i64::from(task.max_retries.unwrap_or(DEFAULT_MAX_RETRIES)));
    let max_retries = u32::try_from(max_retries)
        .ok()
        .filter(|n| *n <= MAX_RETRIES_LIMIT)
        .ok_or_else(|| {
            invalid(
                "invalid_field",
                format!("max_retries must be 0 to {MAX_RETRIES_LIMIT}, got {max_retries}"),
            )
        })?;
    let timeout_ms = match body.timeout_ms {
        None => None,
        Some(t) if (1..=MAX_TIMEOUT_MS).contains(&t) => u64::try_from(t).ok(),
        Some(t) => {
            return Err(invalid(
                "invalid_field",
                format!("timeout_ms must be 1 to {MAX_TIMEOUT_MS} (24 h), got {t}"),
            ));
        }
    };
    for (name, key) in [
        ("unique_key", &body.unique_key),
        ("serial_key", &body.serial_key),
    ] {
        if let Some(key) = key
            && (key.is_empty()
                || key.len() > MAX_UNIQUE_KEY_LEN
                || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        {
            return Err(invalid(
                "invalid_field",
                format!("{name} must be 1 to {MAX_UNIQUE_KEY_LEN} printable ASCII characters"),
            ));
        }
    }
    Ok(EnqueueRequest {
        id: None,
        tenant: tenant.to_owned(),
        task: body.task,
        queue,
        payload: body.payload.unwrap_or_else(|| Value::Object(Map::new())),
        priority,
        run_at,
        max_retries,
        timeout_ms,
        unique_key: body.unique_key,
        serial_key: body.serial_key,
    })
}
