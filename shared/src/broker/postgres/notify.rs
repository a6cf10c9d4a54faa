//! Waking idle workers. An enqueue that committed wakes this process's
//! waiters at once and asks for a `NOTIFY` on the schema's channel, sent
//! outside the enqueue's transaction (a transaction that notifies takes a
//! database-wide lock at commit) and at most once per [`DEBOUNCE`]: a burst
//! of ten thousand enqueues costs a handful of notifications. One `LISTEN`
//! connection per process turns notifications from other processes into
//! wake-ups. A lost notification costs one poll; with notifications off
//! (`WEIR_POSTGRES_NOTIFY=false`, for PgBouncer in transaction mode) idle
//! workers poll every [`POLL_ONLY_WAIT`].

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Notifications sent per process at most once per this.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// The longest idle wait between claims when notifications wake workers:
/// the floor for what no notification announces (a delayed job coming due,
/// a permit freed by another node).
const NOTIFIED_WAIT: Duration = Duration::from_millis(100);
/// The idle wait between claims when nothing wakes workers.
const POLL_ONLY_WAIT: Duration = Duration::from_millis(200);

/// Wake-ups for one broker handle.
#[derive(Debug)]
pub(super) struct Wake {
    local: Notify,
    /// Ask the sender for a NOTIFY (None: notifications are off).
    send: Option<mpsc::UnboundedSender<()>>,
}

impl Wake {
    /// Starts the sender and the listener (when `enabled`).
    pub(super) fn start(
        pool: &PgPool,
        options: PgConnectOptions,
        schema: &str,
        enabled: bool,
    ) -> Arc<Self> {
        let channel = format!("weir_{schema}");
        let send = enabled.then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_loop(pool.clone(), channel.clone(), rx));
            tx
        });
        let wake = Arc::new(Wake {
            local: Notify::new(),
            send,
        });
        if enabled {
            tokio::spawn(listen_loop(options, channel, Arc::downgrade(&wake)));
        }
        wake
    }

    /// Work was committed: wake local waiters and, debounced, every process.
    pub(super) fn work_added(&self) {
        self.local.notify_waiters();
        if let Some(send) = &self.send {
            let _ = send.send(());
        }
    }

    /// Wakes this process's idle workers only (a permit this process freed
    /// is most cheaply taken by its own next claim).
    pub(super) fn wake_local(&self) {
        self.local.notify_waiters();
    }

    /// Waits for a wake-up, or `max`.
    pub(super) async fn wait(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.local.notified()).await;
    }

    /// How long an idle worker may wait between claims.
    pub(super) fn max_idle_wait(&self) -> Duration {
        if self.send.is_some() {
            NOTIFIED_WAIT
        } else {
            POLL_ONLY_WAIT
        }
    }
}

/// Sends one NOTIFY per request, then ignores requests for [`DEBOUNCE`]
/// and sends one more if any came meanwhile. Ends with the broker.
async fn send_loop(pool: PgPool, channel: String, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        while rx.try_recv().is_ok() {}
        let done = sqlx::query("SELECT pg_notify($1, '')")
            .bind(&channel)
            .execute(&pool)
            .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "NOTIFY failed; idle workers poll meanwhile");
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Listens on the channel and wakes this process's waiters; reconnects
/// after a lost connection (polls cover the gap). Ends with the broker.
async fn listen_loop(options: PgConnectOptions, channel: String, wake: std::sync::Weak<Wake>) {
    let mut failures = 0u32;
    loop {
        if wake.strong_count() == 0 {
            return;
        }
        let listener = async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options.clone());
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(l) => {
                failures = 0;
                l
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "LISTEN failed; idle workers poll meanwhile");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), listener.try_recv()).await;
            let Some(wake) = wake.upgrade() else {
                return;
            };
            match next {
                Ok(Ok(Some(_))) => wake.local.notify_waiters(),
                Ok(Ok(None)) => {
                    // The connection was lost and is re-established on the
                    // next call; wake waiters in case something was missed.
                    wake.local.notify_waiters();
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
                Err(_) => {} // no notification for a while: check the broker still exists
            }
        }
    }
}
