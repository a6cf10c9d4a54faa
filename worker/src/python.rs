//! The Python runner: Celery task bodies (`[tasks."NAME"] runner =
//! "python"`) run in child processes of the worker (`WEIR_PYTHON`, default
//! `python3`, with `python/weir_runner.py`), each importing the Celery app
//! `WEIR_PYTHON_APP` names once and running one task at a time over a
//! JSON-lines protocol (documented in the script). Runners are kept for
//! the next job and replaced after `WEIR_MAX_TASKS_PER_CHILD` tasks; a
//! runner that dies mid-task fails that attempt (retryable) and is not
//! reused; a job that times out or is cancelled kills its runner.

use crate::task::{Context, Registry, TaskError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;
use weir_shared::config::{Settings, TaskBody};

/// The runner script.
const RUNNER: &str = include_str!("../../python/weir_runner.py");
/// How long a runner may take to import the app.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// One runner process.
struct Runner {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    done: u64,
}

/// The idle runners of this process.
struct Pool {
    idle: Mutex<Vec<Runner>>,
    python: String,
    app: Option<String>,
    max_tasks: u64,
}

impl Pool {
    async fn start(&self) -> Result<Runner, TaskError> {
        let Some(app) = &self.app else {
            return Err(TaskError::fatal(
                "runner = \"python\" needs WEIR_PYTHON_APP=module:attribute (the Celery app)",
            ));
        };
        let mut child = Command::new(&self.python)
            .arg("-c")
            .arg(RUNNER)
            .env("WEIR_PYTHON_APP", app)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                TaskError::retry(format!(
                    "cannot start the Python runner `{}`: {e} (set WEIR_PYTHON)",
                    self.python
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(TaskError::retry("the Python runner has no pipes"));
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| TaskError::retry("the Python runner did not start in 120 s"))?
            .map_err(|e| TaskError::retry(format!("the Python runner: {e}")))?;
        let ready: Value = ready
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                TaskError::retry(format!(
                    "the Python runner could not load `{app}` (its error is in the worker's log)"
                ))
            })?;
        tracing::info!(
            pid = ready["pid"].as_u64().unwrap_or(0),
            python = ready["python"].as_str().unwrap_or(""),
            celery = ready["celery"].as_str().unwrap_or(""),
            tasks = ready["tasks"].as_array().map_or(0, Vec::len),
            "Python runner ready"
        );
        Ok(Runner {
            child,
            stdin,
            lines,
            done: 0,
        })
    }

    async fn take(&self) -> Result<Runner, TaskError> {
        if let Some(runner) = self.idle.lock().await.pop() {
            return Ok(runner);
        }
        self.start().await
    }

    async fn give_back(&self, mut runner: Runner) {
        runner.done += 1;
        if self.max_tasks > 0 && runner.done >= self.max_tasks {
            // Recycled: a fresh one starts at the next job.
            let _ = runner.child.start_kill();
            let _ = runner.child.wait().await;
            return;
        }
        self.idle.lock().await.push(runner);
    }
}

/// Registers every configured task whose body is the Python runner and
/// that no handler of the same name runs.
pub(crate) fn register(registry: &mut Registry, settings: &Arc<Settings>) {
    let names: Vec<String> = settings
        .tasks
        .iter()
        .filter(|(name, t)| t.body == TaskBody::Python && registry.get(name).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    if names.is_empty() {
        return;
    }
    let pool = Arc::new(Pool {
        idle: Mutex::new(Vec::new()),
        python: std::env::var("WEIR_PYTHON").unwrap_or_else(|_| "python3".into()),
        app: std::env::var("WEIR_PYTHON_APP")
            .ok()
            .filter(|a| !a.is_empty()),
        max_tasks: settings.worker.max_tasks_per_child,
    });
    for name in names {
        let pool = pool.clone();
        registry.register(&name, move |ctx: Context, payload: Value| {
            let pool = pool.clone();
            async move { run(&pool, &ctx, payload).await }
        });
    }
}

async fn run(pool: &Pool, ctx: &Context, payload: Value) -> Result<Value, TaskError> {
    let mut runner = pool.take().await?;
    let celery = &payload["celery"];
    let retries = celery["retries"].as_u64().unwrap_or(0) + u64::from(ctx.attempt()) - 1;
    let request = json!({
        "op": "run",
        "seq": ctx.attempt(),
        "task": ctx.task(),
        "args": payload.get("args").cloned().unwrap_or_else(|| json!([])),
        "kwargs": payload.get("kwargs").cloned().unwrap_or_else(|| json!({})),
        "request": {
            "id": celery["id"].as_str().map_or_else(|| ctx.job_id().to_string(), str::to_owned),
            "retries": retries,
            "root_id": celery["root_id"],
            "parent_id": celery["parent_id"],
            "group": celery["group"],
            "soft_time_limit": celery["soft_time_limit"],
            "delivery_info": {"routing_key": ctx.queue()},
            "hostname": crate::hostname(),
        },
    });
    let line = format!("{request}\n");
    let answer = async {
        runner.stdin.write_all(line.as_bytes()).await?;
        runner.stdin.flush().await?;
        // Progress lines (self.update_state) until the task's end.
        loop {
            let Some(text) = runner.lines.next_line().await? else {
                return Ok::<_, std::io::Error>(None);
            };
            match serde_json::from_str::<Value>(&text) {
                Ok(v) if v["op"] == "progress" => {
                    ctx.progress(v["value"].clone()).await;
                }
                Ok(v) => return Ok(Some(v)),
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "garbage from the runner: {e}"
                    )));
                }
            }
        }
    };
    // Dropped on timeout or cancellation: the runner is killed with it.
    let answer = tokio::select! {
        a = answer => a,
        () = ctx.cancelled() => return Err(TaskError::retry("interrupted")),
    };
    let answer: Value = match answer {
        Ok(Some(v)) => v,
        Ok(None) | Err(_) => {
            let status = runner.child.wait().await.ok();
            return Err(TaskError::retry(format!(
                "the Python runner exited during the task ({})",
                status.map_or_else(|| "status unknown".into(), |s| s.to_string())
            )));
        }
    };
    let outcome = match answer["op"].as_str() {
        Some("done") => Ok(answer["result"].clone()),
        Some("retry") => {
            let after = Duration::from_millis(answer["countdown_ms"].as_u64().unwrap_or(0));
            let error = answer["error"]
                .as_str()
                .unwrap_or("retry requested")
                .to_owned();
            Err(TaskError::RetryAfter(error, after))
        }
        _ => Err(TaskError::fatal(format!(
            "{}: {}",
            answer["exc_type"].as_str().unwrap_or("Exception"),
            answer["message"].as_str().unwrap_or("")
        ))),
    };
    pool.give_back(runner).await;
    outcome
}
