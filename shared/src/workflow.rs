//! Workflows as submitted: a DAG of steps, each an ordinary job with the
//! ids of the steps it `needs`, checked as a whole before anything is
//! enqueued. Plain data: every broker and the API use the same rules
//! (unique ids, known parents, no cycle, the limits below), and a refusal
//! names the step at fault.

use crate::broker::{EnqueueRequest, Scope};
use crate::job::{Job, JobId, JobState, Millis};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Steps in one workflow at most: one atomic submit and cancel.
pub const MAX_STEPS: usize = 1000;
/// Parents of one step at most: bounds a join's hand-off and fan-in.
pub const MAX_NEEDS: usize = 100;
/// Edges in one workflow at most.
pub const MAX_EDGES: usize = 10_000;
/// The longest step id.
pub const MAX_STEP_ID_LEN: usize = 64;

/// What a step does when a parent ends `failed` or `cancelled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnParentFailure {
    /// It ends `cancelled` with the reason, and the same rule applies to
    /// its children.
    #[default]
    Cancel,
    /// It ends `cancelled` as skipped, and counts as done for its own
    /// children (they run, without its result).
    Skip,
    /// It runs anyway, and sees the failed parent's error.
    Run,
}

impl OnParentFailure {
    /// The name used in JSON and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            OnParentFailure::Cancel => "cancel",
            OnParentFailure::Skip => "skip",
            OnParentFailure::Run => "run",
        }
    }

    /// Reads a stored name; anything unknown is the default.
    pub fn parse_stored(s: &str) -> Self {
        match s {
            "skip" => OnParentFailure::Skip,
            "run" => OnParentFailure::Run,
            _ => OnParentFailure::Cancel,
        }
    }
}

/// The shape of one step: its id and the ids of its parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepShape<'a> {
    /// Unique in the workflow.
    pub id: &'a str,
    /// Parent step ids.
    pub needs: &'a [String],
}

/// Why a workflow cannot be submitted; each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// No steps at all.
    #[error("a workflow needs at least one step")]
    Empty,
    /// Over [`MAX_STEPS`].
    #[error("a workflow has at most {MAX_STEPS} steps, this one has {0}")]
    TooManySteps(usize),
    /// Over [`MAX_EDGES`].
    #[error("a workflow has at most {MAX_EDGES} needs in all, this one has {0}")]
    TooManyEdges(usize),
    /// An id that is empty, too long or holds other characters.
    #[error("step id {0:?} must be 1 to {MAX_STEP_ID_LEN} letters, digits, `_`, `.` or `-`")]
    BadStepId(String),
    /// Two steps with one id.
    #[error("step id `{0}` is used twice")]
    DuplicateStep(String),
    /// A step that needs a step the workflow does not have.
    #[error("step `{step}` needs `{parent}`, which is not a step of this workflow")]
    UnknownParent {
        /// The step.
        step: String,
        /// The missing parent.
        parent: String,
    },
    /// A step that names a parent twice, or itself.
    #[error("step `{step}` needs `{parent}` more than once, or needs itself")]
    RepeatedParent {
        /// The step.
        step: String,
        /// The parent named twice (or the step itself).
        parent: String,
    },
    /// Over [`MAX_NEEDS`] parents.
    #[error("step `{0}` needs more than {MAX_NEEDS} steps")]
    TooManyNeeds(String),
    /// The needs form a cycle through this step.
    #[error("the needs form a cycle through step `{0}`")]
    Cycle(String),
    /// Over [`MAX_SPAWN`] steps in one spawn.
    #[error("a step adds at most {MAX_SPAWN} steps at once, this one adds {0}")]
    TooManySpawned(usize),
    /// A spawn would take the workflow over [`MAX_WORKFLOW_STEPS`].
    #[error(
        "a workflow has at most {MAX_WORKFLOW_STEPS} steps with those it adds; this spawn makes {0}"
    )]
    WorkflowTooLarge(usize),
    /// A rerun of the spawner added some of the ids of its first run but
    /// not all.
    #[error(
        "step `{0}` added steps on an earlier attempt and different ones now: a spawner must add the same ids on every attempt"
    )]
    SpawnChanged(String),
    /// A job field a step cannot have.
    #[error("step `{step}` sets `{field}`, which a workflow step cannot have")]
    StepField {
        /// The step.
        step: String,
        /// The field.
        field: &'static str,
    },
}

impl WorkflowError {
    /// The step at fault, when one is.
    pub fn step(&self) -> Option<&str> {
        match self {
            WorkflowError::BadStepId(s)
            | WorkflowError::DuplicateStep(s)
            | WorkflowError::TooManyNeeds(s)
            | WorkflowError::Cycle(s)
            | WorkflowError::SpawnChanged(s) => Some(s),
            WorkflowError::UnknownParent { step, .. }
            | WorkflowError::RepeatedParent { step, .. }
            | WorkflowError::StepField { step, .. } => Some(step),
            _ => None,
        }
    }
}

fn good_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STEP_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks a workflow's steps as a whole and returns them in an order where
/// every step comes after its parents (Kahn's algorithm): indexes into
/// `steps`.
pub fn validate(steps: &[StepShape<'_>]) -> Result<Vec<usize>, WorkflowError> {
    if steps.is_empty() {
        return Err(WorkflowError::Empty);
    }
    if steps.len() > MAX_STEPS {
        return Err(WorkflowError::TooManySteps(steps.len()));
    }
    let edges: usize = steps.iter().map(|s| s.needs.len()).sum();
    if edges > MAX_EDGES {
        return Err(WorkflowError::TooManyEdges(edges));
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        if !good_id(s.id) {
            return Err(WorkflowError::BadStepId(s.id.to_owned()));
        }
        if index.insert(s.id, i).is_some() {
            return Err(WorkflowError::DuplicateStep(s.id.to_owned()));
        }
    }
    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    for s in steps {
        if s.needs.len() > MAX_NEEDS {
            return Err(WorkflowError::TooManyNeeds(s.id.to_owned()));
        }
        let mut mine = Vec::with_capacity(s.needs.len());
        for parent in s.needs {
            let Some(&p) = index.get(parent.as_str()) else {
                return Err(WorkflowError::UnknownParent {
                    step: s.id.to_owned(),
                    parent: parent.clone(),
                });
            };
            if p == index[s.id] || mine.contains(&p) {
                return Err(WorkflowError::RepeatedParent {
                    step: s.id.to_owned(),
                    parent: parent.clone(),
                });
            }
            mine.push(p);
        }
        parents.push(mine);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    let mut pending: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (child, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(child);
        }
    }
    let mut order: Vec<usize> = (0..steps.len()).filter(|&i| pending[i] == 0).collect();
    let mut next = 0;
    while next < order.len() {
        let done = order[next];
        next += 1;
        for &c in &children[done] {
            pending[c] -= 1;
            if pending[c] == 0 {
                order.push(c);
            }
        }
    }
    if order.len() < steps.len() {
        // Walk up unfinished parents from any step left: the walk must
        // come back to a step it saw, and that step is on a cycle.
        let mut at = (0..steps.len())
            .find(|&i| pending[i] > 0)
            .unwrap_or_default();
        let mut seen = vec![false; steps.len()];
        while !seen[at] {
            seen[at] = true;
            at = parents[at]
                .iter()
                .copied()
                .find(|&p| pending[p] > 0)
                .unwrap_or(at);
        }
        return Err(WorkflowError::Cycle(steps[at].id.to_owned()));
    }
    Ok(order)
}

/// One step of a workflow to submit: an ordinary job plus its place in
/// the DAG.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRequest {
    /// Unique in the workflow.
    pub id: String,
    /// Parent step ids.
    pub needs: Vec<String>,
    /// What the step does when a parent ends `failed` or `cancelled`.
    pub on_parent_failure: OnParentFailure,
    /// The job (its tenant is the workflow's).
    pub job: EnqueueRequest,
}

/// A workflow to submit, in one atomic step.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRequest {
    /// Owner of the workflow and of every step.
    pub tenant: String,
    /// A name for people.
    pub name: String,
    /// The steps, in any order.
    pub steps: Vec<StepRequest>,
}

impl WorkflowRequest {
    /// Checks the steps as a whole; returns them parents first (indexes).
    pub fn validate(&self) -> Result<Vec<usize>, WorkflowError> {
        let shapes: Vec<StepShape<'_>> = self
            .steps
            .iter()
            .map(|s| StepShape {
                id: &s.id,
                needs: &s.needs,
            })
            .collect();
        validate(&shapes)
    }
}

/// One step of a [`Plan`]: the job to store and its DAG columns.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    /// Its index in the submitted list (the order a workflow shows).
    pub no: usize,
    /// The job: `queued` for a root, `waiting` for the rest, with its
    /// `workflow` set.
    pub job: Job,
    /// Parents not yet ended: all of them.
    pub pending: usize,
    /// Its policy.
    pub policy: OnParentFailure,
}

/// A validated workflow as the brokers store it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The workflow's id.
    pub id: JobId,
    /// Its steps, parents before children. Job ids are handed out in this
    /// order, so a parent's id is always below its children's: a backend
    /// that locks rows in id order then never deadlocks a release against
    /// a cancel.
    pub steps: Vec<PlannedStep>,
    /// (parent job, child job).
    pub edges: Vec<(JobId, JobId)>,
}

impl WorkflowRequest {
    /// Validates the workflow and plans its rows at `now`.
    pub fn plan(&self, now: Millis) -> Result<Plan, WorkflowError> {
        let order = self.validate()?;
        for s in &self.steps {
            let field = if s.job.unique_key.is_some() {
                Some("unique_key")
            } else if s.job.run_at.is_some() {
                Some("run_at")
            } else {
                None
            };
            if let Some(field) = field {
                return Err(WorkflowError::StepField {
                    step: s.id.clone(),
                    field,
                });
            }
        }
        let id = JobId::new();
        let mut ids: HashMap<&str, JobId> = HashMap::with_capacity(order.len());
        for &i in &order {
            ids.insert(self.steps[i].id.as_str(), JobId::new());
        }
        let mut edges = Vec::new();
        let mut steps = Vec::with_capacity(order.len());
        for &i in &order {
            let s = &self.steps[i];
            let job_id = ids[s.id.as_str()];
            let mut request = s.job.clone();
            request.tenant.clone_from(&self.tenant);
            let mut job = request.into_job(job_id, now, now);
            if !s.needs.is_empty() {
                job.state = JobState::Waiting;
            }
            job.workflow = Some(JobWorkflow {
                id,
                step: s.id.clone(),
                needs: s.needs.clone(),
            });
            edges.extend(s.needs.iter().map(|p| (ids[p.as_str()], job_id)));
            steps.push(PlannedStep {
                no: i,
                job,
                pending: s.needs.len(),
                policy: s.on_parent_failure,
            });
        }
        Ok(Plan { id, steps, edges })
    }
}

/// Steps one spawn may add.
pub const MAX_SPAWN: usize = 1000;
/// Steps a workflow may reach through spawns.
pub const MAX_WORKFLOW_STEPS: usize = 10_000;

/// Steps a running step adds to its own workflow: each becomes a child of
/// the spawner, and every step that needs the spawner waits for them too.
#[derive(Debug, Clone, PartialEq)]
pub struct Spawn {
    /// The spawner's step id: the added ids are `SPAWNER/ID`.
    pub spawner: String,
    /// The steps; `id` is the suffix, `needs` names other steps of this
    /// spawn (by suffix); the spawner is an implicit parent.
    pub steps: Vec<StepRequest>,
}

/// What a backend stores for a spawn: the new steps (all `waiting` for
/// the spawner) and the edges among them.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnPlan {
    /// Full step ids of the spawn, in the order given.
    pub ids: Vec<String>,
    /// The new steps, parents first; `no` is the index in the spawn.
    pub steps: Vec<PlannedStep>,
    /// (parent job, child job) among the new steps.
    pub edges: Vec<(JobId, JobId)>,
}

impl Spawn {
    /// The full id of a spawned step.
    pub fn full_id(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.spawner)
    }

    /// Validates the spawn (ids, sibling needs, no cycle, at most
    /// [`MAX_SPAWN`] steps) and plans its rows for workflow `workflow` of
    /// `tenant`, where `known` steps exist already: `Ok(None)` when every
    /// step of the spawn exists (a rerun of the spawner that adds the same
    /// ids adds nothing).
    pub fn plan(
        &self,
        workflow: JobId,
        tenant: &str,
        known: usize,
        exists: impl Fn(&str) -> bool,
        now: Millis,
    ) -> Result<Option<SpawnPlan>, WorkflowError> {
        if self.steps.len() > MAX_SPAWN {
            return Err(WorkflowError::TooManySpawned(self.steps.len()));
        }
        let request = WorkflowRequest {
            tenant: tenant.to_owned(),
            name: String::new(),
            steps: self.steps.clone(),
        };
        let order = request.validate()?;
        let ids: Vec<String> = self.steps.iter().map(|s| self.full_id(&s.id)).collect();
        let present = ids.iter().filter(|id| exists(id)).count();
        if present == ids.len() {
            return Ok(None);
        }
        if present > 0 {
            return Err(WorkflowError::SpawnChanged(self.spawner.clone()));
        }
        if known + ids.len() > MAX_WORKFLOW_STEPS {
            return Err(WorkflowError::WorkflowTooLarge(known + ids.len()));
        }
        let mut job_ids: HashMap<&str, JobId> = HashMap::new();
        for &i in &order {
            job_ids.insert(self.steps[i].id.as_str(), JobId::new());
        }
        let mut edges = Vec::new();
        let mut steps = Vec::with_capacity(order.len());
        for &i in &order {
            let s = &self.steps[i];
            let job_id = job_ids[s.id.as_str()];
            let mut job = s.job.clone();
            job.tenant = tenant.to_owned();
            let mut job = job.into_job(job_id, now, now);
            job.state = JobState::Waiting;
            let mut needs = vec![self.spawner.clone()];
            needs.extend(s.needs.iter().map(|n| self.full_id(n)));
            job.workflow = Some(JobWorkflow {
                id: workflow,
                step: self.full_id(&s.id),
                needs,
            });
            edges.extend(s.needs.iter().map(|p| (job_ids[p.as_str()], job_id)));
            steps.push(PlannedStep {
                no: i,
                job,
                pending: s.needs.len() + 1,
                policy: s.on_parent_failure,
            });
        }
        Ok(Some(SpawnPlan { ids, steps, edges }))
    }
}

/// A step's place in its workflow, as a job shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobWorkflow {
    /// The workflow's id.
    #[schema(value_type = String)]
    pub id: JobId,
    /// The step's id in it.
    pub step: String,
    /// The steps it waits for.
    pub needs: Vec<String>,
}

/// A workflow's state, derived from its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    /// Some step is unfinished.
    Running,
    /// Every step succeeded or was skipped.
    Succeeded,
    /// Every step ended and one failed.
    Failed,
    /// Every step ended, and the workflow (or a step, by hand) was cancelled.
    Cancelled,
}

impl WorkflowState {
    /// The name used in JSON, SQL and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
        }
    }

    /// The state of a workflow whose steps are in `steps` (state, skipped):
    /// `running` while one is unfinished; then `cancelled` if the workflow
    /// was cancelled; else `failed` if a step failed; else `cancelled` if a
    /// step was cancelled (not skipped); else `succeeded`.
    pub fn derive(
        cancel_requested: bool,
        steps: impl IntoIterator<Item = (JobState, bool)>,
    ) -> WorkflowState {
        let (mut unfinished, mut failed, mut cancelled) = (false, false, false);
        for (state, skipped) in steps {
            match state {
                JobState::Failed => failed = true,
                JobState::Cancelled if !skipped => cancelled = true,
                s if !s.is_terminal() => unfinished = true,
                _ => {}
            }
        }
        if unfinished {
            WorkflowState::Running
        } else if cancel_requested {
            WorkflowState::Cancelled
        } else if failed {
            WorkflowState::Failed
        } else if cancelled {
            WorkflowState::Cancelled
        } else {
            WorkflowState::Succeeded
        }
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkflowState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(WorkflowState::Running),
            "succeeded" => Ok(WorkflowState::Succeeded),
            "failed" => Ok(WorkflowState::Failed),
            "cancelled" => Ok(WorkflowState::Cancelled),
            other => Err(format!(
                "unknown workflow state `{other}`: use running, succeeded, failed or cancelled"
            )),
        }
    }
}

/// One step as a workflow shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepView {
    /// The step's id.
    pub id: String,
    /// Its job.
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// Its job's state (`waiting` until its parents end).
    pub state: JobState,
    /// The steps it waits for.
    pub needs: Vec<String>,
    /// What it does when a parent fails.
    pub on_parent_failure: OnParentFailure,
    /// True for a step ended by `skip` (its state is `cancelled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Its job's last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A workflow as every API and `--json` command shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workflow {
    /// UUIDv7 id.
    #[schema(value_type = String)]
    pub id: JobId,
    /// Owner.
    pub tenant: String,
    /// The name it was submitted with.
    pub name: String,
    /// Derived from its steps.
    pub state: WorkflowState,
    /// Every step, in submit order.
    pub steps: Vec<StepView>,
    /// When it was submitted.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Millis,
    /// When its last step ended.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Millis>,
}

impl Workflow {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&StepView> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// A parent step's end, as its children's handlers read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParentOutcome {
    /// The parent's step id.
    pub step: String,
    /// Its job.
    pub job_id: JobId,
    /// `succeeded`, `failed` or `cancelled`.
    pub state: JobState,
    /// Its result (null unless succeeded).
    pub result: Value,
    /// Its error, if it failed or was cancelled.
    pub error: Option<String>,
    /// True when it was skipped.
    pub skipped: bool,
}

/// A page of workflows, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowListRequest {
    /// Whose workflows.
    pub scope: Scope,
    /// Only this state.
    pub state: Option<WorkflowState>,
    /// Page size.
    pub limit: usize,
    /// Start after this id (the previous page's `next_cursor`).
    pub cursor: Option<JobId>,
}

/// One page of workflows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkflowPage {
    /// Workflows, newest first.
    pub data: Vec<Workflow>,
    /// Pass as `cursor` to get the next page.
    #[schema(value_type = Option<String>)]
    pub next_cursor: Option<JobId>,
    /// True when there are more after this page.
    pub has_more: bool,
}

/// The error a step's children carry when it ended `failed` or
/// `cancelled` and their policy is `cancel`.
pub fn parent_failed(step: &str) -> String {
    format!("parent step `{step}` failed or was cancelled")
}

/// The refusal of a job retry on a workflow step: steps are retried with
/// their workflow, so the DAG's counts stay whole.
pub fn retry_the_workflow() -> crate::broker::BrokerError {
    crate::broker::BrokerError::WorkflowConflict(
        "the job is a workflow step: retry its workflow (POST /v1/workflows/{id}/retry)".into(),
    )
}

/// What a waiting child does after a parent ended: the rule of every
/// backend's release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Ends `cancelled` now with this error; its children follow.
    Cancel(String),
    /// Ends `cancelled` as skipped; its children proceed.
    Skip,
    /// Its last parent ended: it is queued.
    Queue,
    /// It still waits for other parents.
    Wait,
}

impl Release {
    /// The rule for a child with `pending` parents left, whose first
    /// failed (or cancelled) parent is `failed_parent`.
    pub fn of(failed_parent: Option<&str>, policy: OnParentFailure, pending: i64) -> Release {
        match (failed_parent, policy, pending) {
            (Some(parent), OnParentFailure::Cancel, _) => Release::Cancel(parent_failed(parent)),
            (Some(_), OnParentFailure::Skip, 0) => Release::Skip,
            (_, _, p) if p <= 0 => Release::Queue,
            _ => Release::Wait,
        }
    }
}

/// The refusal of a cancel of a workflow that has ended.
pub fn nothing_to_cancel(state: impl fmt::Display) -> crate::broker::BrokerError {
    crate::broker::BrokerError::WorkflowConflict(format!(
        "the workflow has ended ({state}): there is nothing to cancel"
    ))
}

/// The refusal of a retry of a workflow that runs.
pub fn still_running() -> crate::broker::BrokerError {
    crate::broker::BrokerError::WorkflowConflict(
        "the workflow is still running: cancel it or wait for it to end".into(),
    )
}

/// The refusal of a retry of a workflow whose every step succeeded.
pub fn nothing_to_retry() -> crate::broker::BrokerError {
    crate::broker::BrokerError::WorkflowConflict(
        "no step failed or was cancelled: there is nothing to retry".into(),
    )
}

/// The error of a step ended by `skip`.
pub const SKIPPED: &str = "skipped";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &[(&str, &[&str])]) -> Result<Vec<usize>, WorkflowError> {
        let needs: Vec<Vec<String>> = spec
            .iter()
            .map(|(_, n)| n.iter().map(|s| s.to_string()).collect())
            .collect();
        let shapes: Vec<StepShape<'_>> = spec
            .iter()
            .zip(&needs)
            .map(|((id, _), needs)| StepShape { id, needs })
            .collect();
        validate(&shapes)
    }

    #[test]
    fn a_diamond_comes_back_parents_first() {
        let order = check(&[
            ("write", &["embed-0", "embed-1"]),
            ("embed-1", &["split"]),
            ("split", &[]),
            ("embed-0", &["split"]),
        ])
        .expect("valid");
        let pos = |i: usize| order.iter().position(|&x| x == i).expect("in order");
        assert_eq!(order.len(), 4);
        assert!(pos(2) < pos(1) && pos(2) < pos(3), "split first");
        assert!(pos(1) < pos(0) && pos(3) < pos(0), "write last");
    }

    #[test]
    fn each_refusal_names_the_step() {
        assert_eq!(
            check(&[("a", &[]), ("a", &[])]),
            Err(WorkflowError::DuplicateStep("a".into()))
        );
        assert_eq!(
            check(&[("a", &["ghost"])]),
            Err(WorkflowError::UnknownParent {
                step: "a".into(),
                parent: "ghost".into()
            })
        );
        assert_eq!(
            check(&[("a", &["a"])]),
            Err(WorkflowError::RepeatedParent {
                step: "a".into(),
                parent: "a".into()
            })
        );
        assert_eq!(
            check(&[("a b", &[])]),
            Err(WorkflowError::BadStepId("a b".into()))
        );
        assert_eq!(check(&[]), Err(WorkflowError::Empty));
    }

    #[test]
    fn a_cycle_is_named_by_a_step_on_it_not_one_below_it() {
        // root -> x -> y -> z -> x (cycle x, y, z), and w below z.
        let err = check(&[
            ("root", &[]),
            ("w", &["z"]),
            ("x", &["root", "z"]),
            ("y", &["x"]),
            ("z", &["y"]),
        ])
        .expect_err("a cycle");
        let WorkflowError::Cycle(step) = &err else {
            panic!("{err:?}");
        };
        assert!(["x", "y", "z"].contains(&step.as_str()), "{step}");
        assert!(err.to_string().contains(step.as_str()));
    }

    #[test]
    fn limits_hold() {
        let ids: Vec<String> = (0..=MAX_STEPS).map(|i| format!("s{i}")).collect();
        let none: Vec<String> = Vec::new();
        let shapes: Vec<StepShape<'_>> = ids
            .iter()
            .map(|id| StepShape { id, needs: &none })
            .collect();
        assert_eq!(
            validate(&shapes),
            Err(WorkflowError::TooManySteps(MAX_STEPS + 1))
        );
        assert!(validate(&shapes[..MAX_STEPS]).is_ok());
        let many: Vec<String> = ids[1..=MAX_NEEDS + 1].to_vec();
        let mut shapes: Vec<StepShape<'_>> = ids[1..=MAX_NEEDS + 1]
            .iter()
            .map(|id| StepShape { id, needs: &none })
            .collect();
        shapes.push(StepShape {
            id: "join",
            needs: &many,
        });
        assert_eq!(
            validate(&shapes),
            Err(WorkflowError::TooManyNeeds("join".into()))
        );
    }
}
