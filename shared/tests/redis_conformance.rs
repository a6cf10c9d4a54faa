//! The broker conformance suite on Redis (`WEIR_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/15`), each test under its own key prefix, which
//! is deleted afterwards. Never FLUSHDB: other tests share the server.

use std::sync::Arc;
use std::time::Duration;
use weir_shared::broker::conformance::{TestBroker, service_url};
use weir_shared::broker::redis::{PrefixCleanup, RedisBroker};

async fn redis_broker() -> Option<TestBroker> {
    let url = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")?;
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let open = || RedisBroker::open(&url, &prefix, Duration::from_secs(60)).expect("Redis broker");
    Some(TestBroker {
        broker: Arc::new(open()),
        peer: Arc::new(open()),
        guard: Box::new(PrefixCleanup { url, prefix }),
    })
}

weir_shared::broker_conformance!(redis_broker());
weir_shared::coordination_conformance!(redis_broker());
