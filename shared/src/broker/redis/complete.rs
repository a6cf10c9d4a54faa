//! The ends of attempts and leases: completion (`complete.lua`),
//! progress, cancel and the maintenance pass that reaps expired leases.

use super::{RedisBroker, from_redis};
use crate::broker::{BrokerResult, Completion, Lease, Maintenance, Outcome, Scope};
use crate::job::{Job, JobId, duration_ms};
use serde_json::Value;
use std::collections::HashSet;

/// Expired leases returned and due jobs promoted per queue and maintenance pass.
const MAINTAIN_BATCH: i64 = 1000;
/// Listing-index entries older than the retention looked at per
/// maintenance pass (expired ones are dropped): a pass blocks Redis about
/// a millisecond.
const SWEEP_BATCH: i64 = 1000;

impl RedisBroker {
    pub(super) async fn complete_jobs(
        &self,
        completions: Vec<Completion>,
    ) -> BrokerResult<Vec<Lease>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.complete.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(duration_ms(self.retention.succeeded))
            .arg(duration_ms(self.retention.failed));
        for c in &completions {
            let (kind, value, delay) = match &c.outcome {
                Outcome::Succeeded(result) => ("s", result.to_string(), None),
                Outcome::Failed { error, retry_in } => (
                    "f",
                    crate::job::truncate_error(error),
                    retry_in.map(duration_ms),
                ),
                Outcome::Released => ("r", String::new(), None),
                Outcome::Snoozed { reason, delay } => (
                    "z",
                    crate::job::truncate_error(reason),
                    Some(duration_ms(*delay)),
                ),
            };
            invocation
                .arg(c.lease.id.to_string())
                .arg(c.lease.attempt)
                .arg(kind)
                .arg(value)
                .arg(delay.map(|d| d.to_string()).unwrap_or_default());
        }
        let mut conn = self.conn.clone();
        let stale: Vec<String> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let stale: HashSet<String> = stale.into_iter().collect();
        Ok(completions
            .iter()
            .map(|c| c.lease)
            .filter(|l| stale.contains(&l.id.to_string()))
            .collect())
    }

    pub(super) async fn store_progress(&self, lease: Lease, progress: Value) -> BrokerResult<bool> {
        let mut conn = self.conn.clone();
        let stored: i64 = self
            .scripts
            .progress
            .arg(&*self.prefix)
            .arg(lease.id.to_string())
            .arg(lease.attempt)
            .arg(progress.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(stored == 1)
    }

    pub(super) async fn cancel_job(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let answer = self
            .run_on_job(
                &self.scripts.cancel,
                scope,
                id,
                Some(duration_ms(self.retention.failed)),
            )
            .await?;
        self.answer(answer, scope, id).await
    }

    pub(super) async fn maintain_pass(&self) -> BrokerResult<Maintenance> {
        let mut conn = self.conn.clone();
        let (requeued, dead, promoted, repaired): (u64, u64, u64, u64) = self
            .scripts
            .maintain
            .arg(&*self.prefix)
            .arg(duration_ms(self.retention.succeeded))
            .arg(duration_ms(self.retention.failed))
            .arg(MAINTAIN_BATCH)
            .arg(SWEEP_BATCH)
            .arg(self.retention.keep.unwrap_or(0))
            .arg(u8::from(self.audits.due()))
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(Maintenance {
            requeued,
            dead,
            promoted,
            repaired,
        })
    }
}
