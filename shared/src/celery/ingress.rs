//! `weir celery-ingress`: takes Celery's messages from its Redis broker
//! and enqueues each as a weir job whose id is the task id, without losing
//! or doubling one across a crash:
//!
//! 1. `take.lua` moves up to a batch of messages, most urgent list first,
//!    from Celery's lists into a hash this ingress owns (with the time),
//!    in one atomic step: nothing is ever held only in this process;
//! 2. the batch is enqueued; an id that exists stores nothing (explicit
//!    ids are idempotent on every broker), so doing it twice is harmless;
//! 3. the messages leave the hash.
//!
//! A crash between 1 and 3 leaves the messages in the hash; every ingress
//! re-enqueues entries older than `recover_after` ([`STALE`] by default)
//! at start and every [`RECOVER_EVERY`], so several ingress processes may
//! run. A message
//! weir cannot run becomes a `celery.rejected` job holding the raw
//! message, which a worker fails with the reason. With a results Redis,
//! the ids of taken tasks wait in a set there until their jobs end, and
//! then Celery's result records are written.

use super::{CeleryTask, EXPIRED, ResultState, meta};
use crate::broker::{EnqueueRequest, Scope, SharedBroker};
use crate::config::Settings;
use crate::job::{JobId, JobState, now_ms};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An entry of the in-flight hash older than this is re-enqueued.
pub const STALE: Duration = Duration::from_secs(60);
/// How often each ingress looks for stale entries.
pub const RECOVER_EVERY: Duration = Duration::from_secs(30);
/// Messages per take.
const BATCH: usize = 1000;
/// How long Celery keeps a result record (its `result_expires` default).
const RESULT_TTL_SECS: u64 = 86_400;
/// The task that fails a message weir cannot run with its reason.
pub const REJECTED_TASK: &str = "celery.rejected";

const TAKE: &str = r"
-- KEYS: the Celery lists, most urgent first; then the in-flight hash, its
-- index and its counter. ARGV: how many, this ingress's name.
local n = #KEYS - 3
local inflight, index, seq = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local max = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 1, n do
  while #out < max * 3 do
    local msg = redis.call('RPOP', KEYS[i])
    if not msg then break end
    local tag = ARGV[2] .. ':' .. redis.call('INCR', seq)
    redis.call('HSET', inflight, tag, KEYS[i] .. '\n' .. msg)
    redis.call('ZADD', index, now, tag)
    out[#out + 1] = tag
    out[#out + 1] = KEYS[i]
    out[#out + 1] = msg
  end
end
return out
";

/// Why the ingress stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A URL or option is wrong.
    #[error("{0}")]
    Config(String),
    /// Celery's Redis or the results Redis failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// weir's broker failed.
    #[error("weir's broker: {0}")]
    Weir(#[from] crate::broker::BrokerError),
}

/// One Celery queue and the weir queue its messages go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRoute {
    /// The Celery queue (its list's name, without the key prefix).
    pub celery: String,
    /// The weir queue.
    pub weir: String,
}

/// What `weir celery-ingress` was told.
#[derive(Debug, Clone)]
pub struct IngressOptions {
    /// Celery's broker: `redis://HOST:PORT/DB`.
    pub from: String,
    /// The queues to take.
    pub queues: Vec<QueueRoute>,
    /// Celery's `global_keyprefix` (Dify's `REDIS_KEY_PREFIX`).
    pub key_prefix: String,
    /// The separator of priority lists (kombu's default `\x06\x16`).
    pub sep: String,
    /// kombu's `priority_steps` (default 0, 3, 6, 9).
    pub priority_steps: Vec<u8>,
    /// The tenant jobs belong to.
    pub tenant: String,
    /// Celery's result backend, when results are wanted.
    pub results: Option<String>,
    /// How old an in-flight entry is before any ingress re-enqueues it
    /// ([`STALE`] by default).
    pub recover_after: Duration,
}

/// True when the job of `request` carries a Celery `expires` at or
/// before `now`.
fn expires_before(request: &EnqueueRequest, now: crate::job::Millis) -> bool {
    request.payload["celery"]["expires"]
        .as_i64()
        .is_some_and(|at| at <= now.0)
}

/// A message taken and where it came from.
struct Taken {
    tag: String,
    list: String,
    raw: String,
}

/// The running ingress.
pub struct Ingress {
    options: IngressOptions,
    broker: SharedBroker,
    settings: Arc<Settings>,
    celery: ConnectionManager,
    results: Option<ConnectionManager>,
    name: String,
    take: redis::Script,
}

async fn connect(url: &str) -> Result<ConnectionManager, IngressError> {
    let client = redis::Client::open(url).map_err(|e| {
        IngressError::Config(format!(
            "`{}` is not a Redis URL: {e}",
            crate::secret::redact_url(url)
        ))
    })?;
    Ok(ConnectionManager::new(client).await?)
}

impl Ingress {
    /// Connects to Celery's Redis (and the results Redis).
    pub async fn open(
        options: IngressOptions,
        broker: SharedBroker,
        settings: Arc<Settings>,
    ) -> Result<Self, IngressError> {
        let celery = connect(&options.from).await?;
        let results = match &options.results {
            Some(url) => Some(connect(url).await?),
            None => None,
        };
        Ok(Ingress {
            name: format!("{}:{:04x}", std::process::id(), rand::random::<u16>()),
            options,
            broker,
            settings,
            celery,
            results,
            take: redis::Script::new(TAKE),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.options.key_prefix)
    }

    /// Celery's lists of a queue, most urgent first.
    fn lists(&self, queue: &str) -> Vec<String> {
        self.options
            .priority_steps
            .iter()
            .map(|&step| {
                if step == 0 {
                    self.key(queue)
                } else {
                    self.key(&format!("{queue}{}{step}", self.options.sep))
                }
            })
            .collect()
    }

    fn inflight(&self, queue: &str) -> (String, String, String) {
        let base = self.key(&format!("weir-ingress:{queue}"));
        (
            format!("{base}:inflight"),
            format!("{base}:index"),
            format!("{base}:seq"),
        )
    }

    /// Runs until `shutdown`: takes, enqueues, recovers, writes results.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), IngressError> {
        let this = Arc::new(self);
        let results = this.results.clone().map(|conn| {
            let this = this.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { this.write_results(conn, stop).await })
        });
        for route in &this.options.queues {
            this.recover(route).await?;
        }
        let mut idle = Duration::from_millis(10);
        let mut recovered = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let mut moved = 0;
            for route in &this.options.queues {
                match this.take_batch(route).await {
                    Ok(n) => moved += n,
                    Err(e) => {
                        tracing::warn!(queue = %route.celery, error = %e, "Taking from Celery failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            if recovered.elapsed() >= RECOVER_EVERY.min(this.options.recover_after / 2) {
                recovered = tokio::time::Instant::now();
                for route in &this.options.queues {
                    if let Err(e) = this.recover(route).await {
                        tracing::warn!(queue = %route.celery, error = %e, "Recovery failed; retrying later");
                    }
                }
            }
            if moved > 0 {
                idle = Duration::from_millis(10);
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(idle) => {}
                () = shutdown.cancelled() => {}
            }
            idle = (idle * 2).min(Duration::from_millis(500));
        }
        if let Some(task) = results {
            let _ = task.await;
        }
        Ok(())
    }

    /// One take from a queue's lists; how many messages moved.
    async fn take_batch(&self, route: &QueueRoute) -> Result<usize, IngressError> {
        let (inflight, index, seq) = self.inflight(&route.celery);
        let mut invocation = self.take.prepare_invoke();
        for list in self.lists(&route.celery) {
            invocation.key(list);
        }
        invocation
            .key(&inflight)
            .key(&index)
            .key(&seq)
            .arg(BATCH)
            .arg(&self.name);
        let mut conn = self.celery.clone();
        let flat: Vec<String> = invocation.invoke_async(&mut conn).await?;
        let taken: Vec<Taken> = flat
            .chunks_exact(3)
            .map(|c| Taken {
                tag: c[0].clone(),
                list: c[1].clone(),
                raw: c[2].clone(),
            })
            .collect();
        let n = taken.len();
        if n > 0 {
            self.hand_over(route, taken).await?;
        }
        Ok(n)
    }

    /// Re-enqueues what an ingress took more than `recover_after` ago and never
    /// finished handing over (it crashed, or is very slow: both harmless).
    async fn recover(&self, route: &QueueRoute) -> Result<(), IngressError> {
        let (inflight, index, _) = self.inflight(&route.celery);
        let mut conn = self.celery.clone();
        let before = now_ms().0 - self.options.recover_after.as_millis() as i64;
        let tags: Vec<String> = conn
            .zrangebyscore_limit(&index, "-inf", before, 0, BATCH as isize)
            .await?;
        if tags.is_empty() {
            return Ok(());
        }
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&inflight)
            .arg(&tags)
            .query_async(&mut conn)
            .await?;
        let mut taken = Vec::new();
        for (tag, value) in tags.iter().zip(values) {
            match value.and_then(|v| {
                v.split_once('\n')
                    .map(|(l, m)| (l.to_owned(), m.to_owned()))
            }) {
                Some((list, raw)) => taken.push(Taken {
                    tag: tag.clone(),
                    list,
                    raw,
                }),
                None => {
                    let _: () = conn.zrem(&index, tag).await?;
                }
            }
        }
        tracing::info!(queue = %route.celery, messages = taken.len(), "Re-enqueuing messages an ingress took and did not hand over");
        metrics::counter!("weir_celery_recovered_total", "queue" => route.celery.clone())
            .increment(taken.len() as u64);
        self.hand_over(route, taken).await
    }

    /// Enqueues taken messages, then removes them from the in-flight hash.
    async fn hand_over(&self, route: &QueueRoute, taken: Vec<Taken>) -> Result<(), IngressError> {
        let mut requests = Vec::with_capacity(taken.len());
        let mut tracked = Vec::new();
        let mut expired = Vec::new();
        let now = now_ms();
        for t in &taken {
            match super::parse(&t.raw) {
                Ok(task) => {
                    metrics::counter!("weir_celery_messages_total", "queue" => route.celery.clone(), "outcome" => "taken").increment(1);
                    if !task.ignore_result() {
                        tracked.push(format!("{} {}", task.id, task.celery_id()));
                    }
                    let mut request = self.request(route, task);
                    if expires_before(&request, now) {
                        // Stored out of reach of workers, then cancelled:
                        // it expired before it was taken. (Should the
                        // cancel not happen, it fails as expired when due.)
                        request.run_at = Some(crate::job::Millis(now.0 + 3_600_000));
                        expired.push(request.id);
                    }
                    requests.push(request);
                }
                Err(rejected) => {
                    metrics::counter!("weir_celery_messages_total", "queue" => route.celery.clone(), "outcome" => "rejected").increment(1);
                    let bare = t
                        .list
                        .strip_prefix(&self.options.key_prefix)
                        .unwrap_or(&t.list);
                    let id = match &rejected.id {
                        Some(id) => super::job_id(id),
                        None => super::job_id(&hex::encode(Sha256::digest(t.raw.as_bytes()))),
                    };
                    tracing::warn!(job_id = %id, reason = %rejected.reason, "Celery message refused; kept as a failed job");
                    requests.push(EnqueueRequest {
                        id: Some(id),
                        tenant: self.options.tenant.clone(),
                        task: REJECTED_TASK.into(),
                        queue: route.weir.clone(),
                        payload: json!({
                            "reason": rejected.reason,
                            "task": rejected.task,
                            "list": bare,
                            "raw": t.raw,
                        }),
                        priority: crate::job::DEFAULT_PRIORITY,
                        run_at: None,
                        max_retries: 0,
                        timeout_ms: None,
                        unique_key: None,
                        serial_key: None,
                    });
                }
            }
        }
        let enqueued = self.broker.enqueue(requests).await?;
        for e in &enqueued {
            if e.created {
                self.settings.count_enqueued(&e.job);
            }
        }
        for id in expired.into_iter().flatten() {
            if let Err(e) = self.broker.cancel(&Scope::All, id).await {
                tracing::debug!(job_id = %id, error = %e, "Expired job not cancelled (already ended)");
            }
        }
        if let (Some(conn), false) = (&self.results, tracked.is_empty()) {
            let mut conn = conn.clone();
            let _: () = conn.sadd(self.pending_key(), &tracked).await?;
        }
        let (inflight, index, _) = self.inflight(&route.celery);
        let tags: Vec<&str> = taken.iter().map(|t| t.tag.as_str()).collect();
        let mut conn = self.celery.clone();
        let _: () = redis::pipe()
            .atomic()
            .hdel(&inflight, &tags)
            .zrem(&index, &tags)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    fn request(&self, route: &QueueRoute, task: CeleryTask) -> EnqueueRequest {
        let configured = self.settings.task(&task.task);
        EnqueueRequest {
            id: Some(task.id),
            tenant: self.options.tenant.clone(),
            payload: task.payload(),
            queue: route.weir.clone(),
            priority: task.priority,
            run_at: task.run_at,
            max_retries: configured
                .max_retries
                .unwrap_or(crate::job::DEFAULT_MAX_RETRIES),
            timeout_ms: task
                .timeout_ms
                .or_else(|| configured.timeout.map(|t| t.as_millis() as u64)),
            unique_key: None,
            serial_key: None,
            task: task.task,
        }
    }

    fn pending_key(&self) -> String {
        format!("{}weir-ingress:results", self.options.key_prefix)
    }

    /// Writes Celery's result record of every tracked job that ended.
    /// Every 100 ms while jobs end, slowing to once a second while none
    /// does (each pass reads up to 500 tracked jobs from weir).
    async fn write_results(&self, mut conn: ConnectionManager, stop: CancellationToken) {
        let mut every = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match self.results_pass(&mut conn).await {
                Ok(0) => every = (every * 2).min(Duration::from_secs(1)),
                Ok(_) => every = Duration::from_millis(100),
                Err(e) => tracing::warn!(error = %e, "Writing Celery results failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Writes the records of the tracked jobs that ended; how many.
    async fn results_pass(&self, conn: &mut ConnectionManager) -> Result<usize, IngressError> {
        let pending: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(self.pending_key())
            .arg(500)
            .query_async(conn)
            .await?;
        let mut ended = Vec::new();
        let mut records: HashMap<String, Value> = HashMap::new();
        for entry in pending {
            let Some((id, celery_id)) = entry.split_once(' ') else {
                ended.push(entry);
                continue;
            };
            let Ok(id) = id.parse::<JobId>() else {
                ended.push(entry);
                continue;
            };
            let job = match self.broker.get(&Scope::All, id).await {
                Ok(Some(job)) => job,
                // Gone (retention): nothing more will be known.
                Ok(None) => {
                    ended.push(entry);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let error = job.error.clone().unwrap_or_default();
            let state = match job.state {
                JobState::Succeeded => ResultState::Success,
                JobState::Cancelled => ResultState::Revoked,
                JobState::Failed if error.starts_with(EXPIRED) => ResultState::Revoked,
                JobState::Failed => ResultState::Failure,
                _ => continue,
            };
            records.insert(
                format!("celery-task-meta-{celery_id}"),
                meta(celery_id, state, &job.result, &error),
            );
            ended.push(entry);
        }
        if records.is_empty() && ended.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for (key, record) in &records {
            let text = record.to_string();
            pipe.set_ex(key, &text, RESULT_TTL_SECS).ignore();
            pipe.publish(key, &text).ignore();
        }
        if !ended.is_empty() {
            pipe.srem(self.pending_key(), &ended).ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        Ok(records.len())
    }
}
