//! Operator actions: retry a dead job, pause a queue, purge its waiting jobs.

use super::{RedisBroker, from_redis};
use crate::broker::{Admin, BrokerError, BrokerResult, Inspect, Scope};
use crate::job::{Job, JobId};
use async_trait::async_trait;
use redis::Script;

#[async_trait]
impl Admin for RedisBroker {
    async fn retry(&self, scope: &Scope, id: JobId) -> BrokerResult<Job> {
        let answer = self
            .run_on_job(&self.scripts.retry, scope, id, None)
            .await?;
        match answer.as_str() {
            "unique" => return Err(BrokerError::UniqueKeyHeld { holder: None }),
            "step" => return Err(crate::workflow::retry_the_workflow()),
            _ => {}
        }
        self.answer(answer, scope, id).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> BrokerResult<()> {
        let mut conn = self.conn.clone();
        let flag = self.queue_key(queue, "paused");
        let mut pipe = redis::pipe();
        pipe.atomic().sadd(self.key("queues"), queue).ignore();
        if paused {
            pipe.set(&flag, 1).ignore();
        } else {
            pipe.del(&flag).ignore();
            pipe.publish(self.key("wake"), queue).ignore();
        }
        pipe.query_async::<()>(&mut conn).await.map_err(from_redis)
    }

    async fn delete(&self, scope: &Scope, ids: &[JobId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(scope.tenant().unwrap_or(""));
        for id in ids {
            invocation.arg(id.to_string());
        }
        let n: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge(&self, queue: &str) -> BrokerResult<u64> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .purge
            .arg(&*self.prefix)
            .arg(queue)
            .invoke_async(&mut conn)
            .await
            .map_err(from_redis)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl RedisBroker {
    /// Runs a cancel or retry script on a job the scope may see.
    pub(super) async fn run_on_job(
        &self,
        script: &Script,
        scope: &Scope,
        id: JobId,
        retention: Option<i64>,
    ) -> BrokerResult<String> {
        let mut conn = self.conn.clone();
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&*self.prefix)
            .arg(id.to_string())
            .arg(scope.tenant().unwrap_or(""));
        if let Some(r) = retention {
            invocation.arg(r);
        }
        invocation.invoke_async(&mut conn).await.map_err(from_redis)
    }

    pub(super) async fn answer(
        &self,
        answer: String,
        scope: &Scope,
        id: JobId,
    ) -> BrokerResult<Job> {
        match answer.as_str() {
            "ok" => self.get(scope, id).await?.ok_or(BrokerError::NotFound),
            "missing" => Err(BrokerError::NotFound),
            state => Err(BrokerError::Conflict(
                state.parse().map_err(BrokerError::internal)?,
            )),
        }
    }
}
