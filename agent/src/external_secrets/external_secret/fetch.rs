//! Reading the values of one ExternalSecret from its store: every `dataFrom` and `data` entry, in
//! ESO's precedence, each `(key, version)` once, shared with other ExternalSecrets of the store.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use base64::Engine;
use kube::ResourceExt;
use mooring_crds::external_secret::{
    ExternalSecret, ExternalSecretData, ExternalSecretDataFromRemoteRef,
    ExternalSecretDataRemoteRef, ExternalSecretFind,
};
use mooring_provider::{ProviderError, RemoteRef, SecretProvider, SecretValue};
use zeroize::Zeroizing;

use super::policy::{Deletion, Policies};
use super::refresh_gate::Urgency;
use super::store::{consumer_of, count_call, provider_for, resolve_store};
use super::{Context, Error, data_from};
use crate::external_secrets::providers::shared_reads::{ReadKey, Served, copy_result};
use crate::external_secrets::providers::{StoreId, is_handled_here};

/// Secret keys and their values, zeroized when dropped.
pub(super) type Values = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// What reading the store gave.
pub(super) enum Read {
    /// The store belongs to another controller class (ESO running next to mooring): nothing was
    /// read.
    OtherController,
    /// The values; `None` when `deletionPolicy: Delete` and every remote value is gone.
    Values(Option<Values>),
}

/// Reads the ExternalSecret's values: finds its store and the connected provider, waits for a
/// turn at the store (periodic refreshes take turns; a first sync or a spec change goes ahead),
/// and fetches. A permission error makes the provider log in again next time.
pub(super) async fn read_store(
    es: &ExternalSecret,
    ctx: &Context,
    policies: &Policies,
    urgency: Urgency,
) -> Result<Read, Error> {
    let namespace = es.namespace().unwrap_or_default();
    let (store, spec) = resolve_store(es, ctx).await?;
    if !is_handled_here(&spec) {
        return Ok(Read::OtherController);
    }
    let provider = provider_for(ctx, &store, &spec, &namespace).await?;
    let consumer = consumer_of(&store, &spec, &namespace);
    let turn = {
        // Waiting here is this controller's queue.
        let _queued = ctx.reconciles.queued();
        ctx.gate.admit(&store, urgency).await
    };
    let source = Source {
        provider: provider.as_ref(),
        store: &store,
        consumer,
        max_age: policies.interval,
    };
    let fetched = fetch(es, policies, &source, ctx).await;
    drop(turn);
    if let Err(error) = &fetched
        && matches!(
            error.provider_error(),
            Some(ProviderError::PermissionDenied { .. })
        )
    {
        // A token that expired or was revoked: log in again next time.
        ctx.providers.forget(&store, consumer);
    }
    fetched.map(Read::Values)
}

/// Where one sync reads from.
#[derive(Clone, Copy)]
pub(super) struct Source<'a> {
    /// The connected provider.
    pub(super) provider: &'a dyn SecretProvider,
    /// The store it belongs to.
    pub(super) store: &'a StoreId,
    /// The consuming namespace, for referent ClusterSecretStores.
    pub(super) consumer: Option<&'a str>,
    /// The ExternalSecret's refresh interval: a shared read older than this is not reused.
    pub(super) max_age: Duration,
}

/// Reads every `dataFrom` and `data` entry. `None` when `deletionPolicy: Delete` and every
/// remote value is gone. Each `(key, version)` is read once; properties are taken locally.
pub(super) async fn fetch(
    es: &ExternalSecret,
    policies: &Policies,
    source: &Source<'_>,
    ctx: &Context,
) -> Result<Option<Values>, Error> {
    let mut collected = Collected {
        source,
        policies,
        ctx,
        documents: HashMap::new(),
        values: BTreeMap::new(),
        entries: 0,
        missing: 0,
    };
    // ESO's precedence: dataFrom entries in order (later ones win), then data[] over all.
    for (index, from) in es.spec.data_from.iter().flatten().enumerate() {
        collected.add_data_from(index, from).await?;
    }
    for data in es.spec.data.iter().flatten() {
        collected.add_data(data).await?;
    }
    collected.finish()
}

/// The documents read by one fetch (each `(key, version)` once) and what was taken from them.
struct Collected<'a> {
    source: &'a Source<'a>,
    policies: &'a Policies,
    ctx: &'a Context,
    documents: HashMap<(String, Option<String>), Result<SecretValue, ProviderError>>,
    values: Values,
    /// The `dataFrom` and `data` entries read.
    entries: usize,
    /// How many of them found nothing, tolerated by the deletion policy.
    missing: usize,
}

impl Collected<'_> {
    /// `dataFrom[index]`: the secrets a `find` selects (before `extract`, as ESO when both are
    /// set) or the properties of an `extract`, their keys named and their values decoded.
    async fn add_data_from(
        &mut self,
        index: usize,
        from: &ExternalSecretDataFromRemoteRef,
    ) -> Result<(), Error> {
        let rewrites = from.rewrite.as_deref();
        let (map, decoding, remote) = if let Some(find) = &from.find {
            let found = read_found(self.source, index, find, self.ctx).await?;
            let named = found.map(|found| {
                data_from::name_keys(
                    index,
                    rewrites,
                    find.conversion_strategy.as_deref(),
                    "find.conversionStrategy",
                    found,
                )
            });
            (
                named,
                find.decoding_strategy.as_deref(),
                format!("spec.dataFrom[{index}].find"),
            )
        } else if let Some(extract) = &from.extract {
            let document = read_document(&mut self.documents, self.source, extract, self.ctx).await;
            let map = document
                .and_then(|doc| mooring_provider::json_properties(&extract.key, doc.expose()));
            let named = map.map(|map| {
                data_from::name_keys(
                    index,
                    rewrites,
                    extract.conversion_strategy.as_deref(),
                    "extract.conversionStrategy",
                    map,
                )
            });
            (
                named,
                extract.decoding_strategy.as_deref(),
                extract.key.clone(),
            )
        } else {
            return Ok(());
        };
        self.entries += 1;
        match map {
            Ok(named) => {
                for (key, value) in named? {
                    let decoded = decode(&key, value.expose(), decoding)?;
                    self.values.insert(key, decoded);
                }
            }
            Err(error) => {
                self.missing += tolerate(self.policies, self.source.store, &remote, error)?
            }
        }
        Ok(())
    }

    /// A `data[]` entry: one property (or the whole value) of a document, decoded.
    async fn add_data(&mut self, data: &ExternalSecretData) -> Result<(), Error> {
        self.entries += 1;
        let reference = &data.remote_ref;
        let document = read_document(&mut self.documents, self.source, reference, self.ctx).await;
        let value = document.and_then(|doc| {
            let remote = RemoteRef {
                key: reference.key.clone(),
                property: reference.property.clone().filter(|p| !p.is_empty()),
                version: None,
            };
            mooring_provider::select_property(&remote, doc.expose().to_vec())
        });
        match value {
            Ok(value) => {
                let decoded = decode(
                    &data.secret_key,
                    value.expose(),
                    reference.decoding_strategy.as_deref(),
                )?;
                self.values.insert(data.secret_key.clone(), decoded);
            }
            Err(error) => {
                self.missing += tolerate(self.policies, self.source.store, &reference.key, error)?;
            }
        }
        Ok(())
    }

    /// The values, or `None` when `deletionPolicy: Delete` and every entry found nothing.
    fn finish(self) -> Result<Option<Values>, Error> {
        if self.entries == 0 {
            return Err(Error::InvalidSpec(
                "spec.data or spec.dataFrom must have at least one entry".into(),
            ));
        }
        if self.missing == self.entries && self.policies.deletion == Deletion::Delete {
            return Ok(None);
        }
        Ok(Some(self.values))
    }
}

/// The secrets `dataFrom[index].find` selects, keyed by their full names: one read of the query
/// shared with every ExternalSecret of the store that asks within the read window, admitted by
/// the store's budget like any read. No match at all is NotFound, so an empty result never
/// empties a Secret (the deletion policies decide, as for a missing key).
async fn read_found(
    source: &Source<'_>,
    index: usize,
    find: &ExternalSecretFind,
    ctx: &Context,
) -> Result<Result<BTreeMap<String, SecretValue>, ProviderError>, Error> {
    let query = data_from::find_query(index, find)?;
    let provider = source.provider;
    let read = async { provider.find(&query).await.map(data_from::encode_found) };
    let key = data_from::find_read_key(&query);
    let result = read_shared(source, ctx, key, None, "find", read).await;
    let field = format!("spec.dataFrom[{index}].find");
    Ok(result.and_then(|encoded| {
        let found =
            data_from::decode_found(&encoded).ok_or_else(|| ProviderError::Unavailable {
                detail: format!("failed to decode the shared result of {field}"),
                source: None,
            })?;
        if found.is_empty() {
            return Err(ProviderError::NotFound {
                key: field.clone(),
                detail: "no secret matches the query".into(),
            });
        }
        Ok(found)
    }))
}

/// Reads `(key, version)` once per fetch (and shares it with other ExternalSecrets within the
/// read window).
async fn read_document(
    documents: &mut HashMap<(String, Option<String>), Result<SecretValue, ProviderError>>,
    source: &Source<'_>,
    reference: &ExternalSecretDataRemoteRef,
    ctx: &Context,
) -> Result<SecretValue, ProviderError> {
    let version = reference.version.clone().filter(|v| !v.is_empty());
    // `metadataPolicy: Fetch` reads the secret's metadata, never shared with its value.
    let metadata = reference.metadata_policy.as_deref() == Some("Fetch");
    let shared_key = if metadata {
        format!("\0metadata\0{}", reference.key)
    } else {
        reference.key.clone()
    };
    let cache_key = (shared_key.clone(), version.clone());
    if let Some(found) = documents.get(&cache_key) {
        return copy_result(found);
    }
    let remote = RemoteRef {
        key: reference.key.clone(),
        property: None,
        version: version.clone(),
    };
    let provider = source.provider;
    let read = async {
        if metadata {
            provider.get_metadata(&remote).await
        } else {
            provider.get(&remote).await
        }
    };
    let result = read_shared(source, ctx, shared_key, version, "get", read).await;
    let copy = copy_result(&result);
    documents.insert(cache_key, result);
    copy
}

/// One read through the store's shared reads, the single path by which values leave the
/// provider: `read` runs unless a read of the same `key` by another ExternalSecret of the store
/// serves it (within the read window and `max_age`). Counts the call as `call` (`get`, `find`)
/// or `coalesced`, with the provider's answer.
async fn read_shared(
    source: &Source<'_>,
    ctx: &Context,
    key: String,
    version: Option<String>,
    call: &'static str,
    read: impl Future<Output = Result<SecretValue, ProviderError>>,
) -> Result<SecretValue, ProviderError> {
    let shared_key = ReadKey {
        store: source.store.clone(),
        consumer: source.consumer.map(str::to_string),
        key,
        version,
    };
    let (result, served) = ctx.reads.get(shared_key, source.max_age, read).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.reason(),
    };
    let call = match served {
        Served::Provider => call,
        Served::Coalesced => "coalesced",
    };
    count_call(ctx, source.store, call, outcome);
    result
}

/// A missing remote value is tolerated (counted) when `deletionPolicy` is Delete or Merge;
/// anything else fails the sync, leaving the Secret as it is.
fn tolerate(
    policies: &Policies,
    store: &StoreId,
    key: &str,
    error: ProviderError,
) -> Result<usize, Error> {
    let tolerated = matches!(error, ProviderError::NotFound { .. })
        && matches!(policies.deletion, Deletion::Delete | Deletion::Merge);
    if tolerated {
        Ok(1)
    } else {
        Err(Error::ReadRemote {
            store: store.to_string(),
            key: key.to_string(),
            source: error,
        })
    }
}

/// Applies `decodingStrategy` (ESO's `runtime/decoding`).
fn decode(key: &str, value: &[u8], strategy: Option<&str>) -> Result<Zeroizing<Vec<u8>>, Error> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let failed = |strategy: &str| Error::Decode {
        key: key.to_string(),
        strategy: strategy.to_string(),
    };
    let text = || std::str::from_utf8(value).map(str::trim);
    match strategy {
        None | Some("") | Some("None") => Ok(Zeroizing::new(value.to_vec())),
        Some("Base64") => text()
            .ok()
            .and_then(|t| STANDARD.decode(t).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| failed("Base64")),
        Some("Base64URL") => text()
            .ok()
            .and_then(|t| URL_SAFE.decode(t).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| failed("Base64URL")),
        Some("Auto") => Ok(Zeroizing::new(
            text()
                .ok()
                .and_then(|t| STANDARD.decode(t).ok().or_else(|| URL_SAFE.decode(t).ok()))
                .unwrap_or_else(|| value.to_vec()),
        )),
        Some(other) => Err(Error::InvalidSpec(format!(
            "decodingStrategy {other:?} of {key:?} is not one of None, Base64, Base64URL, Auto"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_strategies() {
        assert_eq!(
            decode("k", b"aGk=", Some("Base64")).unwrap().as_slice(),
            b"hi"
        );
        assert_eq!(
            decode("k", b"aGk", Some("Base64URL")).unwrap_err().reason(),
            "DecodeFailed"
        );
        assert_eq!(
            decode("k", b"aGk=", Some("Auto")).unwrap().as_slice(),
            b"hi"
        );
        assert_eq!(
            decode("k", b"not base64!", Some("Auto"))
                .unwrap()
                .as_slice(),
            b"not base64!"
        );
        assert_eq!(decode("k", b"aGk=", None).unwrap().as_slice(), b"aGk=");
        let error = decode("k", b"s3cr3t!!", Some("Base64")).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    /// `fetch` over the fake provider, with a context whose API client is never called.
    async fn fetch_with(
        store: &mooring_provider_fake::FakeProvider,
        reads: &std::sync::Arc<crate::external_secrets::providers::shared_reads::SharedReads>,
        spec: serde_json::Value,
    ) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        use super::super::Context;
        use super::super::policy::policies;
        use crate::external_secrets::providers::{StoreId, StoreKind};
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let ctx = Context::new(
            client.clone(),
            std::sync::Arc::default(),
            crate::external_secrets::providers::ProviderSettings::default(),
            std::sync::Arc::clone(reads),
            crate::metrics::ExternalSecretMetrics::default(),
            crate::events::EventSink::new(client),
        );
        let spec = serde_json::from_value(spec).unwrap();
        let mut es = mooring_crds::external_secret::ExternalSecret::new("x", spec);
        es.metadata.namespace = Some("app".into());
        let policies = policies(&es.spec)?;
        let id = StoreId {
            kind: StoreKind::SecretStore,
            namespace: Some("app".into()),
            name: "fake".into(),
        };
        let source = Source {
            provider: store,
            store: &id,
            consumer: None,
            max_age: policies.interval,
        };
        let values = fetch(&es, &policies, &source, &ctx)
            .await?
            .unwrap_or_default();
        Ok(values.into_iter().map(|(k, v)| (k, v.to_vec())).collect())
    }

    #[tokio::test]
    async fn precedence_shared_finds_and_find_errors() {
        let store = mooring_provider_fake::FakeProvider::new();
        store.set("app/a", "1", br#"{"x":"1"}"#);
        store.set("app/b", "1", br#"{"y":"2"}"#);
        store.set("db", "1", br#"{"a":"from-extract","b":"db-b","c/d":"cd"}"#);
        let reads = std::sync::Arc::new(
            crate::external_secrets::providers::shared_reads::SharedReads::new(
                std::time::Duration::from_secs(60),
                0.0,
                1,
            ),
        );
        // find (rewritten), then extract over it (later entries win), then data over all.
        let spec = serde_json::json!({
            "secretStoreRef": {"name": "fake"},
            "dataFrom": [
                {"find": {"path": "app", "name": {"regexp": "^app/"}},
                 "rewrite": [{"regexp": {"source": "^app/(.*)$", "target": "$1"}}]},
                {"extract": {"key": "db"}},
            ],
            "data": [{"secretKey": "b", "remoteRef": {"key": "db", "property": "a"}}],
        });
        let values = fetch_with(&store, &reads, spec.clone()).await.unwrap();
        let expected: BTreeMap<String, Vec<u8>> =
            [("a", "from-extract"), ("b", "from-extract"), ("c_d", "cd")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect();
        assert_eq!(values, expected);
        assert_eq!(
            store.reads(),
            2,
            "one find, one read of db for extract and data"
        );
        // Another ExternalSecret with the same query within the window: served from the first.
        fetch_with(&store, &reads, spec).await.unwrap();
        assert_eq!(store.reads(), 2, "the find and the read were shared");

        // Nothing matches: NotFound, and the sync fails (Retain) rather than emptying the Secret.
        let none = serde_json::json!({
            "secretStoreRef": {"name": "fake"},
            "dataFrom": [{"find": {"name": {"regexp": "^nothing/"}}}],
        });
        let error = fetch_with(&store, &reads, none).await.unwrap_err();
        assert_eq!(error.reason(), "NotFound");
        assert!(
            error.to_string().contains("spec.dataFrom[0].find"),
            "{error}"
        );
        // Two found names that convert to one key: an error naming the field and both names.
        store.set("dup/a/b", "1", b"{}");
        store.set("dup/a_b", "1", b"{}");
        let colliding = serde_json::json!({
            "secretStoreRef": {"name": "fake"},
            "dataFrom": [{"find": {"path": "dup", "name": {"regexp": "."}}}],
        });
        let error = fetch_with(&store, &reads, colliding)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.dataFrom[0].find.conversionStrategy"),
            "{error}"
        );
    }
}
