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
mod heartbeat;
mod process;
mod recycle;

use crate::WorkerError;
use crate::heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_TTL, Identity};
use process::{Event, MAX_RESTART_DELAY, Proc, Reports, Role, Share};
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

/// Splits `slots` over `processes` children as evenly as possible; never
/// more children than slots.
pub fn spread(slots: u32, processes: u32) -> Vec<u32> {
    let children = processes.clamp(1, slots.max(1));
    split(slots, children)
}

/// Splits `slots` over exactly `children` children (some may get none).
fn split(slots: u32, children: u32) -> Vec<u32> {
    let children = children.max(1);
    (0..children)
        .map(|i| slots / children + u32::from(i < slots % children))
        .collect()
}

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
}

/// Runs a worker node's supervisor until `shutdown`, then drains the children.
pub(crate) async fn supervise(
    broker: SharedBroker,
    settings: Arc<Settings>,
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
        identity: Identity::new(node_id.clone(), &settings),
        settings: settings.clone(),
        shares: shares
            .iter()
            .map(|&slots| Share { slots, failures: 0 })
            .collect(),
        procs: HashMap::new(),
        reports: Arc::default(),
        events: events_tx.clone(),
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
            Some(event) = events.recv() => match event {
                Event::Reported(pid) => {
                    if let Some(p) = sup.procs.get_mut(&pid)
                        && p.ready.is_none()
                    {
                        let took = p.started.elapsed();
                        p.ready = Some(took);
                        sup.child_ready_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                        metrics::histogram!("weir_child_ready_seconds").record(took.as_secs_f64());
                    }
                    if !stopping {
                        sup.recycle(false).await;
                    }
                }
                Event::Exited(pid, status) => {
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    if let Some((share, delay)) = sup.exited(pid, status, stopping) {
                        let tx = events_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(Event::Restart(share));
                        });
                    }
                }
                Event::Restart(share) => {
                    if !stopping && sup.child_in(share, Role::Serving).is_none() {
                        // A ready standby takes over at once.
                        let standby = sup.child_in(share, Role::Starting);
                        let promoted = match standby {
                            Some(pid) => sup.activate(pid).await,
                            None => false,
                        };
                        if promoted {
                            tracing::info!(share, "Standby child took over the dead child's share");
                        } else if let Err(e) = sup.spawn(share, Role::Serving) {
                            tracing::error!(share, error = %e, "Cannot restart worker child");
                            let tx = events_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(MAX_RESTART_DELAY).await;
                                let _ = tx.send(Event::Restart(share));
                            });
                        }
                    }
                }
            },
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

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn slots_are_spread_evenly() {
        assert_eq!(spread(8, 2), vec![4, 4]);
        assert_eq!(spread(5, 2), vec![3, 2]);
        assert_eq!(spread(2, 4), vec![1, 1]);
        assert_eq!(spread(1, 1), vec![1]);
        assert_eq!(spread(0, 2), vec![0]);
    }
}
