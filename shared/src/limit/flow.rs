//! Flow control for jobs: global concurrency caps per task, caps per tenant
//! within a task, and task rate limits. Every backend enforces them inside
//! its claim, in the same atomic step that leases the job, and frees a
//! permit inside the step that ends the lease (ack, nack, reap, cancel).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A task rate: `rate` sustained, with up to `burst` jobs started at once
/// after an idle spell (1 by default: evenly spaced starts), enforced by
/// the claim with the one GCRA of [`super::gcra`].
pub type TaskRate = super::KeyedRate;

/// The limits of one task. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimit {
    /// Jobs of this task running at once across every worker (0 holds the task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Jobs of this task running at once per tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_concurrency: Option<u32>,
    /// Starts per period across every worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<TaskRate>,
}

impl TaskLimit {
    /// True when a running job of this task holds a permit (it has a cap).
    pub fn capped(&self) -> bool {
        self.concurrency.is_some() || self.tenant_concurrency.is_some()
    }

    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        !self.capped() && self.rate.is_none()
    }
}

/// Limits per task name, as a claim carries them to the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    tasks: BTreeMap<String, TaskLimit>,
    /// The same, as the compact JSON the Redis claim script reads; built once.
    encoded: String,
}

impl Limits {
    /// Limits from a map; tasks without any limit are dropped.
    pub fn new(tasks: BTreeMap<String, TaskLimit>) -> Self {
        let tasks: BTreeMap<_, _> = tasks.into_iter().filter(|(_, l)| !l.is_empty()).collect();
        let encoded = if tasks.is_empty() {
            String::new()
        } else {
            let wire: BTreeMap<&str, [i64; 5]> = tasks
                .iter()
                .map(|(name, l)| {
                    let cap = |c: Option<u32>| c.map_or(-1, i64::from);
                    let (interval, burst) = l
                        .rate
                        .map_or((-1, 0), |r| (r.interval_us(), i64::from(r.burst.max(1))));
                    (
                        name.as_str(),
                        [
                            cap(l.concurrency),
                            cap(l.tenant_concurrency),
                            interval,
                            burst,
                            i64::try_from(
                                l.rate.map_or(Duration::ZERO, |r| r.rate.period).as_millis(),
                            )
                            .unwrap_or(i64::MAX),
                        ],
                    )
                })
                .collect();
            serde_json::to_string(&wire).unwrap_or_default()
        };
        Limits { tasks, encoded }
    }

    /// The limits of `task`, if it has any.
    pub fn get(&self, task: &str) -> Option<&TaskLimit> {
        self.tasks.get(task)
    }

    /// Every limited task.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &TaskLimit)> {
        self.tasks.iter()
    }

    /// True when no task is limited: claims take the fast path.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// `{"task": [cap, tenant_cap, interval_us, burst, period_ms], ...}`
    /// (-1 for none), or empty when no task is limited.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

/// A running job that holds a permit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The job.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// The worker that runs it.
    pub worker: String,
}

/// How a task's limits are used right now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Running jobs of the task that hold permits.
    pub holders: Vec<Holder>,
    /// Queued jobs of the task that wait for a permit or for the rate.
    pub waiting: u64,
    /// While the rate refuses starts: when the next start is allowed (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<i64>,
}

/// Parses an operator's override list `task=VALUE,task=VALUE`.
pub fn parse_overrides<T>(
    text: &str,
    value: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (task, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not TASK=VALUE"))?;
        let task = task.trim();
        if task.is_empty() {
            return Err(format!("`{part}` names no task"));
        }
        out.push((task.to_owned(), value(v.trim())?));
    }
    Ok(out)
}

/// Parses `10/m` or `10/m:5` (a burst of 5).
pub fn parse_task_rate(text: &str) -> Result<TaskRate, String> {
    let (rate, burst) = match text.split_once(':') {
        Some((rate, burst)) => {
            let burst: u32 = burst
                .trim()
                .parse()
                .map_err(|_| format!("`{text}`: the burst after `:` must be a whole number"))?;
            if burst == 0 {
                return Err(format!("`{text}`: the burst must be at least 1"));
            }
            (rate, burst)
        }
        None => (text, 1),
    };
    Ok(TaskRate {
        rate: rate.parse()?,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse() {
        let caps = parse_overrides("document.index=5, mail.send=2", |v| {
            v.parse::<u32>().map_err(|e| e.to_string())
        })
        .expect("valid");
        assert_eq!(
            caps,
            vec![("document.index".into(), 5), ("mail.send".into(), 2)]
        );
        assert!(parse_overrides("document.index", |v| Ok(v.to_owned())).is_err());
        let rate = parse_task_rate("10/m:3").expect("valid");
        assert_eq!(rate.burst, 3);
        assert_eq!(rate.to_string(), "10/m (burst 3)");
        assert!(parse_task_rate("10/m:0").is_err());
        assert!(parse_task_rate("ten").is_err());
    }

    #[test]
    fn next_allowed_follows_gcra() {
        let r = parse_task_rate("10/s").expect("valid");
        assert_eq!(r.interval_us(), 100_000);
        // After one start at t=0 the tat is 100 ms: the next is allowed then.
        assert_eq!(r.next_allowed_us(100_000), 100_000);
        let burst = parse_task_rate("10/s:3").expect("valid");
        assert_eq!(burst.next_allowed_us(100_000), -100_000);
    }

    #[test]
    fn encoding_is_empty_without_limits() {
        let mut tasks = BTreeMap::new();
        tasks.insert("a".to_owned(), TaskLimit::default());
        assert!(Limits::new(tasks).is_empty());
        let mut tasks = BTreeMap::new();
        tasks.insert(
            "a".to_owned(),
            TaskLimit {
                concurrency: Some(3),
                ..TaskLimit::default()
            },
        );
        assert_eq!(Limits::new(tasks).encoded(), r#"{"a":[3,-1,-1,0,0]}"#);
    }
}
