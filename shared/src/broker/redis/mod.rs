//! The Redis broker: the shared broker of a distributed deployment.
//!
//! A job stays in Redis until it is acknowledged. Every state change is one
//! Lua script (in `lua/`, sent once and then run by SHA), so a crash of any
//! client at any moment leaves each job in exactly one state. Scripts take
//! the time from Redis (`TIME`), so the clocks of API and worker hosts do
//! not matter. Leases live in a per-queue `running` set scored by their
//! deadline; the (job id, attempt) pair fences renewals and completions.
//!
//! Keys live under `WEIR_REDIS_PREFIX` (default `weir`). One queue's sets
//! share the hash tag `{q:NAME}`, so on Redis Cluster they would sit in one
//! slot; job hashes (`PREFIX:j:ID`, found by id alone), unique keys, listing
//! indexes and the queue registry are outside that tag, and the scripts
//! touch them together, so weir needs a single Redis primary (with replicas
//! or Sentinel), not a Cluster.
//!
//! Retention: finished jobs (succeeded, failed, cancelled) expire after
//! `WEIR_RETENTION`, so memory stays bounded by the work of that window.

#[cfg(feature = "testkit")]
mod cleanup;
mod jobs;
mod limiter;

#[cfg(feature = "testkit")]
pub use cleanup::PrefixCleanup;

pub use limiter::RedisRateLimiter;

use super::{
    Broker, BrokerError, BrokerResult, ClaimRequest, ClaimedJob, Completion, EnqueueRequest,
    Enqueued, JobPage, Lease, ListRequest, Maintenance, Outcome, Position, QueueCounts,
    ScheduleState, Scope, Tick,
};
use crate::job::{Job, JobId, JobState, Millis, now_ms};
use crate::limit::{Holder, TaskLimit, Usage};
use crate::node::WorkerInfo;
use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

const COMMON: &str = include_str!("lua/common.lua");

fn script(body: &str) -> Script {
    Script::new(&with_helpers(COMMON, body))
}

/// `body` after the helpers of `common` it uses. Each `local` definition
/// in `common` (with the comment lines just above it) is kept only when
/// the body, or a kept helper, names it: a script runs its whole text on
/// every call, and defining a helper it never calls costs Redis time on
/// each one. What comes before the first definition is always kept.
fn with_helpers(common: &str, body: &str) -> String {
    let lines: Vec<&str> = common.lines().collect();
    // Each helper's name and first line (its comment's, if it has one).
    let mut blocks: Vec<(&str, usize)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("local ") else {
            continue;
        };
        let rest = rest.strip_prefix("function ").unwrap_or(rest);
        let name = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        let mut start = i;
        while start > 0 && lines[start - 1].starts_with("--") {
            start -= 1;
        }
        blocks.push((name, start));
    }
    let header_end = blocks.first().map_or(lines.len(), |b| b.1);
    let text = |k: usize| {
        let end = blocks.get(k + 1).map_or(lines.len(), |b| b.1);
        lines[blocks[k].1..end].join("\n")
    };
    let names = |s: &str| -> HashSet<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut wanted = names(body);
    let mut keep = vec![false; blocks.len()];
    // Later helpers use earlier ones only, so one pass from the end
    // settles every dependency.
    for k in (0..blocks.len()).rev() {
        if wanted.contains(blocks[k].0) {
            keep[k] = true;
            wanted.extend(names(&text(k)));
        }
    }
    let mut out = lines[..header_end].join("\n");
    for (k, _) in blocks.iter().enumerate().filter(|(k, _)| keep[*k]) {
        out.push('\n');
        out.push_str(&text(k));
    }
    out.push('\n');
    out.push_str(body);
    out
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    renew: Script,
    complete: Script,
    progress: Script,
    cancel: Script,
    retry: Script,
    maintain: Script,
    purge: Script,
    counts: Script,
    usage: Script,
    position: Script,
    fire: Script,
}

impl Scripts {
    fn load() -> Self {
        Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            claim: script(include_str!("lua/claim.lua")),
            renew: script(include_str!("lua/renew.lua")),
            complete: script(include_str!("lua/complete.lua")),
            progress: script(include_str!("lua/progress.lua")),
            cancel: script(include_str!("lua/cancel.lua")),
            retry: script(include_str!("lua/retry.lua")),
            maintain: script(include_str!("lua/maintain.lua")),
            purge: script(include_str!("lua/purge.lua")),
            counts: script(include_str!("lua/counts.lua")),
            usage: script(include_str!("lua/usage.lua")),
            position: script(include_str!("lua/position.lua")),
            fire: script(&format!(
                "{}\n{}",
                include_str!("lua/fire.lua"),
                include_str!("lua/enqueue.lua")
            )),
        }
    }
}

/// Expired leases returned and due jobs promoted per queue and maintenance pass.
const MAINTAIN_BATCH: i64 = 1000;
/// Listing-index entries older than the retention looked at per
/// maintenance pass (expired ones are dropped): a pass blocks Redis about
/// a millisecond.
const SWEEP_BATCH: i64 = 1000;
/// Ids read per round trip while listing.
const LIST_BATCH: isize = 200;

/// The Redis broker.
#[derive(Clone)]
pub struct RedisBroker {
    conn: ConnectionManager,
    client: redis::Client,
    prefix: Arc<str>,
    retention: Duration,
    scripts: Arc<Scripts>,
    /// Woken by the `PREFIX:wake` channel when a queue gets work.
    wake: Arc<Notify>,
    listening: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Redis failures that a retry may cure are "unavailable"; the rest are bugs.
fn from_redis(e: redis::RedisError) -> BrokerError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        BrokerError::Unavailable(e.to_string())
    } else {
        BrokerError::Internal(e.to_string())
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RedisBroker {
    /// Connects lazily: the broker is usable at once, and calls fail with
    /// `Unavailable` while Redis cannot be reached.
    pub fn open(url: &str, prefix: &str, retention: Duration) -> BrokerResult<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Invalid(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| BrokerError::Invalid(format!("Redis connection settings: {e}")))?;
        Ok(RedisBroker {
            conn,
            client,
            prefix: prefix.into(),
            retention,
            scripts: Arc::new(Scripts::load()),
            wake: Arc::new(Notify::new()),
            listening: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A rate limiter on the same Redis, shared by every process that uses it.
    pub fn rate_limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter::new(self.conn.clone(), self.prefix.clone())
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn job_key(&self, id: &str) -> String {
        format!("{}:j:{id}", self.prefix)
    }

    fn queue_key(&self, queue: &str, suffix: &str) -> String {
        format!("{}:{{q:{queue}}}:{suffix}", self.prefix)
    }

    /// Reads one job by id (any tenant).
    async fn load(&self, id: &str) -> BrokerResult<Option<Job>> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> =
            conn.hgetall(self.job_key(id)).await.map_err(from_redis)?;
        jobs::from_hash(id, &fields)
    }

    /// Starts listening for wake-ups (once per broker), reconnecting as needed.
    fn listen(&self) {
        if self.listening.swap(true, Ordering::Relaxed) {
            return;
        }
        let client = self.client.clone();
        let channel = self.key("wake");
        let wake: Weak<Notify> = Arc::downgrade(&self.wake);
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while messages.next().await.is_some() {
                                match wake.upgrade() {
                                    Some(w) => w.notify_waiters(),
                                    None => return,
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "Wake-up channel unavailable"),
                }
                if wake.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, requests: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        for r in &requests {
            check_names(r)?;
        }
        let local_now = now_ms();
        let planned: Vec<(JobId, i64, EnqueueRequest)> = requests
            .into_iter()
            .map(|r| {
                let delay = r.run_at.map(|t| (t.0 - local_now.0).max(0)).unwrap_or(0);
                (JobId::new(), delay, r)
            })
            .collect();
        let reply = self.enqueue_call(&planned).await?;
        let now: i64 = reply
            .first()
            .map(jobs::int)
            .transpose()?
            .unwrap_or(local_now.0);
        // The reply names only the jobs not created (by 1-based place)
        // with the job holding their unique key.
        let mut held = HashMap::new();
        for pair in reply.get(1..).unwrap_or_default().chunks(2) {
            if let [place, holder] = pair {
                held.insert(jobs::int(place)?, jobs::string(holder)?);
            }
        }
        let mut out = Vec::with_capacity(planned.len());
        for (place, (id, delay, r)) in (1i64..).zip(planned) {
            match held.get(&place) {
                None => out.push(Enqueued {
                    job: jobs::new_job(id, r, now, delay),
                    created: true,
                }),
                Some(holder) => {
                    let job = self.load(holder).await?.ok_or_else(|| {
                        BrokerError::Internal(format!("unique key holder {holder} vanished"))
                    })?;
                    out.push(Enqueued {
                        job,
                        created: false,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn claim(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(&request.worker)
            .arg(ms(request.lease))
            .arg(request.limit)
            .arg(request.limits.encoded());
        for q in &request.queues {
            invocation.arg(q);
        }
        let rows: Vec<redis::Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        rows.chunks(5).map(jobs::claimed).collect()
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Value> = leases
            .iter()
            .map(|l| json!([l.id.to_string(), l.attempt]))
            .collect();
        let mut conn = self.conn.clone();
        let lost: Vec<String> = self
            .scripts
            .renew
            .arg(&*self.prefix)
            .arg(ms(lease))
            .arg(Value::Array(entries).to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let lost: HashSet<String> = lost.into_iter().collect();
        Ok(leases
            .iter()
            .filter(|l| lost.contains(&l.id.to_string()))
            .copied()
            .collect())
    }

    async fn complete(&self, completions: Vec<Completion>) -> BrokerResult<Vec<Lease>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.complete.prepare_invoke();
        invocation.arg(&*self.prefix).arg(ms(self.retention));
        for c in &completions {
            let (kind, value, delay) = match &c.outcome {
                Outcome::Succeeded(result) => ("s", result.to_string(), None),
                Outcome::Failed { error, retry_in } => {
                    ("f", crate::job::truncate_error(error), retry_in.map(ms))
                }
                Outcome::Released => ("r", String::new(), None),
            };
            invocation
                .arg(c.lease.id.to_string())
                .arg(c.lease.attempt)
                .arg(kind)
                .arg(value)
                .arg(delay.map(|d| d.to_string()).unwrap_or_default());
        }
        let mut conn = self.conn.clone();
        let stale: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let stale: HashSet<String> = stale.into_iter().collect();
        Ok(completions
            .iter()
            .map(|c| c.lease)
            .filter(|l| stale.contains(&l.id.to_string()))
            .collect())
    }

    async fn set_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
        let mut conn = self.conn.clone();
        let stored: i64 = self
            .scripts
            .progress
            .arg(&*self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.attempt)
            .arg(progress.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(stored == 1)
    }

    async fn get(&self, scope: &Scope, id: JobId) -> BrokerResult<Option<Job>> {
        let job = self.load(&id.to_string()).await?;
        Ok(job.filter(|j| scope.tenant().is_none_or(|t| j.tenant == t)))
    }

    async fn list(&self, request: ListRequest) -> BrokerResult<JobPage> {
        let mut conn = self.conn.clone();
        // One index per tenant; an admin's listing merges them all.
        let indexes: Vec<String> = match request.scope.tenant() {
            Some(t) => vec![self.key(&format!("list:t:{t}"))],
            None => {
                let tenants: Vec<String> = conn
                    .smembers(self.key("tenants"))
                    .await
                    .map_err(from_redis)?;
                tenants
                    .iter()
                    .map(|t| self.key(&format!("list:t:{t}")))
                    .collect()
            }
        };
        let limit = request.limit.max(1);
        let mut upper = match request.cursor {
            Some(c) => format!("({c}"),
            None => "+".to_owned(),
        };
        let mut data = Vec::new();
        // Bounded work per page: filters that match little stop early
        // rather than scanning everything.
        for _ in 0..50 {
            if indexes.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for index in &indexes {
                pipe.cmd("ZREVRANGEBYLEX")
                    .arg(index)
                    .arg(&upper)
                    .arg("-")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(LIST_BATCH);
            }
            let pages: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(from_redis)?;
            // Nothing is left below `upper` once every index returned a short page.
            let exhausted = pages.iter().all(|p| (p.len() as isize) < LIST_BATCH);
            // The newest LIST_BATCH ids of the union are among each index's newest LIST_BATCH.
            let mut ids: Vec<(usize, String)> = pages
                .into_iter()
                .enumerate()
                .flat_map(|(i, page)| page.into_iter().map(move |id| (i, id)))
                .collect();
            ids.sort_by(|a, b| b.1.cmp(&a.1));
            let exhausted = exhausted && ids.len() <= LIST_BATCH as usize;
            ids.truncate(LIST_BATCH as usize);
            let Some((_, last)) = ids.last() else { break };
            upper = format!("({last}");
            let names: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
            let found = self.load_many(&names).await?;
            let mut gone: HashMap<usize, Vec<String>> = HashMap::new();
            for ((index, id), job) in ids.into_iter().zip(found) {
                match job {
                    None => gone.entry(index).or_default().push(id),
                    Some(job) if jobs::matches(&job, &request) => data.push(job),
                    Some(_) => {}
                }
            }
            for (index, ids) in gone {
                // Expired after their retention: drop them from the index.
                let _: redis::RedisResult<i64> = conn.zrem(&indexes[index], ids).await;
            }
            if data.len() > limit || exhausted {
                break;
            }
        }
        let has_more = data.len() > limit;
        data.truncate(limit);
        Ok(JobPage {
            next_cursor: if has_more {
                data.last().map(|j| j.id)
            } else {
                None
            },
            data,
            has_more,
        })
    }

    async fn cancel(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let answer = self
            .run_on_job(&self.scripts.cancel, scope, id, Some(ms(self.retention)))
            .await?;
        self.answer(answer, scope, id).await
    }

    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let answer = self
            .run_on_job(&self.scripts.retry, scope, id, None)
            .await?;
        if answer == "unique" {
            return Err(BrokerError::Invalid(
                "an unfinished job of this task already holds its unique_key".into(),
            ));
        }
        self.answer(answer, scope, id).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        let flag = self.queue_key(queue, "paused");
        let mut pipe = redis::pipe();
        pipe.atomic().sadd(self.key("queues"), queue).ignore();
        if paused {
            pipe.set(&flag, 1).ignore();
        } else {
            pipe.del(&flag).ignore();
            pipe.publish(self.key("wake"), queue).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(from_redis)
    }

    async fn queue_counts(&self) -> BrokerResult<Vec<QueueCounts>> {
        let mut conn = self.conn.clone();
        let mut queues: Vec<String> = conn
            .smembers(self.key("queues"))
            .await
            .map_err(from_redis)?;
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        queues.sort();
        // counts.lua answers in lifecycle order, as JobState::ALL lists them.
        let sets = JobState::ALL;
        let mut invocation = self.scripts.counts.prepare_invoke();
        invocation.arg(&*self.prefix);
        for q in &queues {
            invocation.arg(q);
        }
        let numbers: Vec<i64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(queues
            .into_iter()
            .zip(numbers.chunks(sets.len() + 1))
            .map(|(name, n)| {
                let counts: BTreeMap<JobState, u64> = sets
                    .iter()
                    .zip(n)
                    .filter(|(_, c)| **c > 0)
                    .map(|(state, c)| (*state, u64::try_from(*c).unwrap_or(0)))
                    .collect();
                QueueCounts {
                    name,
                    paused: n.get(sets.len()).is_some_and(|p| *p == 1),
                    counts,
                }
            })
            .collect())
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .purge
            .arg(&*self.prefix)
            .arg(queue)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn maintain(&self) -> BrokerResult<Maintenance> {
        let mut conn = self.conn.clone();
        let (requeued, dead, promoted): (u64, u64, u64) = self
            .scripts
            .maintain
            .arg(&*self.prefix)
            .arg(ms(self.retention))
            .arg(MAINTAIN_BATCH)
            .arg(SWEEP_BATCH)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(Maintenance {
            requeued,
            dead,
            promoted,
        })
    }

    async fn heartbeat(&self, info: &WorkerInfo, ttl: Duration) -> BrokerResult<()> {
        let body = serde_json::to_string(info).map_err(|e| BrokerError::Internal(e.to_string()))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .pset_ex(
                self.key(&format!("worker:{}", info.id)),
                body,
                u64::try_from(ms(ttl)).unwrap_or(u64::MAX),
            )
            .ignore()
            .zadd(self.key("workers"), &info.id, 0)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn remove_worker(&self, id: &str) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .del(self.key(&format!("worker:{id}")))
            .ignore()
            .zrem(self.key("workers"), id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(from_redis)
    }

    async fn workers(&self) -> BrokerResult<Vec<WorkerInfo>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(self.key("workers"), 0, -1)
            .await
            .map_err(from_redis)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.key(&format!("worker:{id}")))
            .collect();
        let bodies: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let mut out = Vec::new();
        let mut expired = Vec::new();
        for (id, body) in ids.into_iter().zip(bodies) {
            match body {
                Some(body) => out.push(
                    serde_json::from_str(&body)
                        .map_err(|e| BrokerError::Internal(e.to_string()))?,
                ),
                None => expired.push(id),
            }
        }
        if !expired.is_empty() {
            let _: redis::RedisResult<i64> = conn.zrem(self.key("workers"), expired).await;
        }
        Ok(out)
    }

    async fn ping(&self) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(from_redis)
    }

    async fn fire(&self, tick: Tick) -> BrokerResult<Option<Job>> {
        check_names(&tick.job)?;
        let id = JobId::for_tick(&tick.schedule, tick.fire_time);
        let local_now = now_ms();
        let delay = tick
            .job
            .run_at
            .map(|t| (t.0 - local_now.0).max(0))
            .unwrap_or(0);
        let name = format!("{}:{}", tick.schedule.len(), tick.schedule);
        let mut invocation = self.scripts.fire.prepare_invoke();
        invocation
            .key(format!("{}:cron:{name}:{}", self.prefix, tick.fire_time.0))
            .key(format!("{}:sched:{name}", self.prefix))
            .arg(&*self.prefix);
        job_args(&mut invocation, &[(id, delay, &tick.job)]);
        invocation
            .arg(id.to_string())
            .arg(tick.fire_time.0)
            .arg(ms(TICK_MEMORY));
        let mut conn = self.conn.clone();
        let reply: Vec<redis::Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        // Empty: the tick had fired; more than `now`: a unique key held it.
        match reply.as_slice() {
            [now] => Ok(Some(jobs::new_job(id, tick.job, jobs::int(now)?, delay))),
            _ => Ok(None),
        }
    }

    async fn schedule_states(&self, names: &[String]) -> BrokerResult<Vec<ScheduleState>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(format!("{}:sched:{}:{name}", self.prefix, name.len()));
        }
        let mut conn = self.conn.clone();
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(from_redis)?;
        Ok(names
            .iter()
            .zip(hashes)
            .map(|(name, h)| ScheduleState {
                name: name.clone(),
                last_fire: h.get("last_fire").and_then(|v| v.parse().ok()).map(Millis),
                last_job: h.get("last_job").and_then(|v| v.parse().ok()),
                paused: h.get("paused").is_some_and(|v| v == "1"),
            })
            .collect())
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset(
                format!("{}:sched:{}:{name}", self.prefix, name.len()),
                "paused",
                if paused { "1" } else { "0" },
            )
            .await
            .map_err(from_redis)?;
        Ok(())
    }

    async fn position(&self, job: &Job) -> BrokerResult<Position> {
        if job.state != JobState::Queued {
            return Ok(Position::default());
        }
        let mut conn = self.conn.clone();
        let (held, ahead, higher): (String, u64, u64) = self
            .scripts
            .position
            .arg(&*self.prefix)
            .arg(job.id.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(Position {
            held: !held.is_empty(),
            ahead,
            ahead_higher_priority: if held.is_empty() {
                higher.min(ahead)
            } else {
                0
            },
        })
    }

    async fn usage(&self, task: &str, limit: &TaskLimit) -> BrokerResult<Usage> {
        let mut conn = self.conn.clone();
        let reply: Vec<String> = self
            .scripts
            .usage
            .arg(&*self.prefix)
            .arg(task)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let number = |i: usize| {
            reply
                .get(i)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let holders = reply
            .get(2..)
            .unwrap_or_default()
            .chunks(3)
            .filter(|c| c.len() == 3)
            .map(|c| Holder {
                id: c[0].clone(),
                tenant: c[1].clone(),
                worker: c[2].clone(),
            })
            .collect();
        let now_us = now_ms().0.saturating_mul(1000);
        let throttled_until = limit
            .rate
            .map(|r| r.next_allowed_us(number(0)))
            .filter(|at| *at > now_us)
            .map(|at| at / 1000);
        Ok(Usage {
            holders,
            waiting: u64::try_from(number(1)).unwrap_or(0),
            throttled_until,
        })
    }

    async fn wait_for_work(&self, max: Duration) {
        self.listen();
        let _ = tokio::time::timeout(max, self.wake.notified()).await;
    }
}

/// Refuses names the job's packed `spec` cannot hold (a line break; the
/// API and the configuration never let one through).
fn check_names(r: &EnqueueRequest) -> BrokerResult<()> {
    for (what, name) in [
        ("tenant", &r.tenant),
        ("task", &r.task),
        ("queue", &r.queue),
    ] {
        if name.contains('\n') {
            return Err(BrokerError::Invalid(format!(
                "{what} name {name:?} holds a line break"
            )));
        }
    }
    Ok(())
}

/// The jobs as enqueue.lua reads them: runs of jobs (id, delay, request)
/// that share their attributes, each run as the attributes once, then its
/// jobs' ids and payloads.
fn job_args<R: std::borrow::Borrow<EnqueueRequest>>(
    invocation: &mut redis::ScriptInvocation<'_>,
    jobs: &[(JobId, i64, R)],
) {
    let same = |a: &(JobId, i64, R), b: &(JobId, i64, R)| {
        let (x, y) = (a.2.borrow(), b.2.borrow());
        a.1 == b.1
            && x.tenant == y.tenant
            && x.task == y.task
            && x.queue == y.queue
            && x.priority == y.priority
            && x.max_retries == y.max_retries
            && x.timeout_ms == y.timeout_ms
            && x.unique_key == y.unique_key
    };
    for run in jobs.chunk_by(same) {
        let (_, delay, first) = &run[0];
        let r = first.borrow();
        invocation
            .arg(&r.tenant)
            .arg(&r.task)
            .arg(&r.queue)
            .arg(r.priority)
            .arg(r.max_retries)
            .arg(r.timeout_ms.map(|t| t.to_string()).unwrap_or_default())
            .arg(r.unique_key.as_deref().unwrap_or(""))
            .arg(*delay)
            .arg(run.len());
        for (id, _, r) in run {
            invocation
                .arg(id.to_string())
                .arg(r.borrow().payload.to_string());
        }
    }
}

/// How long a fired tick's key is kept: longer than any catch-up grace
/// and clock skew a deployment should have.
const TICK_MEMORY: Duration = Duration::from_secs(24 * 3600);

impl RedisBroker {
    /// Runs enqueue.lua for jobs (id, delay, request) and returns its reply.
    /// A connection lost after the call was sent leaves it unknown whether
    /// the jobs went in. The script is idempotent on the job ids, so the
    /// same call is repeated a few times before the client hears 503: a
    /// 5xx then almost never hides an enqueued job.
    async fn enqueue_call(
        &self,
        planned: &[(JobId, i64, EnqueueRequest)],
    ) -> BrokerResult<Vec<redis::Value>> {
        let mut invocation = self.scripts.enqueue.prepare_invoke();
        invocation.arg(&*self.prefix);
        job_args(&mut invocation, planned);
        let mut conn = self.conn.clone();
        let mut tries = 0u32;
        loop {
            match invocation.invoke_async(&mut conn).await.map_err(from_redis) {
                Ok(reply) => return Ok(reply),
                Err(BrokerError::Unavailable(e)) if tries < 3 => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "Enqueue interrupted; repeating it");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads several jobs in one round trip.
    async fn load_many(&self, ids: &[String]) -> BrokerResult<Vec<Option<Job>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.job_key(id));
        }
        let hashes: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(from_redis)?;
        ids.iter()
            .zip(&hashes)
            .map(|(id, h)| jobs::from_hash(id, h))
            .collect()
    }

    /// Runs a cancel or retry script on a job the scope may see.
    async fn run_on_job(
        &self,
        script: &Script,
        scope: &Scope,
        id: JobId,
        retention: Option<i64>,
    ) -> BrokerResult<String> {
        let mut conn = self.conn.clone();
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(id.to_string())
            .arg(scope.tenant().unwrap_or(""));
        if let Some(r) = retention {
            invocation.arg(r);
        }
        invocation.invoke_async(&mut conn).await.map_err(from_redis)
    }

    async fn answer(&self, answer: String, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        match answer.as_str() {
            "ok" => self.get(scope, id).await?.ok_or(BrokerError::NotFound),
            "missing" => Err(BrokerError::NotFound),
            state => Err(BrokerError::Conflict(
                state.parse().map_err(BrokerError::Internal)?,
            )),
        }
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn a_script_gets_the_helpers_it_uses_and_theirs() {
        let enqueue = with_helpers(COMMON, include_str!("lua/enqueue.lua"));
        // The helpers it calls, in their original order, and none else.
        for name in [
            "local function num",
            "local function qkey",
            "local function ukey",
            "local function jkey",
        ] {
            assert!(enqueue.contains(name), "{name} missing");
        }
        assert!(enqueue.contains("local P = ARGV[1]"));
        for unused in ["release_permit", "make_ready", "local function unhold"] {
            assert!(!enqueue.contains(unused), "{unused} kept");
        }
        assert!(enqueue.find("local function num") < enqueue.find("local function qkey"));
        // cancel.lua calls release_permit, which needs unhold, semkey, lenc.
        let cancel = with_helpers(COMMON, include_str!("lua/cancel.lua"));
        for name in [
            "local function release_permit",
            "local function unhold",
            "local function semkey",
            "local function lenc",
            "local function finish_with",
        ] {
            assert!(cancel.contains(name), "{name} missing");
        }
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    use super::*;
    use crate::broker::conformance::{request, service_url};

    /// A broker under a key prefix of its own (deleted with the guard), or
    /// `None` when Redis is unreachable outside CI.
    fn sandbox(retention: Duration) -> Option<(RedisBroker, PrefixCleanup)> {
        let url = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")?;
        let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
        let broker = RedisBroker::open(&url, &prefix, retention).expect("broker");
        Some((broker, PrefixCleanup { url, prefix }))
    }

    /// Up to 100 jobs of queue `default`, leased for 30 s.
    async fn claim_default(broker: &RedisBroker) -> Vec<ClaimedJob> {
        broker
            .claim(ClaimRequest {
                worker: "w1".into(),
                queues: vec!["default".into()],
                limit: 100,
                lease: Duration::from_secs(30),
                limits: Arc::default(),
            })
            .await
            .expect("claim")
    }

    /// An enqueue repeated after a lost reply (same ids) adds nothing and
    /// does not disturb jobs that started meanwhile, for a call large enough
    /// to use the repeat marker and for a single job.
    #[tokio::test]
    async fn a_repeated_enqueue_adds_nothing() {
        let Some((broker, _cleanup)) = sandbox(Duration::from_secs(60)) else {
            return;
        };
        let mut held = request("weir.noop", "default");
        held.unique_key = Some("u".into());
        let holder = broker.enqueue(vec![held.clone()]).await.expect("enqueue")[0]
            .job
            .id;

        // The first job of the call is a duplicate of `holder`: the call's
        // marker, not its first job, tells a repeat.
        let batch: Vec<(JobId, i64, EnqueueRequest)> = std::iter::once(held)
            .chain((0..20).map(|_| request("weir.noop", "default")))
            .map(|r| (JobId::new(), 0, r))
            .collect();
        let single = vec![(JobId::new(), 0, request("weir.noop", "default"))];
        for planned in [&batch, &single] {
            let first = broker.enqueue_call(planned).await.expect("enqueue");
            let started = claim_default(&broker).await;
            let again = broker.enqueue_call(planned).await.expect("repeat");
            assert_eq!(first.len(), again.len(), "same answer");
            assert_eq!(first.get(1..), again.get(1..));
            for c in &started {
                let job = broker.load(&c.lease.id.to_string()).await.expect("load");
                assert_eq!(job.map(|j| j.state), Some(JobState::Running));
            }
            let counts = broker.queue_counts().await.expect("counts");
            let queued: u64 = counts
                .iter()
                .filter_map(|q| q.counts.get(&JobState::Queued))
                .sum();
            assert_eq!(queued, 0, "nothing came back to the queue: {counts:?}");
        }
        let listed = broker
            .list(ListRequest {
                scope: Scope::All,
                queue: None,
                state: None,
                task: None,
                cursor: None,
                limit: 100,
            })
            .await
            .expect("list");
        assert_eq!(listed.data.len(), 1 + 20 + 1);
        assert!(listed.data.iter().any(|j| j.id == holder));
    }

    /// Finished jobs leave the tenant's listing index once their hash has
    /// expired, without anyone listing: maintenance sweeps it.
    #[tokio::test]
    async fn expired_jobs_leave_the_listing_index() {
        let Some((broker, _cleanup)) = sandbox(Duration::from_millis(100)) else {
            return;
        };
        let prefix = broker.prefix.to_string();
        let mut conn = broker.conn.clone();
        let index = format!("{prefix}:list:t:t1");
        let jobs: Vec<_> = (0..30).map(|_| request("weir.noop", "default")).collect();
        broker.enqueue(jobs).await.expect("enqueue");
        let mut kept = request("weir.noop", "mail");
        kept.tenant = "t2".into();
        broker.enqueue(vec![kept]).await.expect("enqueue");
        let claimed = claim_default(&broker).await;
        let done = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease,
                outcome: Outcome::Succeeded(serde_json::Value::Null),
            })
            .collect();
        broker.complete(done).await.expect("complete");
        let before: i64 = conn.zcard(&index).await.expect("zcard");
        assert_eq!(before, 30);
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.maintain().await.expect("maintain");
        let after: i64 = conn.zcard(&index).await.expect("zcard");
        assert_eq!(after, 0, "expired jobs are swept from the index");
        let left: i64 = conn
            .zcard(format!("{prefix}:list:t:t2"))
            .await
            .expect("zcard");
        assert_eq!(left, 1, "a live job stays listed");
    }
}
