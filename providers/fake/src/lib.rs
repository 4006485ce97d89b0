//! An in-memory [`SecretProvider`] for unit tests and the demo.
//!
//! Secrets are plain byte strings (JSON documents when properties are used), with optional
//! versions; the current version is the last one set. Failures can be injected per key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use mooring_provider::{
    FindQuery, ProviderError, RemoteRef, SecretProvider, SecretValue, json_properties,
    select_property,
};

/// The in-memory store.
#[derive(Default)]
pub struct FakeProvider {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// key → versions in the order they were set.
    secrets: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    /// key → tags, for `find`.
    tags: BTreeMap<String, BTreeMap<String, String>>,
    /// key → reason of an error every read of it returns.
    failures: BTreeMap<String, &'static str>,
    /// How many reads reached the store, for tests of caching and coalescing.
    reads: u64,
}

impl FakeProvider {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` as a new current version `version` of `key`.
    pub fn set(&self, key: &str, version: &str, value: &[u8]) {
        self.with_state(|state| {
            state
                .secrets
                .entry(key.to_string())
                .or_default()
                .push((version.to_string(), value.to_vec()));
        });
    }

    /// Sets the tags `find` matches for `key`.
    pub fn set_tags(&self, key: &str, tags: BTreeMap<String, String>) {
        self.with_state(|state| {
            state.tags.insert(key.to_string(), tags);
        });
    }

    /// Removes `key` and all its versions.
    pub fn remove(&self, key: &str) {
        self.with_state(|state| {
            state.secrets.remove(key);
            state.tags.remove(key);
        });
    }

    /// Makes every read of `key` fail with the error whose `reason()` is `reason`
    /// (`NotFound`, `Forbidden`, `InvalidConfig` or `Unavailable`).
    pub fn fail(&self, key: &str, reason: &'static str) {
        self.with_state(|state| {
            state.failures.insert(key.to_string(), reason);
        });
    }

    /// How many reads reached the store.
    pub fn reads(&self) -> u64 {
        self.with_state(|state| state.reads)
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    fn read(&self, reference: &RemoteRef) -> Result<Vec<u8>, ProviderError> {
        self.with_state(|state| {
            state.reads += 1;
            if let Some(reason) = state.failures.get(&reference.key) {
                return Err(injected(&reference.key, reason));
            }
            let not_found = |detail: String| ProviderError::NotFound {
                key: reference.key.clone(),
                detail,
            };
            let versions = state
                .secrets
                .get(&reference.key)
                .ok_or_else(|| not_found("no such key".into()))?;
            let found = match &reference.version {
                None => versions.last(),
                Some(wanted) => versions.iter().find(|(version, _)| version == wanted),
            };
            found
                .map(|(_, value)| value.clone())
                .ok_or_else(|| not_found(format!("version {:?} does not exist", reference.version)))
        })
    }
}

fn injected(key: &str, reason: &str) -> ProviderError {
    let detail = format!("injected {reason}");
    match reason {
        "NotFound" => ProviderError::NotFound {
            key: key.into(),
            detail,
        },
        "Forbidden" => ProviderError::PermissionDenied {
            key: key.into(),
            detail,
        },
        "InvalidConfig" => ProviderError::InvalidConfig(detail),
        _ => ProviderError::Unavailable {
            detail,
            source: None,
        },
    }
}

#[async_trait::async_trait]
impl SecretProvider for FakeProvider {
    async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        select_property(reference, self.read(reference)?)
    }

    async fn get_map(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let document = SecretValue::new(self.read(reference)?);
        json_properties(&reference.key, document.expose())
    }

    /// Keys under `query.path` (a `/`-separated prefix) that match, each at its current
    /// version; one read. A matching key with an injected failure fails the whole find.
    async fn find(
        &self,
        query: &FindQuery,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        self.with_state(|state| {
            state.reads += 1;
            let under = |key: &str| match query.path.as_deref().map(|p| p.trim_matches('/')) {
                None | Some("") => true,
                Some(path) => key
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/')),
            };
            let no_tags = BTreeMap::new();
            let mut found = BTreeMap::new();
            for (key, versions) in &state.secrets {
                let tags = state.tags.get(key).unwrap_or(&no_tags);
                if !under(key) || !query.matches_name(key) || !query.matches_tags(tags) {
                    continue;
                }
                if let Some(reason) = state.failures.get(key) {
                    return Err(injected(key, reason));
                }
                if let Some((_, value)) = versions.last() {
                    if found.len() == query.limits.results {
                        return Err(ProviderError::InvalidConfig(format!(
                            "find selects more than {} secrets",
                            query.limits.results
                        )));
                    }
                    found.insert(key.clone(), SecretValue::new(value.clone()));
                }
            }
            Ok(found)
        })
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_provider::conformance;

    /// Seeds the fake store directly; versions are numbered per key.
    struct Seed<'a> {
        store: &'a FakeProvider,
        tags: bool,
    }

    #[async_trait::async_trait]
    impl conformance::Seed for Seed<'_> {
        fn scope(&self) -> &str {
            "conformance/run"
        }

        async fn write(
            &self,
            key: &str,
            document: &serde_json::Value,
            tags: &BTreeMap<String, String>,
        ) -> Result<Option<String>, String> {
            let version = self
                .store
                .with_state(|state| state.secrets.get(key).map_or(0, Vec::len) + 1);
            self.store
                .set(key, &version.to_string(), document.to_string().as_bytes());
            if self.tags {
                self.store.set_tags(key, tags.clone());
            }
            Ok(Some(version.to_string()))
        }

        fn supports_tags(&self) -> bool {
            self.tags
        }
    }

    #[tokio::test]
    async fn the_fake_provider_passes_the_conformance_suite() {
        let store = FakeProvider::new();
        let report = conformance::run(
            &store,
            &Seed {
                store: &store,
                tags: true,
            },
        )
        .await;
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let passed = report.into_result().unwrap();
        assert_eq!(passed, conformance::CHECKS);
    }

    #[tokio::test]
    async fn the_conformance_suite_catches_a_store_that_ignores_tags() {
        // The seed says the store has no tags, so a find by tags must be refused; the fake
        // answers it, so exactly that check fails.
        let store = FakeProvider::new();
        let report = conformance::run(
            &store,
            &Seed {
                store: &store,
                tags: false,
            },
        )
        .await;
        let failed: Vec<&str> = report.failed.iter().map(|(check, _)| *check).collect();
        assert_eq!(failed, ["find_by_tags"]);
    }

    #[tokio::test]
    async fn current_and_pinned_versions() {
        let store = FakeProvider::new();
        store.set("db", "1", br#"{"password":"old"}"#);
        store.set("db", "2", br#"{"password":"new"}"#);
        let current = RemoteRef::key("db").with_property("password");
        assert_eq!(store.get(&current).await.unwrap().expose(), b"new");
        let pinned = RemoteRef {
            version: Some("1".into()),
            ..current
        };
        assert_eq!(store.get(&pinned).await.unwrap().expose(), b"old");
        assert_eq!(store.reads(), 2);
    }

    #[tokio::test]
    async fn missing_keys_and_injected_failures_have_reasons() {
        let store = FakeProvider::new();
        assert_eq!(
            store
                .get(&RemoteRef::key("nope"))
                .await
                .unwrap_err()
                .reason(),
            "NotFound"
        );
        store.set("flaky", "1", b"v");
        store.fail("flaky", "Unavailable");
        let error = store.get(&RemoteRef::key("flaky")).await.unwrap_err();
        assert!(error.is_retryable());
    }

    /// A provider that puts the secret into its NotFound errors, as a careless one might.
    struct Leaky(FakeProvider);

    #[async_trait::async_trait]
    impl SecretProvider for Leaky {
        async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
            let whole = RemoteRef {
                property: None,
                ..reference.clone()
            };
            match (self.0.get(reference).await, self.0.get(&whole).await) {
                (Err(ProviderError::NotFound { key, .. }), Ok(document)) => {
                    Err(ProviderError::NotFound {
                        key,
                        detail: String::from_utf8_lossy(document.expose()).into_owned(),
                    })
                }
                (result, _) => result,
            }
        }

        async fn get_map(
            &self,
            reference: &RemoteRef,
        ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
            self.0.get_map(reference).await
        }

        async fn find(
            &self,
            query: &FindQuery,
        ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
            self.0.find(query).await
        }

        async fn validate(&self) -> Result<(), ProviderError> {
            self.0.validate().await
        }
    }

    #[tokio::test]
    async fn the_conformance_suite_catches_a_value_in_an_error() {
        let leaky = Leaky(FakeProvider::new());
        let seed = Seed {
            store: &leaky.0,
            tags: true,
        };
        let report = conformance::run(&leaky, &seed).await;
        let failed: Vec<&str> = report.failed.iter().map(|(check, _)| *check).collect();
        assert_eq!(failed, ["errors_never_contain_the_value"]);
    }

    #[tokio::test]
    async fn find_selects_by_path_name_and_tags() {
        let store = FakeProvider::new();
        store.set("app/db", "1", b"{}");
        store.set("app/cache", "1", b"{}");
        store.set("application", "1", b"{}");
        store.set("other/db", "1", b"{}");
        store.set_tags("app/db", BTreeMap::from([("env".into(), "prod".into())]));
        let by_path = FindQuery::new(Some("app".into()), Some("."), BTreeMap::new()).unwrap();
        let found = store.find(&by_path).await.unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["app/cache", "app/db"]);
        let by_name = FindQuery::new(None, Some("/db$"), BTreeMap::new()).unwrap();
        let found = store.find(&by_name).await.unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["app/db", "other/db"]);
        let tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let by_tags = FindQuery::new(None, None, tags).unwrap();
        let found = store.find(&by_tags).await.unwrap();
        assert_eq!(found.keys().collect::<Vec<_>>(), ["app/db"]);
    }

    #[tokio::test]
    async fn map_of_a_json_secret() {
        let store = FakeProvider::new();
        store.set("app", "1", br#"{"a":"1","b":"2"}"#);
        let map = store.get_map(&RemoteRef::key("app")).await.unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
    }
}
