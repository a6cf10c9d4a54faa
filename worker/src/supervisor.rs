//! The supervisor of a worker node: it never runs jobs. It starts the child
//! processes that do, spreads the node's slots over them, restarts a child
//! that dies (with backoff when one keeps dying), sends the node's
//! heartbeat, and on shutdown asks every child to drain and waits for them.

use crate::WorkerError;
use crate::child::{CHILD_ENV, Report, SLOTS_ENV};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;
use weir_shared::job::now_ms;
use weir_shared::node::{ChildInfo, Slots, WorkerInfo};

/// How often the node's heartbeat is sent.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a node stays listed after its last heartbeat.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(10);
/// A child that lived at least this long before dying is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Longest wait before restarting a crash-looping child.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// Splits `slots` over `processes` children as evenly as possible; never
/// more children than slots.
pub fn spread(slots: u32, processes: u32) -> Vec<u32> {
    let children = processes.clamp(1, slots.max(1));
    (0..children)
        .map(|i| slots / children + u32::from(i < slots % children))
        .collect()
}

struct ChildState {
    slots: u32,
    pid: u32,
    report: Report,
    /// Processed by earlier incarnations of this child.
    processed_before: u64,
    stdin: Option<ChildStdin>,
    /// Dropping or sending on it kills the child (the last resort at shutdown).
    kill: Option<oneshot::Sender<()>>,
    started: Instant,
    failures: u32,
    running: bool,
}

enum Event {
    Exited(usize, u32, std::io::Result<std::process::ExitStatus>),
    Restart(usize),
}

type Shared = Arc<Mutex<Vec<ChildState>>>;

fn lock(children: &Shared) -> std::sync::MutexGuard<'_, Vec<ChildState>> {
    children.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_child(
    index: usize,
    node_id: &str,
    children: &Shared,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), WorkerError> {
    let exe = std::env::current_exe().map_err(WorkerError::Spawn)?;
    let slots = lock(children)[index].slots;
    let mut child: Child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, node_id)
        .env(SLOTS_ENV, slots.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(false)
        .spawn()
        .map_err(WorkerError::Spawn)?;
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take();
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    {
        let mut all = lock(children);
        let state = &mut all[index];
        state.processed_before += state.report.processed;
        state.report = Report::default();
        state.pid = pid;
        state.stdin = child.stdin.take();
        state.kill = Some(kill_tx);
        state.started = Instant::now();
        state.running = true;
    }
    tracing::info!(child = index, pid, slots, "Started worker child");
    if let Some(stdout) = stdout {
        let children = children.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(report) = serde_json::from_str::<Report>(&line) {
                    let mut all = lock(&children);
                    if all[index].pid == pid {
                        all[index].report = report;
                    }
                }
            }
        });
    }
    let events = events.clone();
    tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status,
            Ok(()) = kill_rx => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let _ = events.send(Event::Exited(index, pid, status));
    });
    Ok(())
}

fn info(
    node_id: &str,
    settings: &Settings,
    started_at: weir_shared::job::Millis,
    children: &Shared,
) -> WorkerInfo {
    let all = lock(children);
    let busy = all
        .iter()
        .filter(|c| c.running)
        .map(|c| c.report.busy)
        .sum();
    let slots: u32 = all.iter().map(|c| c.slots).sum();
    WorkerInfo {
        id: node_id.to_owned(),
        host: crate::hostname(),
        pid: std::process::id(),
        queues: settings
            .worker_queues()
            .names()
            .map(str::to_owned)
            .collect(),
        slots: Slots {
            busy,
            current: slots,
            min: slots,
            max: slots,
        },
        processed: all
            .iter()
            .map(|c| c.processed_before + c.report.processed)
            .sum(),
        started_at,
        last_heartbeat: now_ms(),
        children: all
            .iter()
            .filter(|c| c.running)
            .map(|c| ChildInfo {
                pid: c.pid,
                slots: c.slots,
                busy: c.report.busy,
                processed: c.report.processed,
            })
            .collect(),
    }
}

/// Runs a worker node's supervisor until `shutdown`, then drains the children.
pub(crate) async fn supervise(
    broker: SharedBroker,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let node_id = crate::node_id();
    let started_at = now_ms();
    let shares = spread(settings.worker.concurrency, settings.worker.processes);
    tracing::info!(
        node = %node_id,
        processes = shares.len(),
        slots = settings.worker.concurrency,
        queues = %settings.worker_queues().to_spec(),
        "Starting worker node"
    );
    let children: Shared = Arc::new(Mutex::new(
        shares
            .iter()
            .map(|&slots| ChildState {
                slots,
                pid: 0,
                report: Report::default(),
                processed_before: 0,
                stdin: None,
                kill: None,
                started: Instant::now(),
                failures: 0,
                running: false,
            })
            .collect(),
    ));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    for index in 0..shares.len() {
        spawn_child(index, &node_id, &children, &events_tx)?;
    }

    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    let mut stopping = false;
    let mut stop_deadline = None;
    loop {
        let all_stopped = lock(&children).iter().all(|c| !c.running);
        if stopping && all_stopped {
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
                for c in lock(&children).iter_mut() {
                    c.stdin = None; // closing stdin tells the child to drain
                }
            }
            () = deadline => {
                tracing::warn!("Children did not stop in time; killing them");
                for c in lock(&children).iter_mut() {
                    if let Some(kill) = c.kill.take() {
                        let _ = kill.send(());
                    }
                }
                stop_deadline = None;
            }
            Some(event) = events.recv() => match event {
                Event::Exited(index, pid, status) => {
                    let restart_in = {
                        let mut all = lock(&children);
                        let c = &mut all[index];
                        if c.pid != pid {
                            continue;
                        }
                        c.running = false;
                        c.stdin = None;
                        c.kill = None;
                        if stopping {
                            None
                        } else {
                            c.failures = if c.started.elapsed() >= HEALTHY_RUN { 1 } else { c.failures + 1 };
                            let delay = Duration::from_secs(1u64 << (c.failures - 1).min(5)).min(MAX_RESTART_DELAY);
                            Some((delay, c.failures))
                        }
                    };
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    if let Some((delay, failures)) = restart_in {
                        tracing::warn!(child = index, pid, %status, restart_in = ?delay, failures, "Worker child died; its jobs run again after their lease");
                        metrics::counter!("weir_child_restarts_total").increment(1);
                        let tx = events_tx.clone();
                        let immediate = failures <= 1;
                        tokio::spawn(async move {
                            if !immediate {
                                tokio::time::sleep(delay).await;
                            }
                            let _ = tx.send(Event::Restart(index));
                        });
                    } else {
                        tracing::info!(child = index, pid, %status, "Worker child stopped");
                    }
                }
                Event::Restart(index) => {
                    if !stopping && let Err(e) = spawn_child(index, &node_id, &children, &events_tx) {
                        tracing::error!(child = index, error = %e, "Cannot restart worker child");
                        let tx = events_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(MAX_RESTART_DELAY).await;
                            let _ = tx.send(Event::Restart(index));
                        });
                    }
                }
            },
            _ = heartbeat.tick() => {
                let info = info(&node_id, &settings, started_at, &children);
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
