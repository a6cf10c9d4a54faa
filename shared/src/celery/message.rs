//! Celery's messages as its Redis transport stores them (kombu protocol
//! v2, JSON serializer), read into what a weir job needs, or refused with
//! the reason. Nothing here touches a network: the ingress takes the raw
//! text from the Celery broker and hands it here.

use crate::job::{JobId, Millis};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::str::FromStr;

/// A message weir can run.
#[derive(Debug, Clone, PartialEq)]
pub struct CeleryTask {
    /// The job id: the task id when it is a UUID, else a UUIDv5 of it.
    pub id: JobId,
    /// The task's name (`headers.task`).
    pub task: String,
    /// Positional arguments.
    pub args: Value,
    /// Keyword arguments.
    pub kwargs: Value,
    /// weir's priority (9 first) from Celery's (0 first on Redis).
    pub priority: u8,
    /// `headers.eta`.
    pub run_at: Option<Millis>,
    /// `headers.expires`.
    pub expires: Option<Millis>,
    /// `headers.timelimit[0]` (hard), in ms.
    pub timeout_ms: Option<u64>,
    /// What handlers and results need: the original id, retries, soft
    /// time limit, root and parent ids, group, origin, ignore_result.
    pub celery: Value,
}

impl CeleryTask {
    /// The job's payload: `{"args", "kwargs", "celery"}`.
    pub fn payload(&self) -> Value {
        json!({"args": self.args, "kwargs": self.kwargs, "celery": self.celery})
    }

    /// The Celery task id (results are written under it).
    pub fn celery_id(&self) -> String {
        self.celery["id"]
            .as_str()
            .map_or_else(|| self.id.to_string(), str::to_owned)
    }

    /// True when the producer asked for no result.
    pub fn ignore_result(&self) -> bool {
        self.celery["ignore_result"].as_bool() == Some(true)
    }
}

/// A message weir cannot run, with the reason and what is known of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The task id when the message names one.
    pub id: Option<String>,
    /// The task name when the message names one.
    pub task: Option<String>,
    /// Why.
    pub reason: String,
}

/// The namespace of job ids made from Celery task ids that are not UUIDs.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7765_6972_2d63_656c_6572_792d_6964_7321);

/// The job id of a Celery task id: the id itself when it is a UUID, else
/// a UUIDv5 of it (the same on every ingress).
pub fn job_id(celery_id: &str) -> JobId {
    JobId::from_str(celery_id)
        .unwrap_or_else(|_| JobId(uuid::Uuid::new_v5(&ID_NAMESPACE, celery_id.as_bytes())))
}

/// weir's priority of a Celery priority on Redis (0, the default, is the
/// most urgent there; 9 is here): 0 -> 5 (weir's default), 9 -> 0.
pub fn priority(celery: i64) -> u8 {
    let p = celery.clamp(0, 9) as f64;
    (5.0 - (p * 5.0 / 9.0).round()) as u8
}

/// An ISO 8601 time as Celery writes it (with an offset, or naive = UTC).
fn time(text: &str) -> Option<Millis> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(Millis(t.timestamp_millis()));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| Millis(t.and_utc().timestamp_millis()))
}

fn rejected(headers: &Value, reason: impl Into<String>) -> Rejected {
    Rejected {
        id: headers["id"].as_str().map(str::to_owned),
        task: headers["task"].as_str().map(str::to_owned),
        reason: reason.into(),
    }
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Reads one message (the JSON text of a list element).
pub fn parse(raw: &str) -> Result<CeleryTask, Rejected> {
    let nothing = Value::Null;
    let message: Value = serde_json::from_str(raw)
        .map_err(|e| rejected(&nothing, format!("the message is not JSON: {e}")))?;
    let headers = &message["headers"];
    let content_type = message["content-type"].as_str().unwrap_or("");
    if content_type != "application/json" {
        return Err(rejected(
            headers,
            format!(
                "serializer `{content_type}` is not JSON: set task_serializer = \"json\" for tasks weir takes"
            ),
        ));
    }
    if headers.get("compression").is_some_and(|c| !c.is_null()) {
        return Err(rejected(
            headers,
            "compressed messages are not taken: send without compression",
        ));
    }
    let Some(task) = headers["task"].as_str() else {
        return Err(rejected(
            headers,
            "protocol 1 message (no `task` header): set task_protocol = 2",
        ));
    };
    let Some(celery_id) = headers["id"].as_str() else {
        return Err(rejected(headers, "the message has no task id"));
    };
    let encoded = message["body"].as_str().unwrap_or("");
    let body = match message["properties"]["body_encoding"].as_str() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| rejected(headers, format!("the body is not base64: {e}")))?,
        _ => encoded.as_bytes().to_vec(),
    };
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| rejected(headers, format!("the body is not JSON: {e}")))?;
    let (args, kwargs, embed) = match body.as_array().map(Vec::as_slice) {
        Some([args, kwargs, embed]) if args.is_array() && kwargs.is_object() => {
            (args.clone(), kwargs.clone(), embed.clone())
        }
        _ => {
            return Err(rejected(
                headers,
                "the body is not [args, kwargs, embed] (protocol 2)",
            ));
        }
    };
    if !empty(&embed["chord"]) {
        return Err(rejected(
            headers,
            "chords are not taken (they need Celery's chord counter)",
        ));
    }
    for part in ["chain", "callbacks", "errbacks"] {
        if !empty(&embed[part]) {
            return Err(rejected(
                headers,
                format!("`{part}` continuations are not taken: link tasks with a weir workflow"),
            ));
        }
    }
    let run_at = match headers["eta"].as_str() {
        None => None,
        Some(t) => {
            Some(time(t).ok_or_else(|| rejected(headers, format!("`eta` {t} is not a time")))?)
        }
    };
    let expires = match headers["expires"].as_str() {
        None => None,
        Some(t) => {
            Some(time(t).ok_or_else(|| rejected(headers, format!("`expires` {t} is not a time")))?)
        }
    };
    let timelimit = headers["timelimit"].as_array();
    let limit = |i: usize| timelimit.and_then(|t| t.get(i)).and_then(Value::as_f64);
    let timeout_ms = limit(0).filter(|s| *s > 0.0).map(|s| (s * 1000.0) as u64);
    let mut celery = Map::new();
    celery.insert("id".into(), json!(celery_id));
    for field in [
        "retries",
        "root_id",
        "parent_id",
        "group",
        "group_index",
        "origin",
        "shadow",
        "ignore_result",
    ] {
        if let Some(v) = headers.get(field).filter(|v| !v.is_null()) {
            celery.insert(field.into(), v.clone());
        }
    }
    if let Some(soft) = limit(1) {
        celery.insert("soft_time_limit".into(), json!(soft));
    }
    if let Some(at) = expires {
        celery.insert("expires".into(), json!(at.0));
    }
    Ok(CeleryTask {
        id: job_id(celery_id),
        task: task.to_owned(),
        args,
        kwargs,
        priority: priority(message["properties"]["priority"].as_i64().unwrap_or(0)),
        run_at,
        expires,
        timeout_ms,
        celery: Value::Object(celery),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from Celery 5.7 on Redis: `countdown=30, expires=600,
    /// priority=7` (design/celery-ingress.md §1.2).
    const RECORDED: &str = r#"{"body": "W1tdLCB7InRvIjogImFAYi5jIn0sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
 "content-encoding": "utf-8", "content-type": "application/json",
 "headers": {"lang": "py", "task": "tasks.mail_invite", "id": "5b93ed13-79b4-478e-8f19-7420cc843d4e",
   "shadow": null, "eta": "2026-11-29T13:06:30.640298+00:00", "expires": "2026-11-29T13:16:00.640298+00:00",
   "group": null, "group_index": null, "retries": 0, "timelimit": [null, null],
   "root_id": "5b93ed13-79b4-478e-8f19-7420cc843d4e", "parent_id": null,
   "argsrepr": "()", "kwargsrepr": "{'to': 'a@b.c'}", "origin": "gen13655@vm",
   "ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}},
 "properties": {"correlation_id": "5b93ed13-79b4-478e-8f19-7420cc843d4e",
   "reply_to": "10474a33-9598-3d79-b7de-62835645c14d", "delivery_mode": 2, "expiration": "600000",
   "delivery_info": {"exchange": "", "routing_key": "mail"}, "priority": 7,
   "body_encoding": "base64", "delivery_tag": "4cfacab1-1d7e-4353-b4a5-206bfac2b83a"}}"#;

    fn with(edit: impl FnOnce(&mut Value)) -> String {
        let mut m: Value = serde_json::from_str(RECORDED).expect("sample");
        edit(&mut m);
        m.to_string()
    }

    fn body(value: Value) -> Value {
        json!(base64::engine::general_purpose::STANDARD.encode(value.to_string()))
    }

    #[test]
    fn a_recorded_message_maps_field_by_field() {
        let t = parse(RECORDED).expect("taken");
        assert_eq!(t.id.to_string(), "5b93ed13-79b4-478e-8f19-7420cc843d4e");
        assert_eq!(t.task, "tasks.mail_invite");
        assert_eq!(t.args, json!([]));
        assert_eq!(t.kwargs, json!({"to": "a@b.c"}));
        assert_eq!(t.priority, 1, "Celery 7 is urgent: weir 1");
        let eta = chrono::DateTime::parse_from_rfc3339("2026-11-29T13:06:30.640+00:00")
            .expect("time")
            .timestamp_millis();
        assert_eq!(t.run_at, Some(Millis(eta)));
        assert_eq!(t.expires, Some(Millis(eta + 570_000)));
        assert_eq!(t.timeout_ms, None);
        assert_eq!(t.celery["retries"], 0);
        assert_eq!(t.celery["origin"], "gen13655@vm");
        assert_eq!(t.celery["root_id"], "5b93ed13-79b4-478e-8f19-7420cc843d4e");
        assert!(t.celery.get("parent_id").is_none());
        assert_eq!(t.payload()["kwargs"]["to"], "a@b.c");
        assert_eq!(t.celery_id(), "5b93ed13-79b4-478e-8f19-7420cc843d4e");
    }

    #[test]
    fn priorities_keep_celery_order_and_land_on_weirs_default() {
        assert_eq!(
            (0..=9).map(priority).collect::<Vec<_>>(),
            vec![5, 4, 4, 3, 3, 2, 2, 1, 1, 0]
        );
    }

    #[test]
    fn ids_that_are_not_uuids_get_a_stable_one() {
        let a = job_id("import-42");
        assert_eq!(a, job_id("import-42"));
        assert_ne!(a, job_id("import-43"));
        let m = with(|m| m["headers"]["id"] = json!("import-42"));
        let t = parse(&m).expect("taken");
        assert_eq!(t.id, a);
        assert_eq!(t.celery_id(), "import-42");
    }

    #[test]
    fn time_limits_and_naive_times() {
        let m = with(|m| {
            m["headers"]["timelimit"] = json!([600, 540]);
            m["headers"]["eta"] = json!("2026-11-29T13:06:30.5");
        });
        let t = parse(&m).expect("taken");
        assert_eq!(t.timeout_ms, Some(600_000));
        assert_eq!(t.celery["soft_time_limit"], 540.0);
        let naive = chrono::DateTime::parse_from_rfc3339("2026-11-29T13:06:30.5+00:00")
            .expect("time")
            .timestamp_millis();
        assert_eq!(t.run_at, Some(Millis(naive)));
    }

    #[test]
    fn what_cannot_run_is_refused_with_the_reason() {
        let cases = [
            (
                with(|m| m["content-type"] = json!("application/x-python-serialize")),
                "not JSON",
            ),
            (
                with(|m| m["headers"]["compression"] = json!("application/x-gzip")),
                "compressed",
            ),
            (
                with(|m| {
                    m["headers"]
                        .as_object_mut()
                        .expect("headers")
                        .remove("task");
                }),
                "protocol 1",
            ),
            (
                with(|m| m["body"] = body(json!([[], {}, {"chord": {"task": "cb"}}]))),
                "chords",
            ),
            (
                with(|m| m["body"] = body(json!([[], {}, {"chain": [{"task": "next"}]}]))),
                "`chain`",
            ),
            (with(|m| m["body"] = json!("%%%")), "not base64"),
            (
                with(|m| m["body"] = body(json!({"a": 1}))),
                "not [args, kwargs, embed]",
            ),
            ("{not json".to_owned(), "not JSON"),
        ];
        for (raw, reason) in cases {
            let r = parse(&raw).expect_err("refused");
            assert!(r.reason.contains(reason), "{reason}: {}", r.reason);
        }
        let r = parse(&with(|m| m["headers"]["compression"] = json!("gzip"))).expect_err("refused");
        assert_eq!(
            r.id.as_deref(),
            Some("5b93ed13-79b4-478e-8f19-7420cc843d4e")
        );
        assert_eq!(r.task.as_deref(), Some("tasks.mail_invite"));
    }
}
