//! The supervisor of a worker node: it never runs jobs. It starts the child
//! processes that do, spreads the node's slots over them, replaces a child
//! after `WEIR_MAX_TASKS_PER_CHILD` tasks or once its resident memory passes
//! `WEIR_MAX_MEMORY_PER_CHILD`, restarts a child that dies (with backoff
//! when it keeps dying), sends the node's heartbeat, and on shutdown asks
//! every child to drain and waits for them.
//!
//! Recycling keeps capacity: with recycling on, each slot keeps a standby
//! child, started ahead of time, connected and idle. A serving child stops
//! claiming by itself at its task limit and says so at once; the supervisor
//! then starts the standby (a `start` line on its stdin) and closes the old
//! child's stdin, so it finishes its running jobs and exits; a new standby
//! is started for next time. Memory is checked by the supervisor, which
//! swaps the same way. Every job is acknowledged by the child that ran it,
//! so a recycle never loses a job or runs one twice.

use crate::WorkerError;
use crate::child::{CHILD_ENV, Report, SLOTS_ENV, STANDBY_ENV};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weir_shared::broker::SharedBroker;
use weir_shared::config::Settings;
use weir_shared::job::{Millis, now_ms};
use weir_shared::node::{ChildInfo, ScaleDecision, Slots, WorkerInfo};

/// How often the node's heartbeat is sent.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a node stays listed after its last heartbeat.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(10);
/// A child that lived at least this long before dying is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Longest wait before restarting a crash-looping child.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
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

/// How long a node must be idle before autoscaling shrinks it, and the
/// least time between two shrinks: shrink slowly, grow fast.
const SHRINK_AFTER: Duration = Duration::from_secs(10);
/// Growth stops while the host's CPU is busier than this (percent).
const BUSY_CPU: f32 = 90.0;
/// Autoscaling decisions kept for `weir workers`.
const DECISIONS_KEPT: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Holds its slot's share of slots.
    Serving,
    /// A standby, started to replace the serving child when it is due.
    Starting,
    /// Replaced: finishing its jobs, then exiting.
    Retiring,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Starting => "standby",
            Role::Retiring => "retiring",
        }
    }
}

struct Proc {
    slot: usize,
    role: Role,
    stdin: Option<ChildStdin>,
    /// Sending on it kills the child (the last resort at shutdown).
    kill: Option<oneshot::Sender<()>>,
    started: Instant,
    /// Time from start to its first report.
    ready: Option<Duration>,
}

struct SlotState {
    slots: u32,
    failures: u32,
}

enum Event {
    Exited(u32, std::io::Result<std::process::ExitStatus>),
    Restart(usize),
    Reported(u32),
}

/// Reports read from the children's stdout, by pid.
type Reports = Arc<Mutex<HashMap<u32, Report>>>;

fn report_of(reports: &Reports, pid: u32) -> Option<Report> {
    reports
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&pid)
        .copied()
}

struct Supervisor {
    node_id: String,
    settings: Arc<Settings>,
    slots: Vec<SlotState>,
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
    decisions: std::collections::VecDeque<ScaleDecision>,
    broker: SharedBroker,
    child_ready_ms: Option<u64>,
}

impl Supervisor {
    fn spawn(&mut self, slot: usize, role: Role) -> Result<(), WorkerError> {
        let exe = std::env::current_exe().map_err(WorkerError::Spawn)?;
        let slots = self.slots[slot].slots;
        let mut command = Command::new(exe);
        command
            .args(std::env::args_os().skip(1))
            .env(CHILD_ENV, &self.node_id)
            .env(SLOTS_ENV, slots.to_string());
        if role == Role::Starting {
            command.env(STANDBY_ENV, "1");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false)
            .spawn()
            .map_err(WorkerError::Spawn)?;
        let pid = child.id().unwrap_or_default();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        if let Some(stdout) = child.stdout.take() {
            let reports = self.reports.clone();
            let events = self.events.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(report) = serde_json::from_str::<Report>(&line) {
                        reports
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(pid, report);
                        // The supervisor acts on reports as they come.
                        let _ = events.send(Event::Reported(pid));
                    }
                }
            });
        }
        self.procs.insert(
            pid,
            Proc {
                slot,
                role,
                stdin: child.stdin.take(),
                kill: Some(kill_tx),
                started: Instant::now(),
                ready: None,
            },
        );
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                Ok(()) = kill_rx => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let _ = events.send(Event::Exited(pid, status));
        });
        tracing::info!(slot, pid, slots, role = role.name(), "Started worker child");
        Ok(())
    }

    fn serving(&self, slot: usize, role: Role) -> Option<u32> {
        self.procs
            .iter()
            .find(|(_, p)| p.slot == slot && p.role == role)
            .map(|(pid, _)| *pid)
    }

    fn recycling(&self) -> bool {
        self.settings.worker.max_tasks_per_child > 0
            || self.settings.worker.max_memory_per_child.is_some()
    }

    /// Why the serving child should be replaced, if it should.
    fn recycle_reason(&mut self, pid: u32, check_memory: bool) -> Option<String> {
        let report = report_of(&self.reports, pid)?;
        if report.exhausted {
            return Some(format!(
                "{} tasks claimed (WEIR_MAX_TASKS_PER_CHILD)",
                self.settings.worker.max_tasks_per_child
            ));
        }
        let limit = self
            .settings
            .worker
            .max_memory_per_child
            .filter(|_| check_memory)?;
        let target = Pid::from_u32(pid);
        let system = self.system.as_mut()?;
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[target]),
            true,
            ProcessRefreshKind::nothing().with_memory(),
        );
        let rss = system.process(target)?.memory();
        (rss > limit).then(|| {
            format!(
                "resident memory {} MiB over WEIR_MAX_MEMORY_PER_CHILD ({} MiB)",
                rss >> 20,
                limit >> 20
            )
        })
    }

    /// Tells a standby to start claiming; it then serves its slot.
    async fn activate(&mut self, pid: u32) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else {
            return false;
        };
        let Some(stdin) = p.stdin.as_mut() else {
            return false;
        };
        let slots = self.slots[p.slot].slots;
        let message = format!("start\nslots {slots}\n");
        if stdin.write_all(message.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return false;
        }
        p.role = Role::Serving;
        true
    }

    /// Moves the node to `target` slots, spread over its children.
    async fn set_target(&mut self, target: u32, reason: String) {
        let from = self.target;
        self.target = target;
        self.last_change = Instant::now();
        let shares = split(target, self.slots.len() as u32);
        for (slot, share) in shares.into_iter().enumerate() {
            self.slots[slot].slots = share;
            if let Some(pid) = self.serving(slot, Role::Serving)
                && let Some(stdin) = self.procs.get_mut(&pid).and_then(|p| p.stdin.as_mut())
            {
                let _ = stdin.write_all(format!("slots {share}\n").as_bytes()).await;
                let _ = stdin.flush().await;
            }
        }
        let direction = if target > from { "up" } else { "down" };
        metrics::counter!("weir_autoscale_decisions_total", "direction" => direction).increment(1);
        tracing::info!(from, to = target, %reason, "Autoscaling");
        self.decisions.push_back(ScaleDecision {
            at: now_ms(),
            from,
            to: target,
            reason,
        });
        while self.decisions.len() > DECISIONS_KEPT {
            self.decisions.pop_front();
        }
    }

    /// One autoscaling step: grow quickly under backlog (unless the CPU is
    /// saturated), shrink by half after a quiet spell, within min..=max.
    async fn autoscale(&mut self) {
        let worker = &self.settings.worker;
        if !worker.autoscale {
            return;
        }
        let (min, max) = (worker.min_workers, worker.max_workers);
        let names: Vec<String> = self
            .settings
            .worker_queues()
            .names()
            .map(str::to_owned)
            .collect();
        let backlog: u64 = match self.broker.queue_counts().await {
            Ok(queues) => queues
                .iter()
                .filter(|q| names.contains(&q.name) && !q.paused)
                .map(|q| {
                    q.counts
                        .get(&weir_shared::job::JobState::Queued)
                        .copied()
                        .unwrap_or(0)
                })
                .sum(),
            Err(e) => {
                tracing::debug!(error = %e, "Autoscaler cannot read the backlog");
                return;
            }
        };
        let busy: u32 = self
            .procs
            .iter()
            .filter(|(_, p)| p.role == Role::Serving)
            .filter_map(|(pid, _)| report_of(&self.reports, *pid))
            .map(|r| r.busy)
            .sum();
        let cpu = self.system.as_mut().map_or(0.0, |s| {
            s.refresh_cpu_usage();
            s.global_cpu_usage()
        });
        let t = self.target;
        if backlog > 0 && busy >= t && t < max {
            self.idle_since = None;
            if cpu < BUSY_CPU {
                let to = (t * 2).max(t + 1).min(max);
                self.set_target(
                    to,
                    format!("{backlog} jobs waiting, all {t} slots busy, CPU {cpu:.0}%"),
                )
                .await;
            }
        } else if backlog == 0 && busy * 2 <= t && t > min {
            let since = *self.idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SHRINK_AFTER && self.last_change.elapsed() >= SHRINK_AFTER {
                let to = (t / 2).max(min);
                self.set_target(
                    to,
                    format!(
                        "no backlog, {busy} of {t} slots busy for {}s",
                        since.elapsed().as_secs()
                    ),
                )
                .await;
                self.idle_since = None;
            }
        } else {
            self.idle_since = None;
        }
    }

    /// Keeps a standby per slot, and swaps it in for a serving child that is due.
    async fn recycle(&mut self, check_memory: bool) {
        if !self.recycling() {
            return;
        }
        for slot in 0..self.slots.len() {
            let standby = self.serving(slot, Role::Starting);
            let Some(current) = self.serving(slot, Role::Serving) else {
                continue;
            };
            let Some(reason) = self.recycle_reason(current, check_memory) else {
                if standby.is_none()
                    && let Err(e) = self.spawn(slot, Role::Starting)
                {
                    tracing::error!(slot, error = %e, "Cannot start a standby child");
                }
                continue;
            };
            // Due: swap as soon as the standby is ready (it has reported).
            let Some(new) = standby.filter(|pid| report_of(&self.reports, *pid).is_some()) else {
                continue;
            };
            if !self.activate(new).await {
                continue;
            }
            if let Some(p) = self.procs.get_mut(&current) {
                p.role = Role::Retiring;
                p.stdin = None; // closing stdin: stop claiming, finish, exit
            }
            self.recycles += 1;
            metrics::counter!("weir_child_recycles_total").increment(1);
            tracing::info!(slot, old = current, new, %reason, "Recycled worker child");
            if let Err(e) = self.spawn(slot, Role::Starting) {
                tracing::error!(slot, error = %e, "Cannot start a standby child");
            }
        }
    }

    fn info(&self, started_at: Millis) -> WorkerInfo {
        let mut children = Vec::new();
        let (mut busy, mut current, mut processed) = (0, 0, self.processed_before);
        for (pid, p) in &self.procs {
            let report = report_of(&self.reports, *pid).unwrap_or_default();
            let slots = self.slots[p.slot].slots;
            busy += report.busy;
            processed += report.processed;
            // Capacity counts children that are serving, claiming and not at their limit.
            if p.role == Role::Serving
                && report_of(&self.reports, *pid).is_some_and(|r| !r.exhausted)
            {
                current += slots;
            }
            children.push(ChildInfo {
                pid: *pid,
                slots,
                busy: report.busy,
                processed: report.processed,
                state: p.role.name().into(),
                failures: self.slots[p.slot].failures,
            });
        }
        children.sort_by_key(|c| c.pid);
        let configured: u32 = self.slots.iter().map(|s| s.slots).sum();
        let (min, max) = if self.settings.worker.autoscale {
            (
                self.settings.worker.min_workers,
                self.settings.worker.max_workers,
            )
        } else {
            (configured, configured)
        };
        let mut config = self.settings.worker.sources.clone();
        config.insert("slots".into(), configured.to_string());
        WorkerInfo {
            id: self.node_id.clone(),
            host: crate::hostname(),
            pid: std::process::id(),
            queues: self
                .settings
                .worker_queues()
                .names()
                .map(str::to_owned)
                .collect(),
            slots: Slots {
                busy,
                current,
                min,
                max,
            },
            processed,
            started_at,
            last_heartbeat: now_ms(),
            children,
            recycles: self.recycles,
            restarts: self.restarts,
            config,
            scaling: self.decisions.iter().cloned().collect(),
            child_ready_ms: self.child_ready_ms,
        }
    }

    /// Handles a child's exit; returns a delay to restart its slot after, if needed.
    fn exited(&mut self, pid: u32, status: String, stopping: bool) -> Option<(usize, Duration)> {
        let proc = self.procs.remove(&pid)?;
        let report = self
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
        self.processed_before += report.map(|r| r.processed).unwrap_or(0);
        match proc.role {
            Role::Retiring => {
                tracing::info!(slot = proc.slot, pid, %status, "Recycled worker child exited");
                None
            }
            Role::Starting if stopping => None,
            Role::Starting => {
                tracing::warn!(slot = proc.slot, pid, %status, "Standby child died; another is started");
                None
            }
            Role::Serving if stopping => {
                tracing::info!(slot = proc.slot, pid, %status, "Worker child stopped");
                None
            }
            Role::Serving => {
                let slot = &mut self.slots[proc.slot];
                slot.failures = if proc.started.elapsed() >= HEALTHY_RUN {
                    1
                } else {
                    slot.failures + 1
                };
                let delay = if slot.failures <= 1 {
                    Duration::ZERO
                } else {
                    Duration::from_secs(1u64 << (slot.failures - 1).min(5)).min(MAX_RESTART_DELAY)
                };
                self.restarts += 1;
                metrics::counter!("weir_child_restarts_total").increment(1);
                if slot.failures > 2 {
                    tracing::error!(slot = proc.slot, pid, %status, failures = slot.failures, restart_in = ?delay, "Worker child is crash-looping");
                } else {
                    tracing::warn!(slot = proc.slot, pid, %status, restart_in = ?delay, "Worker child died; its jobs run again after their lease");
                }
                Some((proc.slot, delay))
            }
        }
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
        settings: settings.clone(),
        slots: shares
            .iter()
            .map(|&slots| SlotState { slots, failures: 0 })
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
    for slot in 0..shares.len() {
        sup.spawn(slot, Role::Serving)?;
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
                    if let Some((slot, delay)) = sup.exited(pid, status, stopping) {
                        let tx = events_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(Event::Restart(slot));
                        });
                    }
                }
                Event::Restart(slot) => {
                    if !stopping && sup.serving(slot, Role::Serving).is_none() {
                        // A ready standby takes over at once.
                        let standby = sup.serving(slot, Role::Starting);
                        let promoted = match standby {
                            Some(pid) => sup.activate(pid).await,
                            None => false,
                        };
                        if promoted {
                            tracing::info!(slot, "Standby child took over the dead child's slot");
                        } else if let Err(e) = sup.spawn(slot, Role::Serving) {
                            tracing::error!(slot, error = %e, "Cannot restart worker child");
                            let tx = events_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(MAX_RESTART_DELAY).await;
                                let _ = tx.send(Event::Restart(slot));
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
                let info = sup.info(started_at);
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
