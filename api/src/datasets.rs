//! `/v1/datasets`: the caller's datasets and documents that
//! `document.index` wrote, search, and deleting a document. Every route
//! reads the caller's tenant only: another tenant's dataset is 404.

use crate::error::ApiError;
use crate::input::json_body;
use crate::openapi::ErrorBody;
use crate::{AppState, Caller};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::OnceCell;
use weir_shared::config::Embedding;
use weir_shared::embed::{embed_local, embed_remote};
use weir_shared::provider::{Providers, SendError};
use weir_shared::vector::{
    self, DatasetInfo, DocumentInfo, SearchHit, SearchRequest, SharedStore, VectorError,
};

/// The most hits a search returns.
const MAX_TOP_K: usize = 100;
/// The longest query.
const MAX_QUERY_BYTES: usize = 32 << 10;
/// How long a search waits for a provider key before answering 503.
const KEY_WAIT: Duration = Duration::from_secs(5);

/// The vector store and embedder of this API process, opened at first use.
#[derive(Default)]
pub(crate) struct Datasets {
    store: OnceCell<SharedStore>,
    providers: std::sync::OnceLock<Providers>,
}

impl From<VectorError> for ApiError {
    fn from(e: VectorError) -> Self {
        match e {
            VectorError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            e @ VectorError::ModelMismatch { .. } => {
                ApiError::new(StatusCode::CONFLICT, "model_mismatch", e.to_string())
            }
            VectorError::Invalid(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
        }
    }
}

fn dataset_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "dataset not found")
}

impl AppState {
    async fn store(&self) -> Result<&SharedStore, ApiError> {
        let settings = &self.settings.datasets;
        Ok(self
            .datasets
            .store
            .get_or_try_init(|| vector::open(&settings.vector_store, settings.search_cache_bytes))
            .await?)
    }

    /// The caller's dataset, or 404.
    async fn dataset(&self, caller: &Caller, name: &str) -> Result<DatasetInfo, ApiError> {
        self.store()
            .await?
            .dataset(&caller.tenant, name)
            .await?
            .ok_or_else(dataset_not_found)
    }

    /// The query's vector, with the embedder documents are indexed with.
    async fn embed_query(&self, query: &str) -> Result<Vec<f32>, ApiError> {
        match &self.settings.datasets.embedding {
            Embedding::Local => Ok(embed_local(query)),
            Embedding::Provider { name, model } => {
                let providers = self
                    .datasets
                    .providers
                    .get_or_init(|| weir_shared::provider::providers(&self.settings));
                let provider = providers.get(name).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("provider `{name}` is not configured"),
                    )
                })?;
                let inputs = [query.to_owned()];
                let mut vectors = embed_remote(provider, &self.broker, model, &inputs, KEY_WAIT)
                    .await
                    .map_err(|e| {
                        let message = match e {
                            SendError::Fatal(m) | SendError::Retry(m) => m,
                            SendError::Wait { after, why } => format!(
                                "no key of `{name}` is free ({why}); try again in {}s",
                                after.as_secs().max(1)
                            ),
                        };
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
                    })?;
                vectors.pop().ok_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "no embedding",
                    )
                })
            }
        }
    }
}

/// A list.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Listed<T> {
    /// The items.
    data: Vec<T>,
}

/// `GET /v1/datasets`.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", responses((status = 200, body = Listed<DatasetInfo>, description = "The caller's datasets: documents, segments, tokens, model"), (status = 401, body = ErrorBody, description = "No or an unknown API key"), (status = 503, body = ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Listed<DatasetInfo>>, ApiError> {
    let data = state.store().await?.datasets(&caller.tenant).await?;
    Ok(Json(Listed { data }))
}

/// `GET /v1/datasets/{name}/documents`.
#[utoipa::path(get, path = "/v1/datasets/{name}/documents", tag = "datasets", params(("name" = String, Path, description = "The dataset")), responses((status = 200, body = Listed<DocumentInfo>, description = "Its documents: segments, tokens, indexed_at"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody, description = "No or an unknown API key"), (status = 503, body = ErrorBody)))]
pub(crate) async fn documents(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Listed<DocumentInfo>>, ApiError> {
    state.dataset(&caller, &name).await?;
    let data = state
        .store()
        .await?
        .documents(&caller.tenant, &name)
        .await?;
    Ok(Json(Listed { data }))
}

/// The body of a search.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchBody {
    /// What to look for.
    query: String,
    /// How many segments (default 5, at most 100).
    top_k: Option<usize>,
}

/// `POST /v1/datasets/{name}/search`.
#[utoipa::path(post, path = "/v1/datasets/{name}/search", tag = "datasets", params(("name" = String, Path, description = "The dataset")), request_body = SearchBody, responses((status = 200, body = Listed<SearchHit>, description = "The nearest segments, best first (cosine)"), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody, description = "An empty query or top_k out of 1-100"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "The dataset's vectors are of another embedding model"), (status = 401, body = ErrorBody, description = "No or an unknown API key"), (status = 503, body = ErrorBody)))]
pub(crate) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Listed<SearchHit>>, ApiError> {
    let body: SearchBody = weir_shared::input::typed(json_body(body)?)
        .map_err(|e| ApiError::bad_request(format!("search body: {e}")))?;
    if body.query.trim().is_empty() || body.query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::invalid(
            "invalid_query",
            format!("`query` must be 1 to {MAX_QUERY_BYTES} bytes of text"),
        ));
    }
    let top_k = body.top_k.unwrap_or(5);
    if !(1..=MAX_TOP_K).contains(&top_k) {
        return Err(ApiError::invalid(
            "invalid_top_k",
            format!("`top_k` must be 1 to {MAX_TOP_K}"),
        ));
    }
    state.dataset(&caller, &name).await?;
    let vector = state.embed_query(&body.query).await?;
    let request = SearchRequest {
        tenant: caller.tenant.clone(),
        dataset: name,
        model: state.settings.datasets.embedding.model_id(),
        vector,
        top_k,
    };
    let data = state.store().await?.search(&request).await?;
    Ok(Json(Listed { data }))
}

/// What a delete removed.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Deleted {
    /// The dataset.
    dataset: String,
    /// The document.
    document_id: String,
    /// Always true: a document that was not there is a 404.
    deleted: bool,
}

/// `DELETE /v1/datasets/{name}/documents/{document_id}`.
#[utoipa::path(delete, path = "/v1/datasets/{name}/documents/{document_id}", tag = "datasets", params(("name" = String, Path, description = "The dataset"), ("document_id" = String, Path, description = "The document")), responses((status = 200, body = Deleted, description = "Its segments and vectors are gone"), (status = 404, body = ErrorBody, description = "No such dataset or document"), (status = 401, body = ErrorBody, description = "No or an unknown API key"), (status = 503, body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, document_id)): Path<(String, String)>,
) -> Result<Json<Deleted>, ApiError> {
    state.dataset(&caller, &name).await?;
    let gone = state
        .store()
        .await?
        .delete_document(&caller.tenant, &name, &document_id)
        .await?;
    if !gone {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "document not found",
        ));
    }
    Ok(Json(Deleted {
        dataset: name,
        document_id,
        deleted: true,
    }))
}
