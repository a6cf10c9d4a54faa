//! The broker conformance suite on the embedded SQLite broker, each test in
//! its own temporary database file.

use std::sync::Arc;
use weir_shared::broker::conformance::TestBroker;
use weir_shared::broker::sqlite::{Durability, SqliteBroker};

async fn sqlite() -> Option<TestBroker> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.db");
    let path = path.to_str().expect("utf-8 path");
    let open = || async {
        SqliteBroker::open(path, Durability::Normal)
            .await
            .expect("open SQLite broker")
    };
    let reopen_path = path.to_owned();
    Some(TestBroker {
        broker: Arc::new(open().await),
        peer: Arc::new(open().await),
        reopen: Box::new(move |retention| {
            let path = reopen_path.clone();
            Box::pin(async move {
                let broker = SqliteBroker::open(&path, Durability::Normal)
                    .await
                    .expect("open SQLite broker")
                    .with_retention(retention);
                Arc::new(broker) as weir_shared::broker::SharedBroker
            })
        }),
        guard: Box::new(dir),
    })
}

weir_shared::broker_conformance!(sqlite());
weir_shared::coordination_conformance!(sqlite());
