//! Workflows on Postgres: a step is a job row with `workflow_id`, `step`,
//! `needs`, `pending` and `on_parent_failure`; `job_edges` holds parent ->
//! child; `workflows` holds the record. The same rules as SQLite
//! (`broker/sqlite/workflow.rs`), in the caller's transaction.
//!
//! Locks, so concurrent transactions never deadlock: a release locks the
//! children it touches in id order, and a step's id is always above its
//! parents' (ids are handed out parents first), so a cancel that locks a
//! workflow's steps in id order waits on a parent before it could hold
//! that parent's child. The workflow row is locked last, by [`settle`]:
//! two transactions ending the last two steps of one workflow take turns
//! there, and the second sees the first's commit, so one of them records
//! the end.

use super::codec::storable;
use super::{PostgresBroker, flow, from_sqlx, serial};
use crate::broker::{BrokerError, BrokerResult, Lease, Scope};
use crate::job::{JobId, JobState, Millis, now_ms};
use crate::workflow::{
    OnParentFailure, ParentOutcome, Release, SKIPPED, StepView, Workflow, WorkflowListRequest,
    WorkflowPage, WorkflowRequest, WorkflowState,
};
use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{PgPool, Row};
use std::collections::BTreeSet;
use uuid::Uuid;

/// Lowers each child's `pending` by its parents among `$1`, notes the
/// first parent that did not end well, and returns the children still
/// waiting, locked in id order.
const Q_RELEASE: &str = "\
WITH x AS (
    SELECT e.child, count(*) AS n,
           min(p.step) FILTER (WHERE NOT (p.state = 'succeeded' OR p.skipped)) AS failed_step
    FROM unnest($1::uuid[]) AS f(id)
    JOIN job_edges AS e ON e.parent = f.id
    JOIN jobs AS p ON p.id = f.id
    GROUP BY e.child),
locked AS (
    SELECT j.id FROM jobs AS j WHERE j.id IN (SELECT child FROM x) AND j.state = 'waiting'
    ORDER BY j.id FOR UPDATE)
UPDATE jobs SET pending = jobs.pending - x.n,
                failed_parent = coalesce(jobs.failed_parent, x.failed_step)
FROM x, locked
WHERE jobs.id = x.child AND jobs.id = locked.id AND jobs.state = 'waiting'
RETURNING jobs.id, jobs.queue, jobs.tenant, jobs.pending, jobs.failed_parent,
          jobs.on_parent_failure, jobs.serial_key";

const STEP_COLUMNS: &str =
    "id, step, state, needs::text AS needs, on_parent_failure, skipped, error";

/// States of a step that has not ended.
const UNFINISHED: &str = "('waiting', 'scheduled', 'queued', 'running', 'retrying')";

struct Child {
    id: Uuid,
    queue: String,
    tenant: String,
    pending: i32,
    failed_parent: Option<String>,
    policy: OnParentFailure,
    serial_key: Option<String>,
}

fn child(row: &PgRow) -> BrokerResult<Child> {
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

/// Steps among rows (with `id`, `state` and `workflow_id`) that just
/// ended: (job id, workflow id).
pub(super) fn ended_steps(rows: &[PgRow]) -> Vec<(Uuid, Uuid)> {
    rows.iter()
        .filter_map(|r| {
            let workflow: Uuid = r.try_get::<Option<Uuid>, _>("workflow_id").ok()??;
            let state: String = r.try_get("state").ok()?;
            let ended = state.parse::<JobState>().is_ok_and(JobState::is_terminal);
            Some((r.try_get("id").ok()?, workflow)).filter(|_| ended)
        })
        .collect()
}

/// Applies the ends of `ended` steps (job id, workflow id) to their
/// children, level by level, and settles their workflows, inside the
/// caller's transaction. Returns how many steps became `queued`.
pub(super) async fn finish(
    conn: &mut PgConnection,
    ended: Vec<(Uuid, Uuid)>,
) -> BrokerResult<usize> {
    if ended.is_empty() {
        return Ok(0);
    }
    // A workflow's rows arrive in bursts (a submit adds up to 1,000 at
    // once), faster than autovacuum's statistics follow: a generic plan
    // cached while the tables were small would keep scanning them whole.
    // Plans made for the values at hand read the tables' current size.
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let workflows: BTreeSet<Uuid> = ended.iter().map(|(_, w)| *w).collect();
    let level: Vec<Uuid> = ended.into_iter().map(|(id, _)| id).collect();
    cascade(conn, level, Vec::new(), &workflows).await
}

/// Waiting steps whose parents have all ended (up to 100, skipping rows
/// another node holds): each gets `pending = 0` and its first failed
/// parent, for its policy to act on.
const Q_AUDIT: &str = "\
WITH c AS (
    SELECT c.id FROM jobs AS c
    WHERE c.state = 'waiting' AND c.workflow_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM job_edges AS e JOIN jobs AS p ON p.id = e.parent
                      WHERE e.child = c.id
                        AND p.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying'))
    ORDER BY c.id LIMIT 100 FOR UPDATE SKIP LOCKED)
UPDATE jobs SET pending = 0, failed_parent = (
    SELECT min(p.step) FROM job_edges AS e JOIN jobs AS p ON p.id = e.parent
    WHERE e.child = jobs.id AND NOT (p.state = 'succeeded' OR p.skipped))
FROM c WHERE jobs.id = c.id
RETURNING jobs.id, jobs.queue, jobs.tenant, jobs.pending, jobs.failed_parent,
          jobs.on_parent_failure, jobs.serial_key, jobs.workflow_id";

/// The safety net of maintenance: a waiting step whose parents all ended
/// is released (or cancelled, or skipped) as its last parent's end would
/// have done. Returns how many it found: 0 unless a release was missed.
pub(super) async fn audit(conn: &mut PgConnection) -> BrokerResult<u64> {
    let rows = sqlx::query(Q_AUDIT)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let workflows: BTreeSet<Uuid> = rows
        .iter()
        .filter_map(|r| r.try_get::<Option<Uuid>, _>("workflow_id").ok().flatten())
        .collect();
    let found = rows.len() as u64;
    cascade(conn, Vec::new(), rows, &workflows).await?;
    Ok(found)
}

/// Applies the policy to released children level by level: `rows` (the
/// children a caller already touched) first, then the children of each
/// level's ended steps, starting from `level`.
async fn cascade(
    conn: &mut PgConnection,
    mut level: Vec<Uuid>,
    mut rows: Vec<PgRow>,
    workflows: &BTreeSet<Uuid>,
) -> BrokerResult<usize> {
    let mut queued = 0;
    loop {
        if rows.is_empty() {
            if level.is_empty() {
                break;
            }
            rows = sqlx::query(Q_RELEASE)
                .bind(std::mem::take(&mut level))
                .fetch_all(&mut *conn)
                .await
                .map_err(from_sqlx)?;
        }
        let (mut cancel, mut why, mut skip, mut ready) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in std::mem::take(&mut rows) {
            let c = child(&row)?;
            match Release::of(c.failed_parent.as_deref(), c.policy, i64::from(c.pending)) {
                Release::Cancel(error) => {
                    cancel.push(c.id);
                    why.push(storable(&error));
                    level.push(c.id);
                }
                Release::Skip => {
                    skip.push(c.id);
                    level.push(c.id);
                }
                Release::Queue => ready.push(c),
                Release::Wait => {}
            }
        }
        let skip_why = vec![SKIPPED.to_owned(); skip.len()];
        for (ids, errors, skipped) in [(cancel, why, false), (skip, skip_why, true)] {
            if ids.is_empty() {
                continue;
            }
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', finished_at = now_ms(), error = c.error, \
                 skipped = $3 FROM unnest($1::uuid[], $2::text[]) AS c(id, error) \
                 WHERE jobs.id = c.id AND jobs.state = 'waiting'",
            )
            .bind(ids)
            .bind(errors)
            .bind(skipped)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        }
        queued += ready.len();
        make_ready(conn, ready).await?;
    }
    settle(conn, workflows).await?;
    Ok(queued)
}

/// Queues released steps with a fair-share place each; those with a
/// serial key join their lane.
async fn make_ready(conn: &mut PgConnection, ready: Vec<Child>) -> BrokerResult<()> {
    if ready.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(String, String)> = ready
        .iter()
        .map(|c| (c.queue.clone(), c.tenant.clone()))
        .collect();
    let seqs = flow::assign_seqs(conn, &pairs).await?;
    let ids: Vec<Uuid> = ready.iter().map(|c| c.id).collect();
    sqlx::query(
        "UPDATE jobs SET state = 'queued', seq = c.seq, run_at = now_ms(), error = NULL \
         FROM unnest($1::uuid[], $2::bigint[]) AS c(id, seq) WHERE jobs.id = c.id",
    )
    .bind(ids)
    .bind(seqs)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let members: Vec<(Uuid, serial::Lane)> = ready
        .into_iter()
        .filter_map(|c| Some((c.id, (c.tenant, c.serial_key?))))
        .collect();
    serial::join(conn, &members).await
}

/// Records the end of each of `workflows` whose steps have all ended. The
/// rows are locked first, in id order; the update that follows is a new
/// statement, so it sees every transaction that held the lock before.
async fn settle(conn: &mut PgConnection, workflows: &BTreeSet<Uuid>) -> BrokerResult<()> {
    if workflows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = workflows.iter().copied().collect();
    sqlx::query("SELECT id FROM workflows WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let sql = format!(
        "UPDATE workflows SET finished_at = now_ms(), state = CASE \
           WHEN cancel_requested THEN 'cancelled' \
           WHEN EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = workflows.id \
                        AND j.state = 'failed') THEN 'failed' \
           WHEN EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = workflows.id \
                        AND j.state = 'cancelled' AND NOT j.skipped) THEN 'cancelled' \
           ELSE 'succeeded' END \
         WHERE id = ANY($1) AND finished_at IS NULL \
           AND NOT EXISTS (SELECT 1 FROM jobs AS j WHERE j.workflow_id = workflows.id \
                           AND j.state IN {UNFINISHED})"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Deletes up to `limit` workflows that ended in `state` more than
/// `age_ms` ago, with their steps and edges.
pub(super) async fn retire(
    pool: &PgPool,
    state: &str,
    age_ms: i64,
    limit: i64,
) -> BrokerResult<()> {
    let mut tx = pool.begin().await.map_err(from_sqlx)?;
    let old: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM workflows WHERE finished_at < now_ms() - $2 AND state = $1 \
         LIMIT $3 FOR UPDATE SKIP LOCKED",
    )
    .bind(state)
    .bind(age_ms)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
    .map_err(from_sqlx)?;
    if old.is_empty() {
        return Ok(());
    }
    for sql in [
        "DELETE FROM job_edges WHERE child IN (SELECT j.id FROM jobs AS j \
         WHERE j.workflow_id = ANY($1))",
        "DELETE FROM jobs WHERE workflow_id = ANY($1)",
        "DELETE FROM workflows WHERE id = ANY($1)",
    ] {
        sqlx::query(sql)
            .bind(&old)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
    }
    tx.commit().await.map_err(from_sqlx)
}

fn corrupt(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("corrupt workflow row: {e}"))
}

fn workflow(record: &PgRow, steps: &[PgRow]) -> BrokerResult<Workflow> {
    let steps = steps
        .iter()
        .map(|r| {
            let needs: Option<String> = r.try_get("needs").map_err(from_sqlx)?;
            let state: String = r.try_get("state").map_err(from_sqlx)?;
            Ok(StepView {
                id: r
                    .try_get::<Option<String>, _>("step")
                    .map_err(from_sqlx)?
                    .unwrap_or_default(),
                job_id: JobId(r.try_get("id").map_err(from_sqlx)?),
                state: state.parse().map_err(corrupt)?,
                needs: match needs {
                    Some(text) => serde_json::from_str(&text).map_err(corrupt)?,
                    None => Vec::new(),
                },
                on_parent_failure: OnParentFailure::parse_stored(
                    r.try_get::<Option<String>, _>("on_parent_failure")
                        .map_err(from_sqlx)?
                        .as_deref()
                        .unwrap_or(""),
                ),
                skipped: r.try_get("skipped").map_err(from_sqlx)?,
                error: r.try_get("error").map_err(from_sqlx)?,
            })
        })
        .collect::<BrokerResult<Vec<_>>>()?;
    let state: String = record.try_get("state").map_err(from_sqlx)?;
    Ok(Workflow {
        id: JobId(record.try_get("id").map_err(from_sqlx)?),
        tenant: record.try_get("tenant").map_err(from_sqlx)?,
        name: record.try_get("name").map_err(from_sqlx)?,
        state: state.parse().map_err(corrupt)?,
        steps,
        created_at: Millis(record.try_get("created_at").map_err(from_sqlx)?),
        finished_at: record
            .try_get::<Option<i64>, _>("finished_at")
            .map_err(from_sqlx)?
            .map(Millis),
    })
}

async fn steps_of(pool: &PgPool, id: Uuid) -> BrokerResult<Vec<PgRow>> {
    let sql = format!("SELECT {STEP_COLUMNS} FROM jobs WHERE workflow_id = $1 ORDER BY step_no");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)
}

impl PostgresBroker {
    async fn load_wf(&self, scope: &Scope, id: Uuid) -> BrokerResult<Workflow> {
        let record = sqlx::query(
            "SELECT id, tenant, name, state, created_at, finished_at FROM workflows \
             WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        )
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(&self.pool)
        .await
        .map_err(from_sqlx)?
        .ok_or(BrokerError::WorkflowNotFound)?;
        workflow(&record, &steps_of(&self.pool, id).await?)
    }

    pub(super) async fn submit_wf(&self, request: WorkflowRequest) -> BrokerResult<Workflow> {
        let plan = request
            .plan(now_ms())
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let n = plan.steps.len();
        let mut cols = StepColumns::with_capacity(n);
        let roots: Vec<(String, String)> = plan
            .steps
            .iter()
            .filter(|s| s.job.state == JobState::Queued)
            .map(|s| (s.job.queue.clone(), s.job.tenant.clone()))
            .collect();
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        sqlx::query(
            "INSERT INTO workflows (id, tenant, name, state, created_at) \
             VALUES ($1, $2, $3, 'running', now_ms())",
        )
        .bind(plan.id.0)
        .bind(storable(&request.tenant))
        .bind(storable(&request.name))
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let mut seqs = flow::assign_seqs(&mut tx, &roots).await?.into_iter();
        for s in &plan.steps {
            let seq = if s.job.state == JobState::Queued {
                seqs.next().unwrap_or(0)
            } else {
                0
            };
            cols.push(s, seq);
        }
        let (parents, children): (Vec<Uuid>, Vec<Uuid>) =
            plan.edges.iter().map(|(p, c)| (p.0, c.0)).unzip();
        cols.insert(plan.id.0, &mut tx).await?;
        sqlx::query(
            "INSERT INTO job_edges (parent, child) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
        )
        .bind(parents)
        .bind(children)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let members: Vec<(Uuid, serial::Lane)> = plan
            .steps
            .iter()
            .filter(|s| s.job.state == JobState::Queued)
            .filter_map(|s| {
                Some((
                    s.job.id.0,
                    (s.job.tenant.clone(), storable(s.job.serial_key.as_deref()?)),
                ))
            })
            .collect();
        serial::join(&mut tx, &members).await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.wake.work_added();
        self.load_wf(&Scope::All, plan.id.0).await
    }

    pub(super) async fn get_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        self.load_wf(scope, id.0).await
    }

    pub(super) async fn list_wf(&self, request: WorkflowListRequest) -> BrokerResult<WorkflowPage> {
        let limit = request.limit.clamp(1, 100);
        let records = sqlx::query(
            "SELECT id, tenant, name, state, created_at, finished_at FROM workflows \
             WHERE ($1::uuid IS NULL OR id < $1) AND ($2::text IS NULL OR tenant = $2) \
               AND ($3::text IS NULL OR state = $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(request.cursor.map(|c| c.0))
        .bind(request.scope.tenant())
        .bind(request.state.map(WorkflowState::as_str))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let mut data = Vec::with_capacity(records.len());
        for record in records.iter().take(limit) {
            let id: Uuid = record.try_get("id").map_err(from_sqlx)?;
            data.push(workflow(record, &steps_of(&self.pool, id).await?)?);
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

    /// The workflow's recorded state, read inside the transaction.
    async fn state_in(
        conn: &mut PgConnection,
        scope: &Scope,
        id: Uuid,
    ) -> BrokerResult<WorkflowState> {
        let state: String = sqlx::query_scalar(
            "SELECT state FROM workflows WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        )
        .bind(id)
        .bind(scope.tenant())
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .ok_or(BrokerError::WorkflowNotFound)?;
        state.parse().map_err(corrupt)
    }

    pub(super) async fn cancel_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let refusal = match Self::state_in(&mut tx, scope, id.0).await {
            Ok(WorkflowState::Running) => None,
            Ok(state) => Some(crate::workflow::nothing_to_cancel(state)),
            Err(e) => Some(e),
        };
        if let Some(refusal) = refusal {
            // Explicitly: a dropped transaction's rollback waits for the
            // connection's next use, and its locks with it.
            let _ = tx.rollback().await;
            return Err(refusal);
        }
        // Steps first, in id order (see the module's note on locks).
        let sql = format!(
            "WITH locked AS (SELECT id FROM jobs WHERE workflow_id = $1 AND state IN {UNFINISHED} \
                             ORDER BY id FOR UPDATE) \
             UPDATE jobs SET state = 'cancelled', finished_at = now_ms(), error = 'workflow cancelled', \
               history = CASE WHEN state = 'running' THEN \
                   (CASE WHEN jsonb_array_length(coalesce(history, '[]')) >= 10 \
                         THEN history - 0 ELSE coalesce(history, '[]') END) \
                   || jsonb_build_array(jsonb_build_object( \
                          'a', attempts, 'w', coalesce(lease_owner, ''), 's', started_at, \
                          'f', now_ms(), 'o', 'cancelled', 'e', NULL)) \
                 ELSE history END, \
               lease_owner = NULL, lease_expires_at = NULL \
             FROM locked WHERE jobs.id = locked.id AND jobs.state IN {UNFINISHED} \
             RETURNING jobs.tenant, jobs.serial_key"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        serial::advance(&mut tx, serial::lanes_of(&rows)).await?;
        sqlx::query("UPDATE workflows SET cancel_requested = true WHERE id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        settle(&mut tx, &BTreeSet::from([id.0])).await?;
        tx.commit().await.map_err(from_sqlx)?;
        self.wake.wake_local();
        self.load_wf(scope, id.0).await
    }

    pub(super) async fn retry_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM workflows WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) \
             FOR UPDATE",
        )
        .bind(id.0)
        .bind(scope.tenant())
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let refusal = match state.map(|s| s.parse::<WorkflowState>()) {
            None => Some(BrokerError::WorkflowNotFound),
            Some(Err(e)) => Some(corrupt(e)),
            Some(Ok(WorkflowState::Running)) => Some(crate::workflow::still_running()),
            Some(Ok(_)) => None,
        };
        if let Some(refusal) = refusal {
            let _ = tx.rollback().await;
            return Err(refusal);
        }
        let again = sqlx::query(
            "WITH r AS (SELECT id FROM jobs WHERE workflow_id = $1 \
                        AND state IN ('failed', 'cancelled') ORDER BY id FOR UPDATE), \
                  n AS (SELECT r.id, (SELECT count(*) FROM job_edges AS e JOIN r AS p ON p.id = e.parent \
                                      WHERE e.child = r.id) AS pending FROM r) \
             UPDATE jobs SET state = 'waiting', pending = n.pending, attempt_base = attempts, \
               result = NULL, error = NULL, progress = NULL, failed_parent = NULL, skipped = false, \
               started_at = NULL, finished_at = NULL, serial_seq = 9223372036854775807, \
               serial_wait = serial_key IS NOT NULL \
             FROM n WHERE jobs.id = n.id \
             RETURNING jobs.id, jobs.queue, jobs.tenant, jobs.pending, jobs.failed_parent, \
                       jobs.on_parent_failure, jobs.serial_key",
        )
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        if again.is_empty() {
            let _ = tx.rollback().await;
            return Err(crate::workflow::nothing_to_retry());
        }
        let ready = again
            .iter()
            .map(child)
            .filter(|c| c.as_ref().map_or(true, |c| c.pending == 0))
            .collect::<BrokerResult<Vec<_>>>()?;
        make_ready(&mut tx, ready).await?;
        sqlx::query(
            "UPDATE workflows SET state = 'running', cancel_requested = false, finished_at = NULL \
             WHERE id = $1",
        )
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        self.wake.work_added();
        self.load_wf(scope, id.0).await
    }

    pub(super) async fn spawn_wf(
        &self,
        lease: Lease,
        spawn: crate::workflow::Spawn,
    ) -> BrokerResult<Vec<String>> {
        let attempt = i32::try_from(lease.attempt).unwrap_or(i32::MAX);
        let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
        let spawner: Option<(Option<Uuid>, Option<String>, String)> = sqlx::query_as(
            "SELECT workflow_id, step, tenant FROM jobs \
             WHERE id = $1 AND attempts = $2 AND state = 'running' FOR UPDATE",
        )
        .bind(lease.id.0)
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let Some((Some(workflow), Some(step), tenant)) = spawner else {
            let _ = tx.rollback().await;
            return Err(match spawner {
                None => self.conflict_or_missing(&Scope::All, lease.id).await,
                Some(_) => BrokerError::Invalid(
                    "only a workflow step can add steps to its workflow".into(),
                ),
            });
        };
        let spawn = crate::workflow::Spawn {
            spawner: step,
            ..spawn
        };
        let known: Vec<(String, i32)> =
            sqlx::query_as("SELECT step, step_no FROM jobs WHERE workflow_id = $1")
                .bind(workflow)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        let names: std::collections::HashSet<&str> =
            known.iter().map(|(s, _)| s.as_str()).collect();
        let plan = match spawn.plan(
            JobId(workflow),
            &tenant,
            known.len(),
            |s| names.contains(s),
            now_ms(),
        ) {
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
        let first_no = known.iter().map(|(_, n)| *n).max().unwrap_or(-1) + 1;
        let new_ids: Vec<Uuid> = plan.steps.iter().map(|s| s.job.id.0).collect();
        let full: Vec<String> = plan
            .steps
            .iter()
            .filter_map(|s| s.job.workflow.as_ref().map(|w| w.step.clone()))
            .collect();
        let dependents: Vec<Uuid> = sqlx::query_scalar(
            "SELECT c.id FROM job_edges AS e JOIN jobs AS c ON c.id = e.child \
             WHERE e.parent = $1 AND c.state = 'waiting' ORDER BY c.id FOR UPDATE OF c",
        )
        .bind(lease.id.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let mut cols = StepColumns::with_capacity(plan.steps.len());
        for s in &plan.steps {
            cols.push(s, 0);
        }
        cols.step_no = plan
            .steps
            .iter()
            .map(|s| first_no + i32::try_from(s.no).unwrap_or(0))
            .collect();
        cols.insert(workflow, &mut tx).await?;
        let (mut parents, mut children): (Vec<Uuid>, Vec<Uuid>) =
            plan.edges.iter().map(|(p, c)| (p.0, c.0)).unzip();
        for new in &new_ids {
            parents.push(lease.id.0);
            children.push(*new);
            for d in &dependents {
                parents.push(*new);
                children.push(*d);
            }
        }
        sqlx::query(
            "INSERT INTO job_edges (parent, child) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
        )
        .bind(parents)
        .bind(children)
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        sqlx::query(
            "UPDATE jobs SET pending = pending + $2, needs = coalesce(needs, '[]'::jsonb) || $3::jsonb \
             WHERE id = ANY($1)",
        )
        .bind(&dependents)
        .bind(i32::try_from(new_ids.len()).unwrap_or(i32::MAX))
        .bind(Value::from(full).to_string())
        .execute(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(plan.ids)
    }

    pub(super) async fn parents_of(&self, lease: Lease) -> BrokerResult<Vec<ParentOutcome>> {
        let attempt = i32::try_from(lease.attempt).unwrap_or(i32::MAX);
        let rows = sqlx::query(
            "SELECT p.id, p.step, p.state, p.result::text AS result, p.error, p.skipped \
             FROM jobs AS c JOIN job_edges AS e ON e.child = c.id JOIN jobs AS p ON p.id = e.parent \
             WHERE c.id = $1 AND c.attempts = $2 AND c.state = 'running' ORDER BY p.step_no",
        )
        .bind(lease.id.0)
        .bind(attempt)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        if rows.is_empty() {
            // A root, or a lease no longer held: tell which.
            let job = self
                .fetch_job(&Scope::All, lease.id)
                .await?
                .ok_or(BrokerError::NotFound)?;
            if job.state != JobState::Running || job.attempts != lease.attempt {
                return Err(BrokerError::Conflict(job.state));
            }
            return Ok(Vec::new());
        }
        rows.iter()
            .map(|r| {
                let result: Option<String> = r.try_get("result").map_err(from_sqlx)?;
                let state: String = r.try_get("state").map_err(from_sqlx)?;
                Ok(ParentOutcome {
                    step: r
                        .try_get::<Option<String>, _>("step")
                        .map_err(from_sqlx)?
                        .unwrap_or_default(),
                    job_id: JobId(r.try_get("id").map_err(from_sqlx)?),
                    state: state.parse().map_err(corrupt)?,
                    result: match result {
                        Some(text) => serde_json::from_str(&text).map_err(corrupt)?,
                        None => Value::Null,
                    },
                    error: r.try_get("error").map_err(from_sqlx)?,
                    skipped: r.try_get("skipped").map_err(from_sqlx)?,
                })
            })
            .collect()
    }
}

/// The columns of a workflow's steps, one array each.
struct StepColumns {
    id: Vec<Uuid>,
    tenant: Vec<String>,
    task: Vec<String>,
    queue: Vec<String>,
    state: Vec<String>,
    priority: Vec<i16>,
    seq: Vec<i64>,
    payload: Vec<String>,
    max_retries: Vec<i32>,
    timeout_ms: Vec<Option<i64>>,
    serial_key: Vec<Option<String>>,
    step: Vec<String>,
    step_no: Vec<i32>,
    needs: Vec<String>,
    pending: Vec<i32>,
    policy: Vec<String>,
}

impl StepColumns {
    fn with_capacity(n: usize) -> Self {
        StepColumns {
            id: Vec::with_capacity(n),
            tenant: Vec::with_capacity(n),
            task: Vec::with_capacity(n),
            queue: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            priority: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            max_retries: Vec::with_capacity(n),
            timeout_ms: Vec::with_capacity(n),
            serial_key: Vec::with_capacity(n),
            step: Vec::with_capacity(n),
            step_no: Vec::with_capacity(n),
            needs: Vec::with_capacity(n),
            pending: Vec::with_capacity(n),
            policy: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, s: &crate::workflow::PlannedStep, seq: i64) {
        let j = &s.job;
        self.id.push(j.id.0);
        self.tenant.push(storable(&j.tenant));
        self.task.push(storable(&j.task));
        self.queue.push(j.queue.clone());
        self.state.push(j.state.as_str().to_owned());
        self.priority.push(i16::from(j.priority));
        self.seq.push(seq);
        self.payload.push(storable(&j.payload.to_string()));
        self.max_retries
            .push(i32::try_from(j.max_retries).unwrap_or(i32::MAX));
        self.timeout_ms
            .push(j.timeout_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)));
        self.serial_key.push(j.serial_key.as_deref().map(storable));
        let needs = j
            .workflow
            .as_ref()
            .map(|w| w.needs.clone())
            .unwrap_or_default();
        self.step.push(
            j.workflow
                .as_ref()
                .map(|w| storable(&w.step))
                .unwrap_or_default(),
        );
        self.step_no.push(i32::try_from(s.no).unwrap_or(i32::MAX));
        self.needs.push(Value::from(needs).to_string());
        self.pending
            .push(i32::try_from(s.pending).unwrap_or(i32::MAX));
        self.policy.push(s.policy.as_str().to_owned());
    }

    async fn insert(self, workflow: Uuid, conn: &mut PgConnection) -> BrokerResult<()> {
        sqlx::query(
            "INSERT INTO jobs (id, tenant, task, queue, state, priority, seq, payload, max_retries, \
                               timeout_ms, created_at, run_at, serial_key, serial_wait, serial_seq, \
                               workflow_id, step, step_no, needs, pending, on_parent_failure) \
             SELECT u.id, u.tenant, u.task, u.queue, u.state, u.priority, u.seq, u.payload::json, \
                    u.max_retries, u.timeout_ms, now_ms(), now_ms(), u.serial_key, \
                    u.serial_key IS NOT NULL, \
                    CASE WHEN u.state = 'waiting' THEN 9223372036854775807 ELSE 0 END, \
                    $16, u.step, u.step_no, u.needs::jsonb, u.pending, u.policy \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::smallint[], \
                         $7::bigint[], $8::text[], $9::int[], $10::bigint[], $11::text[], $12::text[], \
                         $13::int[], $14::text[], $15::int[], $17::text[]) \
                  AS u(id, tenant, task, queue, state, priority, seq, payload, max_retries, \
                       timeout_ms, serial_key, step, step_no, needs, pending, policy)",
        )
        .bind(self.id)
        .bind(self.tenant)
        .bind(self.task)
        .bind(self.queue)
        .bind(self.state)
        .bind(self.priority)
        .bind(self.seq)
        .bind(self.payload)
        .bind(self.max_retries)
        .bind(self.timeout_ms)
        .bind(self.serial_key)
        .bind(self.step)
        .bind(self.step_no)
        .bind(self.needs)
        .bind(self.pending)
        .bind(workflow)
        .bind(self.policy)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }
}
