//! Provider reads shared across ExternalSecrets, and a request budget per store.
//!
//! Many ExternalSecrets often read the same remote secret (one database password behind every
//! service's Secret). A read of `(store, key, version)` is done once and shared by every
//! ExternalSecret that asks within the read window — callers that arrive while it runs wait for
//! it — and never served older than the caller's own `refreshInterval`. Reads that do reach a
//! provider pass a token bucket per store, so a burst of ExternalSecrets cannot exceed the
//! provider's rate limits (ESO's <https://github.com/external-secrets/external-secrets/issues/58>
//! and <https://github.com/external-secrets/external-secrets/issues/1769>).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mooring_provider::{ProviderError, SecretValue};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::controllers::lock;
use crate::external_secrets::providers::StoreId;

/// Identifies one provider read: the store (and consuming namespace for referent stores, whose
/// credentials differ per namespace), the key and the version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReadKey {
    /// The store.
    pub store: StoreId,
    /// The consuming namespace, for referent ClusterSecretStores.
    pub consumer: Option<String>,
    /// The remote key.
    pub key: String,
    /// The version, if pinned.
    pub version: Option<String>,
}

type Shared = Arc<OnceCell<Result<SecretValue, ProviderError>>>;

/// How a read was served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// The provider was called.
    Provider,
    /// Another ExternalSecret's read was reused.
    Coalesced,
}

/// Shared reads and per-store budgets.
pub struct SharedReads {
    window: Duration,
    per_second: f64,
    burst: f64,
    reads: Mutex<HashMap<ReadKey, (Instant, Shared)>>,
    /// Store → theoretical arrival time of the next request (GCRA).
    budgets: Mutex<HashMap<StoreId, Instant>>,
}

impl SharedReads {
    /// Reads are shared for at most `window`; each store gets `per_second` reads per second with
    /// bursts of `burst`. A `per_second` of 0 means no limit.
    pub fn new(window: Duration, per_second: f64, burst: u32) -> SharedReads {
        SharedReads {
            window,
            per_second,
            burst: f64::from(burst.max(1)),
            reads: Mutex::default(),
            budgets: Mutex::default(),
        }
    }

    /// The value of `key`: a read started less than `min(window, max_age)` ago, or `read`
    /// (after the store's budget admits it).
    pub async fn get<F>(
        &self,
        key: ReadKey,
        max_age: Duration,
        read: F,
    ) -> (Result<SecretValue, ProviderError>, Served)
    where
        F: Future<Output = Result<SecretValue, ProviderError>>,
    {
        let age_limit = if max_age.is_zero() {
            self.window
        } else {
            self.window.min(max_age)
        };
        let shared = {
            let mut reads = lock(&self.reads);
            let now = Instant::now();
            reads.retain(|_, (started, _)| now.duration_since(*started) < self.window);
            match reads.get(&key) {
                Some((started, shared)) if now.duration_since(*started) < age_limit => {
                    Arc::clone(shared)
                }
                _ => {
                    let shared: Shared = Arc::default();
                    if !self.window.is_zero() {
                        reads.insert(key.clone(), (now, Arc::clone(&shared)));
                    }
                    shared
                }
            }
        };
        let mut called = false;
        let result = shared
            .get_or_init(|| {
                called = true;
                async {
                    self.admit(&key.store).await;
                    read.await
                }
            })
            .await;
        let served = if called {
            Served::Provider
        } else {
            Served::Coalesced
        };
        (copy_result(result), served)
    }

    /// Waits until the store's budget allows one more request.
    async fn admit(&self, store: &StoreId) {
        if self.per_second <= 0.0 {
            return;
        }
        let interval = Duration::from_secs_f64(1.0 / self.per_second);
        let allowance = interval.mul_f64(self.burst);
        let wait = {
            let mut budgets = lock(&self.budgets);
            let now = Instant::now();
            let next = budgets.entry(store.clone()).or_insert(now);
            let arrival = (*next).max(now);
            *next = arrival + interval;
            (arrival + interval).saturating_duration_since(now + allowance)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A copy of a shared result (an error's source is reduced to its message).
pub fn copy_result(
    result: &Result<SecretValue, ProviderError>,
) -> Result<SecretValue, ProviderError> {
    match result {
        Ok(value) => Ok(value.clone()),
        Err(error) => Err(copy_error(error)),
    }
}

/// A copy of a provider error (the source, if any, is reduced to its message).
pub fn copy_error(error: &ProviderError) -> ProviderError {
    match error {
        ProviderError::NotFound { key, detail } => ProviderError::NotFound {
            key: key.clone(),
            detail: detail.clone(),
        },
        ProviderError::PermissionDenied { key, detail } => ProviderError::PermissionDenied {
            key: key.clone(),
            detail: detail.clone(),
        },
        ProviderError::InvalidConfig(message) => ProviderError::InvalidConfig(message.clone()),
        ProviderError::Unavailable { detail, source } => ProviderError::Unavailable {
            detail: match source {
                Some(source) => {
                    format!("{detail}: {}", crate::errors::error_chain(source.as_ref()))
                }
                None => detail.clone(),
            },
            source: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::providers::StoreKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn key(name: &str) -> ReadKey {
        ReadKey {
            store: StoreId {
                kind: StoreKind::SecretStore,
                namespace: Some("app".into()),
                name: "vault".into(),
            },
            consumer: None,
            key: name.into(),
            version: None,
        }
    }

    #[tokio::test]
    async fn concurrent_and_recent_reads_are_shared_and_old_ones_are_not() {
        let window = Duration::from_millis(400);
        let reads = Arc::new(SharedReads::new(window, 0.0, 1));
        let calls = Arc::new(AtomicU32::new(0));
        let read = |calls: Arc<AtomicU32>| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(SecretValue::from("v".to_string()))
        };
        let hour = Duration::from_secs(3600);
        let (a, b) = tokio::join!(
            reads.get(key("db"), hour, read(Arc::clone(&calls))),
            reads.get(key("db"), hour, read(Arc::clone(&calls))),
        );
        assert_eq!(a.0.unwrap().expose(), b"v");
        assert_eq!((a.1, b.1), (Served::Provider, Served::Coalesced));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one read for two callers");
        let (_, other) = reads
            .get(key("other"), hour, read(Arc::clone(&calls)))
            .await;
        assert_eq!(other, Served::Provider, "another key is read");
        // A caller refreshing every 50 ms never gets a value older than that.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (_, fresh) = reads
            .get(
                key("db"),
                Duration::from_millis(50),
                read(Arc::clone(&calls)),
            )
            .await;
        assert_eq!(fresh, Served::Provider);
        tokio::time::sleep(window).await;
        let (_, expired) = reads.get(key("db"), hour, read(Arc::clone(&calls))).await;
        assert_eq!(expired, Served::Provider, "the window has passed");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn the_store_budget_spaces_reads_after_the_burst() {
        let reads = SharedReads::new(Duration::ZERO, 50.0, 2);
        let started = Instant::now();
        for i in 0..6 {
            let (_, served) = reads
                .get(key(&format!("k{i}")), Duration::ZERO, async {
                    Ok(SecretValue::from("v".to_string()))
                })
                .await;
            assert_eq!(served, Served::Provider);
        }
        // Two at once, then one every 20 ms.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
}
