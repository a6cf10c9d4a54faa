//! The job runtime against a real SQLite broker: handlers that succeed,
//! fail, panic, time out, cannot decode their payload, or are cancelled.

use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use weir_shared::broker::sqlite::{Durability, SqliteBroker};
use weir_shared::broker::{EnqueueRequest, Scope, SharedBroker};
use weir_shared::config::Settings;
use weir_shared::job::{Job, JobId, JobState};
use weir_worker::{Context, NodeOptions, NodeStats, Registry, TaskError, run_node};

struct Node {
    broker: SharedBroker,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(registry: Registry, vars: &[(&str, &str)], slots: u32) -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.db");
    let broker: SharedBroker = Arc::new(
        SqliteBroker::open(path.to_str().expect("utf-8"), Durability::Normal)
            .await
            .expect("broker"),
    );
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = Arc::new(
        Settings::load(&|k| {
            vars.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        })
        .expect("settings"),
    );
    let shutdown = CancellationToken::new();
    let options = NodeOptions {
        worker_id: "test-node".into(),
        queues: settings.worker_queues(),
        slots,
        max_claims: None,
        slot_control: None,
    };
    let handle = tokio::spawn(run_node(
        broker.clone(),
        Arc::new(registry),
        settings,
        options,
        Arc::new(NodeStats::default()),
        shutdown.clone(),
    ));
    Node {
        broker,
        shutdown,
        handle,
        _dir: dir,
    }
}

impl Node {
    async fn enqueue(&self, task: &str, payload: Value, max_retries: u32) -> JobId {
        let out = self
            .broker
            .enqueue(vec![EnqueueRequest {
                id: None,
                tenant: "t".into(),
                task: task.into(),
                queue: "default".into(),
                payload,
                priority: 5,
                run_at: None,
                max_retries,
                timeout_ms: None,
                unique_key: None,
                serial_key: None,
            }])
            .await
            .expect("enqueue");
        out[0].job.id
    }

    async fn job(&self, id: JobId) -> Job {
        self.broker
            .get(&Scope::All, id)
            .await
            .expect("get")
            .expect("job")
    }

    async fn wait_for(&self, id: JobId, state: JobState) -> Job {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let job = self.job(id).await;
            if job.state == state {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job never reached {state}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the node; the returned directory keeps the database alive.
    async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.handle.await.expect("node task");
        self._dir
    }
}

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    r.register("test.add", |_ctx: Context, p: Add| async move {
        Ok::<_, TaskError>(p.a + p.b)
    });
    r.register("test.panic", |_ctx: Context, _p: Value| async move {
        if true {
            panic!("the handler blew up");
        }
        Ok::<_, TaskError>(())
    });
    r.register("test.fatal", |_ctx: Context, _p: Value| async move {
        Err::<(), _>(TaskError::fatal("bad input, do not retry"))
    });
    r.register("test.progress", |ctx: Context, _p: Value| async move {
        ctx.progress(json!({"done": 1, "of": 2})).await;
        ctx.progress(json!({"done": 2, "of": 2})).await;
        Ok::<_, TaskError>(json!({"attempt": ctx.attempt(), "job": ctx.job_id().to_string()}))
    });
    r
}

#[tokio::test]
async fn typed_handlers_store_their_result_and_progress() {
    let node = start(registry(), &[], 2).await;
    let id = node.enqueue("test.add", json!({"a": 2, "b": 40}), 0).await;
    assert_eq!(
        node.wait_for(id, JobState::Succeeded).await.result,
        json!(42)
    );
    let id = node.enqueue("test.progress", json!({}), 0).await;
    let job = node.wait_for(id, JobState::Succeeded).await;
    assert_eq!(job.progress, json!({"done": 2, "of": 2}));
    assert_eq!(job.result, json!({"attempt": 1, "job": id.to_string()}));
    node.stop().await;
}

#[tokio::test]
async fn a_panic_is_a_failed_attempt_with_its_message() {
    let node = start(registry(), &[], 2).await;
    let id = node.enqueue("test.panic", json!({}), 1).await;
    let job = node.wait_for(id, JobState::Failed).await;
    assert_eq!(job.attempts, 2, "the panic was retried once");
    assert!(
        job.error
            .as_deref()
            .unwrap_or_default()
            .contains("handler panicked: the handler blew up"),
        "{job:?}"
    );
    // The worker survived: it still runs jobs.
    let ok = node.enqueue("weir.echo", json!("still here"), 0).await;
    assert_eq!(
        node.wait_for(ok, JobState::Succeeded).await.result,
        json!("still here")
    );
    node.stop().await;
}

#[tokio::test]
async fn jobs_that_cannot_run_end_failed_with_the_reason() {
    let node = start(registry(), &[], 2).await;
    let unknown = node.enqueue("not.registered", json!({}), 3).await;
    let undecodable = node.enqueue("test.add", json!({"a": "two"}), 3).await;
    let fatal = node.enqueue("test.fatal", json!({}), 3).await;
    let job = node.wait_for(undecodable, JobState::Failed).await;
    assert_eq!(job.attempts, 1);
    assert!(
        job.error
            .unwrap_or_default()
            .contains("payload does not match what task `test.add` expects")
    );
    let job = node.wait_for(fatal, JobState::Failed).await;
    assert_eq!(job.attempts, 1);
    assert_eq!(job.error.as_deref(), Some("bad input, do not retry"));
    // A task this node has no handler for is not its to fail: it waits,
    // queued, with no attempt spent, for a node that has the handler.
    let waiting = node
        .broker
        .get(&Scope::All, unknown)
        .await
        .expect("get")
        .expect("job");
    assert_eq!((waiting.state, waiting.attempts), (JobState::Queued, 0));
    node.stop().await;
}

#[tokio::test]
async fn an_attempt_that_overruns_its_timeout_fails() {
    let node = start(registry(), &[], 2).await;
    let out = node
        .broker
        .enqueue(vec![EnqueueRequest {
            id: None,
            tenant: "t".into(),
            task: "weir.sleep".into(),
            queue: "default".into(),
            payload: json!({"ms": 5000}),
            priority: 5,
            run_at: None,
            max_retries: 0,
            timeout_ms: Some(200),
            unique_key: None,
            serial_key: None,
        }])
        .await
        .expect("enqueue");
    let started = Instant::now();
    let job = node.wait_for(out[0].job.id, JobState::Failed).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        job.error
            .unwrap_or_default()
            .contains("timed out after 0.2s")
    );
    node.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_handler() {
    // A 900 ms lease renews every 300 ms; that renewal tells the worker.
    let node = start(registry(), &[("WEIR_LEASE", "900ms")], 1).await;
    let id = node.enqueue("weir.sleep", json!({"ms": 60000}), 0).await;
    node.wait_for(id, JobState::Running).await;
    node.broker.cancel(&Scope::All, id).await.expect("cancel");
    // The slot comes free: the next job runs although the sleep had a minute left.
    let next = node.enqueue("weir.noop", json!({}), 0).await;
    node.wait_for(next, JobState::Succeeded).await;
    assert_eq!(node.job(id).await.state, JobState::Cancelled);
    node.stop().await;
}

#[tokio::test]
async fn never_claims_more_than_its_free_slots() {
    let node = start(registry(), &[], 3).await;
    for _ in 0..10 {
        node.enqueue("weir.sleep", json!({"ms": 400}), 0).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = node.broker.queue_counts().await.expect("counts");
    let q = counts
        .iter()
        .find(|q| q.name == "default")
        .expect("default");
    assert_eq!(q.counts.get(&JobState::Running), Some(&3));
    assert_eq!(q.counts.get(&JobState::Queued), Some(&7));
    node.stop().await;
}

#[tokio::test]
async fn shutdown_hands_back_what_outlives_the_timeout() {
    let node = start(registry(), &[("WEIR_SHUTDOWN_TIMEOUT", "300ms")], 2).await;
    let short = node.enqueue("weir.sleep", json!({"ms": 100}), 0).await;
    let long = node.enqueue("weir.sleep", json!({"ms": 30000}), 0).await;
    node.wait_for(long, JobState::Running).await;
    let broker = node.broker.clone();
    let started = Instant::now();
    let _dir = node.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown waited too long"
    );
    let get = |id| {
        let broker = broker.clone();
        async move {
            broker
                .get(&Scope::All, id)
                .await
                .expect("get")
                .expect("job")
        }
    };
    assert_eq!(get(short).await.state, JobState::Succeeded);
    let handed_back = get(long).await;
    assert_eq!(
        handed_back.state,
        JobState::Queued,
        "handed back at once, not after the lease"
    );
}

/// A workflow's steps hand their results on: each handler reads its
/// parents' ends through its context, by step id.
#[tokio::test]
async fn steps_read_their_parents_results_through_the_context() {
    use weir_shared::workflow::{WorkflowRequest, WorkflowState};
    let mut r = registry();
    r.register("test.split", |ctx: Context, _p: Value| async move {
        assert!(ctx.parents().await?.is_empty(), "a root has no parents");
        Ok::<_, TaskError>(json!({"segments": 3}))
    });
    r.register("test.embed", |ctx: Context, p: Value| async move {
        let split = ctx.parent("split").await?;
        let n = split.result["segments"].as_i64().unwrap_or(0);
        Ok::<_, TaskError>(n * p["factor"].as_i64().unwrap_or(0))
    });
    r.register("test.write", |ctx: Context, _p: Value| async move {
        let parents = ctx.parents().await?;
        if ctx.parent("nope").await.is_ok() {
            return Err(TaskError::fatal("a step that is not a parent was found"));
        }
        let sum: i64 = parents.values().filter_map(|o| o.result.as_i64()).sum();
        Ok::<_, TaskError>(json!({"sum": sum, "from": parents.keys().collect::<Vec<_>>()}))
    });
    let node = start(r, &[], 4).await;
    let wf = node
        .broker
        .submit_workflow(WorkflowRequest {
            tenant: "t".into(),
            name: "handoff".into(),
            steps: vec![
                step("split", "test.split", &[], json!({})),
                step("embed-0", "test.embed", &["split"], json!({"factor": 2})),
                step("embed-1", "test.embed", &["split"], json!({"factor": 5})),
                step("write", "test.write", &["embed-0", "embed-1"], json!({})),
            ],
        })
        .await
        .expect("submit");
    let write = wf.step("write").expect("write").job_id;
    let done = node.wait_for(write, JobState::Succeeded).await;
    assert_eq!(
        done.result,
        json!({"sum": 21, "from": ["embed-0", "embed-1"]})
    );
    let wf = node
        .broker
        .get_workflow(&Scope::All, wf.id)
        .await
        .expect("workflow");
    assert_eq!(wf.state, WorkflowState::Succeeded);
    node.stop().await;
}

/// Dynamic fan-out: a split adds one embed step per batch it found, and
/// the write that needs the split waits for all of them and reads them.
#[tokio::test]
async fn a_step_adds_steps_and_its_dependents_wait_for_them() {
    use weir_shared::workflow::{WorkflowRequest, WorkflowState};
    let mut r = registry();
    r.register("test.split", |ctx: Context, p: Value| async move {
        let batches = p["batches"].as_u64().unwrap_or(0);
        let steps = (0..batches)
            .map(|i| ctx.step(&format!("embed-{i}"), "test.embed", json!({"batch": i})))
            .collect();
        let added = ctx.add_steps(steps).await?;
        Ok::<_, TaskError>(json!({"added": added}))
    });
    r.register("test.embed", |_ctx: Context, p: Value| async move {
        Ok::<_, TaskError>(p["batch"].as_i64().unwrap_or(0) * 10)
    });
    r.register("test.write", |ctx: Context, _p: Value| async move {
        let parents = ctx.parents().await?;
        let sum: i64 = parents.values().filter_map(|o| o.result.as_i64()).sum();
        Ok::<_, TaskError>(json!({"sum": sum, "parents": parents.len()}))
    });
    let node = start(r, &[], 8).await;
    let wf = node
        .broker
        .submit_workflow(WorkflowRequest {
            tenant: "t".into(),
            name: "fan".into(),
            steps: vec![
                step("split", "test.split", &[], json!({"batches": 5})),
                step("write", "test.write", &["split"], json!({})),
            ],
        })
        .await
        .expect("submit");
    let write = wf.step("write").expect("write").job_id;
    let done = node.wait_for(write, JobState::Succeeded).await;
    // 0 + 10 + 20 + 30 + 40 from the embeds; the split's result is an object.
    assert_eq!(done.result, json!({"sum": 100, "parents": 6}));
    let wf = node
        .broker
        .get_workflow(&Scope::All, wf.id)
        .await
        .expect("workflow");
    assert_eq!(wf.state, WorkflowState::Succeeded);
    assert_eq!(wf.steps.len(), 7);
    assert!(wf.step("split/embed-4").is_some());
    node.stop().await;
}

/// A workflow step of tenant `t` on `default`, no retries, cancelled when
/// a parent fails.
fn step(
    id: &str,
    task: &str,
    needs: &[&str],
    payload: Value,
) -> weir_shared::workflow::StepRequest {
    weir_shared::workflow::StepRequest {
        id: id.into(),
        needs: needs.iter().map(|s| s.to_string()).collect(),
        on_parent_failure: weir_shared::workflow::OnParentFailure::Cancel,
        job: EnqueueRequest {
            id: None,
            tenant: "t".into(),
            task: task.into(),
            queue: "default".into(),
            payload,
            priority: 5,
            run_at: None,
            max_retries: 0,
            timeout_ms: None,
            unique_key: None,
            serial_key: None,
        },
    }
}
