//! Conversions between SQLite rows and the job model.

use super::from_sqlx;
use crate::broker::{BrokerError, BrokerResult, ClaimedJob, EnqueueRequest, Lease};
use crate::job::{Job, JobId, JobState, Millis};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use std::collections::HashSet;
use std::str::FromStr;

/// The job an enqueue request becomes, with its id and timestamps.
pub(super) fn new_job(r: EnqueueRequest, now: Millis) -> Job {
    let run_at = r.run_at.unwrap_or(now);
    let id = r.id.unwrap_or_default();
    r.into_job(id, now, run_at)
}

/// One element of the JSON array that `enqueue.sql` reads.
pub(super) fn insert_json(job: &Job, seq: i64) -> Value {
    json!({
        "id": job.id.to_string(),
        "tenant": job.tenant,
        "task": job.task,
        "queue": job.queue,
        "state": job.state.as_str(),
        "priority": job.priority,
        "payload": job.payload.to_string(),
        "max_retries": job.max_retries,
        "timeout_ms": job.timeout_ms,
        "unique_key": job.unique_key,
        "run_at": job.run_at.0,
        "seq": seq,
        "serial_key": job.serial_key,
        "workflow_id": job.workflow.as_ref().map(|w| w.id.to_string()),
        "step": job.workflow.as_ref().map(|w| w.step.clone()),
        "needs": job.workflow.as_ref().map(|w| Value::from(w.needs.clone()).to_string()),
    })
}

fn bad(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("corrupt job row: {e}"))
}

fn json_column(row: &SqliteRow, name: &str) -> BrokerResult<Value> {
    let text: Option<String> = row.try_get(name).map_err(bad)?;
    match text {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(&text).map_err(bad),
    }
}

fn id_column(row: &SqliteRow) -> BrokerResult<JobId> {
    let text: String = row.try_get("id").map_err(bad)?;
    JobId::from_str(&text).map_err(bad)
}

fn u32_column(row: &SqliteRow, name: &str) -> BrokerResult<u32> {
    let value: i64 = row.try_get(name).map_err(bad)?;
    u32::try_from(value).map_err(bad)
}

fn timeout_column(row: &SqliteRow) -> BrokerResult<Option<u64>> {
    let value: Option<i64> = row.try_get("timeout_ms").map_err(bad)?;
    value.map(|v| u64::try_from(v).map_err(bad)).transpose()
}

fn priority_column(row: &SqliteRow) -> BrokerResult<u8> {
    let value: i64 = row.try_get("priority").map_err(bad)?;
    u8::try_from(value).map_err(bad)
}

fn time_column(row: &SqliteRow, name: &str) -> BrokerResult<Option<Millis>> {
    let value: Option<i64> = row.try_get(name).map_err(bad)?;
    Ok(value.map(Millis))
}

fn required_time(row: &SqliteRow, name: &str) -> BrokerResult<Millis> {
    time_column(row, name)?.ok_or_else(|| bad(format!("{name} is NULL")))
}

/// A step's place in its workflow, from `workflow_id`, `step` and `needs`.
fn workflow_column(row: &SqliteRow) -> BrokerResult<Option<crate::workflow::JobWorkflow>> {
    let Some(id) = row
        .try_get::<Option<String>, _>("workflow_id")
        .map_err(bad)?
    else {
        return Ok(None);
    };
    let needs: Option<String> = row.try_get("needs").map_err(bad)?;
    Ok(Some(crate::workflow::JobWorkflow {
        id: JobId::from_str(&id).map_err(bad)?,
        step: row
            .try_get::<Option<String>, _>("step")
            .map_err(bad)?
            .unwrap_or_default(),
        needs: match needs {
            Some(text) => serde_json::from_str(&text).map_err(bad)?,
            None => Vec::new(),
        },
    }))
}

/// A full job row (the columns of `JOB_COLUMNS`).
pub(super) fn job(row: &SqliteRow) -> BrokerResult<Job> {
    let state: String = row.try_get("state").map_err(bad)?;
    Ok(Job {
        id: id_column(row)?,
        task: row.try_get("task").map_err(bad)?,
        queue: row.try_get("queue").map_err(bad)?,
        tenant: row.try_get("tenant").map_err(bad)?,
        state: JobState::from_str(&state).map_err(bad)?,
        priority: priority_column(row)?,
        payload: json_column(row, "payload")?,
        attempts: u32_column(row, "attempts")?,
        max_retries: u32_column(row, "max_retries")?,
        result: json_column(row, "result")?,
        error: row.try_get("error").map_err(bad)?,
        progress: json_column(row, "progress")?,
        timeout_ms: timeout_column(row)?,
        unique_key: row.try_get("unique_key").map_err(bad)?,
        serial_key: row.try_get("serial_key").map_err(bad)?,
        workflow: workflow_column(row)?,
        created_at: required_time(row, "created_at")?,
        run_at: required_time(row, "run_at")?,
        started_at: time_column(row, "started_at")?,
        finished_at: time_column(row, "finished_at")?,
        worker: row
            .try_get::<Option<String>, _>("lease_owner")
            .map_err(bad)?
            .filter(|_| state == "running"),
        history: crate::job::parse_history(
            row.try_get::<Option<String>, _>("history")
                .map_err(bad)?
                .as_deref(),
        )
        .map_err(bad)?,
    })
}

/// A row returned by `claim.sql`.
pub(super) fn claimed(row: &SqliteRow) -> BrokerResult<ClaimedJob> {
    let attempts = u32_column(row, "attempts")?;
    let base = u32_column(row, "attempt_base")?;
    let max_retries = u32_column(row, "max_retries")?;
    let used = attempts.saturating_sub(base);
    Ok(ClaimedJob {
        lease: Lease {
            id: id_column(row)?,
            attempt: attempts,
        },
        task: row.try_get("task").map_err(bad)?,
        queue: row.try_get("queue").map_err(bad)?,
        tenant: row.try_get("tenant").map_err(bad)?,
        priority: priority_column(row)?,
        payload: json_column(row, "payload")?,
        max_retries,
        retries_left: (max_retries + 1).saturating_sub(used),
        timeout_ms: timeout_column(row)?,
        waited: row
            .try_get::<Option<i64>, _>("waited_ms")
            .ok()
            .flatten()
            .map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    })
}

pub(super) fn lease_json(leases: impl IntoIterator<Item = Lease>) -> String {
    Value::Array(
        leases
            .into_iter()
            .map(|l| json!({"id": l.id.to_string(), "attempt": l.attempt}))
            .collect(),
    )
    .to_string()
}

/// The leases whose ids the statement did not return: those it did not touch.
pub(super) fn missing(
    requested: impl IntoIterator<Item = Lease>,
    touched: &HashSet<String>,
) -> Vec<Lease> {
    requested
        .into_iter()
        .filter(|l| !touched.contains(&l.id.to_string()))
        .collect()
}

pub(super) fn ids(rows: &[sqlx::sqlite::SqliteRow]) -> BrokerResult<HashSet<String>> {
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(from_sqlx))
        .collect()
}
