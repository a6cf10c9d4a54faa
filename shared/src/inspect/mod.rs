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
pub mod queues;
pub mod schedules;

pub use explain::{Explanation, Reason, explain};
pub use limits::{LimitView, limit_views};
pub use queues::{QueueView, queue_views};
pub use schedules::{ScheduleView, schedule_views};

use crate::node::WorkerInfo;

/// Live worker nodes that serve `queue`.
pub fn consumers(workers: &[WorkerInfo], queue: &str) -> usize {
    workers
        .iter()
        .filter(|w| w.queues.iter().any(|q| q == queue))
        .count()
}
