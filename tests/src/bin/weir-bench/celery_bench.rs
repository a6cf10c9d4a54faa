//! The Celery ingress part of the benchmark: Celery-protocol no-op tasks
//! (messages as Celery 5.7 writes them, pushed onto a queue of a Redis
//! database 14 under a key prefix of their own) drained three ways on the
//! same machine, one after the other:
//! - `weir celery-ingress` + one `weir worker --processes 1 -c 64` with the
//!   task as a weir handler (`weir.noop`);
//! - the same with the task in weir's Python runner (`-c 2`: two runners);
//! - Celery's own worker, prefork `-c 2`, on the same messages.
//!
//! Rate = tasks / (weir: from starting the ingress to the last job's end;
//! Celery: from its first task's start to its last task's end, so its
//! worker's start-up is not counted). The Python task bumps a Redis
//! counter on both Python sides.

use anyhow::{Result, bail};
use base64::Engine as _;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weir_tests::{Sandbox, wait_until};

const WEIR_TASKS: usize = 20_000;
const PYTHON_TASKS: usize = 5_000;
const URL: &str = "redis://127.0.0.1:6379/14";

fn python() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/tools/venv-celery/bin/python"
    )
    .to_owned()
}

fn ensure_celery() -> Result<()> {
    let ok = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/celery-python"
    ))
    .args(["-c", "import celery"])
    .status()?
    .success();
    if !ok {
        bail!("scripts/celery-python could not install Celery");
    }
    Ok(())
}

/// A message as Celery 5.7's Redis transport stores it.
fn message(task: &str, queue: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!([[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    json!({
        "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
        "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": id, "shadow": null, "eta": null,
            "expires": null, "group": null, "group_index": null, "retries": 0,
            "timelimit": [null, null], "root_id": id, "parent_id": null, "argsrepr": "()",
            "kwargsrepr": "{}", "origin": "bench", "ignore_result": true},
        "properties": {"correlation_id": id, "reply_to": "bench", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": id}
    })
    .to_string()
}

fn push(
    conn: &mut redis::Connection,
    prefix: &str,
    queue: &str,
    task: &str,
    n: usize,
) -> Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let messages: Vec<String> = chunk.iter().map(|_| message(task, queue)).collect();
        let _: () = redis::cmd("LPUSH")
            .arg(format!("{prefix}{queue}"))
            .arg(messages)
            .query(conn)?;
    }
    Ok(())
}

fn cleanup(conn: &mut redis::Connection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(conn);
    }
}

/// Drains `n` messages of `task` through the ingress and a weir worker.
async fn weir_run(
    task: &str,
    n: usize,
    slots: &str,
    python_runner: bool,
    redis_broker: bool,
) -> Result<f64> {
    let client = redis::Client::open(URL)?;
    let mut conn = client.get_connection()?;
    let prefix = format!("wb{}:", uuid::Uuid::now_v7().simple());
    push(&mut conn, &prefix, "bench", task, n)?;
    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_LOG", "warn")
        .set("WEIR_PYTHON", &python())
        .set("WEIR_PYTHON_APP", "bench_app:app")
        .set("WEIR_BENCH_CELERY_BROKER", URL)
        .set("WEIR_BENCH_PREFIX", &prefix)
        .set("WEIR_BENCH_COUNTER", &format!("{prefix}done"))
        .set("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"));
    let mut config = "[queues]\ndeclared = [\"bench\", \"default\"]\n".to_owned();
    if python_runner {
        config.push_str(&format!("[tasks.\"{task}\"]\nrunner = \"python\"\n"));
    }
    sandbox.config(&config);
    let _cleanup = redis_broker.then(|| {
        let weir_prefix = format!("weirbench{}", uuid::Uuid::now_v7().simple());
        sandbox
            .set("WEIR_BROKER_URL", "redis://127.0.0.1:6379/15")
            .set("WEIR_REDIS_PREFIX", &weir_prefix);
        weir_shared::broker::redis::PrefixCleanup {
            url: "redis://127.0.0.1:6379/15".into(),
            prefix: weir_prefix,
        }
    });
    let _node = sandbox.spawn(
        "worker",
        &["worker", "-Q", "bench", "--processes", "1", "-c", slots],
    );
    // The worker's runners import the app before the clock starts.
    if python_runner {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let started = weir_shared::job::now_ms().0;
    let _ingress = sandbox.spawn(
        "ingress",
        &[
            "celery-ingress",
            "--from",
            URL,
            "-Q",
            "bench",
            "--key-prefix",
            &prefix,
        ],
    );
    let done = if redis_broker {
        wait_until(Duration::from_secs(600), || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            super::succeeded(&sandbox) >= n as u64
        })
        .await
    } else {
        // Read from the broker's file (a CLI process per poll would take a
        // core's share from the drain).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let db = super::db(&sandbox).await?;
        wait_until(Duration::from_secs(600), || async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE state = 'succeeded'")
                .fetch_one(&db)
                .await
                .unwrap_or(0)
                >= n as i64
        })
        .await
    };
    let jobs = sandbox.all_jobs();
    let last = jobs
        .iter()
        .filter_map(|j| {
            serde_json::from_value::<weir_shared::job::Millis>(j["finished_at"].clone()).ok()
        })
        .map(|m| m.0)
        .max()
        .unwrap_or(started);
    cleanup(&mut conn, &prefix);
    if !done {
        bail!("the drain did not finish");
    }
    Ok(n as f64 / ((last - started) as f64 / 1000.0))
}

/// Drains `n` messages with Celery's prefork worker, `-c 2`.
async fn celery_run(n: usize) -> Result<f64> {
    let client = redis::Client::open(URL)?;
    let mut conn = client.get_connection()?;
    let prefix = format!("wb{}:", uuid::Uuid::now_v7().simple());
    push(&mut conn, &prefix, "bench", "bench.noop", n)?;
    let counter = format!("{prefix}done");
    let mut worker: Child = Command::new(python())
        .args([
            "-m",
            "celery",
            "-A",
            "bench_app",
            "worker",
            "-Q",
            "bench",
            "-c",
            "2",
            "--pool",
            "prefork",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
        ])
        .env("PYTHONPATH", concat!(env!("CARGO_MANIFEST_DIR"), "/python"))
        .env("WEIR_BENCH_CELERY_BROKER", URL)
        .env("WEIR_BENCH_PREFIX", &prefix)
        .env("WEIR_BENCH_COUNTER", &counter)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let done = wait_until(Duration::from_secs(600), || {
        let counter = counter.clone();
        let client = client.clone();
        async move {
            let Ok(mut c) = client.get_connection() else {
                return false;
            };
            let count: u64 = redis::cmd("GET").arg(&counter).query(&mut c).unwrap_or(0);
            count >= n as u64
        }
    })
    .await;
    let first: f64 = redis::cmd("GET")
        .arg(format!("{prefix}first"))
        .query(&mut conn)
        .unwrap_or(0.0);
    let last: f64 = redis::cmd("GET")
        .arg(format!("{prefix}last"))
        .query(&mut conn)
        .unwrap_or(0.0);
    let _ = worker.kill();
    let _ = worker.wait();
    cleanup(&mut conn, &prefix);
    if !done || last <= first {
        bail!("Celery's drain did not finish");
    }
    Ok(n as f64 / (last - first))
}

/// Prints the report.
pub async fn report() -> Result<()> {
    ensure_celery()?;
    println!("## Celery ingress ({})", super::machine());
    let handler = weir_run("weir.noop", WEIR_TASKS, "64", false, false).await?;
    let handler_redis = weir_run("weir.noop", WEIR_TASKS, "64", false, true).await?;
    let runner = weir_run("bench.noop", PYTHON_TASKS, "4", true, true).await?;
    let runner2 = weir_run("bench.noop", PYTHON_TASKS, "2", true, true).await?;
    let celery = celery_run(PYTHON_TASKS).await?;
    println!(
        "\nCelery-protocol no-op tasks on Redis db 14, drained after they were all queued (consumer start to last end):\n"
    );
    println!("| consumer | tasks | tasks/s | vs Celery prefork -c 2 |");
    println!("|---|---|---|---|");
    println!(
        "| weir celery-ingress + weir handler (`-c 64`), weir on SQLite | {WEIR_TASKS} | {handler:.0} | {:.1}x |",
        handler / celery
    );
    println!(
        "| weir celery-ingress + weir handler (`-c 64`), weir on Redis | {WEIR_TASKS} | {handler_redis:.0} | {:.1}x |",
        handler_redis / celery
    );
    println!(
        "| weir celery-ingress + Python runner (`-c 4`), weir on Redis | {PYTHON_TASKS} | {runner:.0} | {:.1}x |",
        runner / celery
    );
    println!(
        "| weir celery-ingress + Python runner (`-c 2`), weir on Redis | {PYTHON_TASKS} | {runner2:.0} | {:.1}x |",
        runner2 / celery
    );
    println!("| Celery 5 worker, prefork `-c 2` | {PYTHON_TASKS} | {celery:.0} | 1.0x |");
    println!(
        "\n(bars: >= 10x with weir handlers, >= 2x with the Python runner; Celery's from its first task's start to its last task's end)"
    );
    Ok(())
}
