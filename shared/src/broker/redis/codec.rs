//! Conversions between Redis replies and the job model.

use crate::broker::{BrokerError, BrokerResult, ClaimedJob, EnqueueRequest, Lease, ListRequest};
use crate::job::{Job, JobId, JobState, Millis};
use serde_json::Value;
use std::collections::HashMap;
use std::str::FromStr;

fn bad(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("corrupt job in Redis: {e}"))
}

/// An integer reply.
pub(super) fn int(v: &redis::Value) -> BrokerResult<i64> {
    redis::FromRedisValue::from_redis_value(v.clone()).map_err(bad)
}

/// A string reply.
pub(super) fn string(v: &redis::Value) -> BrokerResult<String> {
    redis::FromRedisValue::from_redis_value(v.clone()).map_err(bad)
}

/// The job a just-enqueued request became (times from Redis).
pub(super) fn new_job(id: JobId, r: EnqueueRequest, now: i64, delay: i64) -> Job {
    r.into_job(id, Millis(now), Millis(now + delay))
}

fn field<'a>(h: &'a HashMap<String, String>, name: &str) -> BrokerResult<&'a str> {
    h.get(name)
        .map(String::as_str)
        .ok_or_else(|| bad(format!("missing {name}")))
}

fn optional<T: FromStr>(h: &HashMap<String, String>, name: &str) -> BrokerResult<Option<T>>
where
    T::Err: std::fmt::Display,
{
    match h.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(bad),
    }
}

fn json(h: &HashMap<String, String>, name: &str) -> BrokerResult<Value> {
    match h.get(name).filter(|v| !v.is_empty()) {
        None => Ok(Value::Null),
        Some(v) => serde_json::from_str(v).map_err(bad),
    }
}

/// A job's fixed attributes as enqueue.lua packs them into its `spec`
/// field, one per line (see `spec` in common.lua).
struct Spec<'a> {
    tenant: &'a str,
    task: &'a str,
    queue: &'a str,
    priority: &'a str,
    max_retries: &'a str,
    timeout_ms: &'a str,
    created_at: &'a str,
    unique_key: &'a str,
}

impl<'a> Spec<'a> {
    fn parse(s: &'a str) -> BrokerResult<Self> {
        let mut f = s.splitn(8, '\n');
        let mut next = || f.next().ok_or_else(|| bad("short spec"));
        Ok(Spec {
            tenant: next()?,
            task: next()?,
            queue: next()?,
            priority: next()?,
            max_retries: next()?,
            timeout_ms: next()?,
            created_at: next()?,
            unique_key: next()?,
        })
    }
}

/// Job `id` from its hash; `None` for an empty hash (expired or never
/// there). Enqueue leaves out what has its default: no `attempts` is 0, no
/// `run_at` is created_at.
pub(super) fn from_hash(id: &str, h: &HashMap<String, String>) -> BrokerResult<Option<Job>> {
    if h.is_empty() {
        return Ok(None);
    }
    let spec = Spec::parse(field(h, "spec")?)?;
    let created_at: i64 = spec.created_at.parse().map_err(bad)?;
    Ok(Some(Job {
        id: id.parse().map_err(bad)?,
        task: spec.task.to_owned(),
        queue: spec.queue.to_owned(),
        tenant: spec.tenant.to_owned(),
        state: JobState::from_str(field(h, "state")?).map_err(bad)?,
        priority: spec.priority.parse().map_err(bad)?,
        payload: json(h, "payload")?,
        attempts: optional(h, "attempts")?.unwrap_or(0),
        max_retries: spec.max_retries.parse().map_err(bad)?,
        result: json(h, "result")?,
        error: h.get("error").filter(|e| !e.is_empty()).cloned(),
        progress: json(h, "progress")?,
        timeout_ms: match spec.timeout_ms {
            "" => None,
            t => Some(t.parse().map_err(bad)?),
        },
        unique_key: Some(spec.unique_key)
            .filter(|k| !k.is_empty())
            .map(str::to_owned),
        serial_key: h.get("sk").or_else(|| h.get("wsk")).cloned(),
        workflow: match h.get("wf") {
            Some(wf) => Some(crate::workflow::JobWorkflow {
                id: wf.parse().map_err(bad)?,
                step: h.get("step").cloned().unwrap_or_default(),
                needs: match h.get("needs") {
                    Some(needs) => serde_json::from_str(needs).map_err(bad)?,
                    None => Vec::new(),
                },
            }),
            None => None,
        },
        created_at: Millis(created_at),
        run_at: Millis(optional(h, "run_at")?.unwrap_or(created_at)),
        started_at: optional::<i64>(h, "started_at")?.map(Millis),
        finished_at: optional::<i64>(h, "finished_at")?.map(Millis),
        worker: h
            .get("owner")
            .filter(|o| !o.is_empty() && h.get("state").is_some_and(|s| s == "running"))
            .cloned(),
        history: history(h)?,
    }))
}

/// A job's history. A first attempt that succeeded is not written out
/// (`complete.lua` keeps the hash small): it is the job's own owner,
/// started_at and finished_at.
fn history(h: &HashMap<String, String>) -> BrokerResult<Vec<crate::job::Attempt>> {
    let mut history =
        crate::job::parse_history(h.get("history").map(String::as_str)).map_err(bad)?;
    let owner = h.get("owner").filter(|o| !o.is_empty());
    if history.is_empty()
        && h.get("state").is_some_and(|s| s == "succeeded")
        && let Some(owner) = owner
    {
        history.push(crate::job::Attempt {
            attempt: optional(h, "attempts")?.unwrap_or(1),
            worker: owner.clone(),
            started_at: optional::<i64>(h, "started_at")?.map(Millis),
            finished_at: Millis(optional(h, "finished_at")?.unwrap_or(0)),
            outcome: "succeeded".into(),
            error: None,
        });
    }
    Ok(history)
}

/// When the job of `spec` was created (Redis's clock, ms).
pub(super) fn created_at_of(spec: &str) -> BrokerResult<i64> {
    Spec::parse(spec)?.created_at.parse().map_err(bad)
}

/// One row of `claim.lua`: id, spec, payload, attempt, base, waited.
pub(super) fn claimed(row: &[redis::Value]) -> BrokerResult<ClaimedJob> {
    let [id, spec, payload, attempt, base, waited] = row else {
        return Err(bad("short claim row"));
    };
    let spec = string(spec)?;
    let spec = Spec::parse(&spec)?;
    let attempt = u32::try_from(int(attempt)?).map_err(bad)?;
    let base: u32 = string(base)?.parse().map_err(bad)?;
    let max_retries: u32 = spec.max_retries.parse().map_err(bad)?;
    let id: JobId = string(id)?.parse().map_err(bad)?;
    // Never delayed: due since it was created (Redis's time then, this host's now).
    let created: i64 = spec.created_at.parse().map_err(bad)?;
    let waited = match string(waited)?.as_str() {
        "" => Some(std::time::Duration::from_millis(
            u64::try_from(crate::job::now_ms().0 - created).unwrap_or(0),
        )),
        ms => ms.parse::<u64>().ok().map(std::time::Duration::from_millis),
    };
    Ok(ClaimedJob {
        lease: Lease { id, attempt },
        queue: spec.queue.to_owned(),
        tenant: spec.tenant.to_owned(),
        task: spec.task.to_owned(),
        priority: spec.priority.parse().map_err(bad)?,
        payload: serde_json::from_str(&string(payload)?).map_err(bad)?,
        max_retries,
        retries_left: (max_retries + 1).saturating_sub(attempt.saturating_sub(base)),
        timeout_ms: match spec.timeout_ms {
            "" => None,
            t => Some(t.parse().map_err(bad)?),
        },
        waited,
    })
}

/// Whether a job passes a listing's filters.
pub(super) fn matches(job: &Job, r: &ListRequest) -> bool {
    r.queue.as_ref().is_none_or(|q| &job.queue == q)
        && r.state.is_none_or(|s| job.state == s)
        && r.task.as_ref().is_none_or(|t| &job.task == t)
}
