//! The built-in tasks, for smoke tests, demos and benchmarks.

use crate::task::{Context, Registry, TaskError};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Millis {
    ms: u64,
}

#[derive(Deserialize, Default)]
struct FailPlan {
    times: Option<u32>,
}

impl Registry {
    /// A registry with weir's built-in tasks (`weir.noop`, `weir.echo`,
    /// `weir.sleep`, `weir.cpu`, `weir.fail`). They live here, beside their
    /// handlers, so the task module does not depend on them.
    pub fn with_builtins() -> Self {
        let mut registry = Registry::new();
        register(&mut registry);
        registry
    }
}

fn register(registry: &mut Registry) {
    registry
        .register("weir.noop", |_ctx: Context, _payload: Value| async {
            Ok::<_, TaskError>(Value::Null)
        })
        .register("weir.echo", |_ctx: Context, payload: Value| async {
            Ok::<_, TaskError>(payload)
        })
        .register("weir.sleep", |ctx: Context, p: Millis| async move {
            // A sleeping job holds a slot but no thread; it wakes early if cancelled.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(p.ms)) => Ok(Value::Null),
                _ = ctx.cancelled() => Err(TaskError::retry("interrupted")),
            }
        })
        .register("weir.cpu", |ctx: Context, p: Millis| async move {
            // Spinning belongs on a blocking thread, never on the async runtime.
            let spin = tokio::task::spawn_blocking(move || {
                let end = Instant::now() + Duration::from_millis(p.ms);
                let mut x: u64 = 0;
                while Instant::now() < end && !ctx.is_cancelled() {
                    for i in 0..10_000u64 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                    }
                }
                std::hint::black_box(x);
            });
            spin.await.map_err(|e| TaskError::retry(e.to_string()))?;
            Ok(Value::Null)
        })
        .register(
            weir_shared::celery::REJECTED_TASK,
            |_ctx: Context, message: Value| async move {
                // A Celery message the ingress could not take: kept, and
                // failed with the reason, so it shows in the dead letters.
                Err::<Value, _>(TaskError::fatal(format!(
                    "Celery message refused: {}",
                    message["reason"].as_str().unwrap_or("unreadable")
                )))
            },
        )
        .register(
            "weir.fail",
            |ctx: Context, plan: Option<FailPlan>| async move {
                match plan.unwrap_or_default().times {
                    Some(times) if ctx.attempt() > times => Ok(Value::Null),
                    Some(times) => Err(TaskError::retry(format!(
                        "weir.fail: planned failure {} of {times}",
                        ctx.attempt()
                    ))),
                    None => Err(TaskError::retry("weir.fail: planned failure")),
                }
            },
        );
}
