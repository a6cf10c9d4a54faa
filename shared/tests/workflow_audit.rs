//! The waiting audit of maintenance, on every broker: a step whose parent
//! ended without releasing it (a missed release, made here by writing the
//! parent's end straight into storage, bypassing the broker) is found by
//! the next maintenance pass, released by its policy, and counted.

use std::sync::Arc;
use std::time::Duration;
use weir_shared::broker::conformance::{request, service_url};
use weir_shared::broker::{ClaimRequest, Scope, SharedBroker};
use weir_shared::job::{JobId, JobState};
use weir_shared::workflow::{OnParentFailure, StepRequest, Workflow, WorkflowRequest};

fn step(id: &str, needs: &[&str], policy: OnParentFailure) -> StepRequest {
    StepRequest {
        id: id.into(),
        needs: needs.iter().map(|s| s.to_string()).collect(),
        on_parent_failure: policy,
        job: request("step", "wf"),
    }
}

/// Submits a -> b (cancel) and a -> c (run); returns the workflow and a's
/// job id, a claimed so that it is running.
async fn running_parent(broker: &SharedBroker) -> (Workflow, JobId) {
    let wf = broker
        .submit_workflow(WorkflowRequest {
            tenant: "t1".into(),
            name: "audit".into(),
            steps: vec![
                step("a", &[], OnParentFailure::Cancel),
                step("b", &["a"], OnParentFailure::Cancel),
                step("c", &["a"], OnParentFailure::Run),
            ],
        })
        .await
        .expect("submit");
    let claimed = broker
        .claim(ClaimRequest {
            worker: "w".into(),
            queues: vec!["wf".into()],
            limit: 10,
            lease: Duration::from_secs(30),
            limits: Arc::default(),
            tasks: None,
        })
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let a = wf.step("a").expect("a").job_id;
    (wf, a)
}

/// After the parent's end was written without its release: the audit
/// releases both children by their policies and says so.
async fn audit_repairs(broker: SharedBroker, wf: &Workflow) {
    let state = |name: &str| {
        let id = wf.step(name).expect("step").job_id;
        let broker = broker.clone();
        async move {
            broker
                .get(&Scope::All, id)
                .await
                .expect("get")
                .expect("job")
                .state
        }
    };
    assert_eq!(
        state("b").await,
        JobState::Waiting,
        "the release was missed"
    );
    let pass = broker.maintain().await.expect("maintain");
    assert_eq!(pass.repaired, 2, "{pass:?}");
    assert_eq!(state("b").await, JobState::Cancelled, "b's policy: cancel");
    assert_eq!(state("c").await, JobState::Queued, "c's policy: run");
    let job = broker
        .get(&Scope::All, wf.step("b").expect("b").job_id)
        .await
        .expect("get")
        .expect("b");
    assert!(job.error.is_some_and(|e| e.contains("`a`")));
}

#[tokio::test]
async fn the_audit_repairs_a_missed_release_on_sqlite() {
    use weir_shared::broker::sqlite::{Durability, SqliteBroker};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.db");
    let path = path.to_str().expect("utf-8");
    let broker: SharedBroker = Arc::new(
        SqliteBroker::open(path, Durability::Normal)
            .await
            .expect("broker"),
    );
    let (wf, a) = running_parent(&broker).await;
    let mut conn =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite://{path}"))
            .await
            .expect("connect");
    sqlx::query(
        "UPDATE jobs SET state = 'failed', error = 'written by hand', finished_at = 1, \
         lease_owner = NULL, lease_expires_at = NULL WHERE id = ?1",
    )
    .bind(a.to_string())
    .execute(&mut conn)
    .await
    .expect("write the parent's end");
    audit_repairs(broker, &wf).await;
}

#[tokio::test]
async fn the_audit_repairs_a_missed_release_on_postgres() {
    use weir_shared::broker::postgres::SchemaCleanup;
    let Some((broker, cleanup)) = SchemaCleanup::test_broker(2).await else {
        return;
    };
    let (url, schema) = (cleanup.url.clone(), cleanup.schema.clone());
    let broker: SharedBroker = Arc::new(broker);
    let (wf, a) = running_parent(&broker).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {schema}.jobs SET state = 'failed', error = 'written by hand', finished_at = 1, \
         lease_owner = NULL, lease_expires_at = NULL WHERE id = $1"
    )))
    .bind(a.0)
    .execute(&mut conn)
    .await
    .expect("write the parent's end");
    audit_repairs(broker, &wf).await;
}

#[tokio::test]
async fn the_audit_repairs_a_missed_release_on_redis() {
    use weir_shared::broker::Retention;
    use weir_shared::broker::redis::{PrefixCleanup, RedisBroker};
    let Some(url) = service_url("WEIR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15") else {
        return;
    };
    let prefix = format!("weirtest-{}", uuid::Uuid::now_v7().simple());
    let _cleanup = PrefixCleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    let broker: SharedBroker =
        Arc::new(RedisBroker::open(&url, &prefix, Retention::default()).expect("broker"));
    let (wf, a) = running_parent(&broker).await;
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{prefix}:j:{a}"))
        .arg(&[
            "state",
            "failed",
            "error",
            "written by hand",
            "finished_at",
            "1",
        ])
        .ignore()
        .cmd("ZREM")
        .arg(format!("{prefix}:{{q:wf}}:running"))
        .arg(a.to_string())
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("write the parent's end");
    audit_repairs(broker, &wf).await;
}
