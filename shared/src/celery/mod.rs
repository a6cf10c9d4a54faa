//! Celery compatibility: reading Celery's messages (kombu protocol v2,
//! JSON) for `weir celery-ingress`, and the records Celery's Redis result
//! backend holds, so producers' `AsyncResult(id).get()` keeps working.

mod message;
mod results;

pub use message::{CeleryTask, Rejected, job_id, parse, priority};
pub use results::{ResultState, meta};
