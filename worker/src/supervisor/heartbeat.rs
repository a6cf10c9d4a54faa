//! The supervisor's heartbeat: its children's reports summed into the
//! node's [`WorkerInfo`].

use super::Supervisor;
use super::process::{Role, report_of};
use crate::heartbeat::Counts;
use weir_shared::node::{ChildInfo, Slots, WorkerInfo};

impl Supervisor {
    /// The node as it stands now.
    pub(super) fn info(&self) -> WorkerInfo {
        let mut children = Vec::new();
        let (mut busy, mut current, mut processed) = (0, 0, self.processed_before);
        for (pid, p) in &self.procs {
            let report = report_of(&self.reports, *pid);
            let seen = report.unwrap_or_default();
            let slots = self.shares[p.share].slots;
            busy += seen.busy;
            processed += seen.processed;
            // Capacity counts children that are serving, claiming and not at their limit.
            if p.role == Role::Serving && report.is_some_and(|r| !r.exhausted) {
                current += slots;
            }
            children.push(ChildInfo {
                pid: *pid,
                slots,
                busy: seen.busy,
                processed: seen.processed,
                state: p.role.name().into(),
                failures: self.shares[p.share].failures,
            });
        }
        children.sort_by_key(|c| c.pid);
        let configured: u32 = self.shares.iter().map(|s| s.slots).sum();
        let worker = &self.settings.worker;
        let (min, max) = if worker.autoscale {
            (worker.min_workers, worker.max_workers)
        } else {
            (configured, configured)
        };
        self.consuming
            .store(current > 0, std::sync::atomic::Ordering::Relaxed);
        self.identity.report(Counts {
            slots: Slots {
                busy,
                current,
                min,
                max,
            },
            processed,
            children,
            recycles: self.recycles,
            restarts: self.restarts,
            scaling: self.decisions.iter().cloned().collect(),
            child_ready_ms: self.child_ready_ms,
            configured_slots: Some(configured),
        })
    }
}
