//! The broker conformance suite on Redis (`WEIR_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/15`), each test under its own key prefix, which
//! is deleted afterwards. Never FLUSHDB: other tests share the server.

use redis::Commands;
use std::sync::Arc;
use std::time::Duration;
use weir_shared::broker::conformance::{TestBroker, service_url};
use weir_shared::broker::redis::RedisBroker;

/// Deletes every key under the test's prefix when the test ends.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = match conn.scan_match::<_, String>(format!("{}:*", self.prefix)) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

async fn redis_broker() -> Option<TestBroker> {
    let url = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")?;
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let broker = RedisBroker::open(&url, &prefix, Duration::from_secs(60)).expect("Redis broker");
    Some(TestBroker {
        broker: Arc::new(broker),
        guard: Box::new(Cleanup { url, prefix }),
    })
}

weir_shared::broker_conformance!(redis_broker());
