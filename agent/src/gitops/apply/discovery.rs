//! Which resource serves a kind, and whether it is namespaced: asked of the API server once per
//! group/version/kind and cached. A kind the cache does not know is looked up again, so a CRD
//! established a moment ago is found on the next sync without restarting.

use std::collections::HashMap;
use std::sync::RwLock;

use kube::api::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;

/// A served kind: how to address it and its scope.
#[derive(Clone, Debug)]
pub struct Served {
    /// The resource (plural, group, version) to build an `Api` for.
    pub resource: ApiResource,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
}

/// Why a kind could not be looked up (other than "not served").
#[derive(Debug, thiserror::Error)]
#[error("failed to discover the resource for {group}/{version} {kind}")]
pub struct DiscoveryError {
    /// The group.
    pub group: String,
    /// The version.
    pub version: String,
    /// The kind.
    pub kind: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

/// The cache of served kinds.
pub struct Discovery {
    client: kube::Client,
    served: RwLock<HashMap<GroupVersionKind, Served>>,
}

impl Discovery {
    /// An empty cache.
    pub fn new(client: kube::Client) -> Discovery {
        Discovery {
            client,
            served: RwLock::default(),
        }
    }

    /// The resource serving `gvk`, or `None` when the API server does not serve that kind (its
    /// CRD is absent or not established yet).
    pub async fn resolve(&self, gvk: &GroupVersionKind) -> Result<Option<Served>, DiscoveryError> {
        if let Some(served) = self.cached(gvk) {
            return Ok(Some(served));
        }
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok((resource, capabilities)) => {
                let served = Served {
                    resource,
                    namespaced: matches!(capabilities.scope, Scope::Namespaced),
                };
                if let Ok(mut cache) = self.served.write() {
                    cache.insert(gvk.clone(), served.clone());
                }
                Ok(Some(served))
            }
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(source) => Err(DiscoveryError {
                group: gvk.group.clone(),
                version: gvk.version.clone(),
                kind: gvk.kind.clone(),
                source,
            }),
        }
    }

    /// Forgets `gvk` (its CRD was deleted or changed versions): the next lookup asks again.
    pub fn forget(&self, gvk: &GroupVersionKind) {
        if let Ok(mut cache) = self.served.write() {
            cache.remove(gvk);
        }
    }

    fn cached(&self, gvk: &GroupVersionKind) -> Option<Served> {
        self.served.read().ok()?.get(gvk).cloned()
    }
}
