//! The node's child processes: starting one (serving or standby), the
//! pipe protocol towards it (`start`, `slots N`, closing stdin to drain),
//! and what its exit means (recycled, stopped, or died: restart with
//! backoff when it keeps dying).

use super::Supervisor;
use crate::WorkerError;
use crate::child::{CHILD_ENV, Report, SLOTS_ENV, STANDBY_ENV};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::oneshot;
use weir_shared::job::duration_ms;

/// Splits `slots` over `processes` children as evenly as possible; never
/// more children than slots.
pub fn spread(slots: u32, processes: u32) -> Vec<u32> {
    let children = processes.clamp(1, slots.max(1));
    split(slots, children)
}

/// Splits `slots` over exactly `children` shares (some may get none).
pub(super) fn split(slots: u32, children: u32) -> Vec<u32> {
    let children = children.max(1);
    (0..children)
        .map(|i| slots / children + u32::from(i < slots % children))
        .collect()
}

/// A child that lived at least this long before dying is restarted at once.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Longest wait before restarting a crash-looping child.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// The wait before restarting a child that died for the `failures`-th
/// time in a row: none for the first, then 2, 4, 8... seconds, capped.
fn restart_delay(failures: u32) -> Duration {
    if failures <= 1 {
        Duration::ZERO
    } else {
        Duration::from_secs(1u64 << (failures - 1).min(5)).min(MAX_RESTART_DELAY)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Holds its slot's share of slots.
    Serving,
    /// A standby, started to replace the serving child when it is due.
    Starting,
    /// Replaced: finishing its jobs, then exiting.
    Retiring,
}

impl Role {
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Serving => "serving",
            Role::Starting => "standby",
            Role::Retiring => "retiring",
        }
    }
}

pub(super) struct Proc {
    pub(super) share: usize,
    pub(super) role: Role,
    pub(super) stdin: Option<ChildStdin>,
    /// Sending on it kills the child (the last resort at shutdown).
    pub(super) kill: Option<oneshot::Sender<()>>,
    pub(super) started: Instant,
    /// Time from start to its first report.
    pub(super) ready: Option<Duration>,
}

pub(super) struct Share {
    pub(super) slots: u32,
    pub(super) failures: u32,
}

pub(super) enum Event {
    Exited(u32, std::io::Result<std::process::ExitStatus>),
    Restart(usize),
    Reported(u32),
}

/// Reports read from the children's stdout, by pid.
pub(super) type Reports = Arc<Mutex<HashMap<u32, Report>>>;

pub(super) fn report_of(reports: &Reports, pid: u32) -> Option<Report> {
    reports
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&pid)
        .copied()
}

impl Supervisor {
    pub(super) fn spawn(&mut self, share: usize, role: Role) -> Result<(), WorkerError> {
        let exe = std::env::current_exe().map_err(WorkerError::Spawn)?;
        let slots = self.shares[share].slots;
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
                    if let Ok(line) = serde_json::from_str::<crate::child::Line>(&line) {
                        crate::relay::replay(line.metrics);
                        let report = line.report;
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
                share,
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
        tracing::info!(
            share,
            pid,
            slots,
            role = role.name(),
            "Started worker child"
        );
        Ok(())
    }

    /// Tells a standby to start claiming; it then serves its slot.
    pub(super) async fn activate(&mut self, pid: u32) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else {
            return false;
        };
        let Some(stdin) = p.stdin.as_mut() else {
            return false;
        };
        let slots = self.shares[p.share].slots;
        let message = format!("start\nslots {slots}\n");
        if stdin.write_all(message.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return false;
        }
        p.role = Role::Serving;
        true
    }

    /// Handles a child's exit; returns a delay to restart its slot after, if needed.
    pub(super) fn exited(
        &mut self,
        pid: u32,
        status: String,
        stopping: bool,
    ) -> Option<(usize, Duration)> {
        let proc = self.procs.remove(&pid)?;
        let report = self
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
        self.processed_before += report.map(|r| r.processed).unwrap_or(0);
        match proc.role {
            Role::Retiring => {
                tracing::info!(share = proc.share, pid, %status, "Recycled worker child exited");
                None
            }
            Role::Starting if stopping => None,
            Role::Starting => {
                tracing::warn!(share = proc.share, pid, %status, "Standby child died; another is started");
                None
            }
            Role::Serving if stopping => {
                tracing::info!(share = proc.share, pid, %status, "Worker child stopped");
                None
            }
            Role::Serving => {
                let s = &mut self.shares[proc.share];
                s.failures = if proc.started.elapsed() >= HEALTHY_RUN {
                    1
                } else {
                    s.failures + 1
                };
                let delay = restart_delay(s.failures);
                self.restarts += 1;
                metrics::counter!("weir_child_restarts_total").increment(1);
                if s.failures > 2 {
                    tracing::error!(share = proc.share, pid, %status, failures = s.failures, restart_in = ?delay, "Worker child is crash-looping");
                } else {
                    tracing::warn!(share = proc.share, pid, %status, restart_in = ?delay, "Worker child died; its jobs run again after their lease");
                }
                Some((proc.share, delay))
            }
        }
    }
}

impl Supervisor {
    /// The child of `share` in `role`, if there is one.
    pub(super) fn child_in(&self, share: usize, role: Role) -> Option<u32> {
        self.procs
            .iter()
            .find(|(_, p)| p.share == share && p.role == role)
            .map(|(pid, _)| *pid)
    }

    /// Writes a protocol line to the serving child of `share`.
    pub(super) async fn tell_serving(&mut self, share: usize, line: &str) {
        if let Some(pid) = self.child_in(share, Role::Serving)
            && let Some(stdin) = self.procs.get_mut(&pid).and_then(|p| p.stdin.as_mut())
        {
            let _ = stdin.write_all(line.as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }

    /// Acts on what a child did: reported (it is ready; maybe recycle),
    /// exited (restart its share, perhaps after a backoff) or is due for a
    /// restart (a ready standby takes over, else a new child).
    pub(super) async fn on_event(&mut self, event: Event, stopping: bool) {
        match event {
            Event::Reported(pid) => {
                if let Some(p) = self.procs.get_mut(&pid)
                    && p.ready.is_none()
                {
                    let took = p.started.elapsed();
                    p.ready = Some(took);
                    self.child_ready_ms = Some(duration_ms(took).unsigned_abs());
                    metrics::histogram!("weir_child_ready_seconds").record(took.as_secs_f64());
                }
                if !stopping {
                    self.recycle(false).await;
                }
            }
            Event::Exited(pid, status) => {
                let status = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                if let Some((share, delay)) = self.exited(pid, status, stopping) {
                    self.restart_later(share, delay);
                }
            }
            Event::Restart(share) => {
                if stopping || self.child_in(share, Role::Serving).is_some() {
                    return;
                }
                let promoted = match self.child_in(share, Role::Starting) {
                    Some(pid) => self.activate(pid).await,
                    None => false,
                };
                if promoted {
                    tracing::info!(share, "Standby child took over the dead child's share");
                } else if let Err(e) = self.spawn(share, Role::Serving) {
                    tracing::error!(share, error = %e, "Cannot restart worker child");
                    self.restart_later(share, MAX_RESTART_DELAY);
                }
            }
        }
    }

    fn restart_later(&self, share: usize, delay: Duration) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Restart(share));
        });
    }

    /// Slots running a job now, over the serving children.
    pub(super) fn busy(&self) -> u32 {
        self.procs
            .iter()
            .filter(|(_, p)| p.role == Role::Serving)
            .filter_map(|(pid, _)| report_of(&self.reports, *pid))
            .map(|r| r.busy)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::{restart_delay, spread};
    use std::time::Duration;

    #[test]
    fn slots_are_spread_evenly() {
        assert_eq!(spread(8, 2), vec![4, 4]);
        assert_eq!(spread(5, 2), vec![3, 2]);
        assert_eq!(spread(2, 4), vec![1, 1]);
        assert_eq!(spread(1, 1), vec![1]);
        assert_eq!(spread(0, 2), vec![0]);
    }

    #[test]
    fn a_crash_loop_backs_off() {
        let delays: Vec<u64> = (1..=8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(restart_delay(0), Duration::ZERO);
    }
}
