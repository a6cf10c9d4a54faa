//! Claim and lease renewal. A claim first reads which of its queues have
//! work (an idle worker's poll then locks nothing), then, in the common
//! case, leases jobs in one autocommit statement. Due jobs to promote, or
//! caps and rates to honour, make it one short transaction: promote, lock
//! the limited tasks, count, admit, lease. A claim sent with
//! acknowledgements records them in the same transaction, first.

use super::codec::{self, lease_arrays, missing};
use super::{PROMOTE_BATCH, PostgresBroker, flow, from_sqlx};
use crate::broker::{BrokerResult, ClaimRequest, ClaimedJob, Completion, Lease};
use crate::job::duration_ms;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const Q_PROBE: &str = include_str!("queries/probe.sql");
const Q_CLAIM: &str = include_str!("queries/claim.sql");
const Q_CLAIM_IDS: &str = include_str!("queries/claim_ids.sql");
const Q_RENEW: &str = include_str!("queries/renew.sql");

/// The plain claim: the best `limit` queued jobs of `queues`.
struct ClaimBest<'a> {
    queues: &'a [String],
    limit: i64,
    worker: &'a str,
    lease_ms: i64,
    tasks: Option<&'a [String]>,
}

impl ClaimBest<'_> {
    fn query(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(Q_CLAIM)
            .bind(self.queues)
            .bind(self.limit)
            .bind(self.worker)
            .bind(self.lease_ms)
            .bind(self.tasks)
    }

    async fn run(&self, conn: &mut PgConnection) -> BrokerResult<Vec<PgRow>> {
        self.query().fetch_all(conn).await.map_err(from_sqlx)
    }
}

/// The plain claim of `request` over the queues in `visit`.
fn best<'a>(
    request: &'a ClaimRequest,
    visit: &'a [String],
    tasks: Option<&'a [String]>,
) -> ClaimBest<'a> {
    ClaimBest {
        queues: visit,
        limit: i64::try_from(request.limit).unwrap_or(i64::MAX),
        worker: &request.worker,
        lease_ms: duration_ms(request.lease),
        tasks,
    }
}

impl PostgresBroker {
    pub(super) async fn claim_jobs(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>> {
        Ok(self.complete_and_claim_jobs(&[], &request).await?.1)
    }

    /// Records `completions` and leases jobs for `request` in one
    /// transaction. With acknowledgements the probe is skipped (the
    /// transaction is opened for them anyway, and they may release jobs a
    /// probe could not see): every queue is visited and due jobs are
    /// promoted at most every 20 ms (`PromotionClock`).
    pub(super) async fn complete_and_claim_jobs(
        &self,
        completions: &[Completion],
        request: &ClaimRequest,
    ) -> BrokerResult<(Vec<Lease>, Vec<ClaimedJob>)> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok((self.complete_jobs(completions.to_vec()).await?, Vec::new()));
        }
        let tasks: Option<&[String]> = request.tasks.as_deref().map(Vec::as_slice);
        if !completions.is_empty() {
            let visit = &request.queues;
            let due = self.promotions.due();
            let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
            let (stale, recorded) = self.complete_in(&mut tx, completions).await?;
            let rows = self.lease_in(&mut tx, request, visit, due, tasks).await?;
            tx.commit().await.map_err(from_sqlx)?;
            if recorded {
                self.wake.wake_local();
            }
            return Ok((stale, self.handed_out(&rows, visit).await?));
        }
        let probe: Vec<Option<String>> = sqlx::query_scalar(Q_PROBE)
            .bind(&request.queues)
            .bind(tasks)
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let due = probe.iter().any(Option::is_none);
        let ready: HashSet<String> = probe.into_iter().flatten().collect();
        if ready.is_empty() && !due {
            return Ok((Vec::new(), Vec::new()));
        }
        // After a promotion any queue may have work; otherwise only those
        // the probe saw, in the order asked.
        let visit: Vec<String> = request
            .queues
            .iter()
            .filter(|q| due || ready.contains(*q))
            .cloned()
            .collect();
        let rows = if !due && request.limits.is_empty() {
            best(request, &visit, tasks)
                .query()
                .fetch_all(&self.pool)
                .await
                .map_err(from_sqlx)?
        } else {
            let mut tx = self.pool.begin().await.map_err(from_sqlx)?;
            let rows = self.lease_in(&mut tx, request, &visit, due, tasks).await?;
            tx.commit().await.map_err(from_sqlx)?;
            rows
        };
        Ok((Vec::new(), self.handed_out(&rows, &visit).await?))
    }

    /// Promotes due jobs (when `due`), admits what the caps and rates allow
    /// and leases the jobs, inside the caller's transaction.
    async fn lease_in(
        &self,
        tx: &mut PgConnection,
        request: &ClaimRequest,
        visit: &[String],
        due: bool,
        tasks: Option<&[String]>,
    ) -> BrokerResult<Vec<PgRow>> {
        if due {
            flow::promote(&mut *tx, PROMOTE_BATCH).await?;
        }
        let best = best(request, visit, tasks);
        if request.limits.is_empty() {
            return best.run(&mut *tx).await;
        }
        flow::lock_tasks(&mut *tx, &request.limits).await?;
        Ok(
            match flow::admit(&mut *tx, &request.limits, visit, request.limit, tasks).await? {
                flow::Admission::Unbound(permits) => {
                    let rows = best.run(&mut *tx).await?;
                    let tasks = rows
                        .iter()
                        .map(|r| r.try_get::<String, _>("task").map_err(from_sqlx))
                        .collect::<BrokerResult<Vec<_>>>()?;
                    flow::charge(&mut *tx, &request.limits, permits, tasks).await?;
                    rows
                }
                flow::Admission::Only(ids) if ids.is_empty() => Vec::new(),
                flow::Admission::Only(ids) => sqlx::query(Q_CLAIM_IDS)
                    .bind(ids)
                    .bind(&request.worker)
                    .bind(duration_ms(request.lease))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(from_sqlx)?,
            },
        )
    }

    /// The leased rows as jobs, ranked as the claim ranked them, after
    /// moving the queues' fair-share clocks.
    async fn handed_out(&self, rows: &[PgRow], visit: &[String]) -> BrokerResult<Vec<ClaimedJob>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut claimed = rows
            .iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(from_sqlx)?;
                Ok((codec::claimed(r)?, seq))
            })
            .collect::<BrokerResult<Vec<_>>>()?;
        let clocks = self
            .clocks
            .due(claimed.iter().map(|(c, seq)| (c.queue.clone(), *seq)));
        if let Err(e) = flow::advance_clocks(&self.pool, clocks).await {
            // The clock only places late-coming tenants; the claim stands.
            tracing::debug!(error = %e, "Could not move a queue clock");
        }
        // RETURNING has no defined order; hand them out as they were ranked.
        let rank = |queue: &str| visit.iter().position(|q| q == queue).unwrap_or(usize::MAX);
        claimed.sort_by(|(a, sa), (b, sb)| {
            rank(&a.queue)
                .cmp(&rank(&b.queue))
                .then(b.priority.cmp(&a.priority))
                .then(sa.cmp(sb))
                .then(a.lease.id.cmp(&b.lease.id))
        });
        Ok(claimed.into_iter().map(|(c, _)| c).collect())
    }

    pub(super) async fn renew_leases(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> BrokerResult<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, attempts) = lease_arrays(leases.iter().copied());
        let kept: Vec<Uuid> = sqlx::query_scalar(Q_RENEW)
            .bind(ids)
            .bind(attempts)
            .bind(duration_ms(lease))
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(missing(leases.iter().copied(), &kept.into_iter().collect()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::broker::conformance::request;
    use crate::broker::postgres::SchemaCleanup;
    use serde_json::Value;

    /// Rows the plan read from `jobs`, over every node and loop.
    fn rows_from_jobs(node: &Value) -> f64 {
        let own = if node["Relation Name"] == "jobs" {
            node["Actual Rows"].as_f64().unwrap_or(0.0)
                * node["Actual Loops"].as_f64().unwrap_or(1.0)
        } else {
            0.0
        };
        own + node["Plans"]
            .as_array()
            .into_iter()
            .flatten()
            .map(rows_from_jobs)
            .sum::<f64>()
    }

    /// Runs `sql` (`what`) under EXPLAIN ANALYZE with `queues` and
    /// `second` as its parameters, and asserts it read at most one row of
    /// jobs per queue.
    pub(in crate::broker::postgres) async fn assert_one_row_per_queue<T>(
        broker: &PostgresBroker,
        what: &str,
        sql: &str,
        queues: &[String],
        second: T,
    ) where
        T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
    {
        let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, FORMAT JSON) {sql}"
        )))
        .bind(queues)
        .bind(second)
        .fetch_one(&broker.pool)
        .await
        .expect("explain");
        let read = rows_from_jobs(&plan[0]["Plan"]);
        assert!(
            read <= queues.len() as f64,
            "{what} read {read} rows of jobs for {} queues: {plan}",
            queues.len()
        );
    }

    /// The probe an idle worker sends reads at most one queued job per
    /// queue however long the backlog, also before the table's statistics
    /// have caught up with a burst (as in a fresh schema).
    #[tokio::test]
    async fn the_probe_reads_one_job_per_queue_whatever_the_backlog() {
        let Some((broker, _cleanup)) = SchemaCleanup::test_broker(2).await else {
            return;
        };
        for _ in 0..3 {
            let jobs = (0..1_000)
                .map(|_| request("weir.noop", "default"))
                .collect();
            broker.enqueue(jobs).await.expect("enqueue");
        }
        let queues: Vec<String> = ["pipeline", "dataset", "mail", "default"]
            .map(String::from)
            .to_vec();
        assert_one_row_per_queue(&broker, "the probe", Q_PROBE, &queues, None::<Vec<String>>).await;
    }
}
