//! Which store an ExternalSecret reads from, whether its namespace may use it, and the connected
//! provider for it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, ResourceExt};
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::secret_store::{ClusterSecretStore, SecretStore, SecretStoreSpec};
use mooring_provider::ProviderError;
use mooring_provider::SecretProvider;

use super::{Context, Error};
use crate::external_secrets::providers::{
    StoreId, StoreKind, count_provider_call, namespace_is_allowed,
};

/// Finds the referenced store and checks that this namespace may use it.
pub(super) async fn resolve_store(
    es: &ExternalSecret,
    ctx: &Context,
) -> Result<(StoreId, SecretStoreSpec), Error> {
    let namespace = es.namespace().unwrap_or_default();
    let reference = es
        .spec
        .secret_store_ref
        .as_ref()
        .filter(|r| !r.name.is_empty())
        .ok_or_else(|| Error::InvalidSpec("spec.secretStoreRef.name is required".into()))?;
    let kind = match reference.kind.as_deref() {
        None | Some("SecretStore") => StoreKind::SecretStore,
        Some("ClusterSecretStore") => StoreKind::ClusterSecretStore,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.secretStoreRef.kind {other:?} is not SecretStore or ClusterSecretStore"
            )));
        }
    };
    let id = StoreId {
        kind,
        namespace: (kind == StoreKind::SecretStore).then(|| namespace.clone()),
        name: reference.name.clone(),
    };
    let read_error = |source| Error::ReadStore {
        store: id.to_string(),
        source,
    };
    let spec = match kind {
        StoreKind::SecretStore => {
            let api: Api<SecretStore> = Api::namespaced(ctx.client.clone(), &namespace);
            api.get_opt(&reference.name)
                .await
                .map_err(read_error)?
                .map(|store| store.spec)
        }
        StoreKind::ClusterSecretStore => {
            let api: Api<ClusterSecretStore> = Api::all(ctx.client.clone());
            api.get_opt(&reference.name)
                .await
                .map_err(read_error)?
                .map(|store| store.spec.as_store_spec())
        }
    }
    .ok_or_else(|| Error::StoreNotFound(id.to_string()))?;
    if kind == StoreKind::ClusterSecretStore {
        ensure_namespace_allowed(ctx, &id, &spec, &namespace).await?;
    }
    Ok((id, spec))
}

/// Enforces a ClusterSecretStore's `conditions` for `namespace`, on every use (ESO's
/// `shouldProcessSecret`): a name list, label selectors, and name regexes; any match allows.
async fn ensure_namespace_allowed(
    ctx: &Context,
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: &str,
) -> Result<(), Error> {
    let Some(conditions) = spec.conditions.as_ref().filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let labels = api
        .get_opt(namespace)
        .await
        .map_err(|source| Error::ReadNamespace {
            namespace: namespace.to_string(),
            source,
        })?
        .map(|ns| ns.metadata.labels.unwrap_or_default())
        .unwrap_or_default();
    let allowed = namespace_is_allowed(conditions, namespace, &labels);
    if allowed {
        Ok(())
    } else {
        Err(Error::StoreDenied {
            store: store.to_string(),
            namespace: namespace.to_string(),
        })
    }
}

/// The consuming namespace that keys the provider cache: set for referent ClusterSecretStores.
pub(super) fn consumer_of<'a>(
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: &'a str,
) -> Option<&'a str> {
    (store.kind == StoreKind::ClusterSecretStore
        && crate::external_secrets::providers::is_referent(spec))
    .then_some(namespace)
}

/// The connected provider for a store, from the cache when its configuration is unchanged.
pub(super) async fn provider_for(
    ctx: &Context,
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: &str,
) -> Result<Arc<dyn SecretProvider>, Error> {
    let consumer = consumer_of(store, spec, namespace);
    let connection = crate::external_secrets::providers::resolve(
        &ctx.client,
        store,
        spec,
        Some(namespace),
        &ctx.settings,
    )
    .await?;
    let handle = ctx
        .providers
        .get(&ctx.client, store, consumer, connection)
        .await
        .inspect_err(|error| {
            let outcome = error
                .provider_error()
                .map_or("StoreError", ProviderError::reason);
            count_call(ctx, store, "login", outcome);
        })?;
    if handle.fresh {
        count_call(ctx, store, "login", "ok");
    }
    Ok(handle.provider)
}

pub(super) fn count_call(ctx: &Context, store: &StoreId, call: &str, outcome: &str) {
    count_provider_call(&ctx.metrics, store, call, outcome);
}
