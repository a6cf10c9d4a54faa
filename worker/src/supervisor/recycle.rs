//! Recycling: a child is replaced after `WEIR_MAX_TASKS_PER_CHILD` tasks
//! or once its resident memory passes `WEIR_MAX_MEMORY_PER_CHILD`. Each
//! share keeps a standby child, started ahead of time, so a swap costs no
//! capacity: the standby is told to start, the old child's stdin is
//! closed, and it finishes its running jobs and exits.

use super::Supervisor;
use super::process::{Role, report_of};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate};

impl Supervisor {
    pub(super) fn recycling(&self) -> bool {
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

    /// Keeps a standby per share, and swaps it in for a serving child that is due.
    pub(super) async fn recycle(&mut self, check_memory: bool) {
        if !self.recycling() {
            return;
        }
        for share in 0..self.shares.len() {
            let standby = self.child_in(share, Role::Starting);
            let Some(current) = self.child_in(share, Role::Serving) else {
                continue;
            };
            let Some(reason) = self.recycle_reason(current, check_memory) else {
                if standby.is_none()
                    && let Err(e) = self.spawn(share, Role::Starting)
                {
                    tracing::error!(share, error = %e, "Cannot start a standby child");
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
            tracing::info!(share, old = current, new, %reason, "Recycled worker child");
            if let Err(e) = self.spawn(share, Role::Starting) {
                tracing::error!(share, error = %e, "Cannot start a standby child");
            }
        }
    }
}
