//! Serial keys on Postgres: a lane is (tenant, serial key); its members run
//! one at a time in enqueue order. A member joins with the lane's next
//! place (the `serial_lanes` row's lock orders concurrent enqueuers of one
//! lane) and parked (`serial_wait`); [`advance`] unparks a lane's head, the
//! unfinished member with the lowest place, in the same transaction as every
//! change that can end a head or add a member. A retrying head is
//! unfinished, so it keeps its place through the backoff.

use super::{BrokerResult, from_sqlx};
use crate::broker::admission;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use std::collections::BTreeSet;
use uuid::Uuid;

/// (tenant, serial key).
pub(super) type Lane = (String, String);

/// The lanes of rows that have `tenant` and `serial_key` columns.
pub(super) fn lanes_of(rows: &[PgRow]) -> Vec<Lane> {
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
pub(super) async fn join(conn: &mut PgConnection, members: &[(Uuid, Lane)]) -> BrokerResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let lanes: Vec<Lane> = members.iter().map(|(_, l)| l.clone()).collect();
    let counts = admission::count_pairs(&lanes);
    let (mut tenants, mut keys, mut ns) = (Vec::new(), Vec::new(), Vec::new());
    for ((t, k), n) in &counts {
        tenants.push(t.to_string());
        keys.push(k.to_string());
        ns.push(*n);
    }
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "INSERT INTO serial_lanes AS l (tenant, key, next) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ORDER BY 1, 2 \
         ON CONFLICT (tenant, key) DO UPDATE SET next = l.next + EXCLUDED.next \
         RETURNING l.tenant, l.key, l.next",
    )
    .bind(tenants)
    .bind(keys)
    .bind(ns)
    .fetch_all(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    let places = admission::number_seqs(&lanes, &counts, rows);
    let ids: Vec<Uuid> = members.iter().map(|(id, _)| *id).collect();
    sqlx::query(
        "UPDATE jobs SET serial_seq = c.place, serial_wait = true \
         FROM unnest($1::uuid[], $2::bigint[]) AS c(id, place) WHERE jobs.id = c.id",
    )
    .bind(ids)
    .bind(places)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    advance(conn, lanes).await
}

/// Unparks the head of each lane (a no-op for a lane whose head already
/// runs or waits to, and for an empty lane).
pub(super) async fn advance(
    conn: &mut PgConnection,
    lanes: impl IntoIterator<Item = Lane>,
) -> BrokerResult<()> {
    let lanes: BTreeSet<Lane> = lanes.into_iter().collect();
    if lanes.is_empty() {
        return Ok(());
    }
    let (tenants, keys): (Vec<String>, Vec<String>) = lanes.into_iter().unzip();
    sqlx::query(
        "UPDATE jobs SET serial_wait = false WHERE serial_wait AND id IN ( \
           SELECT (SELECT j.id FROM jobs AS j \
                   WHERE j.tenant = l.tenant AND j.serial_key = l.key \
                     AND j.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
                   ORDER BY j.serial_seq LIMIT 1) \
           FROM unnest($1::text[], $2::text[]) AS l(tenant, key))",
    )
    .bind(tenants)
    .bind(keys)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// A safety net in maintenance: unparks up to 100 parked members that no
/// unfinished member precedes (a head that left by a path that did not
/// advance its lane). It reads only unfinished lane members (the
/// `jobs_serial` partial index), never the finished jobs.
pub(super) async fn repair(conn: &mut PgConnection) -> BrokerResult<u64> {
    let done = sqlx::query(
        "UPDATE jobs SET serial_wait = false WHERE id IN ( \
           SELECT j.id FROM jobs AS j WHERE j.serial_wait AND j.serial_key IS NOT NULL \
             AND j.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
             AND NOT EXISTS (SELECT 1 FROM jobs AS h \
                             WHERE h.tenant = j.tenant AND h.serial_key = j.serial_key \
                               AND h.state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying') \
                               AND h.serial_seq < j.serial_seq) \
           LIMIT 100 FOR UPDATE SKIP LOCKED)",
    )
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(done.rows_affected())
}
