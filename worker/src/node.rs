//! The job runtime of one process: a fixed number of slots, a fetcher that
//! claims only as many jobs as slots are free, a renewer that keeps leases
//! alive, and a flusher that acknowledges completions in batches.
//!
//! Concurrency protocol:
//! - `slots` is a semaphore. The fetcher holds the permits it has while it
//!   claims and hands one to each job it got back; an idle slot is a permit
//!   in the semaphore. So a claim never asks for more jobs than free slots
//!   (demand-driven fetch) and nothing sits prefetched in memory.
//! - `running` maps each job to its lease and a cancellation token. The
//!   renewer extends all of them in one call every third of the lease;
//!   leases the broker says are no longer held (cancelled, reaped) have
//!   their handlers cancelled and removed, and their late results dropped.
//! - A finished job frees its slot, then reports its completion to the
//!   fetcher. On a backend that records acknowledgements and a claim in
//!   one step ([`weir_shared::broker::Broker::merges_acks`]) the fetcher
//!   sends the reports gathered so far with its next claim; otherwise (and
//!   whenever it has no free slot to claim with) it hands them to the
//!   flusher, which sends all that have gathered in one broker call as soon
//!   as the previous call returns: batches grow under load and stay at one
//!   job when idle (group commit).

use crate::executor::{Ended, execute};
use crate::task::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weir_shared::broker::{
    BrokerError, ClaimRequest, ClaimedJob, Completion, Lease, Outcome, SharedBroker, maintain,
};
use weir_shared::config::Settings;
use weir_shared::job::JobId;
use weir_shared::queue_order::QueueOrder;

/// Completions sent per broker call at most.
const FLUSH_BATCH: usize = 512;

/// What a node runtime needs to know.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Lease owner name: unique per process.
    pub worker_id: String,
    /// Queues and their order.
    pub queues: QueueOrder,
    /// Jobs run at once.
    pub slots: u32,
    /// Stop claiming after this many jobs (the process is then recycled);
    /// `None` for no limit.
    pub max_claims: Option<u64>,
    /// New slot counts while running (autoscaling); `None` for fixed slots.
    pub slot_control: Option<watch::Receiver<u32>>,
}

/// Counters a node keeps for its heartbeat.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Jobs running now.
    pub busy: AtomicU32,
    /// Jobs finished (any outcome).
    pub processed: AtomicU64,
    /// Slots in service now.
    pub slots: AtomicU32,
    /// True once `max_claims` is reached: no more claims from this process.
    pub exhausted: AtomicBool,
    /// Woken when `exhausted` turns true, so the news travels at once.
    pub changed: Notify,
}

struct Running {
    lease: Lease,
    cancel: CancellationToken,
}

type RunningMap = Arc<Mutex<HashMap<JobId, Running>>>;

fn lock(map: &RunningMap) -> std::sync::MutexGuard<'_, HashMap<JobId, Running>> {
    // A panic while holding this lock cannot leave the map half-updated
    // (every critical section is a single insert, remove or clone), so a
    // poisoned lock is still safe to use.
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs jobs until `shutdown` fires, then stops claiming, waits up to
/// `settings.worker.shutdown_timeout` for running jobs, hands the rest back
/// to the broker at once, flushes every completion and returns.
pub async fn run_node(
    broker: SharedBroker,
    registry: Arc<Registry>,
    settings: Arc<Settings>,
    options: NodeOptions,
    stats: Arc<NodeStats>,
    shutdown: CancellationToken,
) {
    let lease = settings.worker.lease;
    let limits = Arc::new(settings.limits.clone());
    // Only jobs this node can run: in a rolling deploy, a task whose
    // handler is not here yet waits for a node that has it.
    let handled = Arc::new(registry.names().map(str::to_owned).collect::<Vec<_>>());
    let running: RunningMap = Arc::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
    let (flush_tx, flush_rx) = mpsc::unbounded_channel::<Vec<Completion>>();
    let flusher = tokio::spawn(flush(broker.clone(), flush_rx));
    let merge = broker.merges_acks();
    let mut pending: Vec<Completion> = Vec::new();
    let background = CancellationToken::new();
    let renewer = tokio::spawn(renew(
        broker.clone(),
        running.clone(),
        lease,
        background.clone(),
    ));
    let maintainer = tokio::spawn(maintain::run(
        broker.clone(),
        maintain::MAINTENANCE_EVERY,
        background.clone().cancelled_owned(),
    ));

    let slots = Arc::new(Semaphore::new(options.slots as usize));
    stats.slots.store(options.slots, Ordering::Relaxed);
    if let Some(control) = options.slot_control.clone() {
        tokio::spawn(resize(control, slots.clone(), options.slots, stats.clone()));
    }
    let mut jobs = JoinSet::new();
    let mut idle_wait = Duration::from_millis(1);
    let mut failures = 0u32;
    let mut claimed_total: u64 = 0;
    tracing::info!(
        worker = %options.worker_id,
        slots = options.slots,
        queues = %options.queues.to_spec(),
        "Worker ready"
    );
    loop {
        if options.max_claims.is_some_and(|max| claimed_total >= max) {
            // Done: finish what runs, claim nothing more, wait to be stopped.
            tracing::info!(
                claimed = claimed_total,
                "Task limit reached; waiting to be replaced"
            );
            stats.exhausted.store(true, Ordering::Relaxed);
            stats.changed.notify_waiters();
            forward(&mut pending, &flush_tx);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    n = done_rx.recv_many(&mut pending, FLUSH_BATCH) => {
                        if n == 0 {
                            break;
                        }
                        forward(&mut pending, &flush_tx);
                    }
                }
            }
            break;
        }
        // Wait for a free slot or a finished job (a job frees its slot
        // before it reports), then take every free slot and every report.
        // Reports already gathered (during an idle wait) do not wait.
        let mut permits = Vec::new();
        if pending.is_empty() {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = done_rx.recv_many(&mut pending, FLUSH_BATCH) => {},
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                },
            }
        } else if shutdown.is_cancelled() {
            break;
        }
        while pending.len() < FLUSH_BATCH {
            match done_rx.try_recv() {
                Ok(c) => pending.push(c),
                Err(_) => break,
            }
        }
        let room = options.max_claims.map_or(usize::MAX, |max| {
            usize::try_from(max - claimed_total).unwrap_or(usize::MAX)
        });
        while permits.len() < room {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        if permits.is_empty() {
            // Every slot is taken (or being retired): acknowledge alone.
            forward(&mut pending, &flush_tx);
            continue;
        }
        let request = ClaimRequest {
            worker: options.worker_id.clone(),
            queues: options.queues.draw(&mut rand::rng()),
            limit: permits.len(),
            lease,
            limits: limits.clone(),
            tasks: Some(handled.clone()),
        };
        let result = if merge && !pending.is_empty() {
            // The acknowledgements ride with the claim: one broker step.
            let acks = std::mem::take(&mut pending);
            match broker.complete_and_claim(&acks, &request).await {
                Ok((stale, claimed)) => {
                    crate::ack::report_stale(stale);
                    Ok(claimed)
                }
                Err(e) => {
                    // Not recorded: the flusher retries them as it does
                    // any batch the broker did not take (and sorts out one
                    // it refuses). A refused acknowledgement is no reason
                    // to stop claiming; an unreachable broker is.
                    let _ = flush_tx.send(acks);
                    match e {
                        BrokerError::Unavailable(_) => Err(e),
                        _ => broker.claim(request).await,
                    }
                }
            }
        } else {
            forward(&mut pending, &flush_tx);
            broker.claim(request).await
        };
        let claimed = match result {
            Ok(claimed) => {
                if failures > 0 {
                    tracing::info!(failures, "Broker reachable again; claiming");
                    failures = 0;
                }
                claimed
            }
            Err(e) => {
                // Keep trying, more slowly each time (up to 5 s), and resume
                // by ourselves when the broker is back.
                failures += 1;
                let wait = Duration::from_millis(250 * (1u64 << failures.min(5)))
                    .min(Duration::from_secs(5));
                tracing::warn!(error = %e, failures, retry_in = ?wait, "Claim failed; retrying");
                drop(permits);
                let until = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break,
                        () = shutdown.cancelled() => break,
                        n = done_rx.recv_many(&mut pending, FLUSH_BATCH) => {
                            if n == 0 {
                                break;
                            }
                            forward(&mut pending, &flush_tx);
                        }
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
        };
        if claimed.is_empty() {
            drop(permits);
            // A job that finishes meanwhile ends the wait: its report goes
            // with the next claim.
            tokio::select! {
                () = broker.wait_for_work(idle_wait) => {},
                () = shutdown.cancelled() => break,
                _ = done_rx.recv_many(&mut pending, FLUSH_BATCH) => {},
            }
            idle_wait = (idle_wait * 2).min(broker.max_idle_wait());
            continue;
        }
        idle_wait = Duration::from_millis(1);
        claimed_total += claimed.len() as u64;
        for (job, permit) in claimed.into_iter().zip(permits) {
            let cancel = CancellationToken::new();
            lock(&running).insert(
                job.lease.id,
                Running {
                    lease: job.lease,
                    cancel: cancel.clone(),
                },
            );
            stats.busy.fetch_add(1, Ordering::Relaxed);
            if let Some(waited) = job.waited {
                metrics::histogram!("weir_job_wait_seconds", "queue" => job.queue.clone())
                    .record(waited.as_secs_f64());
            }
            let ctx = JobRun {
                broker: broker.clone(),
                registry: registry.clone(),
                settings: settings.clone(),
                running: running.clone(),
                done: done_tx.clone(),
                stats: stats.clone(),
            };
            // Everything logged while the job runs, its handler's lines
            // included, carries the job's id, attempt, task, queue, tenant
            // and the node (and process) that runs it.
            let span = tracing::info_span!(
                "job",
                node = %options.worker_id,
                job_id = %job.lease.id,
                attempt = job.lease.attempt,
                task = %job.task,
                queue = %job.queue,
                tenant = %job.tenant,
            );
            jobs.spawn(tracing::Instrument::instrument(
                ctx.run(job, cancel, permit),
                span,
            ));
        }
        // Reap finished job tasks so the set does not grow.
        while jobs.try_join_next().is_some() {}
    }

    forward(&mut pending, &flush_tx);
    drain(
        &mut jobs,
        &running,
        &done_tx,
        settings.worker.shutdown_timeout,
    )
    .await;
    drop(done_tx);
    while done_rx.recv_many(&mut pending, FLUSH_BATCH).await > 0 {
        forward(&mut pending, &flush_tx);
    }
    drop(flush_tx);
    if let Err(e) = flusher.await {
        tracing::error!(error = %e, "Completion flusher failed");
    }
    background.cancel();
    let _ = tokio::join!(renewer, maintainer);
    tracing::info!(worker = %options.worker_id, "Worker stopped");
}

/// Waits for running jobs up to `timeout`, then hands the rest back.
async fn drain(
    jobs: &mut JoinSet<()>,
    running: &RunningMap,
    done: &mpsc::UnboundedSender<Completion>,
    timeout: Duration,
) {
    let count = lock(running).len();
    if count > 0 {
        tracing::info!(running = count, timeout = ?timeout, "Waiting for running jobs");
    }
    let deadline = Instant::now() + timeout;
    while !jobs.is_empty() {
        match tokio::time::timeout_at(deadline.into(), jobs.join_next()).await {
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let left: Vec<Running> = lock(running).drain().map(|(_, r)| r).collect();
    if !left.is_empty() {
        tracing::warn!(
            jobs = left.len(),
            "Handing unfinished jobs back to the queue"
        );
    }
    for r in left {
        r.cancel.cancel();
        let _ = done.send(Completion {
            lease: r.lease,
            outcome: Outcome::Released,
        });
    }
    while jobs.join_next().await.is_some() {}
}

/// Everything one job's task needs.
struct JobRun {
    broker: SharedBroker,
    registry: Arc<Registry>,
    settings: Arc<Settings>,
    running: RunningMap,
    done: mpsc::UnboundedSender<Completion>,
    stats: Arc<NodeStats>,
}

impl JobRun {
    async fn run(self, job: ClaimedJob, cancel: CancellationToken, permit: OwnedSemaphorePermit) {
        let started = Instant::now();
        let ended = execute(
            &job,
            &self.registry,
            &self.settings,
            self.broker.clone(),
            cancel,
        )
        .await;
        self.stats.busy.fetch_sub(1, Ordering::Relaxed);
        // The slot is free before the report is sent, so the fetcher that
        // wakes for the report finds the slot and sends both in one call.
        drop(permit);
        // Only the task that removes the job from `running` reports for it:
        // the renewer removes jobs whose lease was lost, and the drain
        // removes those it hands back.
        let still_ours = lock(&self.running).remove(&job.lease.id).is_some();
        let Ended::Finished(outcome) = ended else {
            return;
        };
        if !still_ours {
            return;
        }
        let label = match &outcome {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed {
                retry_in: Some(_), ..
            } if job.retries_left > 0 => "retried",
            Outcome::Failed { .. } => "failed",
            Outcome::Released => "released",
            Outcome::Snoozed { .. } => "snoozed",
        };
        if let Outcome::Failed { error, .. } = &outcome {
            tracing::warn!(error = %error, "Attempt failed");
        }
        metrics::counter!("weir_jobs_finished_total", "queue" => job.queue.clone(), "task" => job.task.clone(), "outcome" => label).increment(1);
        metrics::histogram!("weir_job_duration_seconds", "queue" => job.queue.clone(), "task" => job.task.clone())
            .record(started.elapsed().as_secs_f64());
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        let _ = self.done.send(Completion {
            lease: job.lease,
            outcome,
        });
    }
}

/// Hands the gathered reports to the flusher (nothing when there are none).
fn forward(pending: &mut Vec<Completion>, flush: &mpsc::UnboundedSender<Vec<Completion>>) {
    if !pending.is_empty() {
        let _ = flush.send(std::mem::take(pending));
    }
}

/// Sends the batches it is handed, merging those that gathered while the
/// previous call ran, until the channel closes and is empty (`ack`: what
/// happens when the broker does not take a batch).
async fn flush(broker: SharedBroker, mut rx: mpsc::UnboundedReceiver<Vec<Completion>>) {
    let mut batches = Vec::new();
    let complete = |batch: Vec<Completion>| {
        let broker = broker.clone();
        async move { broker.complete(batch).await }
    };
    while rx.recv_many(&mut batches, FLUSH_BATCH).await > 0 {
        let mut all: Vec<Completion> = batches.drain(..).flatten().collect();
        while !all.is_empty() {
            let rest = all.split_off(all.len().min(FLUSH_BATCH));
            crate::ack::acknowledge(&complete, all).await;
            all = rest;
        }
    }
}

/// Renews every running lease each third of the lease; cancels the handlers
/// of leases that are no longer held.
async fn renew(
    broker: SharedBroker,
    running: RunningMap,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = stop.cancelled() => return,
        }
        let leases: Vec<Lease> = lock(&running).values().map(|r| r.lease).collect();
        if leases.is_empty() {
            continue;
        }
        match broker.renew(&leases, lease).await {
            Ok(lost) => {
                let mut map = lock(&running);
                for l in lost {
                    if let Some(r) = map.remove(&l.id) {
                        tracing::info!(job_id = %l.id, attempt = l.attempt, "Lease no longer held (cancelled or expired); stopping the handler");
                        r.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "Lease renewal failed; will retry"),
        }
    }
}

/// Follows slot-count changes. Growing adds permits at once; shrinking takes
/// permits as running jobs give them back and retires them, so a running job
/// is never interrupted.
async fn resize(
    mut control: watch::Receiver<u32>,
    slots: Arc<Semaphore>,
    mut current: u32,
    stats: Arc<NodeStats>,
) {
    while control.changed().await.is_ok() {
        let target = *control.borrow_and_update();
        if target > current {
            slots.add_permits((target - current) as usize);
        } else if target < current {
            match slots.clone().acquire_many_owned(current - target).await {
                Ok(permits) => permits.forget(),
                Err(_) => return,
            }
        }
        current = target;
        stats.slots.store(current, Ordering::Relaxed);
        tracing::info!(slots = current, "Slots changed");
    }
}
