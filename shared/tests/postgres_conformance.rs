//! The broker and coordination conformance suites on Postgres
//! (`WEIR_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test?sslmode=disable`),
//! each test in a schema of its own, dropped afterwards, so they run in
//! parallel on one database.

use std::sync::Arc;
use weir_shared::broker::conformance::{TestBroker, service_url};
use weir_shared::broker::postgres::{PostgresBroker, PostgresConfig, SchemaCleanup};
use weir_shared::broker::{Retention, SharedBroker};

fn config(url: &str, schema: &str, retention: Retention) -> PostgresConfig {
    PostgresConfig {
        url: url.to_owned(),
        schema: schema.to_owned(),
        notify: true,
        pool: 4,
        limiter_url: None,
        retention,
    }
}

async fn postgres() -> Option<TestBroker> {
    let url = service_url(
        "WEIR_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
    )?;
    let schema = format!("weirtest_{}", uuid::Uuid::now_v7().simple());
    let open = |retention| {
        let c = config(&url, &schema, retention);
        async move { Arc::new(PostgresBroker::open(&c).await.expect("Postgres broker")) as SharedBroker }
    };
    let guard = SchemaCleanup {
        url: url.clone(),
        schema: schema.clone(),
    };
    let (reopen_url, reopen_schema) = (url.clone(), schema.clone());
    Some(TestBroker {
        broker: open(Retention::default()).await,
        peer: open(Retention::default()).await,
        reopen: Box::new(move |retention| {
            let c = config(&reopen_url, &reopen_schema, retention);
            Box::pin(async move {
                Arc::new(PostgresBroker::open(&c).await.expect("Postgres broker")) as SharedBroker
            })
        }),
        guard: Box::new(guard),
    })
}

weir_shared::broker_conformance!(postgres());
weir_shared::coordination_conformance!(postgres());
