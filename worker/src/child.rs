//! The child side of a worker node: a process started by the supervisor
//! that runs its share of the node's slots and reports on stdout.
//!
//! Protocol (one JSON object per line on stdout; logs go to stderr):
//! `{"busy": N, "processed": M}` every 500 ms and once at exit. The child
//! shuts down gracefully when its stdin closes: the supervisor closes it to
//! stop the child, and if the supervisor dies the pipe closes by itself, so
//! no child outlives its node.

use crate::node::{NodeOptions, NodeStats, run_node};
use crate::task::Registry;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;

/// Set in a child's environment to the node id; its presence makes the
/// process a child.
pub const CHILD_ENV: &str = "WEIR_WORKER_CHILD";
/// Set in a child's environment to the number of slots it serves.
pub const SLOTS_ENV: &str = "WEIR_WORKER_SLOTS";

/// What a child reports.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub busy: u32,
    pub processed: u64,
}

async fn write_report(out: &mut tokio::io::Stdout, stats: &NodeStats) -> std::io::Result<()> {
    let report = Report {
        busy: stats.busy.load(Ordering::Relaxed),
        processed: stats.processed.load(Ordering::Relaxed),
    };
    let mut line = serde_json::to_vec(&report).unwrap_or_default();
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
    // Stdin closing (supervisor stopping us, or gone) means shut down.
    let on_eof = shutdown.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
        on_eof.cancel();
    });

    let stats = Arc::new(NodeStats::default());
    let reporter_stop = CancellationToken::new();
    let reporter = {
        let stats = stats.clone();
        let stop = reporter_stop.clone();
        tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            loop {
                if write_report(&mut out, &stats).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {},
                    () = stop.cancelled() => return,
                }
            }
        })
    };
    let options = NodeOptions {
        worker_id: format!("{node_id}/{}", std::process::id()),
        queues: settings.worker_queues(),
        slots,
    };
    run_node(broker, registry, settings, options, stats.clone(), shutdown).await;
    reporter_stop.cancel();
    let _ = reporter.await;
    let _ = write_report(&mut tokio::io::stdout(), &stats).await;
}
