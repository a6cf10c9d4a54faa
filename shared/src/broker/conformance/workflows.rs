//! Workflow checks: a DAG of steps submitted whole, children released in
//! the same atomic step as their last parent's end, failure policies,
//! cancel, retry and the hand-off of results, the same on every backend.

use super::{LEASE, TestBroker, claim, end_held, request, state_of};
use crate::broker::{BrokerError, ClaimedJob, ListRequest, Outcome, Scope};
use crate::job::{JobId, JobState};
use crate::workflow::{
    MAX_STEPS, OnParentFailure, StepRequest, Workflow, WorkflowListRequest, WorkflowRequest,
    WorkflowState,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const QUEUE: &str = "wf";

/// A step of task `step` on the test queue.
fn step(id: &str, needs: &[&str], policy: OnParentFailure) -> StepRequest {
    StepRequest {
        id: id.into(),
        needs: needs.iter().map(|s| s.to_string()).collect(),
        on_parent_failure: policy,
        job: request("step", QUEUE),
    }
}

fn workflow(steps: Vec<StepRequest>) -> WorkflowRequest {
    WorkflowRequest {
        tenant: "t1".into(),
        name: "test".into(),
        steps,
    }
}

use OnParentFailure::{Cancel, Run, Skip};

async fn submit(t: &TestBroker, steps: Vec<StepRequest>) -> Workflow {
    t.broker
        .submit_workflow(workflow(steps))
        .await
        .expect("submit")
}

fn job(wf: &Workflow, step: &str) -> JobId {
    wf.step(step).expect("the step exists").job_id
}

async fn reload(t: &TestBroker, wf: &Workflow) -> Workflow {
    t.broker
        .get_workflow(&Scope::All, wf.id)
        .await
        .expect("get workflow")
}

/// Claims what is claimable on the test queue, by step id.
async fn claim_steps(
    t: &TestBroker,
    wf: &Workflow,
    lease: Duration,
) -> BTreeMap<String, ClaimedJob> {
    claim(t, &[QUEUE], 100, lease)
        .await
        .into_iter()
        .map(|c| {
            let step = wf
                .steps
                .iter()
                .find(|s| s.job_id == c.lease.id)
                .map(|s| s.id.clone())
                .expect("a claimed job is a step of the workflow");
            (step, c)
        })
        .collect()
}

fn names(claimed: &BTreeMap<String, ClaimedJob>) -> Vec<&str> {
    claimed.keys().map(String::as_str).collect()
}

fn failed(error: &str) -> Outcome {
    Outcome::Failed {
        error: error.into(),
        retry_in: None,
    }
}

async fn assert_states(t: &TestBroker, wf: &Workflow, want: &[(&str, JobState)]) {
    for (name, state) in want {
        assert_eq!(state_of(t, job(wf, name)).await, *state, "step `{name}`");
    }
}

/// A and B feed C: C waits until both ended, then is queued and claimable.
pub async fn workflow_waits_for_last_parent(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("c", &["a", "b"], Cancel),
            step("a", &[], Cancel),
            step("b", &[], Cancel),
        ],
    )
    .await;
    assert_eq!(wf.state, WorkflowState::Running);
    assert_eq!(
        wf.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["c", "a", "b"],
        "steps come back in submit order"
    );
    assert_states(
        &t,
        &wf,
        &[
            ("a", JobState::Queued),
            ("b", JobState::Queued),
            ("c", JobState::Waiting),
        ],
    )
    .await;
    let shown = super::job_of(&t, job(&wf, "c")).await;
    let place = shown.workflow.expect("a step shows its workflow");
    assert_eq!((place.id, place.step.as_str()), (wf.id, "c"));
    assert_eq!(place.needs, vec!["a", "b"]);

    let first = claim_steps(&t, &wf, LEASE).await;
    assert_eq!(
        names(&first),
        vec!["a", "b"],
        "a waiting step is never claimed"
    );
    end_held(&t, first["a"].lease, Outcome::Succeeded(json!(1))).await;
    assert_eq!(state_of(&t, job(&wf, "c")).await, JobState::Waiting);
    assert!(claim_steps(&t, &wf, LEASE).await.is_empty());
    end_held(&t, first["b"].lease, Outcome::Succeeded(json!(2))).await;
    assert_eq!(state_of(&t, job(&wf, "c")).await, JobState::Queued);
    let next = claim_steps(&t, &wf, LEASE).await;
    assert_eq!(names(&next), vec!["c"]);
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Running);
    end_held(&t, next["c"].lease, Outcome::Succeeded(json!(3))).await;
    let done = reload(&t, &wf).await;
    assert_eq!(done.state, WorkflowState::Succeeded);
    assert!(done.finished_at.is_some());
}

/// A cycle, an unknown parent, a duplicate id and too many steps are each
/// refused naming what is wrong, and nothing is enqueued.
pub async fn workflow_submit_validates_atomically(t: TestBroker) {
    let before = t.broker.queue_counts().await.expect("counts");
    let cases: Vec<(Vec<StepRequest>, &str)> = vec![
        (
            vec![
                step("root", &[], Cancel),
                step("x", &["root", "z"], Cancel),
                step("y", &["x"], Cancel),
                step("z", &["y"], Cancel),
            ],
            "cycle",
        ),
        (
            vec![step("a", &[], Cancel), step("b", &["ghost"], Cancel)],
            "ghost",
        ),
        (vec![step("a", &[], Cancel), step("a", &[], Cancel)], "`a`"),
        (
            (0..=MAX_STEPS)
                .map(|i| step(&format!("s{i}"), &[], Cancel))
                .collect(),
            "1000",
        ),
    ];
    for (steps, named) in cases {
        match t.broker.submit_workflow(workflow(steps)).await {
            Err(BrokerError::Invalid(message)) => {
                assert!(message.contains(named), "{message:?} names {named}")
            }
            other => panic!("expected Invalid naming {named}, got {other:?}"),
        }
    }
    assert_eq!(t.broker.queue_counts().await.expect("counts"), before);
    let page = t
        .broker
        .list_workflows(WorkflowListRequest {
            scope: Scope::All,
            state: None,
            limit: 10,
            cursor: None,
        })
        .await
        .expect("list");
    assert!(page.data.is_empty(), "no workflow was recorded");
}

/// A child reads its parents' results through its lease; the old lease
/// of a reaped attempt reads nothing.
pub async fn workflow_results_reach_children(t: TestBroker) {
    let wf = submit(&t, vec![step("a", &[], Cancel), step("c", &["a"], Cancel)]).await;
    let a = claim_steps(&t, &wf, LEASE).await;
    end_held(&t, a["a"].lease, Outcome::Succeeded(json!({"x": 1}))).await;
    let c = claim_steps(&t, &wf, Duration::from_millis(100)).await;
    let lease = c["c"].lease;
    let parents = t.broker.parent_outcomes(lease).await.expect("parents");
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0].step, "a");
    assert_eq!(parents[0].job_id, job(&wf, "a"));
    assert_eq!(parents[0].state, JobState::Succeeded);
    assert_eq!(parents[0].result, json!({"x": 1}));
    assert!(!parents[0].skipped);

    tokio::time::sleep(Duration::from_millis(150)).await;
    t.broker.maintain().await.expect("maintain");
    assert!(
        t.broker.parent_outcomes(lease).await.is_err(),
        "a lease no longer held reads nothing"
    );
}

/// A failed step cancels its `cancel` children and their children at
/// once, while a sibling still runs; the workflow then ends `failed`.
pub async fn workflow_failure_cancels_descendants(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("sibling", &[], Cancel),
            step("child", &["a", "sibling"], Cancel),
            step("grandchild", &["child"], Cancel),
        ],
    )
    .await;
    let running = claim_steps(&t, &wf, LEASE).await;
    end_held(&t, running["a"].lease, failed("boom")).await;
    assert_states(
        &t,
        &wf,
        &[
            ("a", JobState::Failed),
            ("sibling", JobState::Running),
            ("child", JobState::Cancelled),
            ("grandchild", JobState::Cancelled),
        ],
    )
    .await;
    let child = super::job_of(&t, job(&wf, "child")).await;
    assert!(
        child.error.as_deref().is_some_and(|e| e.contains("`a`")),
        "the error names the parent: {:?}",
        child.error
    );
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Running);
    end_held(
        &t,
        running["sibling"].lease,
        Outcome::Succeeded(json!(null)),
    )
    .await;
    let done = reload(&t, &wf).await;
    assert_eq!(done.state, WorkflowState::Failed);
    assert!(done.finished_at.is_some());
}

/// A `skip` child of a failed step ends skipped, and its own children
/// run; a step cancelled by hand makes the workflow `cancelled`.
pub async fn workflow_failure_skip_lets_grandchildren_run(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("b", &["a"], Skip),
            step("c", &["b"], Cancel),
        ],
    )
    .await;
    let a = claim_steps(&t, &wf, LEASE).await;
    end_held(&t, a["a"].lease, failed("boom")).await;
    let shown = reload(&t, &wf).await;
    let b = shown.step("b").expect("b");
    assert_eq!((b.state, b.skipped), (JobState::Cancelled, true));
    assert_eq!(state_of(&t, job(&wf, "c")).await, JobState::Queued);
    let c = claim_steps(&t, &wf, LEASE).await;
    let parents = t
        .broker
        .parent_outcomes(c["c"].lease)
        .await
        .expect("parents");
    assert_eq!(
        (parents[0].state, parents[0].skipped, &parents[0].result),
        (JobState::Cancelled, true, &json!(null))
    );
    end_held(&t, c["c"].lease, Outcome::Succeeded(json!(1))).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Failed);

    // A step cancelled by hand: its cancel child follows, and the
    // workflow ends cancelled.
    let wf = submit(&t, vec![step("a", &[], Cancel), step("b", &["a"], Cancel)]).await;
    t.broker
        .cancel(&Scope::All, job(&wf, "a"))
        .await
        .expect("cancel a step");
    assert_eq!(state_of(&t, job(&wf, "b")).await, JobState::Cancelled);
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Cancelled);
}

/// A `run` child of a failed step still runs, once its other parents
/// ended, and sees the failure.
pub async fn workflow_failure_run_still_runs(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("d", &[], Cancel),
            step("b", &["a", "d"], Run),
        ],
    )
    .await;
    let first = claim_steps(&t, &wf, LEASE).await;
    end_held(&t, first["a"].lease, failed("disk full")).await;
    assert_eq!(
        state_of(&t, job(&wf, "b")).await,
        JobState::Waiting,
        "it still waits for d"
    );
    end_held(&t, first["d"].lease, Outcome::Succeeded(json!("ok"))).await;
    let b = claim_steps(&t, &wf, LEASE).await;
    assert_eq!(names(&b), vec!["b"]);
    let parents = t
        .broker
        .parent_outcomes(b["b"].lease)
        .await
        .expect("parents");
    let a = parents.iter().find(|p| p.step == "a").expect("a");
    assert_eq!(a.state, JobState::Failed);
    assert_eq!(a.error.as_deref(), Some("disk full"));
    let d = parents.iter().find(|p| p.step == "d").expect("d");
    assert_eq!((d.state, &d.result), (JobState::Succeeded, &json!("ok")));
    end_held(&t, b["b"].lease, Outcome::Succeeded(json!(1))).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Failed);
}

/// Cancelling a workflow cancels every unfinished step at once: a running
/// one loses its lease, and its late completion is stale.
pub async fn workflow_cancel_cascades(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("b", &[], Cancel),
            step("c", &["a"], Cancel),
        ],
    )
    .await;
    let mut running = claim(&t, &[QUEUE], 1, LEASE).await;
    let a = running.pop().expect("one claimed");
    let (running_step, queued_step) = if a.lease.id == job(&wf, "a") {
        ("a", "b")
    } else {
        ("b", "a")
    };
    assert_eq!(state_of(&t, job(&wf, queued_step)).await, JobState::Queued);
    let cancelled = t
        .broker
        .cancel_workflow(&Scope::All, wf.id)
        .await
        .expect("cancel");
    assert_eq!(cancelled.state, WorkflowState::Cancelled);
    assert!(
        cancelled
            .steps
            .iter()
            .all(|s| s.state == JobState::Cancelled)
    );
    let lost = t.broker.renew(&[a.lease], LEASE).await.expect("renew");
    assert_eq!(lost, vec![a.lease], "the running step's lease is withdrawn");
    let stale = t
        .broker
        .complete(vec![crate::broker::Completion {
            lease: a.lease,
            outcome: Outcome::Succeeded(json!(1)),
        }])
        .await
        .expect("complete");
    assert_eq!(stale, vec![a.lease], "a late completion changes nothing");
    assert_eq!(
        state_of(&t, job(&wf, running_step)).await,
        JobState::Cancelled
    );
    assert!(claim(&t, &[QUEUE], 10, LEASE).await.is_empty());
    match t.broker.cancel_workflow(&Scope::All, wf.id).await {
        Err(BrokerError::WorkflowConflict(_)) => {}
        other => panic!("a second cancel is a conflict, got {other:?}"),
    }
    match t
        .broker
        .cancel_workflow(&Scope::Tenant("t2".into()), wf.id)
        .await
    {
        Err(BrokerError::WorkflowNotFound) => {}
        other => panic!("another tenant does not see it, got {other:?}"),
    }
}

/// Retry puts back the failed and cancelled steps; succeeded ones keep
/// their results and are not run again.
pub async fn workflow_retry_keeps_succeeded(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("b", &[], Cancel),
            step("c", &["a", "b"], Cancel),
        ],
    )
    .await;
    let first = claim_steps(&t, &wf, LEASE).await;
    end_held(
        &t,
        first["a"].lease,
        Outcome::Succeeded(json!({"kept": true})),
    )
    .await;
    match t.broker.retry_workflow(&Scope::All, wf.id).await {
        Err(BrokerError::WorkflowConflict(_)) => {}
        other => panic!("retry while running is a conflict, got {other:?}"),
    }
    end_held(&t, first["b"].lease, failed("flaky")).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Failed);

    let again = t
        .broker
        .retry_workflow(&Scope::All, wf.id)
        .await
        .expect("retry");
    assert_eq!(again.state, WorkflowState::Running);
    assert!(again.finished_at.is_none());
    assert_states(
        &t,
        &wf,
        &[
            ("a", JobState::Succeeded),
            ("b", JobState::Queued),
            ("c", JobState::Waiting),
        ],
    )
    .await;
    let a = super::job_of(&t, job(&wf, "a")).await;
    assert_eq!((a.attempts, &a.result), (1, &json!({"kept": true})));
    let b = claim_steps(&t, &wf, LEASE).await;
    assert_eq!(names(&b), vec!["b"]);
    end_held(&t, b["b"].lease, Outcome::Succeeded(json!(2))).await;
    let c = claim_steps(&t, &wf, LEASE).await;
    let parents = t
        .broker
        .parent_outcomes(c["c"].lease)
        .await
        .expect("parents");
    assert_eq!(
        parents.iter().find(|p| p.step == "a").map(|p| &p.result),
        Some(&json!({"kept": true}))
    );
    end_held(&t, c["c"].lease, Outcome::Succeeded(json!(3))).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Succeeded);
    match t.broker.retry_workflow(&Scope::All, wf.id).await {
        Err(BrokerError::WorkflowConflict(_)) => {}
        other => panic!("nothing to retry is a conflict, got {other:?}"),
    }
}

/// A parent whose worker was lost runs again; the lost attempt's late
/// completion releases nothing, and a repeated completion counts once.
pub async fn workflow_parent_crash_still_releases(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("b", &[], Cancel),
            step("c", &["a", "b"], Cancel),
        ],
    )
    .await;
    let first = claim_steps(&t, &wf, Duration::from_millis(100)).await;
    let lost = first["a"].lease;
    tokio::time::sleep(Duration::from_millis(150)).await;
    t.broker.maintain().await.expect("maintain");
    let again = claim_steps(&t, &wf, LEASE).await;
    assert!(again.contains_key("a"), "the reaped parent runs again");
    let stale = t
        .broker
        .complete(vec![crate::broker::Completion {
            lease: lost,
            outcome: Outcome::Succeeded(json!("late")),
        }])
        .await
        .expect("complete");
    assert_eq!(stale, vec![lost]);
    assert_eq!(state_of(&t, job(&wf, "c")).await, JobState::Waiting);

    let a2 = again["a"].lease;
    end_held(&t, a2, Outcome::Succeeded(json!(1))).await;
    // The worker's flush repeats the completion (its reply was lost).
    let repeated = t
        .broker
        .complete(vec![crate::broker::Completion {
            lease: a2,
            outcome: Outcome::Succeeded(json!(1)),
        }])
        .await
        .expect("complete");
    assert_eq!(repeated, vec![a2], "the repeat is stale");
    assert_eq!(
        state_of(&t, job(&wf, "c")).await,
        JobState::Waiting,
        "c still waits for b"
    );
    let b = again
        .get("b")
        .map(|c| c.lease)
        .expect("b was claimed with a");
    end_held(&t, b, Outcome::Succeeded(json!(2))).await;
    assert_eq!(state_of(&t, job(&wf, "c")).await, JobState::Queued);
}

/// `waiting` is counted per queue and listed, tenant-scoped.
pub async fn waiting_is_counted_and_listed(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("a", &[], Cancel),
            step("b", &["a"], Cancel),
            step("c", &["a"], Cancel),
        ],
    )
    .await;
    let counts = t.broker.queue_counts().await.expect("counts");
    let queue = counts.iter().find(|q| q.name == QUEUE).expect("queue");
    assert_eq!(queue.counts.get(&JobState::Waiting), Some(&2));
    assert_eq!(queue.counts.get(&JobState::Queued), Some(&1));
    let list = |scope: Scope| ListRequest {
        scope,
        queue: None,
        state: Some(JobState::Waiting),
        task: None,
        limit: 10,
        cursor: None,
    };
    let page = t
        .broker
        .list(list(Scope::Tenant("t1".into())))
        .await
        .expect("list");
    let mut got: Vec<JobId> = page.data.iter().map(|j| j.id).collect();
    got.sort();
    let mut want = vec![job(&wf, "b"), job(&wf, "c")];
    want.sort();
    assert_eq!(got, want);
    let other = t
        .broker
        .list(list(Scope::Tenant("t2".into())))
        .await
        .expect("list");
    assert!(other.data.is_empty());
    let mine = t
        .broker
        .list_workflows(WorkflowListRequest {
            scope: Scope::Tenant("t1".into()),
            state: Some(WorkflowState::Running),
            limit: 10,
            cursor: None,
        })
        .await
        .expect("list workflows");
    assert_eq!(
        mine.data.iter().map(|w| w.id).collect::<Vec<_>>(),
        vec![wf.id]
    );
    let theirs = t
        .broker
        .list_workflows(WorkflowListRequest {
            scope: Scope::Tenant("t2".into()),
            state: None,
            limit: 10,
            cursor: None,
        })
        .await
        .expect("list workflows");
    assert!(theirs.data.is_empty());
}

/// A step with a serial key joins its lane when it leaves `waiting`, not
/// at submit: a job of the same lane enqueued meanwhile runs first.
pub async fn workflow_step_joins_its_lane_when_released(t: TestBroker) {
    let mut keyed = step("b", &["a"], Cancel);
    keyed.job.serial_key = Some("k".into());
    let wf = submit(&t, vec![step("a", &[], Cancel), keyed]).await;
    let mut other = request("store", QUEUE);
    other.serial_key = Some("k".into());
    let other = t.broker.enqueue(vec![other]).await.expect("enqueue")[0]
        .job
        .id;
    let first = claim(&t, &[QUEUE], 10, LEASE).await;
    let mut got: Vec<JobId> = first.iter().map(|c| c.lease.id).collect();
    got.sort();
    let mut want = vec![job(&wf, "a"), other];
    want.sort();
    assert_eq!(got, want, "the waiting step does not block its lane");
    let a = first
        .iter()
        .find(|c| c.lease.id == job(&wf, "a"))
        .expect("a");
    end_held(&t, a.lease, Outcome::Succeeded(json!(1))).await;
    assert_eq!(state_of(&t, job(&wf, "b")).await, JobState::Queued);
    assert!(
        claim(&t, &[QUEUE], 10, LEASE).await.is_empty(),
        "b joined the lane behind the running job"
    );
    let o = first.iter().find(|c| c.lease.id == other).expect("other");
    end_held(&t, o.lease, Outcome::Succeeded(json!(2))).await;
    let next = claim(&t, &[QUEUE], 10, LEASE).await;
    assert_eq!(
        next.iter().map(|c| c.lease.id).collect::<Vec<_>>(),
        vec![job(&wf, "b")]
    );
}

fn spawn_of(steps: Vec<StepRequest>) -> crate::workflow::Spawn {
    crate::workflow::Spawn {
        spawner: String::new(),
        steps,
    }
}

/// A running step adds steps: they wait for it, the steps that need it
/// wait for them too, they run in their own order, and the dependents
/// see them as parents.
pub async fn workflow_spawned_steps_join_the_dag(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("split", &[], Cancel),
            step("write", &["split"], Cancel),
        ],
    )
    .await;
    let split = claim_steps(&t, &wf, LEASE).await;
    let lease = split["split"].lease;
    let ids = t
        .broker
        .spawn_steps(
            lease,
            spawn_of(vec![step("a", &[], Cancel), step("b", &["a"], Cancel)]),
        )
        .await
        .expect("spawn");
    assert_eq!(ids, vec!["split/a", "split/b"]);
    let again = t
        .broker
        .spawn_steps(
            lease,
            spawn_of(vec![step("a", &[], Cancel), step("b", &["a"], Cancel)]),
        )
        .await
        .expect("the same spawn again");
    assert_eq!(again, ids, "adding the same ids again adds nothing");
    let shown = reload(&t, &wf).await;
    assert_eq!(shown.steps.len(), 4);
    assert!(
        shown
            .steps
            .iter()
            .all(|s| s.id == "split" || s.state == JobState::Waiting),
        "nothing added runs before its spawner succeeds"
    );
    let write = shown.step("write").expect("write");
    assert_eq!(write.needs, vec!["split", "split/a", "split/b"]);
    end_held(&t, lease, Outcome::Succeeded(json!({"batches": 2}))).await;
    let shown = reload(&t, &wf).await;
    let a = claim_steps(&t, &shown, LEASE).await;
    assert_eq!(names(&a), vec!["split/a"], "b waits for a, write for both");
    let parents = t
        .broker
        .parent_outcomes(a["split/a"].lease)
        .await
        .expect("parents");
    assert_eq!(parents[0].step, "split");
    assert_eq!(parents[0].result, json!({"batches": 2}));
    end_held(&t, a["split/a"].lease, Outcome::Succeeded(json!(1))).await;
    let b = claim_steps(&t, &shown, LEASE).await;
    assert_eq!(names(&b), vec!["split/b"]);
    end_held(&t, b["split/b"].lease, Outcome::Succeeded(json!(2))).await;
    let w = claim_steps(&t, &shown, LEASE).await;
    assert_eq!(names(&w), vec!["write"]);
    let parents = t
        .broker
        .parent_outcomes(w["write"].lease)
        .await
        .expect("parents");
    let mut seen: Vec<&str> = parents.iter().map(|p| p.step.as_str()).collect();
    seen.sort_unstable();
    assert_eq!(seen, vec!["split", "split/a", "split/b"]);
    end_held(&t, w["write"].lease, Outcome::Succeeded(json!(3))).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Succeeded);
}

/// A spawner whose worker is lost runs again and adds the same steps
/// once; its lost lease adds nothing; a spawned step that fails applies
/// the dependents' policy; a spawn that breaks a rule is refused whole.
pub async fn workflow_spawn_survives_a_crash_and_failures(t: TestBroker) {
    let wf = submit(
        &t,
        vec![
            step("split", &[], Cancel),
            step("write", &["split"], Cancel),
        ],
    )
    .await;
    let first = claim_steps(&t, &wf, Duration::from_millis(100)).await;
    let lost = first["split"].lease;
    let batch = || spawn_of(vec![step("x", &[], Cancel), step("y", &[], Cancel)]);
    t.broker.spawn_steps(lost, batch()).await.expect("spawn");
    tokio::time::sleep(Duration::from_millis(150)).await;
    t.broker.maintain().await.expect("maintain");
    assert!(
        t.broker.spawn_steps(lost, batch()).await.is_err(),
        "a lease no longer held adds nothing"
    );
    let again = claim_steps(&t, &wf, LEASE).await;
    let lease = again["split"].lease;
    t.broker
        .spawn_steps(lease, batch())
        .await
        .expect("the rerun's spawn");
    assert_eq!(reload(&t, &wf).await.steps.len(), 4, "added once");
    match t
        .broker
        .spawn_steps(
            lease,
            spawn_of(vec![step("x", &[], Cancel), step("z", &[], Cancel)]),
        )
        .await
    {
        Err(BrokerError::Invalid(m)) => assert!(m.contains("split"), "{m}"),
        other => panic!("a different spawn on a rerun is refused, got {other:?}"),
    }
    match t
        .broker
        .spawn_steps(
            lease,
            spawn_of(vec![step("p", &["q"], Cancel), step("q", &["p"], Cancel)]),
        )
        .await
    {
        Err(BrokerError::Invalid(m)) => assert!(m.contains("cycle"), "{m}"),
        other => panic!("a cycle is refused, got {other:?}"),
    }
    assert_eq!(
        reload(&t, &wf).await.steps.len(),
        4,
        "a refused spawn adds nothing"
    );
    end_held(&t, lease, Outcome::Succeeded(json!(null))).await;
    let shown = reload(&t, &wf).await;
    let spawned = claim_steps(&t, &shown, LEASE).await;
    assert_eq!(names(&spawned), vec!["split/x", "split/y"]);
    end_held(&t, spawned["split/x"].lease, failed("embedding failed")).await;
    assert_eq!(
        state_of(&t, job(&shown, "write")).await,
        JobState::Cancelled,
        "a failed spawned step cancels the spawner's dependents"
    );
    end_held(&t, spawned["split/y"].lease, Outcome::Succeeded(json!(1))).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Failed);
    // Retry reruns the failed spawned step and what waits on it; the
    // spawner is not run again, so it spawns nothing new.
    let again = t
        .broker
        .retry_workflow(&Scope::All, wf.id)
        .await
        .expect("retry");
    assert_eq!(again.steps.len(), 4);
    assert_eq!(
        again.step("split").map(|s| s.state),
        Some(JobState::Succeeded)
    );
    assert_eq!(
        again.step("split/x").map(|s| s.state),
        Some(JobState::Queued)
    );
    assert_eq!(
        again.step("write").map(|s| s.state),
        Some(JobState::Waiting)
    );
    let x = claim_steps(&t, &again, LEASE).await;
    end_held(&t, x["split/x"].lease, Outcome::Succeeded(json!(2))).await;
    let w = claim_steps(&t, &again, LEASE).await;
    end_held(&t, w["write"].lease, Outcome::Succeeded(json!(3))).await;
    assert_eq!(reload(&t, &wf).await.state, WorkflowState::Succeeded);
    // A job that is not a step cannot spawn.
    let plain = t
        .broker
        .enqueue(vec![request("plain", "plain")])
        .await
        .expect("enqueue");
    let c = claim(&t, &["plain"], 1, LEASE).await;
    assert_eq!(c[0].lease.id, plain[0].job.id);
    match t.broker.spawn_steps(c[0].lease, batch()).await {
        Err(BrokerError::Invalid(m)) => assert!(m.contains("workflow step"), "{m}"),
        other => panic!("a plain job cannot spawn, got {other:?}"),
    }
}
