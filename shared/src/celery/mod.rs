//! Celery compatibility: reading Celery's messages (kombu protocol v2,
//! JSON) for `weir celery-ingress`, and the records Celery's Redis result
//! backend holds, so producers' `AsyncResult(id).get()` keeps working.

mod ingress;
mod message;
mod results;

pub use ingress::{
    Ingress, IngressError, IngressOptions, QueueRoute, RECOVER_EVERY, REJECTED_TASK, STALE,
};

pub use message::{CeleryTask, Rejected, job_id, parse, priority};
pub use results::{ResultState, meta};

/// How the error of a job that expired before it ran begins (Celery reads
/// such a job as `REVOKED`).
pub const EXPIRED: &str = "expired at";
