//! Workflows on Redis: submit, cancel and retry are one script each
//! (`lua/wf_*.lua`); a step's end releases its children inside the script
//! that records it (`wf_release` in `common.lua`, called by `complete`,
//! `cancel` and `maintain`). Reads are pipelined hash reads.

use super::{RedisBroker, from_redis};
use crate::broker::{BrokerError, BrokerResult, Lease, Scope};
use crate::job::{JobId, JobState, Millis, duration_ms, now_ms};
use crate::workflow::{
    OnParentFailure, ParentOutcome, StepView, Workflow, WorkflowListRequest, WorkflowPage,
    WorkflowRequest, WorkflowState,
};
use redis::AsyncCommands;
use serde_json::Value;
use std::collections::HashMap;

/// Workflow ids read per round trip while listing.
const LIST_BATCH: isize = 100;

fn corrupt(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::internal(format!("corrupt workflow record: {e}"))
}

/// The 13 arguments per step of `wf_submit.lua` and `wf_spawn.lua`, parents
/// first: job id, step id, place (`base` + its index), queue, task,
/// priority, max_retries, timeout, serial key, payload, needs, policy and
/// the job ids of its parents among `edges`.
fn step_args(
    invocation: &mut redis::ScriptInvocation<'_>,
    steps: &[crate::workflow::PlannedStep],
    edges: &[(JobId, JobId)],
    base: usize,
) {
    let mut parents: HashMap<JobId, Vec<String>> = HashMap::new();
    for (p, c) in edges {
        parents.entry(*c).or_default().push(p.to_string());
    }
    for s in steps {
        let j = &s.job;
        let (step, needs) = j
            .workflow
            .as_ref()
            .map(|w| (w.step.clone(), w.needs.clone()))
            .unwrap_or_default();
        invocation
            .arg(j.id.to_string())
            .arg(step)
            .arg(s.no + base)
            .arg(&j.queue)
            .arg(&j.task)
            .arg(j.priority)
            .arg(j.max_retries)
            .arg(j.timeout_ms.map(|t| t.to_string()).unwrap_or_default())
            .arg(j.serial_key.as_deref().unwrap_or(""))
            .arg(j.payload.to_string())
            .arg(Value::from(needs).to_string())
            .arg(s.policy.as_str())
            .arg(parents.get(&j.id).map(|p| p.join(",")).unwrap_or_default());
    }
}

impl RedisBroker {
    pub(super) async fn submit_wf(&self, request: WorkflowRequest) -> BrokerResult<Workflow> {
        let plan = request
            .plan(now_ms())
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let mut invocation = self.scripts.wf_submit.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(plan.id.to_string())
            .arg(&request.tenant)
            .arg(&request.name)
            .arg(plan.steps.len());
        step_args(&mut invocation, &plan.steps, &plan.edges, 1);
        let mut conn = self.conn.clone();
        let _created: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        self.get_wf(&Scope::All, plan.id).await
    }

    pub(super) async fn get_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let mut conn = self.conn.clone();
        let record: HashMap<String, String> = conn
            .hgetall(self.key(&format!("wf:{id}")))
            .await
            .map_err(from_redis)?;
        let tenant = record.get("tenant").ok_or(BrokerError::WorkflowNotFound)?;
        if scope.tenant().is_some_and(|t| t != tenant) {
            return Err(BrokerError::WorkflowNotFound);
        }
        let ids: Vec<&str> = record
            .get("steps")
            .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        let mut pipe = redis::pipe();
        for job in &ids {
            pipe.cmd("HMGET")
                .arg(self.job_key(job))
                .arg(&["step", "state", "needs", "opf", "skip", "error"]);
        }
        let fields: Vec<Vec<Option<String>>> =
            pipe.query_async(&mut conn).await.map_err(from_redis)?;
        let mut steps = Vec::with_capacity(ids.len());
        for (job, f) in ids.iter().zip(fields) {
            let get = |i: usize| f.get(i).cloned().flatten();
            let Some(state) = get(1) else {
                // Expired with its workflow between the two reads.
                return Err(BrokerError::WorkflowNotFound);
            };
            steps.push(StepView {
                id: get(0).unwrap_or_default(),
                job_id: job.parse().map_err(corrupt)?,
                state: state.parse().map_err(corrupt)?,
                needs: match get(2) {
                    Some(n) => serde_json::from_str(&n).map_err(corrupt)?,
                    None => Vec::new(),
                },
                on_parent_failure: OnParentFailure::parse_stored(&get(3).unwrap_or_default()),
                skipped: get(4).is_some_and(|s| s == "1"),
                error: get(5).filter(|e| !e.is_empty()),
            });
        }
        let number = |name: &str| -> BrokerResult<Option<Millis>> {
            record
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<i64>().map(Millis).map_err(corrupt))
                .transpose()
        };
        Ok(Workflow {
            id,
            tenant: tenant.clone(),
            name: record.get("name").cloned().unwrap_or_default(),
            state: record
                .get("state")
                .map(|s| s.parse::<WorkflowState>())
                .transpose()
                .map_err(corrupt)?
                .unwrap_or(WorkflowState::Running),
            steps,
            created_at: number("created_at")?.unwrap_or(Millis(0)),
            finished_at: number("finished_at")?,
        })
    }

    pub(super) async fn list_wf(&self, request: WorkflowListRequest) -> BrokerResult<WorkflowPage> {
        let mut conn = self.conn.clone();
        let limit = request.limit.clamp(1, 100);
        let tenants: Vec<String> = match request.scope.tenant() {
            Some(t) => vec![t.to_owned()],
            None => conn
                .smembers(self.key("tenants"))
                .await
                .map_err(from_redis)?,
        };
        if tenants.is_empty() {
            return Ok(WorkflowPage {
                data: Vec::new(),
                next_cursor: None,
                has_more: false,
            });
        }
        let mut upper = match request.cursor {
            Some(c) => format!("({c}"),
            None => "+".to_owned(),
        };
        let mut data = Vec::new();
        let mut has_more = false;
        // Newest first across the tenants' indexes, a batch at a time;
        // entries whose record expired are dropped from the index.
        'scan: loop {
            let mut pipe = redis::pipe();
            for t in &tenants {
                pipe.cmd("ZREVRANGEBYLEX")
                    .arg(self.key(&format!("wfs:t:{t}")))
                    .arg(&upper)
                    .arg("-")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(LIST_BATCH);
            }
            let pages: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(from_redis)?;
            let mut ids: Vec<(String, usize)> = pages
                .into_iter()
                .enumerate()
                .flat_map(|(i, page)| page.into_iter().map(move |id| (id, i)))
                .collect();
            if ids.is_empty() {
                break;
            }
            ids.sort_by(|a, b| b.0.cmp(&a.0));
            ids.truncate(LIST_BATCH as usize);
            for (id, tenant) in &ids {
                upper = format!("({id}");
                let parsed: JobId = id.parse().map_err(corrupt)?;
                match self.get_wf(&Scope::All, parsed).await {
                    Ok(w) => {
                        if request.state.is_none_or(|s| s == w.state) {
                            if data.len() == limit {
                                has_more = true;
                                break 'scan;
                            }
                            data.push(w);
                        }
                    }
                    Err(BrokerError::WorkflowNotFound) => {
                        let _: () = conn
                            .zrem(self.key(&format!("wfs:t:{}", tenants[*tenant])), id)
                            .await
                            .map_err(from_redis)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
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

    pub(super) async fn cancel_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let mut conn = self.conn.clone();
        let answer: String = self
            .scripts
            .wf_cancel
            .arg(&*self.prefix)
            .arg(id.to_string())
            .arg(scope.tenant().unwrap_or(""))
            .arg(duration_ms(self.retention.failed))
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        match answer.as_str() {
            "ok" => self.get_wf(scope, id).await,
            "missing" => Err(BrokerError::WorkflowNotFound),
            state => Err(crate::workflow::nothing_to_cancel(state)),
        }
    }

    pub(super) async fn retry_wf(&self, scope: &Scope, id: JobId) -> BrokerResult<Workflow> {
        let mut conn = self.conn.clone();
        let answer: String = self
            .scripts
            .wf_retry
            .arg(&*self.prefix)
            .arg(id.to_string())
            .arg(scope.tenant().unwrap_or(""))
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        match answer.as_str() {
            "ok" => self.get_wf(scope, id).await,
            "missing" => Err(BrokerError::WorkflowNotFound),
            "running" => Err(crate::workflow::still_running()),
            _ => Err(crate::workflow::nothing_to_retry()),
        }
    }

    pub(super) async fn spawn_wf(
        &self,
        lease: Lease,
        spawn: crate::workflow::Spawn,
    ) -> BrokerResult<Vec<String>> {
        // The spawner's step id is read by the script; the plan is made
        // with a stand-in and renamed there (a spawn's own rules need no
        // stored state; the script checks the rest).
        let mut conn = self.conn.clone();
        let step: Option<String> = conn
            .hget(self.job_key(&lease.id.to_string()), "step")
            .await
            .map_err(from_redis)?;
        let spawn = crate::workflow::Spawn {
            spawner: step.unwrap_or_default(),
            ..spawn
        };
        let plan = spawn
            .plan(lease.id, "", 0, |_| false, now_ms())
            .map_err(|e| BrokerError::Invalid(e.to_string()))?
            .ok_or_else(|| BrokerError::internal("an empty spawn"))?;
        let mut invocation = self.scripts.wf_spawn.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.attempt)
            .arg(plan.steps.len())
            .arg(crate::workflow::MAX_WORKFLOW_STEPS);
        step_args(&mut invocation, &plan.steps, &plan.edges, 0);
        let answer: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let word = |i: usize| answer.get(i).cloned().unwrap_or_default();
        match word(0).as_str() {
            "ok" | "same" => Ok(plan.ids),
            "plain" => Err(BrokerError::Invalid(
                "only a workflow step can add steps to its workflow".into(),
            )),
            "changed" => Err(BrokerError::Invalid(
                crate::workflow::WorkflowError::SpawnChanged(word(1)).to_string(),
            )),
            "large" => Err(BrokerError::Invalid(
                crate::workflow::WorkflowError::WorkflowTooLarge(word(1).parse().unwrap_or(0))
                    .to_string(),
            )),
            _ => match word(1).as_str() {
                "" => Err(BrokerError::NotFound),
                state => Err(BrokerError::Conflict(state.parse().map_err(corrupt)?)),
            },
        }
    }

    pub(super) async fn parents_of(&self, lease: Lease) -> BrokerResult<Vec<ParentOutcome>> {
        let mut conn = self.conn.clone();
        let f: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.job_key(&lease.id.to_string()))
            .arg(&["state", "attempts", "pids"])
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let get = |i: usize| f.get(i).cloned().flatten();
        let Some(state) = get(0) else {
            return Err(BrokerError::NotFound);
        };
        if state != "running" || get(1) != Some(lease.attempt.to_string()) {
            return Err(BrokerError::Conflict(state.parse().map_err(corrupt)?));
        }
        let pids = get(2).unwrap_or_default();
        let ids: Vec<&str> = pids.split(',').filter(|s| !s.is_empty()).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.job_key(id))
                .arg(&["step", "state", "result", "error", "skip"]);
        }
        let rows: Vec<Vec<Option<String>>> =
            pipe.query_async(&mut conn).await.map_err(from_redis)?;
        ids.iter()
            .zip(rows)
            .map(|(id, r)| {
                let get = |i: usize| r.get(i).cloned().flatten();
                let state: JobState = get(1)
                    .ok_or_else(|| corrupt(format!("parent {id} is gone")))?
                    .parse()
                    .map_err(corrupt)?;
                Ok(ParentOutcome {
                    step: get(0).unwrap_or_default(),
                    job_id: id.parse().map_err(corrupt)?,
                    state,
                    result: match get(2).filter(|_| state == JobState::Succeeded) {
                        Some(text) => serde_json::from_str(&text).map_err(corrupt)?,
                        None => Value::Null,
                    },
                    error: get(3).filter(|e| !e.is_empty()),
                    skipped: get(4).is_some_and(|s| s == "1"),
                })
            })
            .collect()
    }
}
