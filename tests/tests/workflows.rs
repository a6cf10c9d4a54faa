//! Workflows end to end with the real binary: a diamond whose steps start
//! only after their parents ended, a 500-step fan-out / fan-in, the event
//! stream, failure and retry from the CLI, every validation refusal, and a
//! worker killed with kill -9 in the middle of many workflows on Redis.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use weir_shared::broker::conformance::service_url;
use weir_shared::job::{Job, JobState};
use weir_tests::{
    Dev, Sandbox, default_counts, kill_node, redis_sandbox, wait_until, wait_workers,
};

/// Waits until workflow `id` has ended; returns it.
async fn wait_ended(api: &Dev, id: &str, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (_, w) = api.get(&format!("/v1/workflows/{id}")).await;
        if w["state"].is_string() && w["state"] != "running" {
            return w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workflow {id} never ended: {w}\nlog:\n{}",
            api.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The job of each step, by step id.
async fn step_jobs(api: &Dev, workflow: &Value) -> HashMap<String, Job> {
    let mut out = HashMap::new();
    for step in workflow["steps"].as_array().cloned().unwrap_or_default() {
        let (status, job) = api
            .get(&format!(
                "/v1/jobs/{}",
                step["job_id"].as_str().unwrap_or("")
            ))
            .await;
        assert_eq!(status, 200, "{job}");
        out.insert(
            step["id"].as_str().unwrap_or("").to_owned(),
            serde_json::from_value(job).expect("a job"),
        );
    }
    out
}

/// Every step started after each of its parents finished.
fn parents_first(jobs: &HashMap<String, Job>) {
    for (step, job) in jobs {
        let needs = &job
            .workflow
            .as_ref()
            .expect("a step shows its workflow")
            .needs;
        for parent in needs {
            let p = &jobs[parent];
            assert!(
                p.finished_at
                    .is_some_and(|f| job.started_at.is_some_and(|s| s >= f)),
                "`{step}` started at {:?}, before its parent `{parent}` finished at {:?}",
                job.started_at,
                p.finished_at
            );
        }
    }
}

#[tokio::test]
async fn a_diamond_runs_parents_first_and_streams_its_steps() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.dev().await;
    let (status, wf) = api
        .post(
            "/v1/workflows",
            &json!({"name": "diamond", "steps": [
                {"id": "d", "task": "weir.echo", "needs": ["b", "c"], "payload": "d"},
                {"id": "a", "task": "weir.echo", "payload": {"x": 1}},
                {"id": "b", "task": "weir.sleep", "needs": ["a"], "payload": {"ms": 60}},
                {"id": "c", "task": "weir.sleep", "needs": ["a"], "payload": {"ms": 30}}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{wf}");
    let id = wf["id"].as_str().expect("id").to_owned();
    assert_eq!(wf["steps"][0]["id"], "d", "steps in submit order");
    assert_eq!(wf["steps"][0]["state"], "waiting");
    let events = api
        .http
        .get(format!("{}/v1/workflows/{id}/events", api.base))
        .send()
        .await
        .expect("events")
        .text();
    let events = tokio::time::timeout(Duration::from_secs(30), events)
        .await
        .expect("the stream ends with the workflow")
        .expect("text");
    let done = wait_ended(&api, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["finished_at"].is_string());
    let jobs = step_jobs(&api, &done).await;
    parents_first(&jobs);
    assert_eq!(jobs["a"].result, json!({"x": 1}));
    let shown = &jobs["d"].workflow;
    assert_eq!(
        shown.as_ref().map(|w| (w.id.to_string(), w.needs.clone())),
        Some((id.clone(), vec!["b".to_owned(), "c".to_owned()]))
    );
    // Every step's states in order, then the workflow's end, last.
    for step in ["a", "b", "c", "d"] {
        assert!(
            events.contains(&format!("\"step\":\"{step}\"")),
            "{step} in {events}"
        );
    }
    assert!(
        events.contains("\"state\":\"succeeded\",\"step\":\"d\"")
            || events.contains("\"step\":\"d\",\"job_id\"")
    );
    let tail = events.trim_end().rsplit("event: ").next().unwrap_or("");
    assert!(
        tail.starts_with("workflow") && tail.contains("succeeded"),
        "the last event is the workflow's end: {events}"
    );
    // The CLI reads the same workflow from the broker.
    let shown = sandbox.cli_json(&["workflows", "show", &id, "--json"]);
    assert_eq!(shown["state"], "succeeded");
    let listed = sandbox.cli_json(&["workflows", "list", "--json"]);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    let out = sandbox.cli(&["workflows", "show", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STEP") && text.contains("b, c"), "{text}");
}

#[tokio::test]
async fn five_hundred_steps_fan_out_and_back_in() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.dev().await;
    // split -> 492 embeds -> 6 joins of 82 -> write: 500 steps (a step
    // needs at most 100 parents, so the fan-in has two levels).
    let mut steps = vec![json!({"id": "split", "task": "weir.echo", "payload": {"batches": 492}})];
    for i in 0..492 {
        steps.push(json!({"id": format!("embed-{i}"), "task": "weir.noop", "needs": ["split"]}));
    }
    for g in 0..6 {
        let needs: Vec<String> = (g * 82..(g + 1) * 82)
            .map(|i| format!("embed-{i}"))
            .collect();
        steps.push(json!({"id": format!("join-{g}"), "task": "weir.noop", "needs": needs}));
    }
    let joins: Vec<String> = (0..6).map(|g| format!("join-{g}")).collect();
    steps.push(json!({"id": "write", "task": "weir.echo", "needs": joins, "payload": "done"}));
    assert_eq!(steps.len(), 500);
    let (status, wf) = api
        .post("/v1/workflows", &json!({"name": "fan", "steps": steps}))
        .await;
    assert_eq!(status, 201, "{wf}");
    let id = wf["id"].as_str().expect("id").to_owned();
    let done = wait_ended(&api, &id, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "succeeded");
    let states: Vec<&Value> = done["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| &s["state"])
        .collect();
    assert_eq!(states.len(), 500);
    assert!(states.iter().all(|s| *s == "succeeded"));
    let jobs = step_jobs(&api, &done).await;
    parents_first(&jobs);
    assert!(jobs.values().all(|j| j.attempts == 1), "no step ran twice");
}

#[tokio::test]
async fn a_failed_step_cancels_skips_or_runs_its_children_and_retry_reruns_only_it() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.dev().await;
    let (status, wf) = api
        .post(
            "/v1/workflows",
            &json!({"name": "flaky", "steps": [
                {"id": "ok", "task": "weir.echo", "payload": 1},
                {"id": "flaky", "task": "weir.fail", "payload": {"times": 1}, "max_retries": 0},
                {"id": "after", "task": "weir.noop", "needs": ["ok", "flaky"]},
                {"id": "optional", "task": "weir.noop", "needs": ["flaky"], "on_parent_failure": "skip"},
                {"id": "below-optional", "task": "weir.noop", "needs": ["optional"]},
                {"id": "report", "task": "weir.noop", "needs": ["flaky"], "on_parent_failure": "run"}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{wf}");
    let id = wf["id"].as_str().expect("id").to_owned();
    let done = wait_ended(&api, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "failed", "{done}");
    let state = |w: &Value, step: &str| -> (String, bool) {
        let s = w["steps"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == step))
            .cloned()
            .unwrap_or_default();
        (
            s["state"].as_str().unwrap_or("").to_owned(),
            s["skipped"] == true,
        )
    };
    assert_eq!(state(&done, "flaky").0, "failed");
    assert_eq!(state(&done, "after"), ("cancelled".into(), false));
    assert_eq!(state(&done, "optional"), ("cancelled".into(), true));
    assert_eq!(state(&done, "below-optional").0, "succeeded");
    assert_eq!(state(&done, "report").0, "succeeded");
    let jobs = step_jobs(&api, &done).await;
    assert!(
        jobs["after"]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("`flaky`")),
        "{:?}",
        jobs["after"].error
    );
    // Retrying one step by hand is refused with the way to do it.
    let (status, body) = api
        .post(&format!("/v1/jobs/{}/retry", jobs["flaky"].id), &json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("retry its workflow"), "{body}");

    let out = sandbox.cli(&["workflows", "retry", &id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = wait_ended(&api, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let again = step_jobs(&api, &done).await;
    assert_eq!(again["ok"].attempts, 1, "a succeeded step is not run again");
    assert_eq!(again["flaky"].attempts, 2);
    assert_eq!(again["after"].state, JobState::Succeeded);
    let out = sandbox.cli(&["workflows", "retry", &id]);
    assert_eq!(out.status.code(), Some(1), "nothing to retry is a refusal");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to retry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn bad_workflows_are_refused_naming_the_step_and_nothing_is_enqueued() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_AUTH", "disabled");
    let api = sandbox.api().await;
    let step = |id: &str, needs: &[&str]| json!({"id": id, "task": "weir.noop", "needs": needs});
    let many: Vec<Value> = (0..1001).map(|i| step(&format!("s{i}"), &[])).collect();
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"steps": [step("a", &["c"]), step("b", &["a"]), step("c", &["b"])]}),
            422,
            "cycle",
        ),
        (
            json!({"steps": [step("a", &[]), step("b", &["ghost"])]}),
            422,
            "`ghost`",
        ),
        (
            json!({"steps": [step("a", &[]), step("a", &[])]}),
            422,
            "`a` is used twice",
        ),
        (json!({"steps": many}), 422, "at most 1000"),
        (
            json!({"steps": [{"id": "x", "task": "no.such.task"}]}),
            422,
            "step `x`",
        ),
        (
            json!({"steps": [{"id": "x", "task": "weir.noop", "delay_ms": 5}]}),
            422,
            "delay_ms",
        ),
        (
            json!({"steps": [{"id": "x", "task": "weir.noop", "on_parent_failure": "ignore"}]}),
            422,
            "cancel, skip or run",
        ),
        (
            json!({"steps": [{"id": "a b", "task": "weir.noop"}]}),
            422,
            "a b",
        ),
        (json!({"steps": []}), 422, "at least one step"),
        (json!({"steps": "none"}), 400, "array"),
    ];
    for (body, want, named) in cases {
        let (status, answer) = api.post("/v1/workflows", &body).await;
        assert_eq!(status, want, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(named)),
            "{answer} names {named}"
        );
    }
    let counts = default_counts(&api).await;
    assert!(
        counts
            .as_object()
            .is_none_or(|c| c.values().all(|n| *n == json!(0))),
        "nothing was enqueued: {counts}"
    );
    let (_, page) = api.get("/v1/workflows").await;
    assert_eq!(page["data"], json!([]));
    let (status, _) = api.get("/v1/workflows/not-an-id").await;
    assert_eq!(status, 404);
    // The CLI refuses the same file with exit status 2 and the step named.
    let file = sandbox.dir.path().join("cycle.json");
    std::fs::write(
        &file,
        json!({"steps": [step("a", &["b"]), step("b", &["a"])]}).to_string(),
    )
    .expect("write");
    let out = sandbox.cli(&["workflows", "submit", file.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cycle"));
}

#[tokio::test]
async fn workflows_finish_when_a_worker_is_killed_on_redis() {
    let Some(url) = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15") else {
        return;
    };
    let (sandbox, _cleanup) = redis_sandbox(&url);
    let api = sandbox.api().await;
    let a = sandbox.spawn("worker-a", &["worker", "--processes", "1", "-c", "16"]);
    let _b = sandbox.spawn("worker-b", &["worker", "--processes", "1", "-c", "16"]);
    wait_workers(&api, 2).await;
    // 20 workflows: a chain of 3, a fan-out of 10 and a join.
    let mut ids = Vec::new();
    for n in 0..20 {
        let mut steps = vec![
            json!({"id": "s1", "task": "weir.sleep", "payload": {"ms": 100}}),
            json!({"id": "s2", "task": "weir.sleep", "needs": ["s1"], "payload": {"ms": 100}}),
            json!({"id": "s3", "task": "weir.sleep", "needs": ["s2"], "payload": {"ms": 100}}),
        ];
        let fan: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        for f in &fan {
            steps.push(
                json!({"id": f, "task": "weir.sleep", "needs": ["s3"], "payload": {"ms": 150}}),
            );
        }
        steps.push(json!({"id": "join", "task": "weir.echo", "needs": fan, "payload": n}));
        let (status, wf) = api
            .post(
                "/v1/workflows",
                &json!({"name": format!("w{n}"), "steps": steps}),
            )
            .await;
        assert_eq!(status, 201, "{wf}");
        ids.push(wf["id"].as_str().expect("id").to_owned());
    }
    assert!(
        wait_until(Duration::from_secs(30), || async {
            default_counts(&api).await["succeeded"].as_u64() >= Some(60)
        })
        .await,
        "work starts"
    );
    kill_node(&a);
    let mut reaped = 0;
    for id in &ids {
        let done = wait_ended(&api, id, Duration::from_secs(90)).await;
        assert_eq!(done["state"], "succeeded", "{done}\n{}", a.log());
        let jobs = step_jobs(&api, &done).await;
        parents_first(&jobs);
        for (step, job) in &jobs {
            reaped += job
                .history
                .iter()
                .filter(|h| h.outcome == "lease_expired")
                .count();
            let successes = job
                .history
                .iter()
                .filter(|h| h.outcome == "succeeded")
                .count();
            assert!(
                successes <= 1
                    && job
                        .history
                        .iter()
                        .all(|h| h.outcome != "succeeded" || h.attempt == job.attempts),
                "`{step}` ran again after it succeeded: {:?}",
                job.history
            );
        }
    }
    assert!(
        reaped > 0,
        "the killed node held running steps, run again elsewhere"
    );
    let counts = default_counts(&api).await;
    assert_eq!(counts["running"], 0, "{counts}");
    assert_eq!(counts["waiting"], 0, "{counts}");
    assert_eq!(counts["succeeded"], 20 * 14, "{counts}");
}
