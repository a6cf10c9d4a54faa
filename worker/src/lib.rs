//! weir's worker node: runs jobs from the broker with leases, retries,
//! timeouts and graceful shutdown, in child processes under a supervisor.
//!
//! # Layout
//!
//! - [`task`]: the handler API: [`Registry`], [`Context`], [`TaskError`].
//! - `builtin`: `weir.noop`, `weir.echo`, `weir.sleep`, `weir.cpu`, `weir.fail`.
//! - `executor`: one attempt: decode, timeout, panic capture.
//! - [`node`]: the job runtime of one process: demand-driven fetch, lease
//!   renewal, batched acknowledgements, drain on shutdown.
//! - `supervisor` / `child`: the node's processes and their pipe protocol.
//! - `heartbeat`: what a node reports, for both kinds of node.
//!
//! # Usage
//!
//! A binary with its own handlers calls [`run`] the way `weir worker` does;
//! the supervisor starts the same binary again as its children (see
//! `examples/custom_task.rs`).

mod ack;
mod batcher;
mod builtin;
mod child;
mod executor;
mod heartbeat;
mod http;
mod index;
mod mail;
pub mod node;
mod provider;
mod python;
mod relay;

pub use relay::JOB_BUCKETS;
mod supervisor;
pub mod task;
mod warmup;

pub use node::{NodeOptions, NodeStats, run_node};
pub use supervisor::spread;
pub use task::{Context, ParentOutcome, Registry, StepRequest, TaskError};

use heartbeat::{Counts, HEARTBEAT_EVERY, HEARTBEAT_TTL, Identity};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;
use weir_shared::node::{ChildInfo, Slots};

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A child process could not be started.
    #[error("cannot start a worker child process: {0}")]
    Spawn(std::io::Error),
    /// The child environment is malformed.
    #[error("{0}")]
    Child(String),
}

/// This machine's host name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// A node id unique per run: `host:pid:random`.
pub fn node_id() -> String {
    format!(
        "{}:{}:{:04x}",
        hostname(),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs a worker node: the supervisor and its children. In a process that
/// the supervisor started as a child, runs that child's share of slots
/// instead. Returns after `shutdown` fires and every job is finished or
/// handed back.
pub async fn run(
    broker: SharedBroker,
    registry: Registry,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    run_reporting(broker, registry, settings, Arc::default(), shutdown).await
}

/// True in a process that a worker node's supervisor started as a child.
pub fn is_child() -> bool {
    std::env::var_os(child::CHILD_ENV).is_some()
}

/// [`run`], setting `consuming` while the node has at least one child
/// taking jobs (what the node's `/readyz` reports).
pub async fn run_reporting(
    broker: SharedBroker,
    mut registry: Registry,
    settings: Arc<Settings>,
    consuming: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    warmup::register(&mut registry, &settings);
    http::register(&mut registry, &settings);
    mail::register(&mut registry, &settings);
    index::register(&mut registry, &settings);
    http::register_endpoints(&mut registry, &settings);
    python::register(&mut registry, &settings);
    match std::env::var(child::CHILD_ENV) {
        Ok(node) => {
            let slots = std::env::var(child::SLOTS_ENV)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    WorkerError::Child(format!("{} is missing or not a number", child::SLOTS_ENV))
                })?;
            child::run_child(broker, Arc::new(registry), settings, node, slots, shutdown).await;
            Ok(())
        }
        Err(_) => {
            let tasks = registry.names().map(str::to_owned).collect();
            supervisor::supervise(broker, settings, tasks, consuming, shutdown).await
        }
    }
}

/// Runs a worker inside this process (as `weir dev` does): the node's
/// slots in one runtime, with its own heartbeat.
pub async fn run_in_process(
    broker: SharedBroker,
    mut registry: Registry,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) {
    warmup::register(&mut registry, &settings);
    http::register(&mut registry, &settings);
    mail::register(&mut registry, &settings);
    index::register(&mut registry, &settings);
    http::register_endpoints(&mut registry, &settings);
    python::register(&mut registry, &settings);
    let tasks = registry.names().map(str::to_owned).collect();
    let identity = Identity::new(node_id(), &settings, tasks);
    let node = identity.id().to_owned();
    let stats = Arc::new(NodeStats::default());
    let slots = settings.worker.concurrency;
    let queues = settings.worker_queues();
    let stop_heartbeat = CancellationToken::new();
    let heartbeat = {
        let broker = broker.clone();
        let stats = stats.clone();
        let stop = stop_heartbeat.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {},
                    () = stop.cancelled() => break,
                }
                let busy = stats.busy.load(Ordering::Relaxed);
                let processed = stats.processed.load(Ordering::Relaxed);
                let info = identity.report(Counts {
                    slots: Slots {
                        busy,
                        current: slots,
                        min: slots,
                        max: slots,
                    },
                    processed,
                    children: vec![ChildInfo {
                        pid: std::process::id(),
                        slots,
                        busy,
                        processed,
                        state: "serving".into(),
                        failures: 0,
                    }],
                    ..Counts::default()
                });
                if let Err(e) = broker.heartbeat(&info, HEARTBEAT_TTL).await {
                    tracing::warn!(error = %e, "Heartbeat failed");
                }
            }
            let _ = broker.remove_worker(identity.id()).await;
        })
    };
    let options = NodeOptions {
        worker_id: format!("{node}/{}", std::process::id()),
        queues,
        slots,
        max_claims: None,
        slot_control: None,
    };
    run_node(
        broker,
        Arc::new(registry),
        settings,
        options,
        stats,
        shutdown,
    )
    .await;
    stop_heartbeat.cancel();
    let _ = heartbeat.await;
}
