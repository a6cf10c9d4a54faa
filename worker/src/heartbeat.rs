//! What a worker node reports in its heartbeat ([`WorkerInfo`]), built in
//! one place for the supervisor of `weir worker` and for the in-process
//! node of `weir dev`.

use std::collections::BTreeMap;
use std::time::Duration;
use weir_shared::config::Settings;
use weir_shared::job::{Millis, now_ms};
use weir_shared::node::{ChildInfo, ScaleDecision, Slots, WorkerInfo};

/// How often a node's heartbeat is sent.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a node stays listed after its last heartbeat: a few missed
/// beats, so a busy broker does not make live nodes vanish.
pub(crate) const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// What does not change while a node runs.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    id: String,
    started_at: Millis,
    queues: Vec<String>,
    config: BTreeMap<String, String>,
    tasks: Vec<String>,
    provider_keys: Vec<weir_shared::provider::KeyInfo>,
}

/// What a node counts between two heartbeats.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    /// Job slots: busy, current and the bounds.
    pub slots: Slots,
    /// Jobs finished since the node started.
    pub processed: u64,
    /// The node's processes.
    pub children: Vec<ChildInfo>,
    /// Children replaced by recycling.
    pub recycles: u64,
    /// Children restarted after dying.
    pub restarts: u64,
    /// Recent autoscaling decisions.
    pub scaling: Vec<ScaleDecision>,
    /// How long the last child took to be ready.
    pub child_ready_ms: Option<u64>,
    /// The configured slots, shown with the settings' sources.
    pub configured_slots: Option<u32>,
}

impl Identity {
    /// The identity of node `id`, started now, serving the settings' queues
    /// with handlers for `tasks`.
    pub(crate) fn new(id: String, settings: &Settings, mut tasks: Vec<String>) -> Self {
        tasks.sort();
        Identity {
            id,
            started_at: now_ms(),
            queues: settings
                .worker_queues()
                .names()
                .map(str::to_owned)
                .collect(),
            config: settings.worker.sources.clone(),
            tasks,
            provider_keys: weir_shared::inspect::providers::known_keys(settings, &[]),
        }
    }

    /// The node's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The heartbeat for `counts`, stamped now.
    pub(crate) fn report(&self, counts: Counts) -> WorkerInfo {
        let mut config = self.config.clone();
        if let Some(slots) = counts.configured_slots {
            config.insert("slots".into(), slots.to_string());
        }
        let s = counts.slots;
        for (kind, n) in [
            ("busy", s.busy),
            ("current", s.current),
            ("min", s.min),
            ("max", s.max),
        ] {
            metrics::gauge!("weir_worker_slots", "node" => self.id.clone(), "kind" => kind)
                .set(f64::from(n));
        }
        WorkerInfo {
            id: self.id.clone(),
            host: crate::hostname(),
            pid: std::process::id(),
            queues: self.queues.clone(),
            slots: counts.slots,
            processed: counts.processed,
            started_at: self.started_at,
            last_heartbeat: now_ms(),
            children: counts.children,
            recycles: counts.recycles,
            restarts: counts.restarts,
            config,
            scaling: counts.scaling,
            child_ready_ms: counts.child_ready_ms,
            tasks: self.tasks.clone(),
            provider_keys: self.provider_keys.clone(),
        }
    }
}
