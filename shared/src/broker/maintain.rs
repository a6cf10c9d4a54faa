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
            Ok(m) if m.requeued + m.dead > 0 => {
                metrics::counter!("weir_leases_reaped_total").increment(m.requeued + m.dead);
                tracing::info!(
                    requeued = m.requeued,
                    dead = m.dead,
                    "Returned jobs whose lease expired"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Maintenance failed"),
        }
    }
}
