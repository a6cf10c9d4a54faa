//! Claim and lease renewal: `claim.lua` leases jobs and takes their
//! permits in one step; `renew.lua` extends leases still held.

use super::{RedisBroker, codec, from_redis};
use crate::broker::{BrokerResult, ClaimRequest, ClaimedJob, Lease};
use crate::job::duration_ms;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

impl RedisBroker {
    pub(super) async fn claim_jobs(&self, request: ClaimRequest) -> BrokerResult<Vec<ClaimedJob>> {
        if request.limit == 0 || request.queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(&request.worker)
            .arg(duration_ms(request.lease))
            .arg(request.limit)
            .arg(request.limits.encoded())
            .arg(
                request
                    .tasks
                    .as_ref()
                    .map(|t| serde_json::to_string(t.as_ref()).unwrap_or_default())
                    .unwrap_or_default(),
            );
        for q in &request.queues {
            invocation.arg(q);
        }
        let rows: Vec<redis::Value> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        rows.chunks(6).map(codec::claimed).collect()
    }

    pub(super) async fn renew_leases(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> BrokerResult<Vec<Lease>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Value> = leases
            .iter()
            .map(|l| json!([l.id.to_string(), l.attempt]))
            .collect();
        let mut conn = self.conn.clone();
        let lost: Vec<String> = self
            .scripts
            .renew
            .arg(&*self.prefix)
            .arg(duration_ms(lease))
            .arg(Value::Array(entries).to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        let lost: HashSet<String> = lost.into_iter().collect();
        Ok(leases
            .iter()
            .filter(|l| lost.contains(&l.id.to_string()))
            .copied()
            .collect())
    }
}
