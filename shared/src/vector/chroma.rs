//! Chroma over its HTTP API (v2), `chroma://HOST:PORT` (`chromas://` for
//! TLS): the store for datasets larger than memory. Collections, all in
//! Chroma's default tenant and database:
//! - `weir-seg-<model>`: segments of one embedding model (cosine), with
//!   `tenant`, `dataset`, `document_id`, `seq` and `gen` as metadata;
//! - `weir-doc`: one record per document (its generation, counts, model);
//! - `weir-cache-<model>`: the embedding cache, by SHA-256.
//!
//! Every query filters on tenant and dataset. A replace writes the new
//! segments, then the document record, then deletes the document's other
//! generations; a search in between over-fetches and keeps only hits of
//! the current generation, so it never sees two versions at once.

use super::{
    DatasetInfo, DocumentInfo, Generation, ReplaceDocument, Replaced, SearchHit, SearchRequest,
    VectorError, VectorResult, VectorStore, rfc3339,
};
use crate::job::now_ms;
use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

const BASE: &str = "/api/v2/tenants/default_tenant/databases/default_database";
/// Records per upsert call.
const UPSERT_RECORDS: usize = 500;

/// The Chroma store.
pub struct ChromaStore {
    url: String,
    http: reqwest::Client,
    /// Collection ids by name.
    collections: Mutex<HashMap<String, String>>,
}

fn unavailable(e: impl std::fmt::Display) -> VectorError {
    VectorError::Unavailable(format!("chroma: {e}"))
}

/// A collection name Chroma accepts for a model (`local/hash-v1/384` ->
/// `weir-seg-local-hash-v1-384`).
fn collection_name(prefix: &str, model: &str) -> String {
    let safe: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("{prefix}-{safe}");
    if name.len() <= 60 {
        name
    } else {
        format!(
            "{prefix}-{}",
            &hex::encode(Sha256::digest(model.as_bytes()))[..32]
        )
    }
}

fn document_key(tenant: &str, dataset: &str, document_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [tenant, dataset, document_id] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn gen_label(g: &Generation) -> String {
    format!("{}:{}", g.at_ms, g.id)
}

fn scope(tenant: &str, dataset: &str) -> Value {
    json!({"$and": [{"tenant": {"$eq": tenant}}, {"dataset": {"$eq": dataset}}]})
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

impl ChromaStore {
    /// Checks the server answers its heartbeat.
    pub async fn open(url: &str) -> VectorResult<Self> {
        let base = if let Some(rest) = url.strip_prefix("chromas://") {
            format!("https://{}", rest.trim_end_matches('/'))
        } else if let Some(rest) = url.strip_prefix("chroma://") {
            format!("http://{}", rest.trim_end_matches('/'))
        } else {
            return Err(VectorError::Invalid(format!(
                "`{url}` is not a chroma:// URL"
            )));
        };
        crate::outbound::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(unavailable)?;
        let store = ChromaStore {
            url: base,
            http,
            collections: Mutex::default(),
        };
        store.call("GET", "/api/v2/heartbeat", None).await?;
        Ok(store)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> VectorResult<Value> {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url),
        };
        let request = match body {
            Some(b) => request.json(&b),
            None => request,
        };
        let response = request.send().await.map_err(unavailable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unavailable)?;
        if !status.is_success() {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(VectorError::Unavailable(format!(
                "chroma answered {status} to {path}: {head}"
            )));
        }
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(unavailable)
    }

    /// The id of collection `name`, made (cosine) if missing.
    async fn collection(&self, name: &str) -> VectorResult<String> {
        if let Some(id) = self
            .collections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(id.clone());
        }
        let made = self
            .call(
                "POST",
                &format!("{BASE}/collections"),
                Some(json!({
                    "name": name,
                    "get_or_create": true,
                    "metadata": {"hnsw:space": "cosine"},
                })),
            )
            .await?;
        let id = made["id"]
            .as_str()
            .ok_or_else(|| unavailable(format!("no collection id in {made}")))?
            .to_owned();
        self.collections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), id.clone());
        Ok(id)
    }

    async fn on(&self, collection: &str, verb: &str, body: Value) -> VectorResult<Value> {
        let id = self.collection(collection).await?;
        self.call(
            "POST",
            &format!("{BASE}/collections/{id}/{verb}"),
            Some(body),
        )
        .await
    }

    /// Document records matching `filter`, as (id, metadata).
    async fn records(&self, filter: Value) -> VectorResult<Vec<(String, Value)>> {
        let got = self
            .on(
                "weir-doc",
                "get",
                json!({"where": filter, "include": ["metadatas"]}),
            )
            .await?;
        let ids = got["ids"].as_array().cloned().unwrap_or_default();
        let metas = got["metadatas"].as_array().cloned().unwrap_or_default();
        Ok(ids
            .into_iter()
            .zip(metas)
            .map(|(id, m)| (text(&id), m))
            .collect())
    }
}

#[async_trait]
impl VectorStore for ChromaStore {
    fn kind(&self) -> &'static str {
        "chroma"
    }

    async fn cached(
        &self,
        model: &str,
        hashes: &[String],
    ) -> VectorResult<HashMap<String, Vec<f32>>> {
        let mut out = HashMap::new();
        if hashes.is_empty() {
            return Ok(out);
        }
        let name = collection_name("weir-cache", model);
        for chunk in hashes.chunks(UPSERT_RECORDS) {
            let got = self
                .on(
                    &name,
                    "get",
                    json!({"ids": chunk, "include": ["embeddings"]}),
                )
                .await?;
            let ids = got["ids"].as_array().cloned().unwrap_or_default();
            let vectors = got["embeddings"].as_array().cloned().unwrap_or_default();
            for (id, v) in ids.into_iter().zip(vectors) {
                let vector: Vec<f32> = v
                    .as_array()
                    .map(|xs| {
                        xs.iter()
                            .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(text(&id), vector);
            }
        }
        Ok(out)
    }

    async fn remember(&self, model: &str, entries: &[(String, Vec<f32>)]) -> VectorResult<()> {
        let name = collection_name("weir-cache", model);
        let now = now_ms().0;
        for chunk in entries.chunks(UPSERT_RECORDS) {
            let ids: Vec<&str> = chunk.iter().map(|(h, _)| h.as_str()).collect();
            let vectors: Vec<&Vec<f32>> = chunk.iter().map(|(_, v)| v).collect();
            let metas: Vec<Value> = chunk.iter().map(|_| json!({"created_at": now})).collect();
            self.on(
                &name,
                "upsert",
                json!({"ids": ids, "embeddings": vectors, "metadatas": metas}),
            )
            .await?;
        }
        Ok(())
    }

    async fn replace_document(&self, doc: &ReplaceDocument) -> VectorResult<Replaced> {
        let key = document_key(&doc.tenant, &doc.dataset, &doc.document_id);
        let records = self.records(scope(&doc.tenant, &doc.dataset)).await?;
        for (id, meta) in &records {
            let model = text(&meta["model"]);
            if id != &key && model != doc.model {
                return Err(VectorError::ModelMismatch {
                    dataset: doc.dataset.clone(),
                    stored: model,
                    given: doc.model.clone(),
                });
            }
            if id == &key {
                let current = Generation {
                    at_ms: int(&meta["gen_at"]),
                    id: text(&meta["gen_id"]),
                };
                if current > doc.generation {
                    return Ok(Replaced::Superseded);
                }
            }
        }
        let label = gen_label(&doc.generation);
        let segments = collection_name("weir-seg", &doc.model);
        for chunk in doc.segments.chunks(UPSERT_RECORDS) {
            let ids: Vec<String> = chunk
                .iter()
                .map(|s| format!("{key}:{label}:{}", s.seq))
                .collect();
            let vectors: Vec<&Vec<f32>> = chunk.iter().map(|s| &s.vector).collect();
            let texts: Vec<&str> = chunk.iter().map(|s| s.text.as_str()).collect();
            let metas: Vec<Value> = chunk
                .iter()
                .map(|s| {
                    json!({
                        "tenant": doc.tenant, "dataset": doc.dataset,
                        "document_id": doc.document_id, "seq": s.seq, "gen": label,
                    })
                })
                .collect();
            self.on(
                &segments,
                "upsert",
                json!({"ids": ids, "embeddings": vectors, "documents": texts, "metadatas": metas}),
            )
            .await?;
        }
        let tokens: u64 = doc.segments.iter().map(|s| u64::from(s.tokens)).sum();
        self.on(
            "weir-doc",
            "upsert",
            json!({
                "ids": [key],
                "embeddings": [[1.0]],
                "metadatas": [{
                    "tenant": doc.tenant, "dataset": doc.dataset,
                    "document_id": doc.document_id, "model": doc.model,
                    "gen_at": doc.generation.at_ms, "gen_id": doc.generation.id,
                    "segments": doc.segments.len(), "tokens": tokens,
                    "indexed_at": now_ms().0,
                }],
            }),
        )
        .await?;
        self.on(
            &segments,
            "delete",
            json!({"where": {"$and": [
                {"tenant": {"$eq": doc.tenant}},
                {"dataset": {"$eq": doc.dataset}},
                {"document_id": {"$eq": doc.document_id}},
                {"gen": {"$ne": label}},
            ]}}),
        )
        .await?;
        Ok(Replaced::Written)
    }

    async fn delete_document(
        &self,
        tenant: &str,
        dataset: &str,
        document_id: &str,
    ) -> VectorResult<bool> {
        let key = document_key(tenant, dataset, document_id);
        let records = self.records(scope(tenant, dataset)).await?;
        let Some((_, meta)) = records.iter().find(|(id, _)| id == &key) else {
            return Ok(false);
        };
        let segments = collection_name("weir-seg", &text(&meta["model"]));
        self.on("weir-doc", "delete", json!({"ids": [key]})).await?;
        self.on(
            &segments,
            "delete",
            json!({"where": {"$and": [
                {"tenant": {"$eq": tenant}},
                {"dataset": {"$eq": dataset}},
                {"document_id": {"$eq": document_id}},
            ]}}),
        )
        .await?;
        Ok(true)
    }

    async fn search(&self, request: &SearchRequest) -> VectorResult<Vec<SearchHit>> {
        let records = self
            .records(scope(&request.tenant, &request.dataset))
            .await?;
        let Some((_, first)) = records.first() else {
            return Ok(Vec::new());
        };
        let model = text(&first["model"]);
        if model != request.model {
            return Err(VectorError::ModelMismatch {
                dataset: request.dataset.clone(),
                stored: model,
                given: request.model.clone(),
            });
        }
        let current: HashMap<String, String> = records
            .iter()
            .map(|(_, m)| {
                let g = Generation {
                    at_ms: int(&m["gen_at"]),
                    id: text(&m["gen_id"]),
                };
                (text(&m["document_id"]), gen_label(&g))
            })
            .collect();
        let found = self
            .on(
                &collection_name("weir-seg", &request.model),
                "query",
                json!({
                    "query_embeddings": [super::normalise(request.vector.clone())],
                    "n_results": request.top_k * 2 + 4,
                    "where": scope(&request.tenant, &request.dataset),
                    "include": ["documents", "metadatas", "distances"],
                }),
            )
            .await?;
        let metas = found["metadatas"][0]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let texts = found["documents"][0]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let distances = found["distances"][0]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut hits = Vec::new();
        for ((meta, body), distance) in metas.iter().zip(&texts).zip(&distances) {
            let document_id = text(&meta["document_id"]);
            if current.get(&document_id) != Some(&text(&meta["gen"])) {
                continue;
            }
            hits.push(SearchHit {
                document_id,
                segment: u32::try_from(int(&meta["seq"])).unwrap_or(0),
                text: text(body),
                score: 1.0 - distance.as_f64().unwrap_or(1.0) as f32,
            });
            if hits.len() == request.top_k {
                break;
            }
        }
        Ok(hits)
    }

    async fn datasets(&self, tenant: &str) -> VectorResult<Vec<DatasetInfo>> {
        let records = self.records(json!({"tenant": {"$eq": tenant}})).await?;
        let mut out: BTreeMap<String, DatasetInfo> = BTreeMap::new();
        let mut latest: HashMap<String, i64> = HashMap::new();
        for (_, m) in records {
            let name = text(&m["dataset"]);
            let entry = out.entry(name.clone()).or_insert_with(|| DatasetInfo {
                name: name.clone(),
                model: text(&m["model"]),
                documents: 0,
                segments: 0,
                tokens: 0,
                updated_at: String::new(),
            });
            entry.documents += 1;
            entry.segments += u64::try_from(int(&m["segments"])).unwrap_or(0);
            entry.tokens += u64::try_from(int(&m["tokens"])).unwrap_or(0);
            let at = latest.entry(name).or_default();
            *at = (*at).max(int(&m["indexed_at"]));
        }
        Ok(out
            .into_values()
            .map(|mut d| {
                d.updated_at = rfc3339(latest.get(&d.name).copied().unwrap_or(0));
                d
            })
            .collect())
    }

    async fn documents(&self, tenant: &str, dataset: &str) -> VectorResult<Vec<DocumentInfo>> {
        let mut out: Vec<DocumentInfo> = self
            .records(scope(tenant, dataset))
            .await?
            .into_iter()
            .map(|(_, m)| DocumentInfo {
                document_id: text(&m["document_id"]),
                segments: u64::try_from(int(&m["segments"])).unwrap_or(0),
                tokens: u64::try_from(int(&m["tokens"])).unwrap_or(0),
                indexed_at: rfc3339(int(&m["indexed_at"])),
                job_id: text(&m["gen_id"]),
            })
            .collect();
        out.sort_by(|a, b| a.document_id.cmp(&b.document_id));
        Ok(out)
    }

    async fn expire_cache(&self, before_ms: i64) -> VectorResult<u64> {
        let listed = self
            .call("GET", &format!("{BASE}/collections"), None)
            .await?;
        let mut deleted = 0;
        for c in listed.as_array().cloned().unwrap_or_default() {
            let name = text(&c["name"]);
            if !name.starts_with("weir-cache-") {
                continue;
            }
            let filter = json!({"created_at": {"$lt": before_ms}});
            let old = self
                .on(&name, "get", json!({"where": filter, "include": []}))
                .await?;
            let n = old["ids"].as_array().map_or(0, Vec::len) as u64;
            if n > 0 {
                self.on(&name, "delete", json!({"where": filter})).await?;
                deleted += n;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_are_ones_chroma_accepts() {
        assert_eq!(
            collection_name("weir-seg", "local/hash-v1/384"),
            "weir-seg-local-hash-v1-384"
        );
        let long = collection_name("weir-seg", &"m".repeat(200));
        assert!(long.len() <= 60, "{long}");
        assert_ne!(document_key("a", "bc", "d"), document_key("ab", "c", "d"));
    }
}
