//! The pool: which key a call uses, what its answer does to that key, and
//! what every node sees of each key.

use super::{ApiKey, KeyInfo, coord_key};
use crate::broker::{BrokerError, SharedBroker};
use crate::job::{Millis, now_ms};
use crate::limit::{KeyedRate, Rate};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest a key cools, whatever a `Retry-After` asks.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(3600);
/// How long a key that answered 401 or 403 cools: a revoked key must not
/// take every job's attempts.
pub const UNAUTHORIZED_COOLDOWN: Duration = Duration::from_secs(15 * 60);
/// How long a key's request and 429 counters outlive its last call.
const STATS_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a minute's token counter is kept (this minute and the last).
const TOKENS_TTL: Duration = Duration::from_secs(120);

/// Why the pool could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The provider has no keys in this process's environment.
    #[error("provider `{0}` has no keys: set its keys_env variable or WEIR_PROVIDER_{1}_KEYS")]
    NoKeys(String, String),
    /// The coordination store did not answer.
    #[error("the key pool's state is unavailable: {0}")]
    Broker(#[from] BrokerError),
}

/// What a pick gave.
#[derive(Debug, Clone)]
pub enum Pick {
    /// Use this key (its index in the pool, for [`KeyPool::report`]).
    Key(usize, ApiKey),
    /// No key may take the call now; the first may in `after`.
    Wait {
        /// Until the first key is free.
        after: Duration,
        /// What holds them, e.g. "2 cooling, 1 at its rpm limit".
        why: String,
    },
}

/// How a call with a pooled key ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    /// The status; `None` when no response came (timeout, connection).
    pub status: Option<u16>,
    /// The provider's `Retry-After` (or rate-limit reset header).
    pub retry_after: Option<Duration>,
    /// Tokens charged at the pick.
    pub estimated_tokens: u32,
    /// Tokens the response's `usage` reports, if any.
    pub used_tokens: Option<u32>,
}

/// One key as `weir providers` and `GET /v1/providers` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyStats {
    /// The provider.
    pub provider: String,
    /// The key, masked.
    pub key: String,
    /// The key's fingerprint.
    pub fingerprint: String,
    /// `ok` or `cooling`.
    pub state: String,
    /// When a cooling key comes back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooling_until: Option<Millis>,
    /// Calls made with it (forgotten after a day without calls; each
    /// process writes its counts once a second).
    pub requests: i64,
    /// 429s (and 503s with `Retry-After`) it answered.
    pub throttled: i64,
    /// Tokens used in the last 60 s.
    pub tokens_last_minute: i64,
}

/// How often a pool writes the counters it gathered to the broker.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Counter increments not yet written, by coordination key.
type Tallies = HashMap<String, (i64, Duration)>;

/// A provider's keys, as one process holds them.
pub struct KeyPool {
    provider: String,
    keys: Vec<ApiKey>,
    rpm: Option<KeyedRate>,
    tpm: Option<KeyedRate>,
    cooldown: Duration,
    broker: SharedBroker,
    cursor: AtomicUsize,
    /// Requests, 429s and tokens, summed in memory and written once per
    /// [`FLUSH_EVERY`] (a write per call would cost more than the call on
    /// SQLite); cooldowns and budgets are written at once.
    tallies: Arc<Mutex<Tallies>>,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        if let Some(f) = &self.flusher {
            f.abort();
        }
    }
}

fn lock(tallies: &Mutex<Tallies>) -> std::sync::MutexGuard<'_, Tallies> {
    tallies.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes the gathered counters; what a failed write held is kept for the next flush.
async fn flush(broker: &SharedBroker, tallies: &Mutex<Tallies>) {
    let batch = std::mem::take(&mut *lock(tallies));
    for (key, (by, ttl)) in batch {
        if let Err(e) = broker.count(&key, by, ttl).await {
            tracing::debug!(error = %e, "Key pool counters not written; kept for the next flush");
            lock(tallies).entry(key).or_insert((0, ttl)).0 += by;
        }
    }
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("provider", &self.provider)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// A per-minute limit as a GCRA allowing a tenth of the minute at once.
fn per_minute(limit: u32) -> KeyedRate {
    KeyedRate {
        rate: Rate {
            count: limit.max(1),
            period: Duration::from_secs(60),
        },
        burst: (limit / 10).max(1),
    }
}

impl KeyPool {
    /// A pool over `keys` (ordered by fingerprint, the same order on every
    /// node), with per-key `rpm` and `tpm` and the cooldown of a 429 that
    /// names no delay.
    pub fn new(
        provider: &str,
        mut keys: Vec<ApiKey>,
        rpm: Option<u32>,
        tpm: Option<u32>,
        cooldown: Duration,
        broker: SharedBroker,
    ) -> Self {
        keys.sort_by(|a, b| a.fingerprint().cmp(b.fingerprint()));
        keys.dedup_by(|a, b| a.fingerprint() == b.fingerprint());
        let tallies = Arc::new(Mutex::new(Tallies::new()));
        let flusher = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (broker, tallies) = (broker.clone(), tallies.clone());
            rt.spawn(async move {
                let mut tick = tokio::time::interval(FLUSH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    flush(&broker, &tallies).await;
                }
            })
        });
        KeyPool {
            provider: provider.to_owned(),
            keys,
            rpm: rpm.map(per_minute),
            tpm: tpm.map(per_minute),
            cooldown,
            broker,
            // Processes start from different keys.
            cursor: AtomicUsize::new(rand::random::<u32>() as usize),
            tallies,
            flusher,
        }
    }

    fn tally(&self, key: String, by: i64, ttl: Duration) {
        lock(&self.tallies).entry(key).or_insert((0, ttl)).0 += by;
    }

    /// Writes the counters gathered since the last flush now.
    pub async fn flush(&self) {
        flush(&self.broker, &self.tallies).await;
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The keys this process holds.
    pub fn keys(&self) -> &[ApiKey] {
        &self.keys
    }

    /// The keys as a heartbeat announces them.
    pub fn infos(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|k| KeyInfo {
                provider: self.provider.clone(),
                fingerprint: k.fingerprint().to_owned(),
                masked: k.masked(),
            })
            .collect()
    }

    fn key(&self, what: &str, key: &ApiKey) -> String {
        coord_key(&self.provider, what, key.fingerprint())
    }

    /// Picks the next key, round robin, that is not cooling and whose
    /// `rpm` (1) and `tpm` (`estimated_tokens`) admit the call now; both
    /// are charged. A key refused by `tpm` after `rpm` admitted it has
    /// spent that request of its minute.
    pub async fn pick(&self, estimated_tokens: u32) -> Result<Pick, PoolError> {
        let n = self.keys.len();
        if n == 0 {
            return Err(PoolError::NoKeys(
                self.provider.clone(),
                env_name(&self.provider),
            ));
        }
        let cool_keys: Vec<String> = self.keys.iter().map(|k| self.key("cool", k)).collect();
        let cooling = self.broker.cooling(&cool_keys).await?;
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut earliest: Option<Duration> = None;
        let (mut cool_n, mut rpm_n, mut tpm_n) = (0, 0, 0);
        let mut sooner = |d: Duration| earliest = Some(earliest.map_or(d, |e| e.min(d)));
        for i in 0..n {
            let index = (start + i) % n;
            let key = &self.keys[index];
            if let Some(left) = cooling[index] {
                cool_n += 1;
                sooner(left);
                continue;
            }
            if let Some(rpm) = self.rpm {
                let d = self.broker.admit(&self.key("rpm", key), rpm, 1).await?;
                if !d.allowed {
                    rpm_n += 1;
                    sooner(d.retry_after);
                    continue;
                }
            }
            if let Some(tpm) = self.tpm {
                let cost = estimated_tokens.clamp(1, tpm.burst);
                let d = self.broker.admit(&self.key("tpm", key), tpm, cost).await?;
                if !d.allowed {
                    tpm_n += 1;
                    sooner(d.retry_after);
                    continue;
                }
            }
            self.tally(self.key("requests", key), 1, STATS_TTL);
            return Ok(Pick::Key(index, key.clone()));
        }
        let mut parts = Vec::new();
        for (count, what) in [
            (cool_n, "cooling"),
            (rpm_n, "at its rpm limit"),
            (tpm_n, "at its tpm limit"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        Ok(Pick::Wait {
            after: earliest.unwrap_or(Duration::from_secs(1)),
            why: parts.join(", "),
        })
    }

    /// Records how a call with key `index` ended: a 429 (or a 503 with
    /// `Retry-After`) cools the key for `Retry-After` (else the pool's
    /// cooldown), at most an hour; a 401 or 403 cools it 15 minutes;
    /// tokens used beyond the estimate are charged to its `tpm` when the
    /// budget has room, and counted for the minute.
    pub async fn report(&self, index: usize, report: Report) -> Result<(), PoolError> {
        let Some(key) = self.keys.get(index) else {
            return Ok(());
        };
        let status = report.status.unwrap_or(0);
        let throttled = status == 429 || (status == 503 && report.retry_after.is_some());
        if throttled {
            let period = report
                .retry_after
                .unwrap_or(self.cooldown)
                .clamp(Duration::from_millis(100), MAX_COOLDOWN);
            self.broker.cool(&self.key("cool", key), period).await?;
            self.tally(self.key("throttled", key), 1, STATS_TTL);
        } else if status == 401 || status == 403 {
            self.broker
                .cool(&self.key("cool", key), UNAUTHORIZED_COOLDOWN)
                .await?;
        }
        if (200..300).contains(&status) {
            let used = report.used_tokens.unwrap_or(report.estimated_tokens);
            if let Some(tpm) = self.tpm
                && used > report.estimated_tokens
            {
                let extra = (used - report.estimated_tokens).min(tpm.burst);
                // Best effort: an over-budget key is refused at its next pick anyway.
                self.broker.admit(&self.key("tpm", key), tpm, extra).await?;
            }
            if used > 0 {
                let minute = now_ms().0.div_euclid(60_000);
                let name = format!("{}:{minute}", self.key("tokens", key));
                self.tally(name, i64::from(used), TOKENS_TTL);
            }
        }
        Ok(())
    }

    /// What every node sees of `keys` now: state, requests, 429s and
    /// tokens in the last 60 s (this minute's count plus the part of the
    /// last minute's that the window still covers).
    pub async fn stats(
        broker: &SharedBroker,
        keys: &[KeyInfo],
    ) -> Result<Vec<KeyStats>, PoolError> {
        let name = |k: &KeyInfo, what: &str| coord_key(&k.provider, what, &k.fingerprint);
        let cool_keys: Vec<String> = keys.iter().map(|k| name(k, "cool")).collect();
        let cooling = broker.cooling(&cool_keys).await?;
        let now = now_ms().0;
        let minute = now.div_euclid(60_000);
        let into_minute = now.rem_euclid(60_000);
        let mut counter_keys = Vec::with_capacity(keys.len() * 4);
        for k in keys {
            counter_keys.push(name(k, "requests"));
            counter_keys.push(name(k, "throttled"));
            counter_keys.push(format!("{}:{minute}", name(k, "tokens")));
            counter_keys.push(format!("{}:{}", name(k, "tokens"), minute - 1));
        }
        let counts = broker.counters(&counter_keys).await?;
        Ok(keys
            .iter()
            .zip(cooling)
            .zip(counts.chunks(4))
            .map(|((k, cool), c)| {
                let last = c[3] * (60_000 - into_minute) / 60_000;
                KeyStats {
                    provider: k.provider.clone(),
                    key: k.masked.clone(),
                    fingerprint: k.fingerprint.clone(),
                    state: if cool.is_some() { "cooling" } else { "ok" }.into(),
                    cooling_until: cool.map(|d| {
                        Millis(now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
                    }),
                    requests: c[0],
                    throttled: c[1],
                    tokens_last_minute: c[2] + last,
                }
            })
            .collect())
    }
}

/// `WEIR_PROVIDER_<NAME>_KEYS`'s `<NAME>` for a provider.
pub fn env_name(provider: &str) -> String {
    provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
