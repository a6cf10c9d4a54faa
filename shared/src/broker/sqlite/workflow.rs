//! Workflows on SQLite: a step is a job row with `workflow_id`, `step`,
//! `needs`, `pending` (parents not yet ended) and `on_parent_failure`;
//! `job_edges` holds parent -> child; `workflows` holds the record.
//!
//! [`finish`] is the heart: every terminal transition of a step
//! (completion, cancel, the reaper's dead letter) calls it inside its own
//! transaction, so a parent's end and its children's release are one
//! commit. It walks the DAG level by level (a worklist, not recursion):
//! children whose last parent ended become `queued`; a failed parent
//! cancels a `cancel` child at once, skips a `skip` child once its other
//! parents ended, and leaves a `run` child to run. Cancelled and skipped
//! children are the next level's parents.

use super::{SqliteBroker, enqueue, flow, from_sqlx, serial};
use crate::broker::{BrokerError, BrokerResult, Lease, Scope};
use crate::job::{JobId, JobState, Millis, now_ms};
use crate::workflow::{
    OnParentFailure, ParentOutcome, Release, SKIPPED, Spawn, StepView, Workflow,
    WorkflowListRequest, WorkflowPage, WorkflowRequest, WorkflowState,
};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use std::collections::BTreeSet;
use std::str::FromStr;

/// States of a step that has not ended.
const UNFINISHED: &str = "('waiting', 'scheduled', 'queued', 'running', 'retrying')";

/// Lowers each child's `pending` by its parents among `?1` (ids), notes
/// the first parent that did not end well, and returns the children still
/// waiting, for the policy to act on.
const Q_RELEASE: &str = "\
UPDATE jobs SET pending = jobs.pending - x.n, failed_parent = coalesce(jobs.failed_parent, x.failed_step) \
FROM (SELECT e.child AS child, count(*) AS n, \
             min(CASE WHEN p.state = 'succeeded' OR p.skipped = 1 THEN NULL ELSE p.step END) AS failed_step \
      FROM json_each(?1) AS f \
      JOIN job_edges AS e ON e.parent = f.value \
      JOIN jobs AS p ON p.id = f.value \
      GROUP BY e.child) AS x \
WHERE jobs.id = x.child AND jobs.state = 'waiting' \
RETURNING jobs.id, jobs.queue, jobs.tenant, jobs.pending, jobs.failed_parent, \
          jobs.on_parent_failure, jobs.serial_key, jobs.workflow_id";

/// A child the release touched.
struct Child {
    id: String,
    queue: String,
    tenant: String,
    pending: i64,
    failed_parent: Option<String>,
    policy: OnParentFailure,
    serial_key: Option<String>,
}

fn child(row: &SqliteRow) -> BrokerResult<Child> {
    Ok(Child {
        id: row.try_get("id").map_err(from_sqlx)?,
        queue: row.try_get("queue").map_err(from_sqlx)?,
        tenant: row.try_get("tenant").map_err(from_sqlx)?,
        pending: row.try_get("pending").map_err(from_sqlx)?,
        failed_parent: row.try_get("failed_parent").map_err(from_sqlx)?,
        policy: OnParentFailure::parse_stored(
            row.try_get::<Option<String>, _>("on_parent_failure")
                .map_err(from_sqlx)?
                .as_deref()
                .unwrap_or(""),
        ),
        serial_key: row.try_get("serial_key").map_err(from_sqlx)?,
    })
}

/// Steps among rows (with `id`, `state` and `workflow_id` columns) that
/// just ended: (job id, workflow id).
pub(super) fn ended_steps(rows: &[SqliteRow]) -> Vec<(String, String)> {
    rows.iter()
        .filter_map(|r| {
            let workflow: String = r.try_get::<Option<String>, _>("workflow_id").ok()??;
            let state: String = r.try_get("state").ok()?;
            let ended = state.parse::<JobState>().is_ok_and(JobState::is_terminal);
            Some((r.try_get("id").ok()?, workflow)).filter(|_| ended)
        })
        .collect()
}

/// Applies the ends of `ended` steps (job id, workflow id) to their
/// children, level by level, and settles their workflows. Runs inside the
/// caller's transaction. Returns how many steps became `queued`.
pub(super) async fn finish(
    conn: &mut SqliteConnection,
    ended: Vec<(String, String)>,
    now: Millis,
) -> BrokerResult<usize> {
    if ended.is_empty() {
        return Ok(0);
    }
    let workflows: BTreeSet<String> = ended.iter().map(|(_, w)| w.clone()).collect();
    let level: Vec<String> = ended.into_iter().map(|(id, _)| id).collect();
    cascade(conn, level, Vec::new(), &workflows, now).await
}

/// Waiting steps whose parents have all ended (up to 100): each gets
/// `pending = 0` and its first failed parent, for its policy to act on.
const Q_AUDIT: &str = "\
UPDATE jobs SET pending = 0, failed_parent = ( \
    SELECT min(p.step) FROM job_edges AS e JOIN jobs AS p ON p.id = e.parent \
    WHERE e.child = jobs.id AND NOT (p.state = 'succeeded' OR p.skipped = 1)) \
WHERE id IN (SELECT c.id FROM jobs AS c \
             WHERE c.workflow_id IS NOT NULL AND c.state = 'waiting' \
               AND NOT EXISTS (SELECT 1 FROM job_edges AS e JOIN jobs AS p ON p.id = e.parent \
                               WHERE e.child = c.id \
                                 AND p.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying')) \
             LIMIT 100) \
RETURNING id, queue, tenant, pending, failed_parent, on_parent_failure, serial_key, workflow_id";

/// The safety net of maintenance: a waiting step whose parents all ended
/// is released (or cancelled, or skipped) as its last parent's end would
/// have done. Returns how many it found: 0 unless a release was missed.
pub(super) async fn audit(conn: &mut SqliteConnection, now: Millis) -> BrokerResult<u64> {
    let rows = sqlx::query(Q_AUDIT)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let workflows: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<Option<String>, _>("workflow_id").ok().flatten())
        .collect();
    let found = rows.len() as u64;
    cascade(conn, Vec::new(), rows, &workflows, now).await?;
    Ok(found)
}

/// Applies the policy to released children level by level: `rows` (the
/// children a caller already touched) first, then the children of each
/// level's ended steps, starting from `level`.
async fn cascade(
    conn: &mut SqliteConnection,
    mut level: Vec<String>,
    mut rows: Vec<SqliteRow>,
    workflows: &BTreeSet<String>,
    now: Millis,
) -> BrokerResult<usize> {
    let mut queued = 0;
    loop {
        if rows.is_empty() {
            if level.is_empty() {
                break;
            }
            rows = sqlx::query(Q_RELEASE)
                .bind(Value::from(std::mem::take(&mut level)).to_string())
                .fetch_all(&mut *conn)
                .await
                .map_err(from_sqlx)?;
        }
        let (mut cancel, mut skip, mut ready) = (Vec::new(), Vec::new(), Vec::new());
        for row in std::mem::take(&mut rows) {
            let c = child(&row)?;
            match Release::of(c.failed_parent.as_deref(), c.policy, c.pending) {
                Release::Cancel(why) => {
                    cancel.push(json!([c.id, why]));
                    level.push(c.id);
                }
                Release::Skip => {
                    skip.push(json!([c.id, SKIPPED]));
                    level.push(c.id);
                }
                Release::Queue => ready.push(c),
                Release::Wait => {}
            }
        }
        for (batch, skipped) in [(cancel, false), (skip, true)] {
            if batch.is_empty() {
                continue;
            }
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?1, error = c.value ->> 1, \
                 skipped = ?3 FROM json_each(?2) AS c \
                 WHERE jobs.id = c.value ->> 0 AND jobs.state = 'waiting'",
            )
            .bind(now.0)
            .bind(Value::from(batch).to_string())
            .bind(skipped)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        }
        queued += ready.len();
        make_ready(conn, ready).await?;
    }
    settle(conn, workflows, now).await?;
    Ok(queued)
}

/// Queues released steps: each takes its fair-share place, and those with
/// a serial key join their lane (parked behind its unfinished members).
async fn make_ready(conn: &mut SqliteConnection, ready: Vec<Child>) -> BrokerResult<()> {
    if ready.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(String, String)> = ready
        .iter()
        .map(|c| (c.queue.clone(), c.tenant.clone()))
        .collect();
    let seqs = flow::assign_seqs(conn, &pairs).await?;
    let rows: Vec<Value> = ready
        .iter()
        .zip(seqs)
        .map(|(c, seq)| json!([c.id, seq]))
        .collect();
    sqlx::query(
        "UPDATE jobs SET state = 'queued', seq = c.value ->> 1, error = NULL \
         FROM json_each(?1) AS c WHERE jobs.id = c.value ->> 0",
    )
    .bind(Value::from(rows).to_string())
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let members: Vec<(String, serial::Lane)> = ready
        .into_iter()
        .filter_map(|c| Some((c.id, (c.tenant, c.serial_key?))))
        .collect();
    serial::join(conn, &members).await
}

/// Records the end of each of `workflows` whose steps have all ended:
/// `finished_at` and the derived state.
async fn settle(
    conn: &mut SqliteConnection,
    workflows: &BTreeSet<String>,
    now: Millis,
) -> BrokerResult<()> {
    if workflows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE workflows SET finished_at = ?1, state = CASE \
           WHEN cancel_requested = 1 THEN 'cancelled' \
           WHEN EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = workflows.id \
                        AND j.state = 'failed') THEN 'failed' \
           WHEN EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = workflows.id \
                        AND j.state = 'cancelled' AND j.skipped = 0) THEN 'cancelled' \
           ELSE 'succeeded' END \
         WHERE id IN (SELECT value FROM json_each(?2)) AND finished_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = workflows.id \
                           AND j.state IN {UNFINISHED})"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now.0)
        .bind(serde_json::to_string(workflows).unwrap_or_default())
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Deletes up to `limit` workflows that ended in `state` before `before`,
/// with their steps and edges: a workflow's steps are kept while it runs,
/// whatever their own age, because its children read their results.
pub(super) async fn retire(
    conn: &mut SqliteConnection,
    state: &str,
    before: i64,
    limit: i64,
) -> BrokerResult<()> {
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM workflows WHERE finished_at < ?2 AND state = ?1 LIMIT ?3",
    )
    .bind(state)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    if old.is_empty() {
        return Ok(());
    }
    let old = Value::from(old).to_string();
    for sql in [
        "DELETE FROM job_edges WHERE child IN (SELECT j.id FROM jobs AS j \
         WHERE j.workflow_id IN (SELECT value FROM json_each(?1)))",
        "DELETE FROM jobs WHERE workflow_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM workflows WHERE id IN (SELECT value FROM json_each(?1))",
    ] {
        sqlx::query(sql)
            .bind(&old)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    Ok(())
}

/// Reads a workflow's record and steps with `conn`.
async fn load<'c, E>(executor: E, scope: &Scope, id: &str) -> BrokerResult<Workflow>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite> + Copy,
{
    let record = sqlx::query(
        "SELECT id, tenant, name, state, created_at, finished_at FROM workflows \
         WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
    )
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(executor)
    .await
    .map_err(from_sqlx)?
    .ok_or(BrokerError::WorkflowNotFound)?;
    let steps = sqlx::query(
        "SELECT id, step, state, needs, on_parent_failure, skipped, error FROM jobs \
         WHERE workflow_id = ?1 ORDER BY step_no",
    )
    .bind(id)
    .fetch_all(executor)
    .await
    .map_err(from_sqlx)?;
    workflow(&record, &steps)
}

fn parse<T: FromStr>(text: &str) -> BrokerResult<T>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>()
        .map_err(|e| BrokerError::internal(format!("corrupt workflow row: {e}")))
}

fn workflow(record: &SqliteRow, steps: &[SqliteRow]) -> BrokerResult<Workflow> {
    let steps = steps
        .iter()
        .map(|r| {
            let needs: Option<String> = r.try_get("needs").map_err(from_sqlx)?;
            Ok(StepView {
                id: r
                    .try_get::<Option<String>, _>("step")
                    .map_err(from_sqlx)?
                    .unwrap_or_default(),
                job_id: parse(&r.try_get::<String, _>("id").map_err(from_sqlx)?)?,
                state: parse(&r.try_get::<String, _>("state").map_err(from_sqlx)?)?,
                needs: match needs {
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|e| BrokerError::internal(format!("corrupt needs: {e}")))?,
                    None => Vec::new(),
                },
                on_parent_failure: OnParentFailure::parse_stored(
                    r.try_get::<Option<String>, _>("on_parent_failure")
                        .map_err(from_sqlx)?
                        .as_deref()
                        .unwrap_or(""),
                ),
                skipped: r.try_get::<i64, _>("skipped").map_err(from_sqlx)? != 0,
                error: r.try_get("error").map_err(from_sqlx)?,
            })
        })
        .collect::<BrokerResult<Vec<_>>>()?;
    Ok(Workflow {
        id: parse(&record.try_get::<String, _>("id").map_err(from_sqlx)?)?,
        tenant: record.try_get("tenant").map_err(from_sqlx)?,
        name: record.try_get("name").map_err(from_sqlx)?,
        state: parse(&record.try_get::<String, _>("state").map_err(from_sqlx)?)?,
        steps,
        created_at: Millis(record.try_get("created_at").map_err(from_sqlx)?),
        finished_at: record
            .try_get::<Option<i64>, _>("finished_at")
            .map_err(from_sqlx)?
            .map(Millis),
    })
}

impl SqliteBroker {
    pub(super) async fn submit_wf(&self, request: WorkflowRequest) -> BrokerResult<Workflow> {
        let now = now_ms();
        let plan = request
            .plan(now)
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let id = plan.id;
        let edges: Vec<Value> = plan
            .edges
            .iter()
            .map(|(p, c)| json!([p.to_string(), c.to_string()]))
            .collect();
        let (planned, extra): (Vec<_>, Vec<_>) = plan
            .steps
            .into_iter()
            .map(|s| {
                let extra = json!({
                    "step_no": s.no,
                    "pending": s.pending,
                    "on_parent_failure": s.policy.as_str(),
                });
                (s.job, extra)
            })
            .unzip();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workflows (id, tenant, name, state, created_at) \
             VALUES (?1, ?2, ?3, 'running', ?4)",
        )
        .bind(id.to_string())
        .bind(&request.tenant)
        .bind(&request.name)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        sqlx::query(
            "INSERT INTO job_edges (parent, child) \
             SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
        )
        .bind(Value::from(edges).to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        enqueue::insert_with(&mut tx, planned, extra, now).await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.work.notify_waiters();
        load(&self.reader, &Scope::All, &id.to_string()).await
    }

    pub(super) async fn get_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        load(&self.reader, scope, &id.to_string()).await
    }

    pub(super) async fn list_wf(&self, request: WorkflowListRequest) -> BrokerResult<WorkflowPage> {
        let limit = request.limit.clamp(1, 100);
        let upper = request
            .cursor
            .map_or_else(|| "~".to_owned(), |c| c.to_string());
        let records = sqlx::query(
            "SELECT id, tenant, name, state, created_at, finished_at FROM workflows \
             WHERE id < ?1 AND (?2 IS NULL OR tenant = ?2) AND (?3 IS NULL OR state = ?3) \
             ORDER BY id DESC LIMIT ?4",
        )
        .bind(&upper)
        .bind(request.scope.tenant())
        .bind(request.state.map(WorkflowState::as_str))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlx)?;
        let mut data = Vec::with_capacity(records.len());
        for record in records.iter().take(limit) {
            let id: String = record.try_get("id").map_err(from_sqlx)?;
            let steps = sqlx::query(
                "SELECT id, step, state, needs, on_parent_failure, skipped, error FROM jobs \
                 WHERE workflow_id = ?1 ORDER BY step_no",
            )
            .bind(&id)
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
            data.push(workflow(record, &steps)?);
        }
        let has_more = records.len() > limit;
        Ok(WorkflowPage {
            next_cursor: if has_more {
                data.last().map(|w| w.id)
            } else {
                None
            },
            has_more,
            data,
        })
    }

    /// The workflow's state in the write transaction, or why it cannot be touched.
    async fn state_in(
        conn: &mut SqliteConnection,
        scope: &Scope,
        id: &str,
    ) -> BrokerResult<WorkflowState> {
        let state: String = sqlx::query_scalar(
            "SELECT state FROM workflows WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
        )
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .ok_or(BrokerError::WorkflowNotFound)?;
        parse(&state)
    }

    pub(super) async fn cancel_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let now = now_ms();
        let key = id.to_string();
        let mut tx = self.begin().await?;
        let refusal = match Self::state_in(&mut tx, scope, &key).await {
            Ok(WorkflowState::Running) => None,
            Ok(state) => Some(crate::workflow::nothing_to_cancel(state)),
            Err(e) => Some(e),
        };
        if let Some(refusal) = refusal {
            // Explicitly: a dropped transaction's rollback waits for the
            // connection's next use, and the file lock with it.
            let _ = tx.rollback().await;
            return Err(refusal);
        }
        sqlx::query("UPDATE workflows SET cancel_requested = 1 WHERE id = ?1")
            .bind(&key)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let sql = format!(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?1, error = 'workflow cancelled', \
               history = CASE WHEN state = 'running' THEN json_insert( \
                 CASE WHEN json_array_length(COALESCE(history, '[]')) >= 10 \
                      THEN json_remove(history, '$[0]') ELSE COALESCE(history, '[]') END, \
                 '$[#]', json_object('a', attempts, 'w', COALESCE(lease_owner, ''), 's', started_at, \
                                     'f', ?1, 'o', 'cancelled', 'e', NULL)) ELSE history END, \
               lease_owner = NULL, lease_expires_at = NULL \
             WHERE workflow_id = ?2 AND state IN {UNFINISHED} \
             RETURNING tenant, serial_key"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now.0)
            .bind(&key)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        serial::advance(&mut tx, serial::lanes_of(&rows)).await?;
        settle(&mut tx, &BTreeSet::from([key.clone()]), now).await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.work.notify_waiters();
        load(&self.reader, scope, &key).await
    }

    pub(super) async fn retry_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let key = id.to_string();
        let mut tx = self.begin().await?;
        let refusal = match Self::state_in(&mut tx, scope, &key).await {
            Ok(WorkflowState::Running) => Some(crate::workflow::still_running()),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if let Some(refusal) = refusal {
            let _ = tx.rollback().await;
            return Err(refusal);
        }
        // R: the failed and cancelled steps, each with its parents in R.
        let again: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT j.id, j.queue, (SELECT count(*) FROM job_edges AS e JOIN jobs AS p ON p.id = e.parent \
                     WHERE e.child = j.id AND p.state IN ('failed', 'cancelled')) \
             FROM jobs AS j WHERE j.workflow_id = ?1 AND j.state IN ('failed', 'cancelled')",
        )
        .bind(&key)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        if again.is_empty() {
            let _ = tx.rollback().await;
            return Err(crate::workflow::nothing_to_retry());
        }
        let rows: Vec<Value> = again.iter().map(|(id, _, n)| json!([id, n])).collect();
        let waiting = sqlx::query(
            "UPDATE jobs SET state = 'waiting', pending = c.value ->> 1, attempt_base = attempts, \
               result = NULL, error = NULL, progress = NULL, failed_parent = NULL, skipped = 0, \
               started_at = NULL, finished_at = NULL, serial_seq = 9223372036854775807, serial_wait = serial_key IS NOT NULL \
             FROM json_each(?1) AS c WHERE jobs.id = c.value ->> 0 \
             RETURNING jobs.id, jobs.queue, jobs.tenant, jobs.pending, jobs.failed_parent, \
                       jobs.on_parent_failure, jobs.serial_key",
        )
        .bind(Value::from(rows).to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let ready = waiting
            .iter()
            .map(child)
            .filter(|c| c.as_ref().map_or(true, |c| c.pending == 0))
            .collect::<BrokerResult<Vec<_>>>()?;
        make_ready(&mut tx, ready).await?;
        sqlx::query(
            "UPDATE workflows SET state = 'running', cancel_requested = 0, finished_at = NULL \
             WHERE id = ?1",
        )
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.work.notify_waiters();
        load(&self.reader, scope, &key).await
    }

    pub(super) async fn spawn_wf(&self, lease: Lease, spawn: Spawn) -> BrokerResult<Vec<String>> {
        let now = now_ms();
        let id = lease.id.to_string();
        let mut tx = self.begin().await?;
        let spawner: Option<(Option<String>, Option<String>, String)> = sqlx::query_as(
            "SELECT workflow_id, step, tenant FROM jobs \
             WHERE id = ?1 AND attempts = ?2 AND state = 'running'",
        )
        .bind(&id)
        .bind(lease.attempt)
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let refusal = match &spawner {
            None => Some(self.conflict_or_missing(&Scope::All, lease.id).await),
            Some((None, _, _)) => Some(BrokerError::Invalid(
                "only a workflow step can add steps to its workflow".into(),
            )),
            Some(_) => None,
        };
        let (Some((Some(workflow), Some(step), tenant)), None) = (spawner, refusal.clone()) else {
            let _ = tx.rollback().await;
            return Err(refusal.unwrap_or_else(|| BrokerError::internal("a spawner with no step")));
        };
        let spawn = Spawn {
            spawner: step,
            ..spawn
        };
        let known: Vec<String> = sqlx::query_scalar("SELECT step FROM jobs WHERE workflow_id = ?1")
            .bind(&workflow)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        let known_set: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
        let plan = spawn.plan(
            parse(&workflow)?,
            &tenant,
            known.len(),
            |s| known_set.contains(s),
            now,
        );
        let plan = match plan {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                let _ = tx.rollback().await;
                return Ok(spawn.steps.iter().map(|s| spawn.full_id(&s.id)).collect());
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(BrokerError::Invalid(e.to_string()));
            }
        };
        let first_no: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(step_no), -1) + 1 FROM jobs WHERE workflow_id = ?1",
        )
        .bind(&workflow)
        .fetch_one(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let new_ids: Vec<String> = plan.steps.iter().map(|s| s.job.id.to_string()).collect();
        let full: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|s| s.job.workflow.as_ref().map(|w| w.step.clone()))
            .collect();
        // The spawner's dependents that still wait: each now waits for the
        // new steps too.
        let dependents: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT c.id, c.needs FROM job_edges AS e JOIN jobs AS c ON c.id = e.child \
             WHERE e.parent = ?1 AND c.state = 'waiting'",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let mut edges: Vec<Value> = plan
            .edges
            .iter()
            .map(|(p, c)| json!([p.to_string(), c.to_string()]))
            .collect();
        edges.extend(new_ids.iter().map(|c| json!([id, c])));
        let mut grown = Vec::with_capacity(dependents.len());
        for (dependent, needs) in &dependents {
            edges.extend(new_ids.iter().map(|p| json!([p, dependent])));
            let mut needs: Vec<String> = needs
                .as_deref()
                .and_then(|n| serde_json::from_str(n).ok())
                .unwrap_or_default();
            needs.extend(full.iter().cloned());
            grown.push(json!([dependent, Value::from(needs).to_string()]));
        }
        let (planned, extra): (Vec<_>, Vec<_>) = plan
            .steps
            .into_iter()
            .map(|s| {
                let extra = json!({
                    "step_no": first_no + i64::try_from(s.no).unwrap_or(0),
                    "pending": s.pending,
                    "on_parent_failure": s.policy.as_str(),
                });
                (s.job, extra)
            })
            .unzip();
        enqueue::insert_with(&mut tx, planned, extra, now).await?;
        sqlx::query(
            "INSERT INTO job_edges (parent, child) SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
        )
        .bind(Value::from(edges).to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        sqlx::query(
            "UPDATE jobs SET pending = pending + ?2, needs = d.value ->> 1 \
             FROM json_each(?1) AS d WHERE jobs.id = d.value ->> 0",
        )
        .bind(Value::from(grown).to_string())
        .bind(i64::try_from(new_ids.len()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(plan.ids)
    }

    pub(super) async fn parents_of(&self, lease: Lease) -> BrokerResult<Vec<ParentOutcome>> {
        let id = lease.id.to_string();
        let held: Option<String> = sqlx::query_scalar(
            "SELECT state FROM jobs WHERE id = ?1 AND attempts = ?2 AND state = 'running'",
        )
        .bind(&id)
        .bind(lease.attempt)
        .fetch_optional(&self.reader)
        .await
        .map_err(from_sqlx)?;
        if held.is_none() {
            return Err(self.conflict_or_missing(&Scope::All, lease.id).await);
        }
        let rows = sqlx::query(
            "SELECT p.id, p.step, p.state, p.result, p.error, p.skipped \
             FROM job_edges AS e JOIN jobs AS p ON p.id = e.parent \
             WHERE e.child = ?1 ORDER BY p.step_no",
        )
        .bind(&id)
        .fetch_all(&self.reader)
        .await
        .map_err(from_sqlx)?;
        rows.iter()
            .map(|r| {
                let result: Option<String> = r.try_get("result").map_err(from_sqlx)?;
                Ok(ParentOutcome {
                    step: r
                        .try_get::<Option<String>, _>("step")
                        .map_err(from_sqlx)?
                        .unwrap_or_default(),
                    job_id: parse(&r.try_get::<String, _>("id").map_err(from_sqlx)?)?,
                    state: parse(&r.try_get::<String, _>("state").map_err(from_sqlx)?)?,
                    result: match result {
                        Some(text) => serde_json::from_str(&text)
                            .map_err(|e| BrokerError::internal(format!("corrupt result: {e}")))?,
                        None => Value::Null,
                    },
                    error: r.try_get("error").map_err(from_sqlx)?,
                    skipped: r.try_get::<i64, _>("skipped").map_err(from_sqlx)? != 0,
                })
            })
            .collect()
    }
}
