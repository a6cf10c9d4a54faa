//! Provider key pools as every node sees them (`weir providers`, `GET
//! /v1/providers`): each configured provider and each key any live worker
//! (or this process) holds, with its state and counters from the broker.

use crate::broker::SharedBroker;
use crate::config::Settings;
use crate::provider::{KeyInfo, KeyPool, KeyStats, PoolError};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderView {
    /// `[providers.NAME]`.
    pub provider: String,
    /// Its base URL (from this process's configuration, when it has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Requests per minute per key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens per minute per key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
    /// Its keys, masked, in fingerprint order.
    pub keys: Vec<KeyStats>,
}

/// The keys the settings hold and the live workers announce.
pub fn known_keys(settings: &Settings, workers: &[crate::node::WorkerInfo]) -> Vec<KeyInfo> {
    let mut keys: BTreeSet<KeyInfo> = workers
        .iter()
        .flat_map(|w| w.provider_keys.iter().cloned())
        .collect();
    for (name, p) in &settings.providers {
        keys.extend(p.keys.iter().map(|k| KeyInfo {
            provider: name.clone(),
            fingerprint: k.fingerprint().to_owned(),
            masked: k.masked(),
        }));
    }
    let mut keys: Vec<KeyInfo> = keys.into_iter().collect();
    keys.sort_by(|a, b| (&a.provider, &a.fingerprint).cmp(&(&b.provider, &b.fingerprint)));
    keys.dedup_by(|a, b| a.provider == b.provider && a.fingerprint == b.fingerprint);
    keys
}

/// Every provider with its keys' state.
pub async fn provider_views(
    broker: &SharedBroker,
    settings: &Settings,
) -> Result<Vec<ProviderView>, PoolError> {
    let workers = broker.workers().await?;
    let keys = known_keys(settings, &workers);
    let stats = KeyPool::stats(broker, &keys).await?;
    let mut views: BTreeMap<String, ProviderView> = settings
        .providers
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                ProviderView {
                    provider: name.clone(),
                    base_url: Some(p.base_url.clone()),
                    rpm: p.rpm,
                    tpm: p.tpm,
                    keys: Vec::new(),
                },
            )
        })
        .collect();
    for s in stats {
        views
            .entry(s.provider.clone())
            .or_insert_with(|| ProviderView {
                provider: s.provider.clone(),
                base_url: None,
                rpm: None,
                tpm: None,
                keys: Vec::new(),
            })
            .keys
            .push(s);
    }
    Ok(views.into_values().collect())
}
