//! Embedding batches across concurrent jobs: one batcher per worker
//! process and provider. Jobs send their inputs (at most `max_batch` per
//! request); the batcher takes the first request, waits for a free call
//! (at most [`IN_FLIGHT`] at once; what arrives meanwhile joins the
//! batch), lingers up to the provider's `batch_linger` for more while they fit in one call,
//! sends the call through the key pool and hands each job its slice. A failed call fails only the
//! jobs whose inputs were in it; each decides what that means for it.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use weir_shared::broker::SharedBroker;
use weir_shared::embed::embed_remote;
use weir_shared::provider::{Providers, SendError};

/// Calls in flight per batcher: a burst must not become a 429 storm.
const IN_FLIGHT: usize = 4;

type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, SendError>>;

struct Request {
    inputs: Vec<String>,
    reply: Reply,
}

/// Merges the embedding requests of one process's jobs into calls.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Request>,
    max_batch: usize,
}

impl Batcher {
    /// Starts the batcher of `provider` (on the current runtime).
    /// `name` must be one of `providers`.
    pub(crate) fn start(
        providers: Providers,
        name: String,
        broker: SharedBroker,
        model: String,
        inline_wait: Duration,
    ) -> Self {
        let (max_batch, linger) = providers.get(&name).map_or((1, Duration::ZERO), |p| {
            (p.settings().max_batch.max(1), p.settings().batch_linger)
        });
        let (tx, rx) = mpsc::channel(1024);
        let target = Target {
            providers,
            name,
            broker,
            model,
            inline_wait,
        };
        tokio::spawn(run(rx, Arc::new(target), max_batch, linger));
        Batcher { tx, max_batch }
    }

    /// The most inputs one request may carry.
    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The vectors of `inputs` (at most [`Batcher::max_batch`]), in order.
    pub(crate) async fn embed(&self, inputs: Vec<String>) -> Result<Vec<Vec<f32>>, SendError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { inputs, reply })
            .await
            .map_err(|_| SendError::Retry("the embedding batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| SendError::Retry("the embedding batcher stopped".into()))?
    }
}

/// Where a batcher's calls go.
struct Target {
    providers: Providers,
    name: String,
    broker: SharedBroker,
    model: String,
    inline_wait: Duration,
}

impl Target {
    async fn call(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, SendError> {
        let provider = self.providers.get(&self.name).ok_or_else(|| {
            SendError::Fatal(format!("provider `{}` is not configured", self.name))
        })?;
        metrics::counter!("weir_embedding_calls_total", "provider" => self.name.clone())
            .increment(1);
        metrics::counter!("weir_embedding_inputs_total", "provider" => self.name.clone())
            .increment(inputs.len() as u64);
        embed_remote(
            provider,
            &self.broker,
            &self.model,
            inputs,
            self.inline_wait,
        )
        .await
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    target: Arc<Target>,
    max_batch: usize,
    linger: Duration,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        // Wait for a free call first: while every call is in flight, the
        // requests that arrive meanwhile join this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut size = batch[0].inputs.len();
        // What queued meanwhile comes at once; then up to `linger` more.
        let linger = tokio::time::sleep(linger);
        tokio::pin!(linger);
        while size < max_batch {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(r) if size + r.inputs.len() <= max_batch => {
                        size += r.inputs.len();
                        batch.push(r);
                    }
                    Some(r) => {
                        carried = Some(r);
                        break;
                    }
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        // A job cancelled while it waited has dropped its receiver.
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let target = target.clone();
        tokio::spawn(async move {
            let inputs: Vec<String> = batch.iter().flat_map(|r| r.inputs.clone()).collect();
            let answer = target.call(&inputs).await;
            drop(permit);
            match answer {
                Ok(mut vectors) => {
                    // Hand back from the end, so each slice is split off.
                    for request in batch.into_iter().rev() {
                        let start = vectors.len() - request.inputs.len();
                        let mine = vectors.split_off(start);
                        let _ = request.reply.send(Ok(mine));
                    }
                }
                Err(e) => {
                    for request in batch {
                        let _ = request.reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
