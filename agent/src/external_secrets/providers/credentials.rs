//! Reading a store's credentials from the cluster: keys of Secrets, CA bundles in Secrets or
//! ConfigMaps, and ServiceAccount tokens by TokenRequest.
//!
//! Only the providers built in read credentials: with none (`--no-default-features`), the reader
//! is built and handed to Azure's configuration check, which reads nothing.
#![cfg_attr(
    not(any(feature = "vault", feature = "aws")),
    allow(dead_code, reason = "no provider that reads credentials is built in")
)]

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use mooring_crds::secret_store::{SecretKeySelector, ServiceAccountSelector};
use mooring_provider::ProviderError;
use zeroize::Zeroizing;

use super::{StoreError, StoreId, StoreKind};

/// Reads the objects a store's spec references, in the namespace ESO's rules pick.
pub(super) struct CredentialReader<'a> {
    /// The API client.
    pub(super) client: &'a kube::Client,
    /// The store whose credentials these are.
    pub(super) store: &'a StoreId,
    /// Where references without a namespace resolve: the consuming ExternalSecret's namespace
    /// for a referent ClusterSecretStore.
    pub(super) namespace: Option<&'a str>,
}

impl CredentialReader<'_> {
    /// An unusable spec of this reader's store.
    pub(super) fn invalid(&self, message: impl Into<String>) -> StoreError {
        StoreError::invalid_spec(self.store, message)
    }

    /// A failed read of `object` (named for the message, with the field that references it).
    fn read_failed(&self, object: String) -> impl FnOnce(kube::Error) -> StoreError + '_ {
        move |source| StoreError::ReadCredentials {
            store: self.store.to_string(),
            object,
            source,
        }
    }

    /// The namespace a reference resolves in (ESO's rule: a reference's own namespace only for
    /// ClusterSecretStores).
    pub(super) fn namespace_of(
        &self,
        explicit: Option<&str>,
        field: &str,
    ) -> Result<String, StoreError> {
        let chosen = match self.store.kind {
            StoreKind::SecretStore => self.store.namespace.as_deref(),
            StoreKind::ClusterSecretStore => explicit.or(self.namespace),
        };
        chosen.map(str::to_string).ok_or_else(|| {
            self.invalid(format!(
                "{field} has no namespace, and there is no consuming namespace to resolve it in"
            ))
        })
    }

    /// One key of a Secret, as text.
    pub(super) async fn secret_value(
        &self,
        selector: &SecretKeySelector,
        field: &str,
    ) -> Result<Zeroizing<String>, StoreError> {
        let name = selector
            .name
            .as_deref()
            .ok_or_else(|| self.invalid(format!("{field}.name is required")))?;
        let key = selector
            .key
            .as_deref()
            .ok_or_else(|| self.invalid(format!("{field}.key is required")))?;
        let namespace = self.namespace_of(selector.namespace.as_deref(), field)?;
        let bytes = self
            .secret_key(&namespace, name, key, field)
            .await?
            .ok_or_else(|| {
                self.invalid(format!(
                    "{field}: Secret {namespace}/{name} has no key {key:?}"
                ))
            })?;
        let bytes = Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| self.invalid(format!("{field}: key {key:?} is not UTF-8")))?;
        // Trailing newlines from `kubectl create secret --from-file` are never part of a token.
        Ok(Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).to_string(),
        ))
    }

    /// The PEM bundle a `caProvider` names. Its `namespace` counts for ClusterSecretStores only;
    /// a namespaced store naming another namespace is refused rather than ignored (ESO's
    /// advisory GHSA-wv26-88m5-6h59, a cross-namespace read through a store:
    /// <https://github.com/external-secrets/external-secrets/security/advisories/GHSA-wv26-88m5-6h59>).
    #[cfg(feature = "vault")]
    pub(super) async fn ca_bundle(
        &self,
        provider: &mooring_crds::secret_store::CaProvider,
        field: &str,
    ) -> Result<Vec<u8>, StoreError> {
        if self.store.kind == StoreKind::SecretStore
            && provider
                .namespace
                .as_deref()
                .is_some_and(|ns| Some(ns) != self.store.namespace.as_deref())
        {
            return Err(self.invalid(format!(
                "{field}.namespace may only be set on a ClusterSecretStore (a SecretStore reads its own namespace)"
            )));
        }
        // A ClusterSecretStore's CA is the store owner's choice, never the consuming
        // namespace's (ESO requires the namespace too): a tenant must not pick the CA of a
        // connection other namespaces share.
        let namespace = match (self.store.kind, provider.namespace.as_deref()) {
            (StoreKind::ClusterSecretStore, None) => {
                return Err(self.invalid(format!(
                    "{field}.namespace is required on a ClusterSecretStore"
                )));
            }
            (_, explicit) => self.namespace_of(explicit, field)?,
        };
        let key = provider
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| self.invalid(format!("{field}.key is required")))?;
        let name = &provider.name;
        let bytes = match provider.type_.as_str() {
            "Secret" => self.secret_key(&namespace, name, key, field).await?,
            "ConfigMap" => self.config_map_key(&namespace, name, key, field).await?,
            other => {
                return Err(
                    self.invalid(format!("{field}.type {other:?} is not Secret or ConfigMap"))
                );
            }
        };
        bytes.ok_or_else(|| {
            self.invalid(format!(
                "{field}: {} {namespace}/{name} has no key {key:?}",
                provider.type_
            ))
        })
    }

    /// One key of a Secret that must exist; `None` when the key is missing.
    async fn secret_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        field: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(self.read_failed(format!("Secret {namespace}/{name} ({field})")))?
            .ok_or_else(|| {
                self.invalid(format!("{field}: Secret {namespace}/{name} does not exist"))
            })?;
        Ok(secret
            .data
            .and_then(|mut data| data.remove(key))
            .map(|b| b.0))
    }

    /// One key of a ConfigMap that must exist, text or binary; `None` when the key is missing.
    #[cfg(feature = "vault")]
    async fn config_map_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        field: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), namespace);
        let map = api
            .get_opt(name)
            .await
            .map_err(self.read_failed(format!("ConfigMap {namespace}/{name} ({field})")))?
            .ok_or_else(|| {
                self.invalid(format!(
                    "{field}: ConfigMap {namespace}/{name} does not exist"
                ))
            })?;
        let text = map
            .data
            .and_then(|mut data| data.remove(key))
            .map(String::into_bytes);
        Ok(text.or_else(|| {
            map.binary_data
                .and_then(|mut data| data.remove(key))
                .map(|b| b.0)
        }))
    }

    /// A ServiceAccount that must exist.
    pub(super) async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        field: &str,
    ) -> Result<ServiceAccount, StoreError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(self.read_failed(format!("ServiceAccount {namespace}/{name} ({field})")))?
            .ok_or_else(|| {
                self.invalid(format!(
                    "{field}: ServiceAccount {namespace}/{name} does not exist"
                ))
            })
    }
}

/// Tokens for a ServiceAccount by TokenRequest, requested each time a provider needs new
/// credentials (once per their lifetime, for AWS web identity and Azure workload identity);
/// `field` is where the store asks for them, for the error.
pub(super) struct ServiceAccountTokens {
    pub(super) client: kube::Client,
    pub(super) store: StoreId,
    pub(super) namespace: String,
    pub(super) account: ServiceAccountSelector,
    pub(super) field: &'static str,
}

impl ServiceAccountTokens {
    /// A new token: `Unavailable` when the API server could not give one, else `InvalidConfig`.
    pub(super) async fn request(&self) -> Result<Zeroizing<String>, ProviderError> {
        service_account_token(&self.client, &self.store, &self.namespace, &self.account)
            .await
            .map_err(|error| {
                let detail = format!(
                    "{}: no token for ServiceAccount {}/{}",
                    self.field, self.namespace, self.account.name
                );
                match error {
                    StoreError::ReadCredentials { source, .. } => ProviderError::Unavailable {
                        detail,
                        source: Some(Box::new(source)),
                    },
                    other => ProviderError::InvalidConfig(format!(
                        "{detail}: {}",
                        crate::errors::error_chain(&other)
                    )),
                }
            })
    }
}

/// Requests a 10-minute token for `account` (the login uses it once; Vault keeps its own token).
pub(super) async fn service_account_token(
    client: &kube::Client,
    store: &StoreId,
    namespace: &str,
    account: &ServiceAccountSelector,
) -> Result<Zeroizing<String>, StoreError> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: account.audiences.clone().filter(|a| !a.is_empty()),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let issued = api
        .create_token_request(&account.name, &kube::api::PostParams::default(), &request)
        .await
        .map_err(|source| StoreError::ReadCredentials {
            store: store.to_string(),
            object: format!("a token for ServiceAccount {namespace}/{}", account.name),
            source,
        })?;
    issued
        .status
        .and_then(|status| status.token)
        .map(Zeroizing::new)
        .ok_or_else(|| {
            StoreError::invalid_spec(
                store,
                format!(
                    "the TokenRequest for ServiceAccount {namespace}/{} returned no token",
                    account.name
                ),
            )
        })
}
