//! One connected provider per store, reused across reconciles: a login happens only when the
//! store's connection (configuration or credentials) changed or its lease is near its end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mooring_provider::SecretProvider;

use super::{Connected, Connection, StoreError, StoreId};
use crate::controllers::lock;

/// The cache key: a store, plus the consuming namespace for referent ClusterSecretStores.
type CacheKey = (StoreId, Option<String>);

struct CacheEntry {
    fingerprint: [u8; 32],
    connected: Connected,
    logins: u64,
}

/// One connected provider per store, reused across reconciles.
#[derive(Default)]
pub struct ProviderCache {
    entries: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<Option<CacheEntry>>>>>,
}

/// A provider ready for use, and whether it was just connected (a login happened).
pub struct Handle {
    /// The provider.
    pub provider: Arc<dyn SecretProvider>,
    /// True when this call logged in.
    pub fresh: bool,
}

impl ProviderCache {
    /// The provider for `store`: cached when the connection is unchanged and its lease is not
    /// near its end, else connected now. Concurrent callers for one store wait for one login.
    pub async fn get(
        &self,
        client: &kube::Client,
        store: &StoreId,
        consumer: Option<&str>,
        connection: Connection,
    ) -> Result<Handle, StoreError> {
        let slot = {
            let mut entries = lock(&self.entries);
            Arc::clone(
                entries
                    .entry((store.clone(), consumer.map(str::to_string)))
                    .or_default(),
            )
        };
        let mut slot = slot.lock().await;
        let fingerprint = connection.fingerprint();
        if let Some(entry) = slot.as_ref() {
            let expired = entry
                .connected
                .renew_at
                .is_some_and(|at| Instant::now() >= at);
            if entry.fingerprint == fingerprint && !expired {
                return Ok(Handle {
                    provider: Arc::clone(&entry.connected.provider),
                    fresh: false,
                });
            }
        }
        let connected = connection.connect(client, store).await?;
        let logins = slot.as_ref().map_or(0, |e| e.logins) + 1;
        let provider = Arc::clone(&connected.provider);
        *slot = Some(CacheEntry {
            fingerprint,
            connected,
            logins,
        });
        Ok(Handle {
            provider,
            fresh: true,
        })
    }

    /// Forgets the provider of `store` (its token was refused: log in again next time).
    pub fn forget(&self, store: &StoreId, consumer: Option<&str>) {
        let mut entries = lock(&self.entries);
        entries.remove(&(store.clone(), consumer.map(str::to_string)));
    }

    /// Forgets every provider of stores no longer present (called with the live set).
    pub fn retain(&self, keep: impl Fn(&StoreId) -> bool) {
        let mut entries = lock(&self.entries);
        entries.retain(|(store, _), _| keep(store));
    }

    /// Logins done so far for `store` (tests and metrics).
    pub async fn logins(&self, store: &StoreId, consumer: Option<&str>) -> u64 {
        let slot = {
            let entries = lock(&self.entries);
            entries
                .get(&(store.clone(), consumer.map(str::to_string)))
                .cloned()
        };
        match slot {
            Some(slot) => slot.lock().await.as_ref().map_or(0, |e| e.logins),
            None => 0,
        }
    }
}
