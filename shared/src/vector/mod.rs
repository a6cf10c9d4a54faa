//! Where `document.index` writes segments and vectors, and where search
//! reads them: the [`VectorStore`] seam, with the embedded SQL store
//! (`sqlite://FILE` or `postgres://...`, exact cosine search over a
//! dataset's vectors held in memory) and Chroma over its HTTP API
//! (`chroma://host:8000`). Every call names its tenant: one tenant never
//! reads or writes another's datasets.
//!
//! Vectors are L2-normalised before they are stored, so cosine similarity
//! is a dot product. The embedding cache, keyed by model and SHA-256 of the
//! text, lives in the same store.

mod chroma;
mod scan;
mod sql;

pub use chroma::ChromaStore;
pub use scan::{Block, Matrix, RowRef, top_k};
pub use sql::SqlStore;

use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The store could not be reached or refused the call: try again.
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    /// The dataset holds vectors of another embedding model.
    #[error(
        "dataset `{dataset}` holds vectors of `{stored}`, not `{given}`: delete its documents or index into a new dataset"
    )]
    ModelMismatch {
        /// The dataset.
        dataset: String,
        /// The model its vectors are of.
        stored: String,
        /// The model of this call.
        given: String,
    },
    /// The store's URL or a call's input is wrong.
    #[error("{0}")]
    Invalid(String),
}

/// A store call's result.
pub type VectorResult<T> = Result<T, VectorError>;

/// Which write of a document wins: the job's creation time, then its id.
/// An older, slower attempt never replaces a newer document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation {
    /// The job's `created_at`, ms since the epoch.
    pub at_ms: i64,
    /// The job's id (ties).
    pub id: String,
}

/// One segment of a document, embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its place in the document, from 0.
    pub seq: u32,
    /// Its text.
    pub text: String,
    /// Its tokens (cl100k_base).
    pub tokens: u32,
    /// SHA-256 of its text, hex.
    pub sha256: String,
    /// Its vector, L2-normalised.
    pub vector: Vec<f32>,
}

/// A document's new version: replaces every segment it had.
#[derive(Debug, Clone)]
pub struct ReplaceDocument {
    /// Whose.
    pub tenant: String,
    /// Which dataset.
    pub dataset: String,
    /// The document's id in the dataset.
    pub document_id: String,
    /// Which write this is.
    pub generation: Generation,
    /// The embedding model of its vectors (`local/hash-v1/384`).
    pub model: String,
    /// Its segments.
    pub segments: Vec<Segment>,
}

/// What a replace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The new version stands.
    Written,
    /// A newer version was already written; nothing changed.
    Superseded,
}

/// A search of one dataset.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// Whose.
    pub tenant: String,
    /// Which dataset.
    pub dataset: String,
    /// The model the query was embedded with.
    pub model: String,
    /// The query's vector.
    pub vector: Vec<f32>,
    /// How many hits.
    pub top_k: usize,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The document it is in.
    pub document_id: String,
    /// The segment's place in the document, from 0.
    pub segment: u32,
    /// The segment's text.
    pub text: String,
    /// Cosine similarity to the query, best first.
    pub score: f32,
}

/// A dataset as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DatasetInfo {
    /// Its name.
    pub name: String,
    /// The embedding model of its vectors.
    pub model: String,
    /// Documents in it.
    pub documents: u64,
    /// Segments in it.
    pub segments: u64,
    /// Tokens in it (cl100k_base).
    pub tokens: u64,
    /// When a document was last written or deleted (RFC 3339).
    pub updated_at: String,
}

/// A document as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DocumentInfo {
    /// Its id.
    pub document_id: String,
    /// Its segments.
    pub segments: u64,
    /// Its tokens (cl100k_base).
    pub tokens: u64,
    /// When this version was written (RFC 3339).
    pub indexed_at: String,
    /// The job that wrote it.
    pub job_id: String,
}

/// A place that keeps segments and vectors, and the embedding cache.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// `sqlite`, `postgres` or `chroma`.
    fn kind(&self) -> &'static str;

    /// The cached vectors of `model` among `hashes` (SHA-256 hex), by hash.
    async fn cached(
        &self,
        model: &str,
        hashes: &[String],
    ) -> VectorResult<HashMap<String, Vec<f32>>>;

    /// Caches vectors of `model` by hash.
    async fn remember(&self, model: &str, entries: &[(String, Vec<f32>)]) -> VectorResult<()>;

    /// Replaces a document's segments and vectors in one step, unless a
    /// newer generation of it was written.
    async fn replace_document(&self, doc: &ReplaceDocument) -> VectorResult<Replaced>;

    /// Removes a document's segments and vectors; false when it had none.
    async fn delete_document(
        &self,
        tenant: &str,
        dataset: &str,
        document_id: &str,
    ) -> VectorResult<bool>;

    /// The `top_k` segments nearest to the query, best first.
    async fn search(&self, request: &SearchRequest) -> VectorResult<Vec<SearchHit>>;

    /// The tenant's datasets, by name.
    async fn datasets(&self, tenant: &str) -> VectorResult<Vec<DatasetInfo>>;

    /// One dataset of the tenant, or `None`.
    async fn dataset(&self, tenant: &str, name: &str) -> VectorResult<Option<DatasetInfo>> {
        Ok(self
            .datasets(tenant)
            .await?
            .into_iter()
            .find(|d| d.name == name))
    }

    /// A dataset's documents, by id.
    async fn documents(&self, tenant: &str, dataset: &str) -> VectorResult<Vec<DocumentInfo>>;

    /// Drops cache entries written before `before_ms`; how many.
    async fn expire_cache(&self, before_ms: i64) -> VectorResult<u64>;
}

/// A store shared by a process's tasks and routes.
pub type SharedStore = Arc<dyn VectorStore>;

/// Opens the store a URL names: `sqlite://PATH`, `postgres://...`
/// (`?schema=NAME`, default `weir_vectors`) or `chroma://HOST:PORT`
/// (`chromas://` for TLS).
pub async fn open(url: &str, search_cache_bytes: usize) -> VectorResult<SharedStore> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "sqlite" | "postgres" | "postgresql" => {
            Ok(Arc::new(SqlStore::open(url, search_cache_bytes).await?))
        }
        "chroma" | "chromas" => Ok(Arc::new(ChromaStore::open(url).await?)),
        _ => Err(VectorError::Invalid(format!(
            "vector_store `{}` has an unknown scheme: use sqlite://PATH, postgres://..., or chroma://HOST:PORT",
            crate::secret::redact_url(url)
        ))),
    }
}

/// True when `scheme` is one [`open`] knows.
pub fn known_scheme(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    matches!(
        scheme,
        "sqlite" | "postgres" | "postgresql" | "chroma" | "chromas"
    )
}

/// `v` scaled to unit length (left as is when it is all zeros).
pub fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// A vector as stored: f32 little-endian.
pub fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored vector read back (trailing bytes that make no f32 ignored).
pub fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Milliseconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_as_bytes() {
        let v = vec![0.25f32, -1.5, 3.0e-7];
        assert_eq!(from_bytes(&to_bytes(&v)), v);
        let n = normalise(vec![3.0, 4.0]);
        assert!((n[0] - 0.6).abs() < 1e-6 && (n[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalise(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn generations_order_by_time_then_id() {
        let a = Generation {
            at_ms: 10,
            id: "b".into(),
        };
        let b = Generation {
            at_ms: 11,
            id: "a".into(),
        };
        assert!(a < b);
        assert!(
            Generation {
                at_ms: 10,
                id: "a".into()
            } < a
        );
    }
}
