//! Redis-only tests: what the conformance suite cannot see from outside.

use super::*;
use crate::broker::conformance::{request, service_url};
use crate::broker::{Inspect, ListRequest, Outcome};
use crate::job::JobState;
use redis::AsyncCommands;

/// A broker under a key prefix of its own (deleted with the guard), or
/// `None` when Redis is unreachable outside CI.
fn sandbox(retention: Duration) -> Option<(RedisBroker, PrefixCleanup)> {
    let retention = crate::broker::Retention {
        succeeded: retention,
        failed: retention,
        keep: None,
    };
    let url = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")?;
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let broker = RedisBroker::open(&url, &prefix, retention).expect("broker");
    Some((broker, PrefixCleanup { url, prefix }))
}

/// Up to 100 jobs of queue `default`, leased for 30 s.
async fn claim_default(broker: &RedisBroker) -> Vec<ClaimedJob> {
    broker
        .claim(ClaimRequest {
            worker: "w1".into(),
            queues: vec!["default".into()],
            limit: 100,
            lease: Duration::from_secs(30),
            limits: Arc::default(),
            tasks: None,
        })
        .await
        .expect("claim")
}

/// An enqueue repeated after a lost reply (same ids) adds nothing and
/// does not disturb jobs that started meanwhile, for a call large enough
/// to use the repeat marker and for a single job.
#[tokio::test]
async fn a_repeated_enqueue_adds_nothing() {
    let Some((broker, _cleanup)) = sandbox(Duration::from_secs(60)) else {
        return;
    };
    let mut held = request("weir.noop", "default");
    held.unique_key = Some("u".into());
    let holder = broker.enqueue(vec![held.clone()]).await.expect("enqueue")[0]
        .job
        .id;

    // The first job of the call is a duplicate of `holder`: the call's
    // marker, not its first job, tells a repeat.
    let batch: Vec<(JobId, i64, EnqueueRequest)> = std::iter::once(held)
        .chain((0..20).map(|_| request("weir.noop", "default")))
        .map(|r| (JobId::new(), 0, r))
        .collect();
    let single = vec![(JobId::new(), 0, request("weir.noop", "default"))];
    for planned in [&batch, &single] {
        let first = broker.enqueue_call(planned).await.expect("enqueue");
        let started = claim_default(&broker).await;
        let again = broker.enqueue_call(planned).await.expect("repeat");
        assert_eq!(first.len(), again.len(), "same answer");
        assert_eq!(first.get(1..), again.get(1..));
        for c in &started {
            let job = broker.load(&c.lease.id.to_string()).await.expect("load");
            assert_eq!(job.map(|j| j.state), Some(JobState::Running));
        }
        let counts = broker.queue_counts().await.expect("counts");
        let queued: u64 = counts
            .iter()
            .filter_map(|q| q.counts.get(&JobState::Queued))
            .sum();
        assert_eq!(queued, 0, "nothing came back to the queue: {counts:?}");
    }
    let listed = broker
        .list(ListRequest {
            scope: Scope::All,
            queue: None,
            state: None,
            task: None,
            cursor: None,
            limit: 100,
        })
        .await
        .expect("list");
    assert_eq!(listed.data.len(), 1 + 20 + 1);
    assert!(listed.data.iter().any(|j| j.id == holder));
}

/// Acknowledges `claimed` as succeeded.
async fn succeed(broker: &RedisBroker, claimed: &[ClaimedJob]) {
    let done = claimed
        .iter()
        .map(|c| Completion {
            lease: c.lease,
            outcome: Outcome::Succeeded(serde_json::Value::Null),
        })
        .collect();
    broker.complete(done).await.expect("complete");
}

/// Runs the `listed` jobs of queue `default` to success, lets their
/// records expire (retention 100 ms) and runs maintenance: the listing
/// `index` held them before and holds none after.
async fn sweep_after_success(broker: &RedisBroker, index: &str, listed: i64) {
    let mut conn = broker.conn.clone();
    let claimed = claim_default(broker).await;
    assert_eq!(claimed.len() as i64, listed);
    succeed(broker, &claimed).await;
    let before: i64 = conn.zcard(index).await.expect("zcard");
    assert_eq!(before, listed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.maintain().await.expect("maintain");
    let after: i64 = conn.zcard(index).await.expect("zcard");
    assert_eq!(after, 0, "expired jobs are swept from the index");
}

/// Finished jobs leave the tenant's listing index once their hash has
/// expired, without anyone listing: maintenance sweeps it.
#[tokio::test]
async fn expired_jobs_leave_the_listing_index() {
    let Some((broker, _cleanup)) = sandbox(Duration::from_millis(100)) else {
        return;
    };
    let prefix = broker.prefix.to_string();
    let mut conn = broker.conn.clone();
    let index = format!("{prefix}:list:t:t1");
    let jobs: Vec<_> = (0..30).map(|_| request("weir.noop", "default")).collect();
    broker.enqueue(jobs).await.expect("enqueue");
    let mut kept = request("weir.noop", "mail");
    kept.tenant = "t2".into();
    broker.enqueue(vec![kept]).await.expect("enqueue");
    sweep_after_success(&broker, &index, 30).await;
    let left: i64 = conn
        .zcard(format!("{prefix}:list:t:t2"))
        .await
        .expect("zcard");
    assert_eq!(left, 1, "a live job stays listed");
}

/// Jobs enqueued with ids that do not start with their creation time (a
/// Celery task id taken as the job id) leave the listing index too once
/// their hash has expired: most such ids sort above every time-ordered
/// id, where the sweep of old ids never looks.
#[tokio::test]
async fn expired_jobs_with_ids_out_of_time_order_leave_the_listing_index() {
    let Some((broker, _cleanup)) = sandbox(Duration::from_millis(100)) else {
        return;
    };
    let prefix = broker.prefix.to_string();
    let index = format!("{prefix}:list:t:t1");
    let jobs: Vec<_> = (0..30u32)
        .map(|i| {
            let mut job = request("weir.noop", "default");
            let id = format!("{:x}{i:07x}-0000-4000-8000-{i:012x}", 2 + i % 14);
            job.id = Some(id.parse().expect("a UUID"));
            job
        })
        .collect();
    broker.enqueue(jobs).await.expect("enqueue");
    sweep_after_success(&broker, &index, 30).await;
}

/// A workflow that ended leaves its tenant's workflow index once its
/// record has expired, without anyone listing: maintenance sweeps it.
#[tokio::test]
async fn expired_workflows_leave_the_workflow_index() {
    use crate::workflow::{OnParentFailure, StepRequest, WorkflowRequest};
    let Some((broker, _cleanup)) = sandbox(Duration::from_millis(100)) else {
        return;
    };
    let prefix = broker.prefix.to_string();
    let mut conn = broker.conn.clone();
    for _ in 0..3 {
        broker
            .submit_workflow(WorkflowRequest {
                tenant: "t1".into(),
                name: "one".into(),
                steps: vec![StepRequest {
                    id: "only".into(),
                    needs: Vec::new(),
                    on_parent_failure: OnParentFailure::Cancel,
                    job: request("weir.noop", "default"),
                }],
            })
            .await
            .expect("submit");
    }
    succeed(&broker, &claim_default(&broker).await).await;
    let index = format!("{prefix}:wfs:t:t1");
    let before: i64 = conn.zcard(&index).await.expect("zcard");
    assert_eq!(before, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.maintain().await.expect("maintain");
    let after: i64 = conn.zcard(&index).await.expect("zcard");
    assert_eq!(
        after, 0,
        "ended, expired workflows are swept from the index"
    );
}

/// The Lua GCRA (`gcra` in common.lua, used by the claim and the keyed
/// limiter) gives the answers of the table the Rust one is held to.
#[tokio::test]
async fn lua_gcra_satisfies_the_table() {
    use crate::limit::gcra::{CASES, NOW};
    let Some((broker, _cleanup)) = sandbox(Duration::from_secs(60)) else {
        return;
    };
    let probe = scripts::script(
        "local ok, tat, rem, wait = gcra(tonumber(ARGV[2]), tonumber(ARGV[3]), \
         tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))\n\
         return {ok, rem, wait, string.format('%.0f', tat)}",
    );
    let mut conn = broker.conn.clone();
    for case in CASES {
        let rate = case.keyed_rate();
        let (ok, remaining, wait, tat): (i64, u32, i64, String) = probe
            .arg(&*broker.prefix)
            .arg(case.stored_tat())
            .arg(NOW)
            .arg(rate.interval_us())
            .arg(rate.burst)
            .arg(case.cost)
            .invoke_async(&mut conn)
            .await
            .expect("gcra");
        case.check((ok == 1, remaining, wait, tat.parse().expect("tat")));
    }
}
