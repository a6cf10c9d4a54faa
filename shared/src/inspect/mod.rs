//! The read model: every view the API, the CLI and (later) the dashboard
//! show, computed here once from the broker's capabilities, so no role
//! links another just to reach a view struct. Jobs and worker nodes are
//! shown as [`crate::job::Job`] and [`crate::node::WorkerInfo`] themselves.
//!
//! - [`explain`]: why a job is not running.
//! - [`limits`]: caps and rates in force, their holders and waiting jobs.
//! - [`queues`]: queues with counts, pause flag and consumers.
//! - [`schedules`]: schedules with their last and next fire.

pub mod explain;
pub mod limits;
pub mod providers;
pub mod queues;
pub mod schedules;

pub use explain::{Explanation, Reason, explain};
pub use limits::{LimitView, limit_views};
pub use providers::{ProviderView, provider_views};
pub use queues::{QueueView, queue_views};
pub use schedules::{ScheduleView, schedule_views};

use crate::node::WorkerInfo;

/// True when a live worker serving `queue` has a handler for `task` (a
/// worker that reports no tasks, from before they were reported, counts).
pub fn handled_somewhere(workers: &[WorkerInfo], queue: &str, task: &str) -> bool {
    workers.iter().any(|w| {
        w.queues.iter().any(|q| q == queue)
            && (w.tasks.is_empty() || w.tasks.iter().any(|t| t == task))
    })
}

/// Live workers serving `queue`.
pub fn consumers(workers: &[WorkerInfo], queue: &str) -> usize {
    workers
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == queue))
        .count()
}
