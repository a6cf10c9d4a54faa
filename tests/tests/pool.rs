//! Worker pools: children recycled after a number of tasks or past a memory
//! limit, with no job lost or run twice and no drop in capacity.

use serde_json::Value;
use std::time::Duration;
use weir_tests::{Sandbox, wait_until};

fn node(sandbox: &Sandbox) -> Option<Value> {
    sandbox.nodes().into_iter().next()
}

fn succeeded(sandbox: &Sandbox) -> u64 {
    let queues = sandbox.cli_json(&["queues", "--json"]);
    queues["data"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == "default"))
        .and_then(|q| q["counts"]["succeeded"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn children_are_recycled_after_their_tasks_without_losing_capacity_or_jobs() {
    let mut sandbox = Sandbox::new();
    sandbox.set("WEIR_MAX_TASKS_PER_CHILD", "50");
    let worker = sandbox.spawn("worker", &["worker", "--processes", "2", "-c", "4"]);
    let up = wait_until(Duration::from_secs(20), || async {
        node(&sandbox).is_some_and(|n| n["slots"]["current"] == 4)
    })
    .await;
    assert!(up, "the node never served its 4 slots:\n{}", worker.log());

    // 41 x 50: every child that runs reaches its limit, so the recycles are
    // at least 40 however the jobs fall between the two children.
    let total = 2050;
    let out = sandbox.cli(&[
        "enqueue",
        "weir.sleep",
        "--payload",
        "{\"ms\":2}",
        "--count",
        &total.to_string(),
    ]);
    assert!(out.status.success());
    let mut samples = 0;
    while succeeded(&sandbox) < total {
        let n = node(&sandbox).expect("the node stays listed");
        assert!(
            n["slots"]["current"].as_u64() >= Some(4),
            "capacity dropped below the configured slots: {n}"
        );
        samples += 1;
        assert!(samples < 600, "jobs did not finish:\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = sandbox.all_jobs();
    assert_eq!(jobs.len() as u64, total);
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "a recycle ran a job twice: {job}");
    }
    let recycled = wait_until(Duration::from_secs(10), || async {
        node(&sandbox).is_some_and(|n| n["recycles"].as_u64() >= Some(40))
    })
    .await;
    let n = node(&sandbox).expect("node");
    assert!(recycled, "too few recycles reported: {n}");
    assert_eq!(n["restarts"], 0, "{n}");
    assert_eq!(
        n["config"]["max_tasks_per_child"],
        "WEIR_MAX_TASKS_PER_CHILD"
    );
}

#[tokio::test]
async fn a_child_over_its_memory_limit_is_replaced_and_jobs_keep_succeeding() {
    let mut sandbox = Sandbox::new();
    // Below what any child uses, so every serving child is over it.
    sandbox.set("WEIR_MAX_MEMORY_PER_CHILD", "1MiB");
    let worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "2"]);
    let recycled = wait_until(Duration::from_secs(30), || async {
        node(&sandbox).is_some_and(|n| n["recycles"].as_u64() >= Some(2))
    })
    .await;
    assert!(
        recycled,
        "no child was replaced for its memory:\n{}",
        worker.log()
    );
    let out = sandbox.cli(&["enqueue", "weir.noop", "--count", "200"]);
    assert!(out.status.success());
    let done = wait_until(Duration::from_secs(30), || async {
        succeeded(&sandbox) == 200
    })
    .await;
    assert!(
        done,
        "jobs stopped succeeding while children were replaced:\n{}",
        worker.log()
    );
    assert!(worker.log().contains("over WEIR_MAX_MEMORY_PER_CHILD"));
}

#[tokio::test]
async fn autoscaling_grows_under_backlog_and_shrinks_when_idle() {
    let sandbox = Sandbox::new();
    let worker = sandbox.spawn(
        "worker",
        &["worker", "--processes", "2", "--autoscale", "8,1"],
    );
    let up = wait_until(Duration::from_secs(20), || async {
        node(&sandbox).is_some_and(|n| n["slots"]["current"] == 1)
    })
    .await;
    assert!(up, "the node did not start at its floor:\n{}", worker.log());
    let n = node(&sandbox).expect("node");
    assert_eq!(
        (n["slots"]["min"].as_u64(), n["slots"]["max"].as_u64()),
        (Some(1), Some(8))
    );

    // A neighbour keeps every core of the host busy: the node looks at its
    // own CPU (its processes, or its cgroup quota), so it still grows.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut burners: Vec<std::process::Child> = (0..cores)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("sh")
        })
        .collect();
    let out = sandbox.cli(&[
        "enqueue",
        "weir.sleep",
        "--payload",
        "{\"ms\":400}",
        "--count",
        "120",
    ]);
    assert!(out.status.success());
    let grown = wait_until(Duration::from_secs(15), || async {
        node(&sandbox).is_some_and(|n| n["slots"]["current"] == 8)
    })
    .await;
    for b in &mut burners {
        let _ = b.kill();
        let _ = b.wait();
    }
    assert!(
        grown,
        "no growth to 8 slots within 15 s beside a CPU-bound neighbour: {:?}",
        node(&sandbox)
    );
    assert!(
        wait_until(Duration::from_secs(30), || async {
            succeeded(&sandbox) == 120
        })
        .await
    );

    let shrunk = wait_until(Duration::from_secs(60), || async {
        node(&sandbox).is_some_and(|n| n["slots"]["current"] == 1)
    })
    .await;
    let n = node(&sandbox).expect("node");
    assert!(
        shrunk,
        "not back to 1 slot within a minute of idleness: {n}"
    );
    let decisions = n["scaling"].as_array().cloned().unwrap_or_default();
    assert!(
        decisions
            .iter()
            .any(|d| d["to"].as_u64() > d["from"].as_u64()),
        "{n}"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["to"].as_u64() < d["from"].as_u64()),
        "{n}"
    );
    assert!(
        decisions
            .iter()
            .all(|d| d["reason"].as_str().is_some_and(|r| !r.is_empty()))
    );
}
