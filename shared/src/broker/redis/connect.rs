//! Opening the connection (lazy, reconnecting), key names, the error
//! mapping and the wake-up channel idle workers wait on.

use super::{RedisBroker, codec, scripts::Scripts};
use crate::broker::{BrokerError, BrokerResult};
use crate::job::Job;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Server refusals that are not the caller's fault and pass by themselves:
/// out of memory under `noeviction`, loading its dataset after a restart,
/// busy with a long script, a read-only replica or a primary that is down
/// (failover under way). Redis runs nothing of a refused command, so the
/// same call may be repeated once it answers again.
const REFUSALS: [&str; 7] = [
    "OOM",
    "LOADING",
    "BUSY",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
];

/// Redis failures that a retry may cure (no connection, a timeout, a
/// refusal of the server's) are "unavailable"; the rest are bugs.
pub(super) fn from_redis(e: redis::RedisError) -> BrokerError {
    let refused = e.code().is_some_and(|code| REFUSALS.contains(&code))
        // A refusal met inside a script comes back wrapped in the script's error.
        || REFUSALS.iter().any(|code| e.to_string().contains(&format!("{code} ")));
    if refused
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        BrokerError::Unavailable(e.to_string())
    } else {
        BrokerError::internal_from("Redis", e)
    }
}

impl RedisBroker {
    /// Connects lazily: the broker is usable at once, and calls fail with
    /// `Unavailable` while Redis cannot be reached.
    pub fn open(
        url: &str,
        prefix: &str,
        retention: crate::broker::Retention,
    ) -> BrokerResult<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| BrokerError::Config(format!("bad Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| BrokerError::Config(format!("Redis connection settings: {e}")))?;
        Ok(RedisBroker {
            conn,
            client,
            prefix: prefix.into(),
            retention,
            scripts: Arc::new(Scripts::load()),
            wake: Arc::new(Notify::new()),
            listening: Arc::new(AtomicBool::new(false)),
            audits: Arc::default(),
        })
    }

    pub(super) fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    pub(super) fn job_key(&self, id: &str) -> String {
        format!("{}:j:{id}", self.prefix)
    }

    pub(super) fn queue_key(&self, queue: &str, suffix: &str) -> String {
        format!("{}:{{q:{queue}}}:{suffix}", self.prefix)
    }

    /// Reads one job by id (any tenant).
    pub(super) async fn load(&self, id: &str) -> BrokerResult<Option<Job>> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> =
            conn.hgetall(self.job_key(id)).await.map_err(from_redis)?;
        codec::from_hash(id, &fields)
    }

    /// Starts listening for wake-ups (once per broker), reconnecting as needed.
    pub(super) fn listen(&self) {
        if self.listening.swap(true, Ordering::Relaxed) {
            return;
        }
        let client = self.client.clone();
        let channel = self.key("wake");
        let wake: Weak<Notify> = Arc::downgrade(&self.wake);
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            let mut messages = pubsub.on_message();
                            while messages.next().await.is_some() {
                                match wake.upgrade() {
                                    Some(w) => w.notify_waiters(),
                                    None => return,
                                }
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "Wake-up channel unavailable"),
                }
                if wake.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}
