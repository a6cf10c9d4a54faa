//! The one maintenance loop every long-running role runs (worker nodes and
//! the API): expired leases go back to their queues and due jobs become
//! queued, even when no worker is claiming. [`Broker::maintain`] is safe
//! from every process at once, so there is no leader to elect.

use super::SharedBroker;
use std::future::Future;
use std::time::Duration;

/// How often a role runs a maintenance pass.
pub const MAINTENANCE_EVERY: Duration = Duration::from_secs(1);

/// Runs a pass every `every` until `stop` completes, logging what moved.
pub async fn run(broker: SharedBroker, every: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = &mut stop => return,
        }
        match broker.maintain().await {
            Ok(m) => {
                if m.requeued + m.dead > 0 {
                    metrics::counter!("weir_leases_reaped_total").increment(m.requeued + m.dead);
                    tracing::info!(
                        requeued = m.requeued,
                        dead = m.dead,
                        "Returned jobs whose lease expired"
                    );
                }
                if m.repaired > 0 {
                    metrics::counter!("weir_workflow_repairs_total").increment(m.repaired);
                    tracing::warn!(
                        steps = m.repaired,
                        "Released workflow steps whose parents had all ended (a missed release repaired)"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "Maintenance failed"),
        }
    }
}

/// How often a process audits waiting workflow steps (a safety net: a
/// step whose parents all ended should never still wait).
pub const AUDIT_EVERY: Duration = Duration::from_secs(60);

/// When this process last audited: the first pass audits, then one every
/// [`AUDIT_EVERY`].
#[derive(Debug, Default)]
pub(crate) struct Audits(std::sync::Mutex<Option<std::time::Instant>>);

impl Audits {
    /// True when an audit is due now (and records it as done).
    pub(crate) fn due(&self) -> bool {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < AUDIT_EVERY) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }
}

/// How often claims sent with acknowledgements (which skip the probe that
/// finds due jobs) promote due jobs: the most a busy worker delays a job
/// whose time came.
const PROMOTE_EVERY_MS: i64 = 20;

/// Spaces the promotions of claims that skip the probe, across one
/// broker handle.
#[derive(Debug, Default)]
pub(crate) struct PromotionClock(std::sync::atomic::AtomicI64);

impl PromotionClock {
    /// True at most once per `PROMOTE_EVERY_MS` for this handle.
    pub(crate) fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = crate::job::now_ms().0;
        let last = self.0.load(Ordering::Relaxed);
        now.saturating_sub(last) >= PROMOTE_EVERY_MS
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
