//! Autoscaling: the decision is a pure function of what the supervisor
//! sees (backlog, busy slots, CPU, bounds, how long the node has been idle
//! and since the last change), so its rules are tested as a table; the
//! supervisor gathers the inputs and applies the answer.
//!
//! The rules: grow fast (double) while jobs wait and every slot is busy,
//! unless the node's own CPU is saturated (`cpu.rs`: its cgroup quota, or
//! its processes' share of the cores it may use; more slots would only
//! queue on the CPU); shrink slowly (halve) once the node has been idle, with no
//! backlog and at most half its slots busy, for [`SHRINK_AFTER`], and not
//! sooner than that after the last change. Never outside `min..=max`.

use super::Supervisor;
use std::time::{Duration, Instant};
use weir_shared::job::{JobState, now_ms};
use weir_shared::node::ScaleDecision;

/// How long a node must be idle before it shrinks, and the least time
/// between a change and a shrink: shrink slowly, grow fast.
pub(super) const SHRINK_AFTER: Duration = Duration::from_secs(10);
/// Growth stops while the node's CPU is busier than this (percent).
pub(super) const BUSY_CPU: f32 = 90.0;
/// Autoscaling decisions kept for `weir workers`.
const DECISIONS_KEPT: usize = 20;

/// What the autoscaler sees at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Observed {
    /// Queued jobs in the node's unpaused queues.
    pub backlog: u64,
    /// Slots running a job now.
    pub busy: u32,
    /// The node's own CPU use, percent of what it may use.
    pub cpu: f32,
    /// The node's slots now.
    pub slots: u32,
    /// Autoscale floor.
    pub min: u32,
    /// Autoscale ceiling.
    pub max: u32,
    /// How long the node has looked idle (`None`: it does not now).
    pub idle_for: Option<Duration>,
    /// Time since the last change.
    pub since_change: Duration,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scale {
    /// Move to this many slots, for this reason.
    To(u32, String),
    /// Keep the slots; the node looks idle (start or keep its idle clock).
    HoldIdle,
    /// Keep the slots; the node is not idle (reset its idle clock).
    Hold,
}

/// One autoscaling decision.
pub(super) fn decide(o: Observed) -> Scale {
    let t = o.slots;
    if o.backlog > 0 && o.busy >= t && t < o.max {
        if o.cpu < BUSY_CPU {
            let to = (t * 2).max(t + 1).min(o.max);
            let reason = format!(
                "{} jobs waiting, all {t} slots busy, CPU {:.0}%",
                o.backlog, o.cpu
            );
            return Scale::To(to, reason);
        }
        return Scale::Hold;
    }
    if o.backlog == 0 && o.busy * 2 <= t && t > o.min {
        let idle = o.idle_for.unwrap_or_default();
        if idle >= SHRINK_AFTER && o.since_change >= SHRINK_AFTER {
            let reason = format!(
                "no backlog, {} of {t} slots busy for {}s",
                o.busy,
                idle.as_secs()
            );
            return Scale::To((t / 2).max(o.min), reason);
        }
        return Scale::HoldIdle;
    }
    Scale::Hold
}

impl Supervisor {
    /// One autoscaling step: observe, decide, apply.
    pub(super) async fn autoscale(&mut self) {
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
                .map(|q| q.counts.get(&JobState::Queued).copied().unwrap_or(0))
                .sum(),
            Err(e) => {
                tracing::debug!(error = %e, "Autoscaler cannot read the backlog");
                return;
            }
        };
        let children: Vec<u32> = self.procs.keys().copied().collect();
        let cpu = self.cpu.as_mut().map_or(0.0, |m| m.sample(&children));
        let observed = Observed {
            backlog,
            busy: self.busy(),
            cpu,
            slots: self.target,
            min,
            max,
            idle_for: self.idle_since.map(|s| s.elapsed()),
            since_change: self.last_change.elapsed(),
        };
        match decide(observed) {
            Scale::To(to, reason) => {
                self.set_target(to, reason).await;
                self.idle_since = None;
            }
            Scale::HoldIdle => {
                self.idle_since.get_or_insert_with(Instant::now);
            }
            Scale::Hold => self.idle_since = None,
        }
    }

    /// Moves the node to `target` slots, spread over its children's shares.
    pub(super) async fn set_target(&mut self, target: u32, reason: String) {
        let from = self.target;
        self.target = target;
        self.last_change = Instant::now();
        let sizes = super::split(target, self.shares.len() as u32);
        for (share, size) in sizes.into_iter().enumerate() {
            self.shares[share].slots = size;
            self.tell_serving(share, &format!("slots {size}\n")).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(backlog: u64, busy: u32, cpu: f32, slots: u32, idle_s: Option<u64>) -> Observed {
        Observed {
            backlog,
            busy,
            cpu,
            slots,
            min: 1,
            max: 8,
            idle_for: idle_s.map(Duration::from_secs),
            since_change: Duration::from_secs(60),
        }
    }

    type Check = Box<dyn Fn(&Scale) -> bool>;

    #[test]
    fn decisions_follow_the_rules() {
        let to = |n: u32| move |s: &Scale| matches!(s, Scale::To(t, _) if *t == n);
        #[rustfmt::skip]
        let table: Vec<(&str, Observed, Check)> = vec![
            ("backlog with every slot busy doubles", seen(50, 2, 10.0, 2, None), Box::new(to(4))),
            ("from one slot, growth adds at least one", seen(5, 1, 10.0, 1, None), Box::new(to(2))),
            ("growth stops at the ceiling", seen(50, 6, 10.0, 6, None), Box::new(to(8))),
            ("at the ceiling nothing grows", seen(50, 8, 10.0, 8, None), Box::new(|s: &Scale| *s == Scale::Hold)),
            ("a saturated CPU holds", seen(50, 4, 95.0, 4, None), Box::new(|s: &Scale| *s == Scale::Hold)),
            ("backlog with free slots holds", seen(50, 2, 10.0, 4, None), Box::new(|s: &Scale| *s == Scale::Hold)),
            ("idle, not yet long enough", seen(0, 0, 5.0, 8, Some(3)), Box::new(|s: &Scale| *s == Scale::HoldIdle)),
            ("idle long enough halves", seen(0, 1, 5.0, 8, Some(10)), Box::new(to(4))),
            ("shrinking stops at the floor", seen(0, 0, 5.0, 1, Some(60)), Box::new(|s: &Scale| *s == Scale::Hold)),
            ("more than half busy is not idle", seen(0, 5, 5.0, 8, Some(60)), Box::new(|s: &Scale| *s == Scale::Hold)),
        ];
        for (name, observed, expect) in table {
            let got = decide(observed);
            assert!(expect(&got), "{name}: got {got:?}");
        }
    }

    #[test]
    fn no_shrink_right_after_a_change() {
        let mut o = seen(0, 0, 5.0, 8, Some(60));
        o.since_change = Duration::from_secs(2);
        assert_eq!(decide(o), Scale::HoldIdle);
        o.min = 3;
        o.since_change = Duration::from_secs(60);
        assert!(matches!(decide(o), Scale::To(4, _)));
        o.slots = 5;
        assert!(
            matches!(decide(o), Scale::To(3, _)),
            "halving stops at the floor"
        );
    }
}
