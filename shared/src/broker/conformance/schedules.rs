//! Schedule ticks: each (schedule, fire time) enqueues one job, however
//! many callers fire it at once.

use super::{TestBroker, job_of, request};
use crate::broker::Tick;
use crate::job::{JobId, JobState, Millis, now_ms};

/// Five concurrent fires of one tick enqueue one job, with the tick's id;
/// the next tick is a new job; the state records the latest; pause sticks.
pub async fn ticks_fire_once(t: TestBroker) {
    let ft = Millis(now_ms().0 - now_ms().0 % 1000);
    let tick = |at: Millis| Tick {
        schedule: "warm".into(),
        fire_time: at,
        job: request("weir.noop", "default"),
    };
    let fires = (0..5).map(|_| t.broker.fire(tick(ft)));
    let results = futures::future::join_all(fires).await;
    let created: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.expect("fire"))
        .collect();
    assert_eq!(created.len(), 1, "one job per tick");
    let id = JobId::for_tick("warm", ft);
    assert_eq!(created[0].id, id);
    let job = job_of(&t, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert!(
        t.broker.fire(tick(ft)).await.expect("fire").is_none(),
        "later fires too"
    );
    let next = Millis(ft.0 + 1000);
    assert!(t.broker.fire(tick(next)).await.expect("fire").is_some());
    let states = t
        .broker
        .schedule_states(&["warm".to_owned(), "never".to_owned()])
        .await
        .expect("states");
    assert_eq!(states[0].last_fire, Some(next));
    assert_eq!(states[0].last_job, Some(JobId::for_tick("warm", next)));
    assert!(!states[0].paused);
    assert_eq!(states[1].last_fire, None);
    t.broker
        .set_schedule_paused("warm", true)
        .await
        .expect("pause");
    assert!(
        t.broker
            .schedule_states(&["warm".to_owned()])
            .await
            .expect("states")[0]
            .paused
    );
    t.broker
        .set_schedule_paused("warm", false)
        .await
        .expect("resume");
    assert!(
        !t.broker
            .schedule_states(&["warm".to_owned()])
            .await
            .expect("states")[0]
            .paused
    );
}
