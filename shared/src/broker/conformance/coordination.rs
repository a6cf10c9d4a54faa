//! The coordination suite: keyed rate limiters and cooldowns on every
//! backend, for the API's budgets and the provider key pools. Each check
//! uses the broker and its `peer` (a second handle on the same storage, as
//! another process would open it), so "shared" means shared across
//! processes, not within one.
//!
//! Usage, in a backend's test file:
//!
//! ```ignore
//! weir_shared::coordination_conformance!(async { my_test_broker().await });
//! ```

use super::TestBroker;
use crate::limit::{KeyedRate, Rate};
use std::time::Duration;

fn rate(text: &str, burst: u32) -> KeyedRate {
    KeyedRate {
        rate: text.parse::<Rate>().expect("rate"),
        burst,
    }
}

/// The burst is spent exactly: a cost equal to what remains fits, one more
/// is refused with the wait until it would fit, and fits after that wait.
pub async fn limiter_is_exact_at_the_boundary(t: TestBroker) {
    let r = rate("10/s", 5);
    for expected in [4, 3] {
        let d = t.broker.admit("k", r, 1).await.expect("admit");
        assert!(d.allowed);
        assert_eq!(d.remaining, expected);
    }
    let d = t.broker.admit("k", r, 3).await.expect("admit");
    assert!(d.allowed, "a cost equal to the remaining three fits");
    assert_eq!(d.remaining, 0);
    let refused = t.peer.admit("k", r, 1).await.expect("admit");
    assert!(!refused.allowed, "the burst is spent, for every caller");
    assert!(
        refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_millis(100),
        "one interval at most: {:?}",
        refused.retry_after
    );
    tokio::time::sleep(refused.retry_after + Duration::from_millis(5)).await;
    let d = t.broker.admit("k", r, 1).await.expect("admit");
    assert!(d.allowed, "allowed once the announced wait has passed");
}

/// Concurrent callers on two handles share one budget: exactly the burst
/// gets through, however the calls interleave.
pub async fn limiter_is_shared_by_concurrent_callers(t: TestBroker) {
    let r = rate("20/m", 20);
    let calls = (0..40).map(|i| {
        let broker = if i % 2 == 0 {
            t.broker.clone()
        } else {
            t.peer.clone()
        };
        tokio::spawn(async move { broker.admit("shared", r, 1).await })
    });
    let mut allowed = 0;
    for call in futures::future::join_all(calls).await {
        if call.expect("task").expect("admit").allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20, "exactly the burst is admitted");
}

/// A cost is all or nothing (tokens per minute): a refused call spends
/// nothing, and keys are independent.
pub async fn limiter_costs_are_all_or_nothing(t: TestBroker) {
    let tpm = rate("100/m", 100);
    let d = t.broker.admit("tokens", tpm, 150).await.expect("admit");
    assert!(!d.allowed, "more than the burst never fits");
    let d = t.broker.admit("tokens", tpm, 60).await.expect("admit");
    assert!(d.allowed, "the refused call spent nothing");
    assert_eq!(d.remaining, 40);
    let d = t.peer.admit("tokens", tpm, 60).await.expect("admit");
    assert!(!d.allowed, "60 more do not fit in the 40 left");
    assert!(
        d.retry_after > Duration::from_secs(11),
        "{:?}",
        d.retry_after
    );
    let d = t.peer.admit("tokens", tpm, 40).await.expect("admit");
    assert!(d.allowed, "the 40 left do");
    let other = t.broker.admit("other-key", tpm, 100).await.expect("admit");
    assert!(other.allowed, "another key has its own budget");
}

/// A key marked cooling is seen cooling by every caller until its end; a
/// shorter cooldown never cuts a longer one; other keys are unaffected.
pub async fn cooldowns_are_shared_and_never_shortened(t: TestBroker) {
    let keys = vec!["pool:key-1".to_owned(), "pool:key-2".to_owned()];
    let none = t.peer.cooling(&keys).await.expect("cooling");
    assert_eq!(none, vec![None, None]);
    t.broker
        .cool("pool:key-1", Duration::from_millis(600))
        .await
        .expect("cool");
    t.peer
        .cool("pool:key-1", Duration::from_millis(50))
        .await
        .expect("cool");
    let seen = t.peer.cooling(&keys).await.expect("cooling");
    let left = seen[0].expect("key-1 cools for every caller");
    assert!(
        left > Duration::from_millis(400) && left <= Duration::from_millis(600),
        "the longer cooldown holds: {left:?}"
    );
    assert_eq!(seen[1], None, "key-2 is not cooling");
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    let after = t.broker.cooling(&keys).await.expect("cooling");
    assert_eq!(after, vec![None, None], "the cooldown ended on time");
}

/// Counters add up across callers, concurrent adds are all kept, and a
/// counter is forgotten its ttl after its last change (and starts again
/// from what is added next).
pub async fn counters_add_up_and_are_forgotten(t: TestBroker) {
    let keys = vec!["pool:req".to_owned(), "pool:never".to_owned()];
    let ttl = Duration::from_millis(400);
    let adds = (0..20).map(|i| {
        let (broker, peer) = (t.broker.clone(), t.peer.clone());
        async move {
            let side = if i % 2 == 0 { broker } else { peer };
            side.count("pool:req", 3, ttl).await.expect("count");
        }
    });
    futures::future::join_all(adds).await;
    assert_eq!(
        t.peer.counters(&keys).await.expect("counters"),
        vec![60, 0],
        "20 concurrent adds of 3, from two callers; an unknown key is 0"
    );
    tokio::time::sleep(ttl + Duration::from_millis(150)).await;
    assert_eq!(
        t.broker.counters(&keys).await.expect("counters"),
        vec![0, 0],
        "forgotten after its ttl"
    );
    t.broker.count("pool:req", 5, ttl).await.expect("count");
    assert_eq!(
        t.peer.counters(&keys[..1]).await.expect("counters"),
        vec![5],
        "a forgotten counter starts again"
    );
}

/// Generates one `#[tokio::test]` per coordination check for a backend.
#[macro_export]
macro_rules! coordination_conformance {
    ($make:expr) => {
        $crate::coordination_conformance!(@tests $make;
            limiter_is_exact_at_the_boundary, limiter_is_shared_by_concurrent_callers,
            limiter_costs_are_all_or_nothing, cooldowns_are_shared_and_never_shortened,
            counters_add_up_and_are_forgotten);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(broker) = $make.await {
                    $crate::broker::conformance::coordination::$name(broker).await;
                }
            }
        )*
    };
}
