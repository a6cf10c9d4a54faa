//! What a worker node reports about itself in its heartbeat, shown by
//! `weir workers` and `GET /v1/workers`.

use crate::job::Millis;
use serde::{Deserialize, Serialize};

/// A live worker node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique per node run: `host:pid:random`.
    pub id: String,
    /// Host name.
    pub host: String,
    /// The supervisor's process id (or the process's, for an in-process worker).
    pub pid: u32,
    /// Queues served, as `-Q` gave them.
    pub queues: Vec<String>,
    /// Job slots.
    pub slots: Slots,
    /// Jobs finished (any outcome) since the node started.
    pub processed: u64,
    /// When the node started.
    pub started_at: Millis,
    /// When this heartbeat was sent.
    pub last_heartbeat: Millis,
    /// The child processes that run the jobs.
    #[serde(default)]
    pub children: Vec<ChildInfo>,
}

/// A node's job slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    /// Running a job now.
    pub busy: u32,
    /// Slots in service now.
    pub current: u32,
    /// Autoscale floor (equal to `current` without autoscale).
    pub min: u32,
    /// Autoscale ceiling (equal to `current` without autoscale).
    pub max: u32,
}

/// One child process of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// Process id.
    pub pid: u32,
    /// Slots it serves.
    pub slots: u32,
    /// Jobs running in it now.
    pub busy: u32,
    /// Jobs it has finished.
    pub processed: u64,
}
