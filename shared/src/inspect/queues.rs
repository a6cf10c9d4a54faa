//! Queues as operators see them: every state counted (zeros included),
//! the paused flag, the live consumers, and the flag for jobs that wait
//! with no worker to take them.

use crate::broker::{QueueCounts, SharedBroker};
use crate::config::Settings;
use crate::job::JobState;
use serde::Serialize;
use std::collections::BTreeMap;

/// A queue as the API and `weir queues --json` show it: every state
/// present, zeros included, so scripts need no defaults.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// True while workers take nothing from it.
    pub paused: bool,
    /// Declared in configuration (jobs can be enqueued to it).
    pub declared: bool,
    /// Jobs per state.
    pub counts: BTreeMap<JobState, u64>,
    /// Live worker nodes that serve it.
    pub consumers: usize,
    /// True when jobs wait (queued) and no live worker serves the queue:
    /// they would wait forever without an error, so it is flagged.
    pub unconsumed: bool,
    /// How long the job a worker would take next has been due, in seconds;
    /// `None` with nothing queued.
    pub oldest_age_seconds: Option<f64>,
}

/// Every declared queue, in declared order, then any other queue the broker
/// knows of (jobs left from an earlier configuration).
pub async fn queue_views(
    broker: &SharedBroker,
    settings: &Settings,
) -> Result<Vec<QueueView>, crate::broker::BrokerError> {
    let mut known: BTreeMap<String, QueueCounts> = broker
        .queue_counts()
        .await?
        .into_iter()
        .map(|q| (q.name.clone(), q))
        .collect();
    let workers = broker.workers().await?;
    let view = |name: &str, declared: bool, q: Option<QueueCounts>| {
        let mut counts: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        let paused = q.as_ref().is_some_and(|q| q.paused);
        if let Some(q) = q {
            counts.extend(q.counts);
        }
        let consumers = super::consumers(&workers, name);
        QueueView {
            name: name.to_owned(),
            paused,
            declared,
            unconsumed: consumers == 0 && counts.get(&JobState::Queued).copied().unwrap_or(0) > 0,
            consumers,
            counts,
            oldest_age_seconds: None,
        }
    };
    let mut out: Vec<QueueView> = settings
        .declared_queues
        .iter()
        .map(|name| view(name, true, known.remove(name)))
        .collect();
    out.extend(
        known
            .into_iter()
            .map(|(name, q)| view(&name, false, Some(q))),
    );
    let names: Vec<String> = out.iter().map(|v| v.name.clone()).collect();
    let heads = broker.queue_heads(&names).await?;
    let now = crate::job::now_ms().0;
    for (v, head) in out.iter_mut().zip(heads) {
        v.oldest_age_seconds = head.map(|due| (now - due.0).max(0) as f64 / 1000.0);
    }
    Ok(out)
}
