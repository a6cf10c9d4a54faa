//! Reads and operator views on every backend: listings and tenant scope,
//! counts and purge, the node registry.

use super::{LEASE, TestBroker, claim, enqueue_one, request};
use crate::broker::{BrokerError, LIST_SCAN_LIMIT, ListRequest, Scope};
use crate::job::{JobState, Millis, now_ms};
use crate::node::{Slots, WorkerInfo};
use std::time::Duration;

/// A filter that matches little costs a bounded scan per call: a page
/// that examined [`LIST_SCAN_LIMIT`] jobs without filling up ends with
/// `has_more` and a cursor, and following the cursors finds every match
/// exactly once.
pub async fn list_scan_is_bounded(t: TestBroker) {
    let rare = enqueue_one(&t, request("rare", "default")).await.id;
    let common = LIST_SCAN_LIMIT + LIST_SCAN_LIMIT / 2;
    for _ in 0..common / 500 {
        t.broker
            .enqueue((0..500).map(|_| request("common", "default")).collect())
            .await
            .expect("enqueue");
    }
    let mut found = Vec::new();
    let mut calls = 0;
    let mut cursor = None;
    loop {
        calls += 1;
        let page = t
            .broker
            .list(ListRequest {
                scope: Scope::All,
                queue: None,
                state: None,
                task: Some("rare".into()),
                limit: 10,
                cursor,
            })
            .await
            .expect("list");
        if calls == 1 {
            assert!(
                page.data.is_empty(),
                "the newest {LIST_SCAN_LIMIT} are all common"
            );
            assert!(page.has_more, "the scan stopped, not the listing");
        }
        found.extend(page.data.iter().map(|j| j.id));
        if !page.has_more {
            assert_eq!(page.next_cursor, None);
            break;
        }
        cursor = page.next_cursor;
        assert!(cursor.is_some(), "has_more comes with a cursor");
    }
    assert_eq!(found, vec![rare]);
    assert_eq!(calls, 2);
    let unfiltered = t
        .broker
        .list(ListRequest {
            scope: Scope::All,
            queue: None,
            state: None,
            task: None,
            limit: 500,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(
        unfiltered.data.len(),
        500,
        "a page fills when the filter matches"
    );
    assert!(unfiltered.has_more);
}

/// Listing is newest first with a cursor, and every read is scoped to a tenant.
pub async fn list_and_scope(t: TestBroker) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut r = request("weir.noop", "default");
        r.tenant = if i == 2 { "t2".into() } else { "t1".into() };
        ids.push(enqueue_one(&t, r).await.id);
    }
    let mine = Scope::Tenant("t1".into());
    let page = t
        .broker
        .list(ListRequest {
            scope: mine.clone(),
            queue: None,
            state: None,
            task: None,
            limit: 2,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(
        page.data.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    assert!(page.has_more);
    let next = t
        .broker
        .list(ListRequest {
            scope: mine.clone(),
            queue: None,
            state: None,
            task: None,
            limit: 2,
            cursor: page.next_cursor,
        })
        .await
        .expect("list");
    assert_eq!(
        next.data.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]]
    );
    assert!(!next.has_more);
    assert_eq!(next.next_cursor, None);
    let filtered = t
        .broker
        .list(ListRequest {
            scope: Scope::All,
            queue: Some("default".into()),
            state: Some(JobState::Queued),
            task: Some("weir.noop".into()),
            limit: 50,
            cursor: None,
        })
        .await
        .expect("list");
    assert_eq!(filtered.data.len(), 5);

    assert!(t.broker.get(&mine, ids[2]).await.expect("get").is_none());
    assert!(matches!(
        t.broker.cancel(&mine, ids[2]).await,
        Err(BrokerError::NotFound)
    ));
    assert!(matches!(
        t.broker.retry(&mine, ids[2]).await,
        Err(BrokerError::NotFound)
    ));
    assert!(
        t.broker
            .get(&Scope::Tenant("t2".into()), ids[2])
            .await
            .expect("get")
            .is_some()
    );
}

/// Counts per queue and state; purge empties the waiting jobs only.
pub async fn counts_and_purge(t: TestBroker) {
    for _ in 0..3 {
        enqueue_one(&t, request("weir.noop", "dataset")).await;
    }
    let mut later = request("weir.noop", "dataset");
    later.run_at = Some(Millis(now_ms().0 + 60_000));
    enqueue_one(&t, later).await;
    claim(&t, &["dataset"], 1, LEASE).await;
    let counts = t.broker.queue_counts().await.expect("counts");
    let q = counts.iter().find(|q| q.name == "dataset").expect("listed");
    assert_eq!(q.counts.get(&JobState::Queued), Some(&2));
    assert_eq!(q.counts.get(&JobState::Scheduled), Some(&1));
    assert_eq!(q.counts.get(&JobState::Running), Some(&1));
    assert_eq!(t.broker.purge("dataset").await.expect("purge"), 3);
    let counts = t.broker.queue_counts().await.expect("counts");
    let q = counts.iter().find(|q| q.name == "dataset").expect("listed");
    assert_eq!(q.counts.get(&JobState::Queued), None);
    assert_eq!(q.counts.get(&JobState::Running), Some(&1));
}

/// Worker nodes are listed while their heartbeat lasts; an empty broker
/// answers every inspection with nothing rather than an error.
pub async fn heartbeats(t: TestBroker) {
    assert!(t.broker.queue_counts().await.expect("counts").is_empty());
    assert!(t.broker.workers().await.expect("workers").is_empty());
    assert!(t.broker.renew(&[], LEASE).await.expect("renew").is_empty());
    assert_eq!(t.broker.purge("default").await.expect("purge"), 0);
    let page = t
        .broker
        .list(ListRequest {
            scope: Scope::All,
            queue: None,
            state: None,
            task: None,
            limit: 10,
            cursor: None,
        })
        .await
        .expect("list");
    assert!(page.data.is_empty() && !page.has_more);
    let info = WorkerInfo {
        id: "node-1".into(),
        host: "h".into(),
        pid: 1,
        queues: vec!["default".into()],
        slots: Slots {
            busy: 0,
            current: 2,
            min: 2,
            max: 2,
        },
        processed: 7,
        started_at: now_ms(),
        last_heartbeat: now_ms(),
        children: Vec::new(),
        recycles: 0,
        restarts: 0,
        config: Default::default(),
        scaling: Vec::new(),
        child_ready_ms: None,
        tasks: vec!["weir.noop".into()],
        provider_keys: Vec::new(),
    };
    t.broker
        .heartbeat(&info, Duration::from_millis(200))
        .await
        .expect("heartbeat");
    let listed = t.broker.workers().await.expect("workers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].processed, 7);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.broker.workers().await.expect("workers").is_empty());
    t.broker
        .heartbeat(&info, Duration::from_secs(10))
        .await
        .expect("heartbeat");
    t.broker.remove_worker("node-1").await.expect("remove");
    assert!(t.broker.workers().await.expect("workers").is_empty());
    t.broker.ping().await.expect("ping");
}

/// A queue's head is the job a worker would take next (highest priority,
/// then enqueue order), named by when it became due; an empty queue has
/// none; claiming the head moves it on.
pub async fn queue_heads_name_the_next_job(t: TestBroker) {
    let queues = vec!["default".to_owned(), "empty".to_owned()];
    assert_eq!(
        t.broker.queue_heads(&queues).await.expect("heads"),
        vec![None, None]
    );
    let mut low = request("store", "default");
    low.priority = 1;
    let low = enqueue_one(&t, low).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut high = request("store", "default");
    high.priority = 9;
    let high = enqueue_one(&t, high).await;
    let heads = t.broker.queue_heads(&queues).await.expect("heads");
    assert_eq!(
        heads,
        vec![Some(high.run_at), None],
        "the higher priority is next"
    );
    let claimed = claim(&t, &["default"], 1, LEASE).await;
    assert_eq!(claimed[0].lease.id, high.id);
    assert!(
        claimed[0]
            .waited
            .is_some_and(|w| w < Duration::from_secs(5)),
        "a claim says how long the job waited: {:?}",
        claimed[0].waited
    );
    let heads = t.broker.queue_heads(&queues).await.expect("heads");
    assert_eq!(heads, vec![Some(low.run_at), None]);
    claim(&t, &["default"], 1, LEASE).await;
    assert_eq!(
        t.broker.queue_heads(&queues).await.expect("heads"),
        vec![None, None]
    );
}
