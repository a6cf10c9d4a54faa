//! Read models: one job, listings over the per-tenant indexes, counts,
//! a queued job's position and a task's permit holders.

use super::{RedisBroker, codec, from_redis};
use crate::broker::{
    BrokerResult, Inspect, JobPage, LIST_SCAN_LIMIT, ListRequest, Position, QueueCounts, Scope,
};
use crate::job::{Job, JobId, JobState, Millis, now_ms};
use crate::limit::{Holder, TaskLimit, Usage};
use async_trait::async_trait;
use redis::AsyncCommands;
use std::collections::{BTreeMap, HashMap};

/// Ids read per round trip while listing.
const LIST_BATCH: isize = 200;

#[async_trait]
impl Inspect for RedisBroker {
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
        // Bounded work per call: a filter that matches little ends the
        // call with a cursor where the scan stopped.
        let mut scanned_to: Option<String> = None;
        let mut exhausted = false;
        for _ in 0..LIST_SCAN_LIMIT.div_ceil(LIST_BATCH as usize) {
            if indexes.is_empty() {
                exhausted = true;
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
            let all_short = pages.iter().all(|p| (p.len() as isize) < LIST_BATCH);
            // The newest LIST_BATCH ids of the union are among each index's newest LIST_BATCH.
            let mut ids: Vec<(usize, String)> = pages
                .into_iter()
                .enumerate()
                .flat_map(|(i, page)| page.into_iter().map(move |id| (i, id)))
                .collect();
            ids.sort_by(|a, b| b.1.cmp(&a.1));
            exhausted = all_short && ids.len() <= LIST_BATCH as usize;
            ids.truncate(LIST_BATCH as usize);
            let Some((_, last)) = ids.last() else {
                exhausted = true;
                break;
            };
            upper = format!("({last}");
            scanned_to = Some(last.clone());
            let names: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
            let found = self.load_many(&names).await?;
            let mut gone: HashMap<usize, Vec<String>> = HashMap::new();
            for ((index, id), job) in ids.into_iter().zip(found) {
                match job {
                    None => gone.entry(index).or_default().push(id),
                    Some(job) if codec::matches(&job, &request) => data.push(job),
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
        Ok(JobPage::bounded(
            data,
            limit,
            if exhausted {
                None
            } else {
                scanned_to.and_then(|id| id.parse().ok())
            },
        ))
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
        let serial_ahead = match &job.serial_key {
            None => 0,
            Some(key) => {
                // The lane holds only unfinished members, by place.
                let lane = format!(
                    "{}:serial:{}:{}:{}:{}",
                    self.prefix,
                    job.tenant.len(),
                    job.tenant,
                    key.len(),
                    key
                );
                let rank: Option<u64> = redis::cmd("ZRANK")
                    .arg(lane)
                    .arg(job.id.to_string())
                    .query_async(&mut conn)
                    .await
                    .map_err(from_redis)?;
                rank.unwrap_or(0)
            }
        };
        Ok(Position {
            held: !held.is_empty(),
            ahead,
            ahead_higher_priority: if held.is_empty() {
                higher.min(ahead)
            } else {
                0
            },
            serial_ahead,
        })
    }

    async fn queue_heads(&self, queues: &[String]) -> BrokerResult<Vec<Option<Millis>>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.zrange(self.queue_key(queue, "ready"), 0, 0);
        }
        let heads: Vec<Vec<String>> = pipe.query_async(&mut conn).await.map_err(from_redis)?;
        let mut out = Vec::with_capacity(queues.len());
        for head in heads {
            let Some(id) = head.into_iter().next() else {
                out.push(None);
                continue;
            };
            // A job never delayed has no run_at: due since it was created.
            let (spec, run_at): (Option<String>, Option<i64>) = redis::cmd("HMGET")
                .arg(self.job_key(&id))
                .arg("spec")
                .arg("run_at")
                .query_async(&mut conn)
                .await
                .map_err(from_redis)?;
            let created = match &spec {
                Some(text) => Some(codec::created_at_of(text)?),
                None => None,
            };
            out.push(run_at.or(created).map(Millis));
        }
        Ok(out)
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
}

impl RedisBroker {
    /// Reads several jobs in one round trip.
    pub(super) async fn load_many(&self, ids: &[String]) -> BrokerResult<Vec<Option<Job>>> {
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
            .map(|(id, h)| codec::from_hash(id, h))
            .collect()
    }
}
