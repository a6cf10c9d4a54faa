//! Flow control on the embedded broker: fair-share sequence numbers, and
//! the admission of jobs under task caps and rates. Everything here runs
//! inside the caller's write transaction (`BEGIN IMMEDIATE`), which makes
//! counting permits and taking them one atomic step, the same guarantee
//! the Redis scripts give.

use super::{BrokerResult, from_sqlx};
use crate::broker::Position;
use crate::broker::admission::{self, HeldBack, Permits, Plan};
use crate::job::{Job, JobState, Millis};
use crate::limit::{Holder, Limits, TaskLimit, Usage};
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const Q_CANDIDATES: &str = include_str!("queries/candidates.sql");
const Q_PROMOTE: &str = include_str!("queries/promote.sql");

/// Jobs a limited claim looks at beyond the ones it wants, so that jobs
/// refused within the batch do not leave it short.
const LOOK_AHEAD: usize = 64;

/// Gives each `(queue, tenant)` in `pairs` its next fair-share sequence
/// number, in order, and records the last one per pair. A tenant's next
/// number is one past the later of its own last one and the queue's clock
/// (the seq of the latest claimed job): a tenant that arrives while another
/// has thousands of jobs queued joins the current round.
pub(super) async fn assign_seqs(
    conn: &mut SqliteConnection,
    pairs: &[(String, String)],
) -> BrokerResult<Vec<i64>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let counts = admission::count_pairs(pairs);
    let keys = Value::Array(counts.iter().map(|((q, t), n)| json!([q, t, n])).collect());
    // One statement: each pair's numbers start one past the later of its
    // last one and the queue's clock; `last` moves past all of them.
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "INSERT INTO fair (queue, tenant, last) \
         SELECT k.value ->> 0, k.value ->> 1, \
                max(coalesce((SELECT f.last FROM fair AS f \
                               WHERE f.queue = k.value ->> 0 AND f.tenant = k.value ->> 1), 0), \
                    coalesce((SELECT c.clock FROM clocks AS c WHERE c.queue = k.value ->> 0), 0)) \
                + (k.value ->> 2) \
         FROM json_each(?1) AS k WHERE true \
         ON CONFLICT (queue, tenant) DO UPDATE SET last = excluded.last \
         RETURNING queue, tenant, last",
    )
    .bind(keys.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(admission::number_seqs(pairs, &counts, rows))
}

/// Queues due scheduled and retrying jobs (at most `limit`), each with a
/// fresh fair-share place. Returns how many.
pub(super) async fn promote(
    conn: &mut SqliteConnection,
    now: Millis,
    limit: i64,
) -> BrokerResult<u64> {
    let due: Vec<(String, String, String)> = sqlx::query_as(Q_PROMOTE)
        .bind(now.0)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    if due.is_empty() {
        return Ok(0);
    }
    let pairs: Vec<(String, String)> = due.iter().map(|(_, q, t)| (q.clone(), t.clone())).collect();
    let seqs = assign_seqs(conn, &pairs).await?;
    let rows = Value::Array(
        due.iter()
            .zip(seqs)
            .map(|((id, _, _), seq)| json!([id, seq]))
            .collect(),
    );
    let done = sqlx::query(
        "UPDATE jobs SET state = 'queued', seq = c.value ->> 1 \
         FROM json_each(?1) AS c WHERE jobs.id = c.value ->> 0",
    )
    .bind(rows.to_string())
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(done.rows_affected())
}

/// How often a process writes a queue's clock at most. The clock only places
/// tenants that arrive later in the current round; trailing the claims by a
/// few milliseconds changes nothing a tenant can see, and a claim of one job
/// then costs one statement fewer.
const CLOCK_EVERY: Duration = Duration::from_millis(50);

/// The clock values this process wrote, and when.
#[derive(Debug, Default)]
pub(super) struct Clocks(Mutex<HashMap<String, (i64, Instant)>>);

impl Clocks {
    /// Moves each queue's clock up to the highest seq claimed from it,
    /// at most once per [`CLOCK_EVERY`] per queue in this process.
    pub(super) async fn advance(
        &self,
        conn: &mut SqliteConnection,
        claimed: impl IntoIterator<Item = (String, i64)>,
    ) -> BrokerResult<()> {
        let mut top: BTreeMap<String, i64> = BTreeMap::new();
        for (queue, seq) in claimed {
            let entry = top.entry(queue).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        {
            let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            top.retain(|queue, seq| match written.get(queue) {
                Some((at_least, when)) => *seq > *at_least && when.elapsed() >= CLOCK_EVERY,
                None => true,
            });
            for (queue, seq) in &top {
                written.insert(queue.clone(), (*seq, Instant::now()));
            }
        }
        if top.is_empty() {
            return Ok(());
        }
        let rows = Value::Array(top.iter().map(|(q, s)| json!([q, s])).collect());
        sqlx::query(
            "INSERT INTO clocks (queue, clock) SELECT value ->> 0, value ->> 1 FROM json_each(?1) \
             WHERE true ON CONFLICT (queue) DO UPDATE SET clock = max(clock, excluded.clock)",
        )
        .bind(rows.to_string())
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }
}

/// Picks up to `want` jobs from `queues` (already in the order to serve)
/// that the caps and rates in `limits` let start now, and takes their
/// permits: the caller leases exactly these ids in the same transaction.
/// A refused job stays queued, its attempts untouched.
pub(super) async fn admit(
    conn: &mut SqliteConnection,
    limits: &Limits,
    queues: &[&String],
    want: usize,
    handled: Option<&str>,
    now: Millis,
) -> BrokerResult<Admission> {
    let tasks = Value::Array(limits.iter().map(|(t, _)| json!(t)).collect()).to_string();
    let running: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT task, tenant, count(*) FROM jobs WHERE state = 'running' \
         AND task IN (SELECT value FROM json_each(?1)) GROUP BY task, tenant",
    )
    .bind(&tasks)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let tats: HashMap<String, i64> = sqlx::query_as(
        "SELECT task, tat FROM rates WHERE task IN (SELECT value FROM json_each(?1))",
    )
    .bind(&tasks)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?
    .into_iter()
    .collect();
    let mut permits = Permits::new(running, tats, now.0.saturating_mul(1000));
    let Plan::Filter { blocked, full } = permits.plan(limits, want) else {
        return Ok(Admission::Unbound(permits));
    };
    let pairs: Vec<Value> = full
        .iter()
        .map(|(task, tenant)| json!([task, tenant]))
        .collect();
    let candidates: Vec<(String, String, String)> = sqlx::query_as(Q_CANDIDATES)
        .bind(serde_json::to_string(queues).unwrap_or_default())
        .bind(i64::try_from(want + LOOK_AHEAD).unwrap_or(i64::MAX))
        .bind(serde_json::to_string(&blocked).unwrap_or_default())
        .bind(Value::Array(pairs).to_string())
        .bind(handled)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let chosen = permits.pick(limits, candidates, want);
    store_rates(conn, &permits).await?;
    Ok(Admission::Only(chosen))
}

/// What a limited claim may take.
pub(super) enum Admission {
    /// No limit can bind within this claim: take the best jobs as usual,
    /// then [`charge`] the rates (their state as read is carried along).
    Unbound(Permits),
    /// Exactly these job ids (their permits counted, rates charged).
    Only(Vec<String>),
}

/// Charges the rates of `tasks` (one start each) after an unbound claim.
pub(super) async fn charge(
    conn: &mut SqliteConnection,
    limits: &Limits,
    mut permits: Permits,
    tasks: impl IntoIterator<Item = String>,
) -> BrokerResult<()> {
    permits.charge(limits, tasks);
    store_rates(conn, &permits).await
}

async fn store_rates(conn: &mut SqliteConnection, permits: &Permits) -> BrokerResult<()> {
    let moved = permits.rates_to_store();
    if moved.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(moved.iter().map(|(t, tat)| json!([t, tat])).collect());
    sqlx::query(
        "INSERT INTO rates (task, tat) SELECT value ->> 0, value ->> 1 FROM json_each(?1) \
         WHERE true ON CONFLICT (task) DO UPDATE SET tat = excluded.tat",
    )
    .bind(rows.to_string())
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// How `task`'s limits are used: holders, jobs they hold back, the rate.
pub(super) async fn usage(
    reader: &SqlitePool,
    task: &str,
    limit: &TaskLimit,
    now: Millis,
) -> BrokerResult<Usage> {
    let holders: Vec<Holder> = sqlx::query_as::<_, (String, String, String)>(
        "SELECT id, tenant, coalesce(lease_owner, '') FROM jobs \
         WHERE state = 'running' AND task = ?1 ORDER BY started_at, id",
    )
    .bind(task)
    .fetch_all(reader)
    .await
    .map_err(from_sqlx)?
    .into_iter()
    .map(|(id, tenant, worker)| Holder { id, tenant, worker })
    .collect();
    let tat: i64 = sqlx::query_scalar("SELECT tat FROM rates WHERE task = ?1")
        .bind(task)
        .fetch_optional(reader)
        .await
        .map_err(from_sqlx)?
        .unwrap_or(0);
    let (throttled_until, held) =
        admission::held_back(limit, &holders, tat, now.0.saturating_mul(1000));
    let waiting: i64 = match held {
        HeldBack::All => {
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'queued' AND task = ?1")
                .bind(task)
                .fetch_one(reader)
                .await
                .map_err(from_sqlx)?
        }
        HeldBack::Tenants(at_cap) => sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE state = 'queued' AND task = ?1 \
             AND tenant IN (SELECT value FROM json_each(?2))",
        )
        .bind(task)
        .bind(serde_json::to_string(&at_cap).unwrap_or_default())
        .fetch_one(reader)
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
pub(super) async fn position(reader: &SqlitePool, job: &Job) -> BrokerResult<Position> {
    if job.state != JobState::Queued {
        return Ok(Position::default());
    }
    let row = sqlx::query(
        "WITH me AS (SELECT queue, priority, seq, id FROM jobs WHERE id = ?1) \
         SELECT count(*) AS ahead, \
                count(*) FILTER (WHERE j.priority > me.priority) AS higher \
         FROM jobs AS j, me \
         WHERE j.state = 'queued' AND j.serial_wait = 0 AND j.queue = me.queue \
           AND (j.priority > me.priority \
                OR (j.priority = me.priority AND (j.seq < me.seq OR (j.seq = me.seq AND j.id < me.id))))",
    )
    .bind(job.id.to_string())
    .fetch_one(reader)
    .await
    .map_err(from_sqlx)?;
    let get = |name: &str| -> BrokerResult<u64> {
        let n: i64 = row.try_get(name).map_err(from_sqlx)?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let serial_ahead: i64 = if job.serial_key.is_some() {
        sqlx::query_scalar(
            "SELECT count(*) FROM jobs AS j, \
               (SELECT tenant, serial_key, serial_seq FROM jobs WHERE id = ?1) AS me \
             WHERE j.tenant = me.tenant AND j.serial_key = me.serial_key \
               AND j.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
               AND j.serial_seq < me.serial_seq",
        )
        .bind(job.id.to_string())
        .fetch_one(reader)
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
