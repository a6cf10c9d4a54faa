//! Enqueue: runs of alike jobs sent to `enqueue.lua` in one call.

use super::{RedisBroker, codec, from_redis};
use crate::broker::{BrokerError, BrokerResult, EnqueueRequest, Enqueued};
use crate::job::{JobId, now_ms};
use std::collections::HashMap;
use std::time::Duration;

impl RedisBroker {
    pub(super) async fn enqueue_jobs(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> BrokerResult<Vec<Enqueued>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        for r in &requests {
            check_names(r)?;
        }
        if requests.iter().any(|r| r.id.is_some()) {
            return self.enqueue_explicit(requests).await;
        }
        self.enqueue_planned(requests).await
    }

    /// Enqueues in one call of enqueue.lua (whose small calls look every
    /// id up; a large one only when it is a repeat).
    async fn enqueue_planned(&self, requests: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        let local_now = now_ms();
        let planned: Vec<(JobId, i64, EnqueueRequest)> = requests
            .into_iter()
            .map(|r| {
                let delay = r.run_at.map(|t| (t.0 - local_now.0).max(0)).unwrap_or(0);
                (r.id.unwrap_or_default(), delay, r)
            })
            .collect();
        let reply = self.enqueue_call(&planned).await?;
        let now: i64 = reply
            .first()
            .map(codec::int)
            .transpose()?
            .unwrap_or(local_now.0);
        // The reply names only the jobs not created (by 1-based place)
        // with the job holding their unique key.
        let mut held = HashMap::new();
        for pair in reply.get(1..).unwrap_or_default().chunks(2) {
            if let [place, holder] = pair {
                held.insert(codec::int(place)?, codec::string(holder)?);
            }
        }
        let mut out = Vec::with_capacity(planned.len());
        for (place, (id, delay, r)) in (1i64..).zip(planned) {
            match held.get(&place) {
                None => out.push(Enqueued {
                    job: codec::new_job(id, r, now, delay),
                    created: true,
                }),
                Some(holder) => {
                    let job = self.load(holder).await?.ok_or_else(|| {
                        BrokerError::internal(format!("unique key holder {holder} vanished"))
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

    /// A batch in which some ids are the caller's: those that exist answer
    /// the job that has them (read in one round trip); the rest go in one
    /// call that looks every id up, so an id stored meanwhile by another
    /// caller is not written over.
    async fn enqueue_explicit(&self, requests: Vec<EnqueueRequest>) -> BrokerResult<Vec<Enqueued>> {
        let given: Vec<String> = requests
            .iter()
            .filter_map(|r| r.id.map(|id| id.to_string()))
            .collect();
        let found = self.load_many(&given).await?;
        let mut existing: HashMap<String, crate::job::Job> = given
            .into_iter()
            .zip(found)
            .filter_map(|(id, job)| Some((id, job?)))
            .collect();
        let mut out: Vec<Option<Enqueued>> = Vec::with_capacity(requests.len());
        let mut fresh = Vec::new();
        for r in requests {
            match r.id.and_then(|id| existing.remove(&id.to_string())) {
                Some(job) => out.push(Some(Enqueued {
                    job: crate::broker::request::existing_job(job, &r.tenant)?,
                    created: false,
                })),
                None => {
                    out.push(None);
                    fresh.push(r);
                }
            }
        }
        if !fresh.is_empty() {
            for r in &mut fresh {
                r.id.get_or_insert_with(JobId::new);
            }
            // enqueue.lua looks each id up in a call whose marker exists
            // (it takes such a call for a repeat): set it first.
            if let Some(first) = fresh.first().and_then(|r| r.id) {
                let mut conn = self.conn.clone();
                let _: () = redis::cmd("SET")
                    .arg(self.key(&format!("call:{first}")))
                    .arg("1")
                    .arg("PX")
                    .arg(600_000)
                    .query_async(&mut conn)
                    .await
                    .map_err(from_redis)?;
            }
            let mut stored = self.enqueue_planned(fresh).await?.into_iter();
            for slot in out.iter_mut().filter(|s| s.is_none()) {
                *slot = stored.next();
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| BrokerError::internal("an enqueue answered too few jobs")))
            .collect()
    }

    /// Runs enqueue.lua for jobs (id, delay, request) and returns its reply.
    /// A connection lost after the call was sent leaves it unknown whether
    /// the jobs went in. The script is idempotent on the job ids, so the
    /// same call is repeated a few times before the client hears 503: a
    /// 5xx then almost never hides an enqueued job.
    pub(super) async fn enqueue_call(
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
}

/// Refuses names the job's packed `spec` cannot hold (a line break; the
/// API and the configuration never let one through).
pub(super) fn check_names(r: &EnqueueRequest) -> BrokerResult<()> {
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
pub(super) fn job_args<R: std::borrow::Borrow<EnqueueRequest>>(
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
            && x.serial_key == y.serial_key
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
            .arg(r.serial_key.as_deref().unwrap_or(""))
            .arg(*delay)
            .arg(run.len());
        for (id, _, r) in run {
            invocation
                .arg(id.to_string())
                .arg(r.borrow().payload.to_string());
        }
    }
}
