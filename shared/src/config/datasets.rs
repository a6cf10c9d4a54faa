//! `[datasets]`: what `document.index` embeds with and where it writes,
//! checked field by field.

use super::file::DatasetsFile;
use super::{Problem, parse_duration};
use crate::broker::BrokerConfig;
use crate::config::ProviderSettings;
use std::collections::BTreeMap;
use std::time::Duration;

/// How segments and queries are embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Embedding {
    /// The built-in hashing embedder: no network, lexical similarity.
    Local,
    /// An OpenAI-compatible `/v1/embeddings` of a provider.
    Provider {
        /// `[providers.NAME]`.
        name: String,
        /// Its `embedding_model`.
        model: String,
    },
}

impl Embedding {
    /// The model id vectors are stored under (`local/hash-v1/384`,
    /// `openai/text-embedding-3-small`): the embedding cache's key and the
    /// dataset's model.
    pub fn model_id(&self) -> String {
        match self {
            Embedding::Local => crate::embed::LOCAL_MODEL.to_owned(),
            Embedding::Provider { name, model } => format!("{name}/{model}"),
        }
    }
}

/// `[datasets]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSettings {
    /// `embedding`: `local` (the default) or a provider's name.
    pub embedding: Embedding,
    /// `vector_store`: `sqlite://PATH`, `postgres://...`, `chroma://HOST:PORT`.
    pub vector_store: String,
    /// `cache_ttl`: how long a cached embedding is kept (30 days).
    pub cache_ttl: Duration,
    /// `search_cache_mb`: memory for datasets' matrices in a searching
    /// process (512).
    pub search_cache_bytes: usize,
    /// `names`: when given, the only datasets a document may be indexed
    /// into; otherwise any valid name makes a dataset.
    pub names: Option<Vec<String>>,
}

/// True for a dataset name: 1-64 of letters, digits, `_`, `-`, `.`.
pub fn valid_dataset_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Where vectors go when `vector_store` is not set: beside the SQLite
/// broker's file, in the Postgres broker's database, else
/// `./weir-data/vectors.db`.
fn default_store(broker: &BrokerConfig) -> String {
    match broker {
        BrokerConfig::Postgres(c) => c.url.clone(),
        BrokerConfig::Sqlite(_) => {
            let dir = broker
                .sqlite_path()
                .and_then(|p| p.parent().map(|d| d.to_path_buf()))
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or_else(|| ".".into());
            format!("sqlite://{}/vectors.db", dir.display())
        }
        BrokerConfig::Redis(_) => "sqlite://./weir-data/vectors.db".into(),
    }
}

pub(super) fn datasets(
    raw: DatasetsFile,
    broker: &BrokerConfig,
    providers: &BTreeMap<String, ProviderSettings>,
    problems: &mut Vec<Problem>,
) -> DatasetSettings {
    let embedding = match raw.embedding.as_deref() {
        None | Some("local") => Embedding::Local,
        Some(name) => {
            match providers.get(name) {
                None => {
                    problems.push(Problem {
                    key: "datasets.embedding".into(),
                    message: format!(
                        "`{name}` is neither `local` nor a provider: add [providers.{name}] with base_url, keys_env and embedding_model"
                    ),
                });
                    Embedding::Local
                }
                Some(p) => match &p.embedding_model {
                    Some(model) => Embedding::Provider {
                        name: name.to_owned(),
                        model: model.clone(),
                    },
                    None => {
                        problems.push(Problem {
                        key: format!("providers.{name}.embedding_model"),
                        message: "name the model datasets embed with, e.g. \"text-embedding-3-small\"".into(),
                    });
                        Embedding::Local
                    }
                },
            }
        }
    };
    let vector_store = raw.vector_store.unwrap_or_else(|| default_store(broker));
    if !crate::vector::known_scheme(&vector_store) {
        problems.push(Problem {
            key: "datasets.vector_store".into(),
            message: format!(
                "`{}` is not a store weir knows: use sqlite://PATH, postgres://..., or chroma://HOST:PORT",
                crate::secret::redact_url(&vector_store)
            ),
        });
    }
    let cache_ttl = match raw.cache_ttl.as_deref().map(parse_duration) {
        None => Duration::from_secs(30 * 24 * 3600),
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => {
            problems.push(Problem {
                key: "datasets.cache_ttl".into(),
                message: "is not a duration above zero, e.g. \"30d\"".into(),
            });
            Duration::from_secs(30 * 24 * 3600)
        }
    };
    if let Some(names) = &raw.names {
        for name in names.iter().filter(|n| !valid_dataset_name(n)) {
            problems.push(Problem {
                key: "datasets.names".into(),
                message: format!("`{name}` is not a dataset name: 1-64 of letters, digits, _ - ."),
            });
        }
    }
    DatasetSettings {
        embedding,
        vector_store,
        cache_ttl,
        search_cache_bytes: raw.search_cache_mb.unwrap_or(512).saturating_mul(1 << 20),
        names: raw.names,
    }
}
