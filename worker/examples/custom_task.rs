//! A worker node with a task of your own, next to weir's built-in ones.
//!
//! ```sh
//! # terminal 1: the API (declare the task so the API accepts it)
//! printf '[tasks."demo.greet"]\nqueue = "default"\n' > demo.toml
//! WEIR_CONFIG=demo.toml WEIR_AUTH=disabled cargo run -- api
//! # terminal 2: this worker node (its children run this same binary)
//! WEIR_CONFIG=demo.toml cargo run -p weir-worker --example custom_task
//! # terminal 3:
//! curl -s -XPOST localhost:8080/v1/jobs -d '{"task":"demo.greet","payload":{"name":"Ada","times":3}}'
//! ```

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use weir_shared::config::Settings;
use weir_worker::{Context, Registry, TaskError};

/// The payload, decoded from the job's JSON. A payload that does not fit
/// ends the job `failed` with serde's message, without retries.
#[derive(Deserialize)]
struct Greet {
    name: String,
    times: u32,
}

/// The result, stored as the job's JSON result.
#[derive(Serialize)]
struct Greeting {
    text: String,
    attempt: u32,
}

async fn greet(ctx: Context, job: Greet) -> Result<Greeting, TaskError> {
    if job.name.is_empty() {
        // No retry can fix this: fail at once.
        return Err(TaskError::fatal("name must not be empty"));
    }
    for i in 1..=job.times {
        if ctx.is_cancelled() {
            return Err(TaskError::retry("stopped before finishing"));
        }
        ctx.progress(serde_json::json!({"done": i, "of": job.times}))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Greeting {
        text: format!("hello, {}", job.name),
        attempt: ctx.attempt(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let settings = Arc::new(Settings::from_env()?);
    let broker = settings.broker.open().await?;
    let mut registry = Registry::with_builtins();
    registry.register("demo.greet", greet);

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    weir_worker::run(broker, registry, settings, shutdown).await?;
    Ok(())
}
