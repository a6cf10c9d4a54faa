//! The supervisor of a worker node: it never runs jobs. It starts the child
//! processes that do, gives each its share of the node's slots, replaces a child
//! after `WEIR_MAX_TASKS_PER_CHILD` tasks or once its resident memory passes
//! `WEIR_MAX_MEMORY_PER_CHILD`, restarts a child that dies (with backoff
//! when it keeps dying), sends the node's heartbeat, and on shutdown asks
//! every child to drain and waits for them.
//!
//! Words: a *slot* is room for one running job; a *share* is one child's
//! part of the node's slots (and the position a replacement child takes
//! over). The node has `WEIR_CONCURRENCY` slots over `WEIR_PROCESSES` shares.
//!
//! # Layout
//!
//! - `process`: starting children, the pipe protocol, exits and restarts.
//! - `recycle`: replacing children by task count or memory, via standbys.
//! - `autoscale`: the pure scaling decision and applying it.
//! - `heartbeat`: the node's report from its children's.
//!
//! Recycling keeps capacity: with recycling on, each share keeps a standby
//! child, started ahead of time, connected and idle. A serving child stops
//! claiming by itself at its task limit and says so at once; the supervisor
//! then starts the standby (a `start` line on its stdin) and closes the old
//! child's stdin, so it finishes its running jobs and exits; a new standby
//! is started for next time. Memory is checked by the supervisor, which
//! swaps the same way. Every job is acknowledged by the child that ran it,
//! so a recycle never loses a job or runs one twice.

mod autoscale;
mod cpu;
mod heartbeat;
mod process;
mod recycle;

use crate::WorkerError;
use crate::heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_TTL, Identity};
pub use process::spread;
use process::{Event, Proc, Reports, Role, Share, split};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sysinfo::System;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;
use weir_shared::node::ScaleDecision;

/// How often children's memory is checked for recycling.
const CHECK_EVERY: Duration = Duration::from_secs(1);

struct Supervisor {
    node_id: String,
    identity: Identity,
    settings: Arc<Settings>,
    /// Each child's share of the node's slots, by position.
    shares: Vec<Share>,
    procs: HashMap<u32, Proc>,
    reports: Reports,
    events: mpsc::UnboundedSender<Event>,
    /// Tasks finished by children that have exited.
    processed_before: u64,
    recycles: u64,
    restarts: u64,
    /// Reads children's resident memory; `None` where the platform cannot.
    system: Option<System>,
    /// Autoscaling: the node's slots now, and its recent decisions.
    target: u32,
    last_change: Instant,
    idle_since: Option<Instant>,
    decisions: VecDeque<ScaleDecision>,
    broker: SharedBroker,
    child_ready_ms: Option<u64>,
    /// The node's own CPU, for the autoscaler.
    cpu: Option<cpu::CpuMeter>,
    /// Set while at least one child is consuming (the node's readiness).
    consuming: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs a worker node's supervisor until `shutdown`, then drains the children.
pub(crate) async fn supervise(
    broker: SharedBroker,
    settings: Arc<Settings>,
    tasks: Vec<String>,
    consuming: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let node_id = crate::node_id();
    let worker = &settings.worker;
    let (target, shares) = if worker.autoscale {
        let children = worker.processes.clamp(1, worker.max_workers);
        (worker.min_workers, split(worker.min_workers, children))
    } else {
        (
            worker.concurrency,
            spread(worker.concurrency, worker.processes),
        )
    };
    let sources: Vec<String> = settings
        .worker
        .sources
        .iter()
        .map(|(k, v)| format!("{k} from {v}"))
        .collect();
    tracing::info!(
        node = %node_id,
        processes = shares.len(),
        slots = target,
        autoscale = worker.autoscale,
        max_tasks_per_child = settings.worker.max_tasks_per_child,
        max_memory_per_child = ?settings.worker.max_memory_per_child,
        queues = %settings.worker_queues().to_spec(),
        sources = %sources.join(", "),
        "Starting worker node"
    );
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        node_id: node_id.clone(),
        identity: Identity::new(node_id.clone(), &settings, tasks),
        settings: settings.clone(),
        shares: shares
            .iter()
            .map(|&slots| Share { slots, failures: 0 })
            .collect(),
        procs: HashMap::new(),
        reports: Arc::default(),
        events: events_tx,
        cpu: if settings.worker.autoscale {
            cpu::CpuMeter::new()
        } else {
            None
        },
        consuming,
        processed_before: 0,
        recycles: 0,
        restarts: 0,
        system: System::new().ok(),
        target,
        last_change: Instant::now(),
        idle_since: None,
        decisions: Default::default(),
        broker: broker.clone(),
        child_ready_ms: None,
    };
    if let Some(meter) = &sup.cpu {
        tracing::info!(cpu = %meter.describe(), "Autoscaling measures the node's own CPU");
    }
    if settings.worker.max_memory_per_child.is_some() && sup.system.is_none() {
        tracing::warn!(
            "This platform does not report process memory; WEIR_MAX_MEMORY_PER_CHILD has no effect"
        );
    }
    for share in 0..shares.len() {
        sup.spawn(share, Role::Serving)?;
    }

    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut stopping = false;
    let mut stop_deadline = None;
    loop {
        if stopping && sup.procs.is_empty() {
            break;
        }
        let deadline = async {
            match stop_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                // Give the children their shutdown timeout, plus a margin to
                // hand jobs back and flush.
                stop_deadline = Some(tokio::time::Instant::now() + settings.worker.shutdown_timeout + Duration::from_secs(10));
                tracing::info!("Stopping: asking children to finish their jobs");
                for p in sup.procs.values_mut() {
                    p.stdin = None; // closing stdin tells the child to drain
                }
            }
            () = deadline => {
                tracing::warn!("Children did not stop in time; killing them");
                for p in sup.procs.values_mut() {
                    if let Some(kill) = p.kill.take() {
                        let _ = kill.send(());
                    }
                }
                stop_deadline = None;
            }
            Some(event) = events.recv() => sup.on_event(event, stopping).await,
            _ = check.tick(), if !stopping => {
                sup.recycle(true).await;
                sup.autoscale().await;
            }
            _ = heartbeat.tick() => {
                let info = sup.info();
                if let Err(e) = broker.heartbeat(&info, HEARTBEAT_TTL).await {
                    tracing::warn!(error = %e, "Heartbeat failed");
                }
            }
        }
    }
    if let Err(e) = broker.remove_worker(&node_id).await {
        tracing::warn!(error = %e, "Could not remove this node from the worker list");
    }
    tracing::info!(node = %node_id, "Worker node stopped");
    Ok(())
}
