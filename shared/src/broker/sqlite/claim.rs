//! Claim and lease renewal. A claim first asks a reader whether any of
//! its queues has work (idle workers then never take the write lock), then
//! records the acknowledgements sent with it, promotes due jobs, admits
//! what the caps and rates allow (`flow.rs`) and leases the jobs, all in
//! one `BEGIN IMMEDIATE` transaction.

use super::codec::{self, ids, lease_json, missing};
use super::complete::complete_in;
use super::{PROMOTE_BATCH, SqliteBroker, flow, from_sqlx};
use crate::broker::{BrokerResult, ClaimRequest, ClaimedJob, Completion, Lease};
use crate::job::{duration_ms, now_ms};
use sqlx::Row;
use std::collections::HashSet;
use std::time::Duration;

const Q_PROBE: &str = include_str!("queries/probe.sql");
const Q_CLAIM: &str = include_str!("queries/claim.sql");
const Q_CLAIM_IDS: &str = include_str!("queries/claim_ids.sql");
const Q_RENEW: &str = include_str!("queries/renew.sql");

/// The plain claim: the best `limit` queued jobs of `queues`.
struct ClaimBest<'a> {
    now: crate::job::Millis,
    worker: &'a str,
    expires: i64,
    queues: String,
    limit: i64,
    tasks: Option<String>,
}

impl ClaimBest<'_> {
    async fn run(
        &self,
        conn: &mut sqlx::SqliteConnection,
    ) -> BrokerResult<Vec<sqlx::sqlite::SqliteRow>> {
        sqlx::query(Q_CLAIM)
            .bind(self.now.0)
            .bind(self.worker)
            .bind(self.expires)
            .bind(&self.queues)
            .bind(self.limit)
            .bind(self.tasks.as_deref())
            .fetch_all(conn)
            .await
            .map_err(from_sqlx)
    }
}

impl SqliteBroker {
    pub(super) async fn claim_jobs(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>> {
        Ok(self.complete_and_claim_jobs(&[], &request).await?.1)
    }

    /// Records `completions` and leases jobs for `request` in one write
    /// transaction.
    pub(super) async fn complete_and_claim_jobs(
        &self,
        completions: &[Completion],
        request: &ClaimRequest,
    ) -> BrokerResult<(Vec<Lease>, Vec<ClaimedJob>)> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok((self.complete_jobs(completions.to_vec()).await?, Vec::new()));
        }
        let tasks = request
            .tasks
            .as_ref()
            .map(|t| serde_json::to_string(t.as_ref()).unwrap_or_default());
        let (due, ready) = if completions.is_empty() {
            let (due, ready) = self.probe(&request.queues, tasks.as_deref()).await?;
            if ready.is_empty() && !due {
                return Ok((Vec::new(), Vec::new()));
            }
            (due, ready)
        } else {
            // A busy worker. The write lock is taken for the
            // acknowledgements anyway, and they may release jobs a probe
            // could not see (a lane's next member, a workflow's children):
            // every queue is visited without one, and due jobs are promoted
            // at most every 20 ms (`PromotionClock`).
            (
                self.promotions.due(),
                request.queues.iter().cloned().collect(),
            )
        };
        let mut tx = self.begin().await?;
        let (stale, freed) = if completions.is_empty() {
            (Vec::new(), 0)
        } else {
            complete_in(&mut tx, completions).await?
        };
        let claimed = self
            .lease_in(&mut tx, request, due, &ready, tasks.as_deref())
            .await?;
        tx.commit().await.map_err(from_sqlx)?;
        if freed > 0 {
            self.work.notify_waiters();
        }
        Ok((stale, claimed))
    }

    /// Which of `queues` have queued jobs, and whether any job is due to
    /// promote. Idle workers poll; answering "nothing to do" from a read
    /// keeps them from taking the write lock every time they look.
    async fn probe(
        &self,
        queues: &[String],
        tasks: Option<&str>,
    ) -> BrokerResult<(bool, HashSet<String>)> {
        let probe: Vec<Option<String>> = sqlx::query_scalar(Q_PROBE)
            .bind(serde_json::to_string(queues).unwrap_or_default())
            .bind(now_ms().0)
            .bind(tasks)
            .fetch_all(&self.reader)
            .await
            .map_err(from_sqlx)?;
        let due = probe.iter().any(Option::is_none);
        Ok((due, probe.into_iter().flatten().collect()))
    }

    /// Promotes due jobs (when `due`), admits what the caps and rates allow
    /// and leases the jobs, inside the caller's write transaction.
    async fn lease_in(
        &self,
        tx: &mut sqlx::SqliteConnection,
        request: &ClaimRequest,
        due: bool,
        ready: &HashSet<String>,
        tasks: Option<&str>,
    ) -> BrokerResult<Vec<ClaimedJob>> {
        // The jobs start now, after the wait for the write lock: stamped
        // with the time before it, a job could seem to start before the
        // end that let it start (a lane's previous member, a permit).
        let now = now_ms();
        let expires = now.0.saturating_add(duration_ms(request.lease));
        if due {
            flow::promote(&mut *tx, now, PROMOTE_BATCH).await?;
        }
        // After a promotion any queue may have work; otherwise only those
        // the probe saw, in the order asked.
        let visit: Vec<&String> = request
            .queues
            .iter()
            .filter(|q| due || ready.contains(*q))
            .collect();
        let best = ClaimBest {
            now,
            worker: &request.worker,
            expires,
            queues: serde_json::to_string(&visit).unwrap_or_default(),
            limit: i64::try_from(request.limit).unwrap_or(i64::MAX),
            tasks: tasks.map(str::to_owned),
        };
        let rows = if request.limits.is_empty() {
            best.run(&mut *tx).await?
        } else {
            match flow::admit(&mut *tx, &request.limits, &visit, request.limit, tasks, now).await? {
                flow::Admission::Unbound(permits) => {
                    let rows = best.run(&mut *tx).await?;
                    let tasks = rows
                        .iter()
                        .map(|r| r.try_get::<String, _>("task").map_err(from_sqlx))
                        .collect::<BrokerResult<Vec<_>>>()?;
                    flow::charge(&mut *tx, &request.limits, permits, tasks).await?;
                    rows
                }
                flow::Admission::Only(ids) if ids.is_empty() => return Ok(Vec::new()),
                flow::Admission::Only(ids) => sqlx::query(Q_CLAIM_IDS)
                    .bind(now.0)
                    .bind(&request.worker)
                    .bind(expires)
                    .bind(serde_json::to_string(&ids).unwrap_or_default())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(from_sqlx)?,
            }
        };
        let seqs = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("queue").map_err(from_sqlx)?,
                    r.try_get("seq").map_err(from_sqlx)?,
                ))
            })
            .collect::<BrokerResult<Vec<(String, i64)>>>()?;
        self.clocks.advance(&mut *tx, seqs).await?;
        let mut claimed = rows
            .iter()
            .map(codec::claimed)
            .collect::<BrokerResult<Vec<_>>>()?;
        // RETURNING has no defined order; hand them out as they were ranked.
        let rank = |queue: &str| visit.iter().position(|q| *q == queue).unwrap_or(usize::MAX);
        claimed.sort_by(|a, b| {
            rank(&a.queue)
                .cmp(&rank(&b.queue))
                .then(b.priority.cmp(&a.priority))
                .then(a.lease.id.cmp(&b.lease.id))
        });
        Ok(claimed)
    }

    pub(super) async fn renew_leases(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> BrokerResult<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let expires = now_ms().0.saturating_add(duration_ms(lease));
        let mut tx = self.begin().await?;
        let rows = sqlx::query(Q_RENEW)
            .bind(expires)
            .bind(lease_json(leases.iter().copied()))
            .fetch_all(&mut *tx)
            .await
            .map_err(from_sqlx)?;
        tx.commit().await.map_err(from_sqlx)?;
        Ok(missing(leases.iter().copied(), &ids(&rows)?))
    }
}
