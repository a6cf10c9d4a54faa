//! The child side of a worker node: a process started by the supervisor
//! that runs its share of the node's slots and reports on stdout.
//!
//! Protocol (one JSON object per line on stdout; logs go to stderr):
//! `{"busy": N, "processed": M, "exhausted": bool, "active": bool}` every
//! 500 ms, at once when it reaches its task limit, and at exit. The child
//! shuts down gracefully when its stdin closes: the supervisor closes it to
//! stop the child, and if the supervisor dies the pipe closes by itself, so
//! no child outlives its node. A standby child (for recycling) waits for a
//! `start` line on stdin before it claims; a `slots N` line changes its
//! slots (autoscaling).

use crate::node::{NodeOptions, NodeStats, run_node};
use crate::task::Registry;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;

/// Set in a child's environment to the node id; its presence makes the
/// process a child.
pub const CHILD_ENV: &str = "WEIR_WORKER_CHILD";
/// Set in a child's environment to the number of slots it serves.
pub const SLOTS_ENV: &str = "WEIR_WORKER_SLOTS";
/// Set in a standby child's environment: it connects, reports ready and
/// waits for a `start` line on stdin before it claims anything.
pub const STANDBY_ENV: &str = "WEIR_WORKER_STANDBY";

/// What a child reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub busy: u32,
    pub processed: u64,
    /// It reached its task limit and claims nothing more.
    #[serde(default)]
    pub exhausted: bool,
    /// It is claiming (a standby is not until started).
    #[serde(default)]
    pub active: bool,
    /// Slots it serves now.
    #[serde(default)]
    pub slots: u32,
}

/// A report line as written: the report, and the metrics recorded since
/// the last line (replayed by the supervisor).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Line {
    #[serde(flatten)]
    pub report: Report,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<crate::relay::Delta>,
}

async fn write_report(
    out: &mut tokio::io::Stdout,
    stats: &NodeStats,
    active: &AtomicBool,
    relay: Option<&crate::relay::Relay>,
) -> std::io::Result<()> {
    let report = Report {
        busy: stats.busy.load(Ordering::Relaxed),
        processed: stats.processed.load(Ordering::Relaxed),
        exhausted: stats.exhausted.load(Ordering::Relaxed),
        active: active.load(Ordering::Relaxed),
        slots: stats.slots.load(Ordering::Relaxed),
    };
    let line = Line {
        report,
        metrics: relay.map(crate::relay::Relay::take).unwrap_or_default(),
    };
    let mut line = serde_json::to_vec(&line).unwrap_or_default();
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await
}

/// Runs this process as a child of node `node_id` with `slots` slots.
pub(crate) async fn run_child(
    broker: SharedBroker,
    registry: Arc<Registry>,
    settings: Arc<Settings>,
    node_id: String,
    slots: u32,
    shutdown: CancellationToken,
) {
    // Stdin: a `start` line starts a standby; closing it (supervisor
    // stopping us, or gone) means shut down.
    let relay = crate::relay::Relay::install();
    let standby = std::env::var(STANDBY_ENV).is_ok();
    let active = Arc::new(AtomicBool::new(!standby));
    let started = Arc::new(Notify::new());
    let (resize_tx, resize_rx) = watch::channel(slots);
    {
        let on_eof = shutdown.clone();
        let active = active.clone();
        let started = started.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = line.trim();
                if line == "start" {
                    active.store(true, Ordering::Relaxed);
                    started.notify_one();
                } else if let Some(n) = line.strip_prefix("slots ").and_then(|n| n.parse().ok()) {
                    let _ = resize_tx.send(n);
                }
            }
            on_eof.cancel();
        });
    }
    let stats = Arc::new(NodeStats::default());
    let reporter_stop = CancellationToken::new();
    let reporter = {
        let stats = stats.clone();
        let stop = reporter_stop.clone();
        let active = active.clone();
        let relay = relay.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            loop {
                if write_report(&mut out, &stats, &active, relay.as_ref())
                    .await
                    .is_err()
                {
                    return;
                }
                // Every 500 ms, and at once when something the supervisor
                // acts on changes (task limit reached).
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {},
                    () = stats.changed.notified() => {},
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    if standby {
        tokio::select! {
            () = started.notified() => {},
            () = shutdown.cancelled() => {},
        }
    }
    let options = NodeOptions {
        worker_id: format!("{node_id}/{}", std::process::id()),
        queues: settings.worker_queues(),
        slots,
        max_claims: Some(settings.worker.max_tasks_per_child).filter(|n| *n > 0),
        slot_control: Some(resize_rx),
    };
    run_node(broker, registry, settings, options, stats.clone(), shutdown).await;
    reporter_stop.cancel();
    let _ = reporter.await;
    let _ = write_report(&mut tokio::io::stdout(), &stats, &active, relay.as_ref()).await;
}
