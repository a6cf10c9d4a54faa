//! `document.index`: extract, clean, split, embed what the cache lacks,
//! then replace the document's segments and vectors in one step.
//!
//! Payload: `{"dataset", "document_id", "text"}` or `"url"` instead of
//! `text` (fetched through the outbound guard), `format` (`text`,
//! `markdown`, `html`, `pdf`; else from the response's `Content-Type` or
//! the name's extension), `splitter` (`{"separator": "\n", "max_tokens":
//! 500, "overlap": 50}`). Progress: `extracting`, `splitting`, then
//! `{"stage": "embedding", "done", "total"}` after each batch (at most one a
//! second), `writing`. Result: `{"segments", "embedded", "cached",
//! "tokens"}`. A document that cannot be read, an unknown dataset or a
//! refused URL fails at once, and the previous version stays searchable.

use crate::batcher::Batcher;
use crate::provider::{INLINE_WAIT, Providers, outcome};
use crate::task::{Context, Registry, TaskError};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use weir_shared::config::{DatasetSettings, Embedding, Settings, valid_dataset_name};
use weir_shared::embed::embed_local;
use weir_shared::index::{Format, SplitOptions, clean, count_tokens, extract, split};
use weir_shared::job::now_ms;
use weir_shared::outbound::{Client, ClientOptions};
use weir_shared::vector::{
    self, Generation, ReplaceDocument, Replaced, Segment, SharedStore, VectorError,
};

/// The largest document fetched from a URL.
const MAX_FETCH_BYTES: usize = 20 << 20;
/// The longest document id.
const MAX_DOCUMENT_ID: usize = 256;
/// How often a process drops cache entries past `cache_ttl`.
const EXPIRE_EVERY_MS: i64 = 3_600_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    dataset: String,
    document_id: String,
    text: Option<String>,
    url: Option<String>,
    format: Option<String>,
    splitter: Option<Splitter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Splitter {
    separator: Option<String>,
    max_tokens: Option<usize>,
    overlap: Option<usize>,
}

/// What every `document.index` of a process shares.
struct Indexer {
    settings: DatasetSettings,
    providers: Providers,
    fetcher: Result<Client, String>,
    store: OnceCell<SharedStore>,
    batcher: OnceLock<Batcher>,
    expired_at: AtomicI64,
}

/// Registers `document.index` with the `[datasets]` settings.
pub(crate) fn register(registry: &mut Registry, settings: &Arc<Settings>) {
    let indexer = Arc::new(Indexer {
        settings: settings.datasets.clone(),
        providers: crate::provider::providers(settings),
        fetcher: Client::new(&ClientOptions {
            allow_hosts: settings.outbound.allow_hosts.clone(),
            timeout: settings.outbound.timeout,
            max_response_bytes: MAX_FETCH_BYTES,
            follow_redirects: true,
        }),
        store: OnceCell::new(),
        batcher: OnceLock::new(),
        expired_at: AtomicI64::new(0),
    });
    registry.register("document.index", move |ctx: Context, payload: Payload| {
        let indexer = indexer.clone();
        async move {
            tokio::select! {
                out = indexer.index(&ctx, payload) => out,
                () = ctx.cancelled() => Err(TaskError::retry("interrupted")),
            }
        }
    });
}

fn store_error(e: VectorError) -> TaskError {
    match e {
        VectorError::Unavailable(m) => TaskError::retry(m),
        other => TaskError::fatal(other.to_string()),
    }
}

impl Indexer {
    async fn store(&self) -> Result<&SharedStore, TaskError> {
        self.store
            .get_or_try_init(|| {
                vector::open(
                    &self.settings.vector_store,
                    self.settings.search_cache_bytes,
                )
            })
            .await
            .map_err(store_error)
    }

    fn check(&self, p: &Payload) -> Result<(), TaskError> {
        if !valid_dataset_name(&p.dataset) {
            return Err(TaskError::fatal(format!(
                "`{}` is not a dataset name: 1-64 of letters, digits, _ - .",
                p.dataset
            )));
        }
        if let Some(names) = &self.settings.names
            && !names.contains(&p.dataset)
        {
            return Err(TaskError::fatal(format!(
                "unknown dataset `{}`: [datasets] names lists {}",
                p.dataset,
                names.join(", ")
            )));
        }
        if p.document_id.is_empty()
            || p.document_id.len() > MAX_DOCUMENT_ID
            || p.document_id.chars().any(char::is_control)
        {
            return Err(TaskError::fatal(format!(
                "`document_id` must be 1-{MAX_DOCUMENT_ID} bytes without control characters"
            )));
        }
        match (&p.text, &p.url) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(TaskError::fatal(
                "give the document as exactly one of `text` or `url`",
            )),
        }
    }

    async fn index(&self, ctx: &Context, p: Payload) -> Result<Value, TaskError> {
        self.check(&p)?;
        let named = match p.format.as_deref() {
            None => None,
            Some(f) => Some(Format::parse(f).ok_or_else(|| {
                TaskError::fatal(format!(
                    "`format` `{f}` is not one of text, markdown, html, pdf"
                ))
            })?),
        };
        let options = splitter(p.splitter)?;
        ctx.progress(json!({"stage": "extracting"})).await;
        let (bytes, format) = match (p.text, &p.url) {
            (Some(text), _) => (text.into_bytes(), named.unwrap_or(Format::Text)),
            (None, Some(url)) => self.fetch(url, named).await?,
            (None, None) => return Err(TaskError::fatal("the document has no `text` or `url`")),
        };
        ctx.progress(json!({"stage": "splitting"})).await;
        let texts = tokio::task::spawn_blocking(move || {
            let text = extract(&bytes, format)?;
            Ok::<_, weir_shared::index::ExtractError>(split(&clean(&text), &options))
        })
        .await
        .map_err(|e| TaskError::retry(format!("splitting stopped: {e}")))?
        .map_err(|e| TaskError::fatal(e.to_string()))?;
        if texts.is_empty() {
            return Err(TaskError::fatal(
                "the document has no text to index (empty after extraction and cleaning)",
            ));
        }
        let hashes: Vec<String> = texts
            .iter()
            .map(|t| hex::encode(Sha256::digest(t.as_bytes())))
            .collect();
        let store = self.store().await?;
        let model = self.settings.embedding.model_id();
        let unique: Vec<String> = {
            let mut seen = HashSet::new();
            hashes
                .iter()
                .filter(|h| seen.insert(h.as_str()))
                .cloned()
                .collect()
        };
        let mut vectors = store.cached(&model, &unique).await.map_err(store_error)?;
        let cached = vectors.len();
        let missing: Vec<(String, String)> = unique
            .iter()
            .filter(|h| !vectors.contains_key(*h))
            .filter_map(|h| {
                let i = hashes.iter().position(|x| x == h)?;
                Some((h.clone(), texts[i].clone()))
            })
            .collect();
        let embedded = missing.len();
        self.embed(ctx, &model, missing, &mut vectors).await?;
        if ctx.is_cancelled() {
            return Err(TaskError::retry("interrupted"));
        }
        ctx.progress(json!({"stage": "writing"})).await;
        let mut tokens = 0u64;
        let mut segments = Vec::with_capacity(texts.len());
        for (seq, (text, sha256)) in texts.into_iter().zip(hashes).enumerate() {
            let vector = vectors
                .get(&sha256)
                .cloned()
                .ok_or_else(|| TaskError::retry("a segment's vector went missing"))?;
            let n = u32::try_from(count_tokens(&text)).unwrap_or(u32::MAX);
            tokens += u64::from(n);
            segments.push(Segment {
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                text,
                tokens: n,
                sha256,
                vector,
            });
        }
        let count = segments.len();
        let doc = ReplaceDocument {
            tenant: ctx.tenant().to_owned(),
            dataset: p.dataset,
            document_id: p.document_id,
            generation: Generation {
                at_ms: ctx.job_id().created_at().map_or(0, |m| m.0),
                id: ctx.job_id().to_string(),
            },
            model,
            segments,
        };
        let replaced = store.replace_document(&doc).await.map_err(store_error)?;
        self.expire(store);
        let mut result = json!({
            "segments": count,
            "embedded": embedded,
            "cached": cached,
            "tokens": tokens,
        });
        if replaced == Replaced::Superseded {
            result["superseded"] = json!(true);
        }
        Ok(result)
    }

    /// Embeds `missing` (hash, text) into `vectors`, caching each batch.
    async fn embed(
        &self,
        ctx: &Context,
        model: &str,
        missing: Vec<(String, String)>,
        vectors: &mut HashMap<String, Vec<f32>>,
    ) -> Result<(), TaskError> {
        let total = missing.len();
        if total == 0 {
            return Ok(());
        }
        let store = self.store().await?;
        match &self.settings.embedding {
            Embedding::Local => {
                let fresh = tokio::task::spawn_blocking(move || {
                    missing
                        .into_iter()
                        .map(|(h, t)| {
                            let v = embed_local(&t);
                            (h, v)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| TaskError::retry(format!("embedding stopped: {e}")))?;
                store.remember(model, &fresh).await.map_err(store_error)?;
                vectors.extend(fresh);
                ctx.progress(json!({"stage": "embedding", "done": total, "total": total}))
                    .await;
                Ok(())
            }
            Embedding::Provider {
                name,
                model: remote,
            } => {
                let provider = self.providers.get(name).ok_or_else(|| {
                    TaskError::fatal(format!("provider `{name}` is not configured"))
                })?;
                let batcher = self.batcher.get_or_init(|| {
                    Batcher::start(
                        self.providers.clone(),
                        name.clone(),
                        ctx.broker().clone(),
                        remote.clone(),
                        INLINE_WAIT,
                    )
                });
                // Send every chunk at once: the batcher merges them with
                // other jobs' and bounds the calls in flight.
                let chunks: Vec<Vec<(String, String)>> = missing
                    .chunks(batcher.max_batch())
                    .map(<[_]>::to_vec)
                    .collect();
                let mut pending = futures::stream::FuturesOrdered::new();
                for chunk in chunks {
                    let batcher = batcher.clone();
                    pending.push_back(async move {
                        let texts = chunk.iter().map(|(_, t)| t.clone()).collect();
                        (chunk, batcher.embed(texts).await)
                    });
                }
                let mut done = 0;
                let mut reported = Instant::now();
                while let Some((chunk, answer)) = pending.next().await {
                    let got = answer.map_err(|e| outcome(ctx, provider, e))?;
                    let fresh: Vec<(String, Vec<f32>)> =
                        chunk.into_iter().map(|(h, _)| h).zip(got).collect();
                    store.remember(model, &fresh).await.map_err(store_error)?;
                    done += fresh.len();
                    vectors.extend(fresh);
                    if reported.elapsed() >= Duration::from_secs(1) || done == total {
                        reported = Instant::now();
                        ctx.progress(json!({"stage": "embedding", "done": done, "total": total}))
                            .await;
                    }
                }
                Ok(())
            }
        }
    }

    async fn fetch(
        &self,
        url: &str,
        named: Option<Format>,
    ) -> Result<(Vec<u8>, Format), TaskError> {
        let client = self
            .fetcher
            .as_ref()
            .map_err(|e| TaskError::fatal(e.clone()))?;
        let response = client
            .send("GET", url, &[], None)
            .await
            .map_err(|e| match e {
                weir_shared::outbound::CallError::Timeout(_)
                | weir_shared::outbound::CallError::Connect(_) => TaskError::retry(e.to_string()),
                other => TaskError::fatal(format!("cannot fetch the document: {other}")),
            })?;
        match response.status {
            200..=299 => {}
            408 | 429 | 500..=599 => {
                return Err(TaskError::retry(format!(
                    "fetching {url}: HTTP {}",
                    response.status
                )));
            }
            status => {
                return Err(TaskError::fatal(format!("fetching {url}: HTTP {status}")));
            }
        }
        let format = named
            .or_else(|| {
                response
                    .header("content-type")
                    .and_then(Format::from_content_type)
            })
            .or_else(|| Format::from_name(url))
            .unwrap_or(Format::Text);
        Ok((response.body, format))
    }

    /// Drops cache entries past `cache_ttl`, at most once an hour per
    /// process, in the background.
    fn expire(&self, store: &SharedStore) {
        let now = now_ms().0;
        let last = self.expired_at.load(Ordering::Relaxed);
        if now - last < EXPIRE_EVERY_MS
            || self
                .expired_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let ttl = i64::try_from(self.settings.cache_ttl.as_millis()).unwrap_or(i64::MAX);
        let store = store.clone();
        tokio::spawn(async move {
            match store.expire_cache(now.saturating_sub(ttl)).await {
                Ok(n) if n > 0 => tracing::info!(entries = n, "Expired embedding cache entries"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Embedding cache not expired"),
            }
        });
    }
}

fn splitter(given: Option<Splitter>) -> Result<SplitOptions, TaskError> {
    let mut options = SplitOptions::default();
    let Some(s) = given else { return Ok(options) };
    if let Some(sep) = s.separator {
        if sep.is_empty() {
            return Err(TaskError::fatal("`splitter.separator` must not be empty"));
        }
        options.separator = sep.replace("\\n", "\n");
    }
    if let Some(max) = s.max_tokens {
        if !(10..=8192).contains(&max) {
            return Err(TaskError::fatal(
                "`splitter.max_tokens` must be between 10 and 8192",
            ));
        }
        options.max_tokens = max;
    }
    if let Some(overlap) = s.overlap {
        if overlap >= options.max_tokens {
            return Err(TaskError::fatal(
                "`splitter.overlap` must be below `splitter.max_tokens`",
            ));
        }
        options.overlap = overlap;
    }
    Ok(options)
}
