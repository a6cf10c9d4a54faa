//! Metrics of a worker child, relayed through its supervisor. A child is a
//! process of its own with no port; it records into [`Relay`], and every
//! report line it writes carries what was counted since the last one:
//! counter increments and histogram samples per series. The supervisor
//! replays them into its own recorder ([`replay`]), which `/metrics` on
//! `WEIR_METRICS_ADDR` serves. Handler code uses `metrics::counter!` and
//! `metrics::histogram!` as anywhere else. Gauges of a child are not
//! relayed (several children would overwrite each other's).

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Label, Metadata, Recorder, SharedString,
    Unit,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Samples of one histogram sent as they are per report; beyond this many,
/// the rest go as counts per bucket (exact counts, approximate sum).
pub const MAX_SAMPLES: usize = 4096;

/// Buckets of the job histograms (`weir_job_duration_seconds`,
/// `weir_job_wait_seconds`): a no-op to a ten-minute `document.index`.
/// A histogram's overflow beyond [`MAX_SAMPLES`] is counted in them too.
pub const JOB_BUCKETS: [f64; 12] = [
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// What one series recorded since the last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Metric name.
    pub name: String,
    /// Labels, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
    /// A counter's increment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<u64>,
    /// A histogram's samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
    /// A histogram's further samples as (upper bound, count).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(f64, u64)>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        lock(&self.0).push(value);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The child's recorder: every series it was given, by key.
#[derive(Default, Clone)]
pub struct Relay {
    counters: Arc<Mutex<HashMap<Key, Arc<AtomicU64>>>>,
    histograms: Arc<Mutex<HashMap<Key, Arc<Samples>>>>,
}

impl Relay {
    /// Installs a relay as this process's recorder; `None` if one is
    /// installed already.
    pub fn install() -> Option<Relay> {
        let relay = Relay::default();
        metrics::set_global_recorder(relay.clone()).ok()?;
        Some(relay)
    }

    /// What was recorded since the last call.
    pub fn take(&self) -> Vec<Delta> {
        let labels = |key: &Key| -> Vec<(String, String)> {
            key.labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect()
        };
        let mut out = Vec::new();
        for (key, counter) in lock(&self.counters).iter() {
            let add = counter.swap(0, Ordering::Relaxed);
            if add > 0 {
                out.push(Delta {
                    name: key.name().to_owned(),
                    labels: labels(key),
                    add: Some(add),
                    samples: Vec::new(),
                    buckets: Vec::new(),
                });
            }
        }
        for (key, histogram) in lock(&self.histograms).iter() {
            let mut samples = std::mem::take(&mut *lock(&histogram.0));
            if samples.is_empty() {
                continue;
            }
            let mut buckets = Vec::new();
            if samples.len() > MAX_SAMPLES {
                let rest = samples.split_off(MAX_SAMPLES);
                let top = rest.iter().copied().fold(f64::MIN, f64::max);
                let mut counts = vec![0u64; JOB_BUCKETS.len() + 1];
                for v in rest {
                    let i = JOB_BUCKETS
                        .iter()
                        .position(|b| v <= *b)
                        .unwrap_or(JOB_BUCKETS.len());
                    counts[i] += 1;
                }
                for (i, n) in counts.into_iter().enumerate() {
                    if n > 0 {
                        buckets.push((JOB_BUCKETS.get(i).copied().unwrap_or(top), n));
                    }
                }
            }
            out.push(Delta {
                name: key.name().to_owned(),
                labels: labels(key),
                add: None,
                samples,
                buckets,
            });
        }
        out
    }
}

impl Recorder for Relay {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let counter = lock(&self.counters).entry(key.clone()).or_default().clone();
        Counter::from_arc(counter)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let samples = lock(&self.histograms)
            .entry(key.clone())
            .or_default()
            .clone();
        Histogram::from_arc(samples)
    }
}

/// Replays a child's deltas into this process's recorder.
pub fn replay(deltas: Vec<Delta>) {
    for d in deltas {
        let labels: Vec<Label> = d
            .labels
            .into_iter()
            .map(|(k, v)| Label::new(k, v))
            .collect();
        if let Some(add) = d.add {
            metrics::counter!(d.name, labels).increment(add);
            continue;
        }
        let histogram = metrics::histogram!(d.name, labels);
        for v in d.samples {
            histogram.record(v);
        }
        for (bound, n) in d.buckets {
            histogram.record_many(bound, usize::try_from(n).unwrap_or(usize::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_what_was_recorded_since_the_last_take() {
        let relay = Relay::default();
        metrics::with_local_recorder(&relay, || {
            metrics::counter!("jobs", "queue" => "q").increment(3);
            metrics::counter!("jobs", "queue" => "q").increment(2);
            for i in 0..(MAX_SAMPLES + 10) {
                metrics::histogram!("took").record(if i < MAX_SAMPLES { 0.01 } else { 7.0 });
            }
        });
        let mut first = relay.take();
        first.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(first[0].name, "jobs");
        assert_eq!(first[0].add, Some(5));
        assert_eq!(first[0].labels, vec![("queue".to_owned(), "q".to_owned())]);
        assert_eq!(first[1].samples.len(), MAX_SAMPLES);
        assert_eq!(first[1].buckets, vec![(15.0, 10)]);
        assert!(relay.take().is_empty(), "nothing new since");
        let line = serde_json::to_string(&first).expect("json");
        let back: Vec<Delta> = serde_json::from_str(&line).expect("parse");
        assert_eq!(back, first);
    }
}
