//! The stampede guard against the real Redis: many callers missing the
//! same key at once compute it once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use weir_shared::broker::conformance::service_url;
use weir_shared::cache::{CacheError, get_with_lock};

#[tokio::test]
async fn concurrent_misses_compute_once() {
    let Some(url) = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15") else {
        return;
    };
    let client = redis::Client::open(url).expect("url");
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("weirtest-{}:app_config:1", uuid::Uuid::now_v7().simple());
    let computed = Arc::new(AtomicU32::new(0));
    let callers = (0..20).map(|_| {
        let mut conn = conn.clone();
        let (key, computed) = (key.clone(), computed.clone());
        tokio::spawn(async move {
            get_with_lock(
                &mut conn,
                &key,
                Duration::from_secs(60),
                Duration::from_secs(5),
                || async {
                    computed.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, String>("{\"id\":1}".to_owned())
                },
            )
            .await
        })
    });
    for caller in futures::future::join_all(callers).await {
        let value = caller.expect("task").expect("value");
        assert_eq!(value, "{\"id\":1}");
    }
    assert_eq!(computed.load(Ordering::SeqCst), 1, "one caller computed it");

    // A failed computation is not cached and frees the lock at once.
    let mut c = conn.clone();
    let other = format!("{key}:other");
    let failed = get_with_lock(
        &mut c,
        &other,
        Duration::from_secs(60),
        Duration::from_secs(5),
        || async { Err::<String, _>("database down") },
    )
    .await;
    assert!(matches!(failed, Err(CacheError::Compute("database down"))));
    let started = std::time::Instant::now();
    let ok = get_with_lock(
        &mut c,
        &other,
        Duration::from_secs(60),
        Duration::from_secs(5),
        || async { Ok::<_, String>("fresh".to_owned()) },
    )
    .await
    .expect("value");
    assert_eq!(ok, "fresh");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no stale lock to wait for"
    );
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .arg(&other)
        .query_async(&mut c)
        .await
        .expect("del");
}
