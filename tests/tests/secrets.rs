//! Credentials in URLs never reach anything weir writes: every role and
//! command is run against a Redis with a password and a warm-up database
//! with one, and all of their output is searched for the passwords.

use serde_json::json;
use std::time::Duration;
use weir_tests::{PrivateRedis, Sandbox, wait_until};

const REDIS_PASSWORD: &str = "Sup3rSecretRedisPw";
const DB_PASSWORD: &str = "PgSecretDatabasePw";
const WRONG_PASSWORD: &str = "WrongSecretAttemptPw";

#[tokio::test]
async fn no_password_appears_in_any_output() {
    let dir = tempfile::tempdir().expect("dir");
    let redis = PrivateRedis::start(dir.path());
    let admin = redis::Client::open(redis.url()).expect("client");
    let mut conn = admin
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(REDIS_PASSWORD)
        .query_async(&mut conn)
        .await
        .expect("requirepass");
    let url = format!(
        "redis://default:{REDIS_PASSWORD}@127.0.0.1:{}/0",
        redis.port
    );

    let mut sandbox = Sandbox::new();
    sandbox
        .set("WEIR_BROKER_URL", &url)
        .set("WEIR_AUTH", "disabled")
        .set("WEIR_LOG", "debug")
        .config(&format!(
            "[warmup.cfg]\n\
             database_url = \"postgres://weir:{DB_PASSWORD}@127.0.0.1:1/nowhere\"\n\
             query = \"SELECT 1 AS id\"\n\
             key = \"cfg:{{id}}\"\n\
             ttl = \"1m\"\n\n\
             [tasks.\"cache.warmup\"]\n\
             max_retries = 0\n"
        ));
    let api = sandbox.api().await;
    let worker = sandbox.spawn("worker", &["worker", "--processes", "1", "-c", "2"]);
    let (status, job) = api
        .post(
            "/v1/jobs",
            &json!({"task": "cache.warmup", "payload": {"target": "cfg"}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    let failed = api.wait_state(&id, "failed", Duration::from_secs(30)).await;
    let mut seen = vec![failed.to_string()];

    for args in [
        &["queues"][..],
        &["queues", "--json"],
        &["jobs", "list", "--json"],
        &["jobs", "show", &id, "--json"],
        &["workers", "--json"],
        &["jobs", "explain", &id],
    ] {
        let out = sandbox.cli(args);
        seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
        seen.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    for path in ["/v1/queues", "/v1/workers", &format!("/v1/jobs/{id}")] {
        seen.push(api.get(path).await.1.to_string());
    }
    // A wrong password: the refusal is said, the password is not.
    let mut wrong = Sandbox::new();
    wrong.set(
        "WEIR_BROKER_URL",
        &format!(
            "redis://default:{WRONG_PASSWORD}@127.0.0.1:{}/0",
            redis.port
        ),
    );
    for args in [&["queues"][..], &["enqueue", "weir.noop"]] {
        let out = wrong.cli(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        seen.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let bad_api = wrong.spawn("api", &["api", "--addr", "127.0.0.1:0"]);
    wait_until(Duration::from_secs(10), || async {
        !bad_api.log().is_empty()
    })
    .await;
    seen.push(bad_api.log());

    assert!(
        wait_until(Duration::from_secs(5), || async {
            worker.log().contains("cache.warmup")
        })
        .await
    );
    seen.push(worker.log());
    seen.push(api.proc.log());
    let all = seen.join("\n");
    assert!(
        all.contains(":***@127.0.0.1"),
        "the URLs were printed, redacted: {all}"
    );
    for secret in [REDIS_PASSWORD, DB_PASSWORD, WRONG_PASSWORD] {
        let leaked: Vec<&str> = all.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaked.is_empty(), "{secret} appears in: {leaked:#?}");
    }
}
