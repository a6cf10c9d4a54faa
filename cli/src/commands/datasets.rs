//! `weir datasets`: list, documents, search, delete, reading the vector
//! store that `[datasets] vector_store` names.

use crate::args::{DatasetAction, DatasetsArgs};
use crate::failure::{Failure, Outcome};
use crate::output;
use std::time::Duration;
use weir_shared::config::{Embedding, Settings};
use weir_shared::embed::{embed_local, embed_remote};
use weir_shared::provider::SendError;
use weir_shared::vector::{self, SearchRequest, SharedStore, VectorError};

impl From<VectorError> for Failure {
    fn from(e: VectorError) -> Self {
        match e {
            VectorError::Invalid(m) => Failure::Usage(format!("[datasets] vector_store: {m}")),
            e @ VectorError::ModelMismatch { .. } => Failure::Refused(e.to_string()),
            e @ VectorError::Unavailable(_) => Failure::Runtime(anyhow::Error::new(e)),
        }
    }
}

async fn store(settings: &Settings) -> Result<SharedStore, Failure> {
    Ok(vector::open(
        &settings.datasets.vector_store,
        settings.datasets.search_cache_bytes,
    )
    .await?)
}

/// The dataset must exist for the tenant.
async fn known(store: &SharedStore, tenant: &str, name: &str) -> Outcome {
    match store.dataset(tenant, name).await? {
        Some(_) => Ok(()),
        None => Err(Failure::Refused(format!(
            "no dataset `{name}` for tenant `{tenant}` (weir datasets list shows them)"
        ))),
    }
}

async fn embed_query(settings: &Settings, query: &str) -> Result<Vec<f32>, Failure> {
    match &settings.datasets.embedding {
        Embedding::Local => Ok(embed_local(query)),
        Embedding::Provider { name, model } => {
            let providers = weir_shared::provider::providers(settings);
            let provider = providers
                .get(name)
                .ok_or_else(|| Failure::usage(format!("provider `{name}` is not configured")))?;
            let broker = super::connect(settings).await?;
            let inputs = [query.to_owned()];
            let mut vectors =
                embed_remote(provider, &broker, model, &inputs, Duration::from_secs(30))
                    .await
                    .map_err(|e| match e {
                        SendError::Fatal(m) | SendError::Retry(m) => {
                            Failure::Runtime(anyhow::anyhow!("embedding the query: {m}"))
                        }
                        SendError::Wait { why, .. } => Failure::Runtime(anyhow::anyhow!(
                            "embedding the query: no key of `{name}` is free: {why}"
                        )),
                    })?;
            vectors
                .pop()
                .ok_or_else(|| Failure::Runtime(anyhow::anyhow!("no embedding came back")))
        }
    }
}

/// `weir datasets ACTION`.
pub async fn run(settings: Settings, args: DatasetsArgs) -> Outcome {
    let json = args.output.json;
    let tenant = args.tenant;
    let store = store(&settings).await?;
    match args.action {
        DatasetAction::List => {
            let sets = store.datasets(&tenant).await?;
            if json {
                output::json(&sets);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = sets
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        d.documents.to_string(),
                        d.segments.to_string(),
                        d.tokens.to_string(),
                        d.model.clone(),
                        d.updated_at.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "DATASET",
                    "DOCUMENTS",
                    "SEGMENTS",
                    "TOKENS",
                    "MODEL",
                    "UPDATED",
                ],
                &rows,
            );
            if sets.is_empty() {
                eprintln!(
                    "no datasets for tenant `{tenant}` yet: a `document.index` job makes one (weir enqueue document.index --payload '{{\"dataset\":\"kb\",\"document_id\":\"d1\",\"text\":\"...\"}}')"
                );
            }
        }
        DatasetAction::Documents { name } => {
            known(&store, &tenant, &name).await?;
            let docs = store.documents(&tenant, &name).await?;
            if json {
                output::json(&docs);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = docs
                .iter()
                .map(|d| {
                    vec![
                        d.document_id.clone(),
                        d.segments.to_string(),
                        d.tokens.to_string(),
                        d.indexed_at.clone(),
                        d.job_id.clone(),
                    ]
                })
                .collect();
            output::table(&["DOCUMENT", "SEGMENTS", "TOKENS", "INDEXED", "JOB"], &rows);
        }
        DatasetAction::Search { name, query, top_k } => {
            if !(1..=100).contains(&top_k) {
                return Err(Failure::usage("--top-k must be 1 to 100"));
            }
            if query.trim().is_empty() {
                return Err(Failure::usage("the query is empty: say what to look for"));
            }
            known(&store, &tenant, &name).await?;
            let vector = embed_query(&settings, &query).await?;
            let hits = store
                .search(&SearchRequest {
                    tenant,
                    dataset: name,
                    model: settings.datasets.embedding.model_id(),
                    vector,
                    top_k,
                })
                .await?;
            if json {
                output::json(&hits);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = hits
                .iter()
                .map(|h| {
                    vec![
                        format!("{:.3}", h.score),
                        h.document_id.clone(),
                        h.segment.to_string(),
                        output::clip(&h.text.replace('\n', " "), 80),
                    ]
                })
                .collect();
            output::table(&["SCORE", "DOCUMENT", "SEGMENT", "TEXT"], &rows);
        }
        DatasetAction::Delete { name, document_id } => {
            known(&store, &tenant, &name).await?;
            if !store.delete_document(&tenant, &name, &document_id).await? {
                return Err(Failure::Refused(format!(
                    "no document `{document_id}` in dataset `{name}`"
                )));
            }
            if json {
                output::json(
                    &serde_json::json!({"dataset": name, "document_id": document_id, "deleted": true}),
                );
            } else {
                println!("deleted {document_id} from {name}");
            }
        }
    }
    Ok(())
}
