//! Flow control on Postgres: fair-share sequence numbers, promotion of due
//! jobs, and the admission of jobs under task caps and rates.
//!
//! A limited claim serializes with every other claim of the same tasks on
//! one advisory lock per task (taken in sorted order, so claimers never
//! deadlock), counts permits in a statement of its own after the locks (so
//! it sees what the previous holder committed), and decides in Rust with
//! the same rules as the SQLite backend.

use super::{BrokerResult, from_sqlx};
use crate::broker::Position;
use crate::broker::admission::{self, HeldBack, Permits, Plan};
use crate::job::{Job, JobState};
use crate::limit::{Holder, Limits, TaskLimit, Usage};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use uuid::Uuid;

const Q_ASSIGN_SEQS: &str = include_str!("queries/assign_seqs.sql");
const Q_PROMOTE: &str = include_str!("queries/promote.sql");
const Q_CANDIDATES: &str = include_str!("queries/candidates.sql");

/// Jobs a limited claim looks at beyond the ones it wants, so that jobs
/// refused within the batch do not leave it short.
const LOOK_AHEAD: usize = 64;

/// Gives each `(queue, tenant)` in `pairs` its next fair-share sequence
/// number, in order. A tenant's next number is one past the later of its
/// own last one and the queue's clock: a tenant that arrives while another
/// has thousands of jobs queued joins the current round. The upsert reads
/// `last` under the row's lock, so concurrent enqueuers never share a seq;
/// its rows go in sorted order, so they never deadlock.
pub(super) async fn assign_seqs(
    conn: &mut PgConnection,
    pairs: &[(String, String)],
) -> BrokerResult<Vec<i64>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let counts = admission::count_pairs(pairs);
    let (mut queues, mut tenants, mut ns) = (Vec::new(), Vec::new(), Vec::new());
    for ((q, t), n) in &counts {
        queues.push(q.to_string());
        tenants.push(t.to_string());
        ns.push(*n);
    }
    let rows: Vec<(String, String, i64)> = sqlx::query_as(Q_ASSIGN_SEQS)
        .bind(queues)
        .bind(tenants)
        .bind(ns)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(admission::number_seqs(pairs, &counts, rows))
}

/// Queues due scheduled and retrying jobs (at most `limit`, skipping rows
/// another node is promoting), each with a fresh fair-share place.
pub(super) async fn promote(conn: &mut PgConnection, limit: i64) -> BrokerResult<u64> {
    let due: Vec<(Uuid, String, String)> = sqlx::query_as(Q_PROMOTE)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    if due.is_empty() {
        return Ok(0);
    }
    let pairs: Vec<(String, String)> = due.iter().map(|(_, q, t)| (q.clone(), t.clone())).collect();
    let seqs = assign_seqs(conn, &pairs).await?;
    let ids: Vec<Uuid> = due.iter().map(|(id, _, _)| *id).collect();
    let done = sqlx::query(
        "UPDATE jobs SET state = 'queued', seq = c.seq \
         FROM unnest($1::uuid[], $2::bigint[]) AS c(id, seq) WHERE jobs.id = c.id",
    )
    .bind(ids)
    .bind(seqs)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(done.rows_affected())
}

/// How often a process writes a queue's clock at most. The clock only places
/// tenants that arrive later in the current round; trailing the claims by a
/// few milliseconds changes nothing a tenant can see.
const CLOCK_EVERY: Duration = Duration::from_millis(50);

/// The clock values this process wrote, and when.
#[derive(Debug, Default)]
pub(super) struct Clocks(Mutex<HashMap<String, (i64, Instant)>>);

impl Clocks {
    /// The queues whose clock should move up now, and to where: the highest
    /// seq claimed from each, at most once per [`CLOCK_EVERY`] per queue.
    pub(super) fn due(
        &self,
        claimed: impl IntoIterator<Item = (String, i64)>,
    ) -> Vec<(String, i64)> {
        let mut top: BTreeMap<String, i64> = BTreeMap::new();
        for (queue, seq) in claimed {
            let entry = top.entry(queue).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        top.retain(|queue, seq| match written.get(queue) {
            Some((at_least, when)) => *seq > *at_least && when.elapsed() >= CLOCK_EVERY,
            None => true,
        });
        for (queue, seq) in &top {
            written.insert(queue.clone(), (*seq, Instant::now()));
        }
        top.into_iter().collect()
    }
}

/// Moves the clocks up, in autocommit: never inside a claim, where the
/// queue's row would be one every claimer waits on.
pub(super) async fn advance_clocks(pool: &PgPool, clocks: Vec<(String, i64)>) -> BrokerResult<()> {
    if clocks.is_empty() {
        return Ok(());
    }
    let (queues, seqs): (Vec<String>, Vec<i64>) = clocks.into_iter().unzip();
    sqlx::query(
        "INSERT INTO clocks AS c (queue, clock) \
         SELECT * FROM unnest($1::text[], $2::bigint[]) ORDER BY 1 \
         ON CONFLICT (queue) DO UPDATE SET clock = greatest(c.clock, EXCLUDED.clock)",
    )
    .bind(queues)
    .bind(seqs)
    .execute(pool)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// Takes the advisory lock of every task in `limits`, in sorted order, for
/// the rest of the transaction.
pub(super) async fn lock_tasks(conn: &mut PgConnection, limits: &Limits) -> BrokerResult<()> {
    let mut tasks: Vec<String> = limits
        .iter()
        .map(|(t, _)| format!("weir.cap:{t}"))
        .collect();
    tasks.sort();
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(k)) FROM \
         (SELECT hashtextextended(t, 0) AS k FROM unnest($1::text[]) AS t ORDER BY t) AS s",
    )
    .bind(tasks)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// What a limited claim may take.
pub(super) enum Admission {
    /// No limit can bind within this claim: take the best jobs as usual,
    /// then [`charge`] the rates (their state as read is carried along).
    Unbound(Permits),
    /// Exactly these job ids (their permits counted, rates charged).
    Only(Vec<Uuid>),
}

/// Picks up to `want` jobs from `queues` (already in the order to serve)
/// that the caps and rates in `limits` let start now, and charges their
/// rates: the caller leases exactly these ids in the same transaction,
/// which holds the tasks' advisory locks ([`lock_tasks`]).
pub(super) async fn admit(
    conn: &mut PgConnection,
    limits: &Limits,
    queues: &[String],
    want: usize,
    handled: Option<&[String]>,
) -> BrokerResult<Admission> {
    let tasks: Vec<String> = limits.iter().map(|(t, _)| t.clone()).collect();
    // A statement of its own, after the locks: it sees every claim the
    // previous lock holder committed. The clock is read now, not at the
    // transaction's start, which may be before the lock wait.
    type Read = (
        sqlx::types::Json<Vec<(String, String, i64)>>,
        sqlx::types::Json<HashMap<String, i64>>,
        i64,
    );
    let (running, tats, now_us): Read = sqlx::query_as(
        "SELECT (SELECT coalesce(json_agg(json_build_array(task, tenant, n)), '[]'::json) \
                 FROM (SELECT task, tenant, count(*) AS n FROM jobs \
                       WHERE state = 'running' AND task = ANY($1::text[]) \
                       GROUP BY task, tenant) AS r), \
                (SELECT coalesce(json_object_agg(task, tat), '{}'::json) FROM rates \
                 WHERE task = ANY($1::text[])), \
                (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
    )
    .bind(&tasks)
    .fetch_one(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let mut permits = Permits::new(running.0, tats.0, now_us);
    let Plan::Filter { blocked, full } = permits.plan(limits, want) else {
        return Ok(Admission::Unbound(permits));
    };
    let (full_tasks, full_tenants): (Vec<String>, Vec<String>) = full.into_iter().unzip();
    let candidates: Vec<(Uuid, String, String)> = sqlx::query_as(Q_CANDIDATES)
        .bind(queues)
        .bind(i64::try_from(want + LOOK_AHEAD).unwrap_or(i64::MAX))
        .bind(blocked)
        .bind(full_tasks)
        .bind(full_tenants)
        .bind(handled)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let chosen = permits.pick(limits, candidates, want);
    store_rates(conn, &permits).await?;
    Ok(Admission::Only(chosen))
}

/// Charges the rates of `tasks` (one start each) after an unbound claim.
pub(super) async fn charge(
    conn: &mut PgConnection,
    limits: &Limits,
    mut permits: Permits,
    tasks: impl IntoIterator<Item = String>,
) -> BrokerResult<()> {
    permits.charge(limits, tasks);
    store_rates(conn, &permits).await
}

async fn store_rates(conn: &mut PgConnection, permits: &Permits) -> BrokerResult<()> {
    let (tasks, tats): (Vec<String>, Vec<i64>) = permits.rates_to_store().into_iter().unzip();
    if tasks.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO rates (task, tat) SELECT * FROM unnest($1::text[], $2::bigint[]) \
         ON CONFLICT (task) DO UPDATE SET tat = EXCLUDED.tat",
    )
    .bind(tasks)
    .bind(tats)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// How `task`'s limits are used: holders, jobs they hold back, the rate.
pub(super) async fn usage(pool: &PgPool, task: &str, limit: &TaskLimit) -> BrokerResult<Usage> {
    let holders: Vec<Holder> = sqlx::query_as::<_, (Uuid, String, String)>(
        "SELECT id, tenant, coalesce(lease_owner, '') FROM jobs \
         WHERE state = 'running' AND task = $1 ORDER BY started_at, id",
    )
    .bind(task)
    .fetch_all(pool)
    .await
    .map_err(from_sqlx)?
    .into_iter()
    .map(|(id, tenant, worker)| Holder {
        id: id.to_string(),
        tenant,
        worker,
    })
    .collect();
    let (tat, now_us): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT tat FROM rates WHERE task = $1), \
                (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
    )
    .bind(task)
    .fetch_one(pool)
    .await
    .map_err(from_sqlx)?;
    let (throttled_until, held) = admission::held_back(limit, &holders, tat.unwrap_or(0), now_us);
    let waiting: i64 = match held {
        HeldBack::All => {
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'queued' AND task = $1")
                .bind(task)
                .fetch_one(pool)
                .await
                .map_err(from_sqlx)?
        }
        HeldBack::Tenants(at_cap) => sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state = 'queued' AND task = $1 \
             AND tenant = ANY($2::text[])",
        )
        .bind(task)
        .bind(at_cap)
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?,
        HeldBack::Nothing => 0,
    };
    Ok(Usage {
        holders,
        waiting: u64::try_from(waiting).unwrap_or(0),
        throttled_until,
    })
}

/// Where a queued job stands in its queue.
pub(super) async fn position(pool: &PgPool, job: &Job) -> BrokerResult<Position> {
    if job.state != JobState::Queued {
        return Ok(Position::default());
    }
    let row = sqlx::query(
        "WITH me AS (SELECT queue, priority, seq, id FROM jobs WHERE id = $1) \
         SELECT count(*) AS ahead, \
                count(*) FILTER (WHERE j.priority > me.priority) AS higher \
         FROM jobs AS j, me \
         WHERE j.state = 'queued' AND NOT j.serial_wait AND j.queue = me.queue \
           AND (j.priority > me.priority \
                OR (j.priority = me.priority AND (j.seq, j.id) < (me.seq, me.id)))",
    )
    .bind(job.id.0)
    .fetch_one(pool)
    .await
    .map_err(from_sqlx)?;
    let get = |name: &str| -> BrokerResult<u64> {
        let n: i64 = row.try_get(name).map_err(from_sqlx)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let serial_ahead: i64 = if job.serial_key.is_some() {
        sqlx::query_scalar(
            "SELECT count(*) FROM jobs AS j, \
               (SELECT tenant, serial_key, serial_seq FROM jobs WHERE id = $1) AS me \
             WHERE j.tenant = me.tenant AND j.serial_key = me.serial_key \
               AND j.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
               AND j.serial_seq < me.serial_seq",
        )
        .bind(job.id.0)
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?
    } else {
        0
    };
    Ok(Position {
        held: false,
        ahead: get("ahead")?,
        ahead_higher_priority: get("higher")?,
        serial_ahead: u64::try_from(serial_ahead).unwrap_or(0),
    })
}
