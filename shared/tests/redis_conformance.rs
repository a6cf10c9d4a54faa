//! The broker conformance suite on Redis (`WEIR_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379/15`), each test under its own key prefix, which
//! is deleted afterwards. Never FLUSHDB: other tests share the server.

use std::sync::Arc;
use weir_shared::broker::Retention;
use weir_shared::broker::conformance::{TestBroker, service_url};
use weir_shared::broker::redis::{PrefixCleanup, RedisBroker};

async fn redis_broker() -> Option<TestBroker> {
    let url = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")?;
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let open = |retention| RedisBroker::open(&url, &prefix, retention).expect("Redis broker");
    let (reopen_url, reopen_prefix) = (url.clone(), prefix.clone());
    Some(TestBroker {
        broker: Arc::new(open(Retention::default())),
        peer: Arc::new(open(Retention::default())),
        reopen: Box::new(move |retention| {
            let broker =
                RedisBroker::open(&reopen_url, &reopen_prefix, retention).expect("Redis broker");
            Box::pin(async move { Arc::new(broker) as weir_shared::broker::SharedBroker })
        }),
        guard: Box::new(PrefixCleanup { url, prefix }),
    })
}

weir_shared::broker_conformance!(redis_broker());
weir_shared::coordination_conformance!(redis_broker());
