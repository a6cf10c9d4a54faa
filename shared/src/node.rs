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
    /// Children replaced after `WEIR_MAX_TASKS_PER_CHILD` tasks or
    /// `WEIR_MAX_MEMORY_PER_CHILD` of memory.
    #[serde(default)]
    pub recycles: u64,
    /// Children restarted after dying.
    #[serde(default)]
    pub restarts: u64,
    /// Worker settings in force and where each came from.
    #[serde(default)]
    pub config: std::collections::BTreeMap<String, String>,
    /// How long the latest child took from start to ready (its first report).
    #[serde(default)]
    pub child_ready_ms: Option<u64>,
    /// The latest autoscaling decisions, oldest first.
    #[serde(default)]
    pub scaling: Vec<ScaleDecision>,
    /// The tasks this node has handlers for (it claims only those).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// The provider keys it holds (fingerprints and masks, never keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_keys: Vec<crate::provider::KeyInfo>,
}

/// One autoscaling decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleDecision {
    /// When it was taken.
    pub at: Millis,
    /// Slots before.
    pub from: u32,
    /// Slots after.
    pub to: u32,
    /// Why.
    pub reason: String,
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
    /// `serving`, `starting` (a replacement not yet ready) or `retiring`
    /// (finishing its jobs before it exits).
    #[serde(default)]
    pub state: String,
    /// Consecutive quick deaths of this slot's child (crash loop when > 1).
    #[serde(default)]
    pub failures: u32,
}
