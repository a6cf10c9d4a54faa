//! Serial keys on SQLite: a lane is (tenant, serial key); its members run
//! one at a time in enqueue order. A member joins with the lane's next
//! place and parked (`serial_wait`); [`advance`] unparks a lane's head, the
//! unfinished member with the lowest place, and is called in the same
//! transaction as every change that can end a head (completion, cancel,
//! the reaper, purge) or add a member. A retrying head is unfinished, so
//! it keeps its place through the backoff.

use super::{BrokerResult, from_sqlx};
use crate::broker::admission;
use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};
use std::collections::BTreeSet;

/// (tenant, serial key).
pub(super) type Lane = (String, String);

/// The lanes of rows that have `tenant` and `serial_key` columns.
pub(super) fn lanes_of(rows: &[sqlx::sqlite::SqliteRow]) -> Vec<Lane> {
    rows.iter()
        .filter_map(|r| {
            let key: Option<String> = r.try_get("serial_key").ok().flatten();
            let tenant: Option<String> = r.try_get("tenant").ok();
            Some((tenant?, key?))
        })
        .collect()
}

/// Gives each of `members` (id, lane) the next place in its lane, in order,
/// parks them, and unparks the heads.
pub(super) async fn join(
    conn: &mut SqliteConnection,
    members: &[(String, Lane)],
) -> BrokerResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let lanes: Vec<Lane> = members.iter().map(|(_, l)| l.clone()).collect();
    let counts = admission::count_pairs(&lanes);
    let keys = Value::Array(counts.iter().map(|((t, k), n)| json!([t, k, n])).collect());
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "INSERT INTO serial_lanes (tenant, key, next) \
         SELECT k.value ->> 0, k.value ->> 1, \
                coalesce((SELECT l.next FROM serial_lanes AS l \
                          WHERE l.tenant = k.value ->> 0 AND l.key = k.value ->> 1), 0) \
                + (k.value ->> 2) \
         FROM json_each(?1) AS k WHERE true \
         ON CONFLICT (tenant, key) DO UPDATE SET next = excluded.next \
         RETURNING tenant, key, next",
    )
    .bind(keys.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let places = admission::number_seqs(&lanes, &counts, rows);
    let rows = Value::Array(
        members
            .iter()
            .zip(places)
            .map(|((id, _), place)| json!([id, place]))
            .collect(),
    );
    sqlx::query(
        "UPDATE jobs SET serial_seq = c.value ->> 1, serial_wait = 1 \
         FROM json_each(?1) AS c WHERE jobs.id = c.value ->> 0",
    )
    .bind(rows.to_string())
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    advance(conn, lanes).await
}

/// Unparks the head of each lane (a no-op for a lane whose head already
/// runs or waits to, and for an empty lane).
pub(super) async fn advance(
    conn: &mut SqliteConnection,
    lanes: impl IntoIterator<Item = Lane>,
) -> BrokerResult<()> {
    let lanes: BTreeSet<Lane> = lanes.into_iter().collect();
    if lanes.is_empty() {
        return Ok(());
    }
    let keys = Value::Array(lanes.iter().map(|(t, k)| json!([t, k])).collect());
    sqlx::query(
        "UPDATE jobs SET serial_wait = 0 WHERE serial_wait = 1 AND id IN ( \
           SELECT (SELECT j.id FROM jobs AS j \
                   WHERE j.tenant = l.value ->> 0 AND j.serial_key = l.value ->> 1 \
                     AND j.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
                   ORDER BY j.serial_seq LIMIT 1) \
           FROM json_each(?1) AS l)",
    )
    .bind(keys.to_string())
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// A safety net in maintenance: unparks up to 100 parked members that no
/// unfinished member precedes (a head that left by a path that did not
/// advance its lane). It reads only unfinished lane members (the
/// `jobs_serial` partial index), never the finished jobs.
pub(super) async fn repair(conn: &mut SqliteConnection) -> BrokerResult<u64> {
    let done = sqlx::query(
        "UPDATE jobs SET serial_wait = 0 WHERE id IN ( \
           SELECT j.id FROM jobs AS j WHERE j.serial_wait = 1 AND j.serial_key IS NOT NULL \
             AND j.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
             AND NOT EXISTS (SELECT 1 FROM jobs AS h \
                             WHERE h.tenant = j.tenant AND h.serial_key = j.serial_key \
                               AND h.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
                               AND h.serial_seq < j.serial_seq) \
           LIMIT 100)",
    )
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(done.rows_affected())
}
