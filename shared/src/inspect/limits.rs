//! The caps and rates in force, with their holders and what waits for
//! them: `weir limits` and `GET /v1/limits`.

use crate::broker::{Backend, BrokerResult};
use crate::job::Millis;
use crate::limit::{Holder, Limits, TaskRate};
use serde::Serialize;

/// A task's limits in force and how they are used, for `weir limits`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitView {
    /// Task name.
    pub task: String,
    /// Global cap.
    pub concurrency_limit: Option<u32>,
    /// Cap per tenant.
    pub tenant_concurrency_limit: Option<u32>,
    /// Rate (`10/m`, with its burst).
    pub rate_limit: Option<String>,
    /// Running jobs that hold permits.
    pub holders: Vec<Holder>,
    /// Queued jobs a limit holds back now.
    pub waiting: u64,
    /// While the rate refuses starts: when the next is allowed.
    pub throttled_until: Option<String>,
}

/// Every limited task with its usage.
pub async fn limit_views(broker: &dyn Backend, limits: &Limits) -> BrokerResult<Vec<LimitView>> {
    let mut out = Vec::new();
    for (task, limit) in limits.iter() {
        let usage = broker.usage(task, limit).await?;
        out.push(LimitView {
            task: task.clone(),
            concurrency_limit: limit.concurrency,
            tenant_concurrency_limit: limit.tenant_concurrency,
            rate_limit: limit.rate.as_ref().map(TaskRate::to_string),
            holders: usage.holders,
            waiting: usage.waiting,
            throttled_until: usage.throttled_until.map(|t| Millis(t).to_rfc3339()),
        });
    }
    Ok(out)
}
