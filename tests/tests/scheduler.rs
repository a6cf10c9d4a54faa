//! The scheduler end to end with the real binary on Redis: replicas that
//! enqueue each tick once (one killed mid-run), misfire policies after a
//! stop, pause, trigger; and `cache.warmup` against the real PostgreSQL.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_shared::broker::conformance::service_url;
use weir_tests::{Proc, Sandbox, kill_node, redis_sandbox, wait_until};

fn redis_url() -> Option<String> {
    service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
}

/// A tick's fire time, from its job id (a UUIDv7 whose time is the tick).
fn fire_time(job: &Value) -> i64 {
    let id: uuid::Uuid = job["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("job id");
    let (secs, nanos) = id.get_timestamp().expect("v7 timestamp").to_unix();
    i64::try_from(secs).expect("secs") * 1000 + i64::from(nanos / 1_000_000)
}

/// Fire times per schedule (the payload names it), sorted.
fn ticks(sandbox: &Sandbox) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for job in sandbox.all_jobs() {
        let name = job["payload"]["s"].as_str().unwrap_or("-").to_owned();
        out.entry(name).or_default().push(fire_time(&job));
    }
    for t in out.values_mut() {
        t.sort_unstable();
    }
    out
}

fn gaps(ticks: &[i64]) -> Vec<i64> {
    ticks.windows(2).map(|w| w[1] - w[0]).collect()
}

fn schedulers(sandbox: &Sandbox, n: usize) -> Vec<Proc> {
    (0..n)
        .map(|i| sandbox.spawn(&format!("scheduler-{i}"), &["scheduler"]))
        .collect()
}

#[tokio::test]
async fn three_replicas_enqueue_each_tick_once() {
    let Some(url) = redis_url() else { return };
    let (mut sandbox, _cleanup) = redis_sandbox(&url);
    sandbox.config(
        r#"
[[schedules]]
name = "every-second"
cron = "* * * * * *"
task = "weir.noop"
payload = { s = "every-second" }
"#,
    );
    let replicas = schedulers(&sandbox, 3);
    tokio::time::sleep(Duration::from_secs(10)).await;
    kill_node(&replicas[0]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(replicas);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let jobs = sandbox.all_jobs();
    let fired = &ticks(&sandbox)["every-second"];
    let mut distinct = fired.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), jobs.len(), "one job per fire time");
    assert!(
        fired.iter().all(|t| t % 1000 == 0),
        "fire times are whole seconds"
    );
    let gaps = gaps(fired);
    let missed: i64 = gaps.iter().map(|g| g / 1000 - 1).sum();
    assert!(gaps.iter().all(|g| *g >= 1000), "no duplicate: {gaps:?}");
    eprintln!(
        "3 replicas, one killed: {} ticks, {missed} missed, {} jobs",
        fired.len(),
        jobs.len()
    );
    assert!(missed <= 1, "at most one missed tick: {gaps:?}");
    assert!(fired.len() >= 18, "{} ticks in 20 s", fired.len());
}

#[tokio::test]
async fn misfires_follow_the_policy_and_pause_holds() {
    let Some(url) = redis_url() else { return };
    let (mut sandbox, _cleanup) = redis_sandbox(&url);
    sandbox.config(
        r#"
[[schedules]]
name = "skip"
cron = "* * * * * *"
task = "weir.noop"
payload = { s = "skip" }

[[schedules]]
name = "catch-up"
cron = "* * * * * *"
task = "weir.noop"
payload = { s = "catch-up" }
misfire = "catch_up"
grace = "1m"
"#,
    );
    let first = schedulers(&sandbox, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(first);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = schedulers(&sandbox, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t = ticks(&sandbox);
    let skip_gaps = gaps(&t["skip"]);
    let long: Vec<&i64> = skip_gaps.iter().filter(|g| **g > 1000).collect();
    assert_eq!(long.len(), 1, "skip: one gap, the stop: {skip_gaps:?}");
    assert!(
        *long[0] >= 4000,
        "skip fired the missed ticks: {skip_gaps:?}"
    );
    let catch_gaps = gaps(&t["catch-up"]);
    eprintln!(
        "after a 5 s stop: skip gap {} ms; catch_up {} ticks, largest gap {:?} ms",
        long[0],
        t["catch-up"].len(),
        catch_gaps.iter().max()
    );
    assert!(
        catch_gaps.iter().all(|g| *g == 1000),
        "catch_up fires every missed tick once: {catch_gaps:?}"
    );
    assert!(t["catch-up"].len() >= 10);

    // `weir schedules` shows both; trigger one; pause the other.
    let list = sandbox.cli_json(&["schedules", "--json"]);
    let views = list["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(views.len(), 2);
    for v in &views {
        assert!(
            v["last_fire"].is_string() && v["next_fire"].is_string(),
            "{v}"
        );
        assert_eq!(v["last_state"], "queued", "{v}");
    }
    let before = sandbox.all_jobs().len();
    let triggered = sandbox.cli_json(&["schedules", "trigger", "skip", "--json"]);
    assert_eq!(triggered["task"], "weir.noop");
    assert_eq!(sandbox.all_jobs().len(), before + 1);
    let bad = sandbox.cli(&["schedules", "trigger", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("configured: skip, catch-up"));

    sandbox.cli_json(&["schedules", "pause", "skip", "--json"]);
    let skip_before = ticks(&sandbox)["skip"].len();
    let catch_before = ticks(&sandbox)["catch-up"].len();
    let third = schedulers(&sandbox, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(third);
    let after = ticks(&sandbox);
    assert_eq!(
        after["skip"].len(),
        skip_before,
        "a paused schedule does not fire"
    );
    assert!(after["catch-up"].len() > catch_before);
}

#[tokio::test]
async fn warmup_writes_recent_rows_to_redis_keys() {
    let Some(redis) = redis_url() else { return };
    let Some(pg) = service_url(
        "WEIR_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let (mut sandbox, _cleanup) = redis_sandbox(&redis);
    let table = format!("apps_{}", uuid::Uuid::now_v7().simple());
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg)
        .await
        .expect("postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL, config jsonb NOT NULL, updated_at timestamptz NOT NULL)"
    )))
    .execute(&db)
    .await
    .expect("create table");
    for id in 1..=30 {
        // Every third app was last updated more than 7 days ago.
        let age = if id % 3 == 0 { "10 days" } else { "1 day" };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} VALUES ($1, $2, $3, now() - interval '{age}')"
        )))
        .bind(id)
        .bind(format!("app-{id}"))
        .bind(serde_json::json!({"model": "gpt", "id": id}))
        .execute(&db)
        .await
        .expect("insert");
    }
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    sandbox.config(&format!(
        r#"
[warmup.app_config]
database_url = "{pg}"
query = "SELECT id, name, config FROM {table} WHERE updated_at > now() - interval '7 days';"
key = "{prefix}:app_config:{{id}}"
ttl = "1h"
batch = 7

[warmup.broken]
database_url = "{pg}"
query = "SELECT id FROM no_such_table_{table}"
key = "{prefix}:broken:{{id}}"
ttl = "1h"

[warmup.down]
database_url = "postgres://postgres@127.0.0.1:1/test"
query = "SELECT 1 AS id"
key = "{prefix}:down:{{id}}"
ttl = "1h"

[tasks."cache.warmup"]
max_retries = 5
retry_delay = "30s"
"#
    ));
    let _worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "4"]);
    let enqueue = |target: &str| {
        let job = sandbox.cli_json(&[
            "enqueue",
            "cache.warmup",
            "--payload",
            &format!(r#"{{"target": "{target}"}}"#),
            "--json",
        ]);
        job["id"].as_str().expect("id").to_owned()
    };
    let show = |id: &str| sandbox.cli_json(&["jobs", "show", id, "--json"]);
    let good = enqueue("app_config");
    let broken = enqueue("broken");
    let down = enqueue("down");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            show(&good)["state"] == "succeeded" && show(&broken)["state"] == "failed"
        })
        .await,
        "good: {}\nbroken: {}",
        show(&good),
        show(&broken)
    );
    let done = show(&good);
    assert_eq!(done["result"]["rows_read"], 20);
    assert_eq!(done["result"]["keys_written"], 20);
    assert_eq!(done["progress"]["keys_written"], 20, "progress reported");

    let mut conn = redis::Client::open(redis.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:app_config:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    let mut ids: Vec<i64> = keys
        .iter()
        .filter_map(|k| k.rsplit(':').next().and_then(|n| n.parse().ok()))
        .collect();
    ids.sort_unstable();
    let recent: Vec<i64> = (1..=30).filter(|i| i % 3 != 0).collect();
    assert_eq!(ids, recent, "exactly the rows of the last 7 days");
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("ttl");
        assert!(
            (3_500_000..=3_960_000).contains(&ttl),
            "{key}: ttl {ttl} ms (1 h + up to 10%)"
        );
    }
    let value: String = redis::cmd("GET")
        .arg(format!("{prefix}:app_config:4"))
        .query_async(&mut conn)
        .await
        .expect("get");
    let row: Value = serde_json::from_str(&value).expect("json row");
    assert_eq!(row["name"], "app-4");
    assert_eq!(row["config"]["model"], "gpt");

    let failed = show(&broken);
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("warm-up target `broken`") && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(failed["attempts"], 1, "a bad query does not retry");

    // An unreachable database is a failed attempt that will be retried.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            show(&down)["state"] == "retrying"
        })
        .await,
        "{}",
        show(&down)
    );
    assert!(
        show(&down)["error"]
            .as_str()
            .unwrap_or_default()
            .contains("database unreachable")
    );

    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&db)
        .await
        .expect("drop");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("del");
}
