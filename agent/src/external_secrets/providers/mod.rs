//! Secret-store providers: the only place that names provider crates.
//!
//! A store spec becomes a [`Connection`] (plain configuration with its credentials read from
//! Secrets), and a connection becomes an authenticated [`SecretProvider`] by `connect`. The
//! [`ProviderCache`] keeps one connected provider per store (and per consuming namespace for
//! referent ClusterSecretStores) and reuses it until the store, its credentials, or the token's
//! lease change: no login per reconcile (ESO's #376, #1194).

pub mod shared_reads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use mooring_crds::secret_store::{SecretKeySelector, SecretStoreSpec, ServiceAccountSelector};
use mooring_provider::{ProviderError, SecretProvider};
use zeroize::Zeroizing;

use crate::metrics::{ExternalSecretMetrics, StoreCallLabels};

/// The kind of a store reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreKind {
    /// A namespaced `SecretStore`.
    SecretStore,
    /// A cluster-scoped `ClusterSecretStore`.
    ClusterSecretStore,
}

impl StoreKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

/// Which store: its kind, namespace (namespaced stores) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId {
    /// SecretStore or ClusterSecretStore.
    pub kind: StoreKind,
    /// The store's namespace; `None` for a ClusterSecretStore.
    pub namespace: Option<String>,
    /// The store's name.
    pub name: String,
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// Settings of the agent that apply to every store.
#[derive(Clone, Debug, Default)]
pub struct ProviderSettings {
    /// An AWS endpoint override (tests, VPC endpoints).
    pub aws_endpoint_url: Option<String>,
}

/// A store's provider configuration with credentials resolved; ready to connect.
pub enum Connection {
    /// Vault or OpenBao.
    #[cfg(feature = "vault")]
    Vault {
        /// Server, mount, KV version, namespace.
        config: mooring_provider_vault::VaultConfig,
        /// The CAs the server's certificate must chain to (`caBundle`/`caProvider`).
        trust: mooring_provider_vault::ServerTrust,
        /// How to log in (the ServiceAccount token is requested at connect time).
        auth: VaultLogin,
    },
    /// AWS Secrets Manager.
    #[cfg(feature = "aws")]
    Aws {
        /// Region, endpoint, credentials, role.
        config: mooring_provider_aws::AwsConfig,
        /// The ServiceAccount (namespace, name, audiences) whose tokens feed a web identity;
        /// empty without one. Part of the fingerprint, so changing it connects again.
        identity: String,
    },
}

/// Vault login inputs, before a ServiceAccount token is requested.
#[cfg(feature = "vault")]
pub enum VaultLogin {
    /// Ready to use (token, AppRole, or Kubernetes with a JWT from a Secret).
    Ready(mooring_provider_vault::VaultAuth),
    /// Kubernetes auth with a token requested for a ServiceAccount.
    ServiceAccount {
        /// The auth mount.
        mount: String,
        /// The Vault role.
        role: String,
        /// The ServiceAccount's namespace.
        namespace: String,
        /// The ServiceAccount.
        account: ServiceAccountSelector,
    },
}

impl Connection {
    /// A digest of everything the connection depends on (credentials included), so a cached
    /// provider is replaced when a credential Secret changes. Never printed.
    fn fingerprint(&self) -> [u8; 32] {
        let mut parts: Vec<Zeroizing<String>> = Vec::new();
        match self {
            #[cfg(feature = "vault")]
            Connection::Vault {
                config,
                trust,
                auth,
            } => {
                parts.push(format!("vault:{config:?}").into());
                // A changed CA (a rotated caProvider Secret) reconnects with the new roots.
                if let mooring_provider_vault::ServerTrust::Only(pem) = trust {
                    parts.push(format!("ca:{}", String::from_utf8_lossy(pem)).into());
                }
                match auth {
                    VaultLogin::Ready(mooring_provider_vault::VaultAuth::Token(token)) => {
                        parts.push(format!("token:{token}").into())
                    }
                    VaultLogin::Ready(mooring_provider_vault::VaultAuth::AppRole {
                        mount,
                        role_id,
                        secret_id,
                    }) => parts.push(format!("approle:{mount}:{role_id}:{secret_id}").into()),
                    VaultLogin::Ready(mooring_provider_vault::VaultAuth::Kubernetes {
                        mount,
                        role,
                        jwt,
                    }) => parts.push(format!("k8s:{mount}:{role}:{jwt}").into()),
                    VaultLogin::ServiceAccount {
                        mount,
                        role,
                        namespace,
                        account,
                    } => {
                        parts.push(format!("k8s-sa:{mount}:{role}:{namespace}:{account:?}").into())
                    }
                }
            }
            #[cfg(feature = "aws")]
            Connection::Aws { config, identity } => {
                parts.push(format!("aws-identity:{identity}").into());
                parts.push(
                    format!(
                        "aws:{}:{:?}",
                        config.region,
                        config.endpoint_url.as_deref().unwrap_or_default()
                    )
                    .into(),
                );
                if let Some(c) = &config.credentials {
                    parts.push(
                        format!(
                            "{}:{}:{:?}",
                            c.access_key_id, c.secret_access_key, c.session_token
                        )
                        .into(),
                    );
                }
                if let Some(identity) = &config.web_identity {
                    parts.push(
                        format!("jwt:{}:{}", identity.role_arn, identity.session_name).into(),
                    );
                }
                if let Some(role) = &config.assume_role {
                    parts.push(
                        format!(
                            "role:{}:{:?}:{}",
                            role.role_arn, role.external_id, role.session_name
                        )
                        .into(),
                    );
                }
            }
        }
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in &parts {
            context.update(part.as_bytes());
            context.update(&[0]);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }
}

/// Why a store could not be used. Messages name the store and the field, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The spec is unusable as written.
    #[error("{store}: {message}")]
    InvalidSpec {
        /// The store.
        store: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A credential Secret or ServiceAccount could not be read.
    #[error("{store}: failed to read {what}")]
    Credentials {
        /// The store.
        store: String,
        /// Which object.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The provider refused, or could not be reached.
    #[error("{store}: {source}")]
    Provider {
        /// The store.
        store: String,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
}

impl StoreError {
    /// The provider error, if the provider answered.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            StoreError::Provider { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether retrying may help without a spec change.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::InvalidSpec { .. } => false,
            StoreError::Credentials { .. } => true,
            StoreError::Provider { source, .. } => source.is_retryable(),
        }
    }
}

/// Whether credentials of a ClusterSecretStore are resolved in the consuming namespace (a
/// "referent" store: some credential reference has no namespace).
pub fn is_referent(spec: &SecretStoreSpec) -> bool {
    let selectors = credential_namespaces(spec);
    selectors.iter().any(Option::is_none)
}

/// The `namespace` of every credential reference in the spec.
fn credential_namespaces(spec: &SecretStoreSpec) -> Vec<Option<String>> {
    let mut found = Vec::new();
    if let Some(auth) = spec.provider.vault.as_ref().and_then(|v| v.auth.as_ref()) {
        if let Some(token) = &auth.token_secret_ref {
            found.push(token.namespace.clone());
        }
        if let Some(role) = &auth.app_role {
            found.push(role.secret_ref.namespace.clone());
        }
        if let Some(kubernetes) = &auth.kubernetes {
            if let Some(account) = &kubernetes.service_account_ref {
                found.push(account.namespace.clone());
            }
            if let Some(secret) = &kubernetes.secret_ref {
                found.push(secret.namespace.clone());
            }
        }
    }
    if let Some(keys) = spec
        .provider
        .aws
        .as_ref()
        .and_then(|a| a.auth.as_ref())
        .and_then(|a| a.secret_ref.as_ref())
    {
        for selector in [
            &keys.access_key_id_secret_ref,
            &keys.secret_access_key_secret_ref,
            &keys.session_token_secret_ref,
        ]
        .into_iter()
        .flatten()
        {
            found.push(selector.namespace.clone());
        }
    }
    if let Some(account) = spec
        .provider
        .aws
        .as_ref()
        .and_then(|a| a.auth.as_ref())
        .and_then(|a| a.jwt.as_ref())
        .and_then(|j| j.service_account_ref.as_ref())
    {
        found.push(account.namespace.clone());
    }
    found
}

/// Reads credentials for `store` and turns its spec into a [`Connection`].
///
/// `namespace` is where credential references without a namespace are read: the store's own
/// namespace for a SecretStore (a `namespace` in its references is ignored, as ESO does at run
/// time), the consuming ExternalSecret's for a referent ClusterSecretStore.
pub async fn resolve(
    client: &kube::Client,
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: Option<&str>,
    settings: &ProviderSettings,
) -> Result<Connection, StoreError> {
    let invalid = |message: String| StoreError::InvalidSpec {
        store: store.to_string(),
        message,
    };
    let reader = CredentialReader {
        client,
        store,
        namespace,
    };
    let provider = &spec.provider;
    let configured = [
        provider.vault.is_some(),
        provider.aws.is_some(),
        provider.azurekv.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count()
        + provider.unknown.len();
    if configured != 1 {
        let names: Vec<&str> = provider.unknown.keys().map(String::as_str).collect();
        return Err(invalid(if names.is_empty() {
            "spec.provider must set exactly one of vault, aws, azurekv".into()
        } else {
            format!(
                "spec.provider.{} is not supported by mooring (supported: vault, aws, azurekv)",
                names.join(", spec.provider.")
            )
        }));
    }
    if let Some(vault) = &provider.vault {
        #[cfg(feature = "vault")]
        return vault_connection(vault, &reader).await;
        #[cfg(not(feature = "vault"))]
        return Err(invalid(
            "this agent was built without the vault provider".into(),
        ));
    }
    if let Some(aws) = &provider.aws {
        #[cfg(feature = "aws")]
        return aws_connection(aws, &reader, settings).await;
        #[cfg(not(feature = "aws"))]
        return Err(invalid(
            "this agent was built without the aws provider".into(),
        ));
    }
    if let Some(azure) = &provider.azurekv {
        return Err(azure_unsupported(azure, &invalid));
    }
    let _ = settings;
    Err(invalid("spec.provider is empty".into()))
}

/// Azure Key Vault: the configuration is checked, but there is no client yet (no Key Vault test
/// double is reachable to test one against), so the store is reported as not supported.
fn azure_unsupported(
    azure: &mooring_crds::secret_store::AzureKvProvider,
    invalid: &dyn Fn(String) -> StoreError,
) -> StoreError {
    use mooring_provider_azure::{AuthType, AzureConfig};
    let auth = match azure.auth_type.as_deref() {
        None | Some("ServicePrincipal") => AuthType::ServicePrincipal {
            client_id: String::new(),
        },
        Some("ManagedIdentity") => AuthType::ManagedIdentity,
        Some("WorkloadIdentity") => AuthType::WorkloadIdentity,
        Some(other) => {
            return invalid(format!(
                "spec.provider.azurekv.authType {other:?} is not one of ServicePrincipal, ManagedIdentity, WorkloadIdentity"
            ));
        }
    };
    let config = AzureConfig {
        vault_url: azure.vault_url.clone(),
        tenant_id: azure.tenant_id.clone(),
        auth,
    };
    match config.validate() {
        Err(error) => invalid(format!("spec.provider.azurekv: {error}")),
        Ok(()) => invalid(
            "spec.provider.azurekv: the configuration is valid, but reading from Azure Key Vault is not implemented yet"
                .into(),
        ),
    }
}

struct CredentialReader<'a> {
    client: &'a kube::Client,
    store: &'a StoreId,
    namespace: Option<&'a str>,
}

impl CredentialReader<'_> {
    /// The namespace a reference resolves in (ESO's rule: a reference's own namespace only for
    /// ClusterSecretStores).
    fn namespace_of(&self, explicit: Option<&str>, field: &str) -> Result<String, StoreError> {
        let chosen = match self.store.kind {
            StoreKind::SecretStore => self.store.namespace.as_deref(),
            StoreKind::ClusterSecretStore => explicit.or(self.namespace),
        };
        chosen
            .map(str::to_string)
            .ok_or_else(|| StoreError::InvalidSpec {
                store: self.store.to_string(),
                message: format!(
                    "{field} has no namespace, and there is no consuming namespace to resolve it in"
                ),
            })
    }

    /// One key of a Secret, as text.
    async fn secret_value(
        &self,
        selector: &SecretKeySelector,
        field: &str,
    ) -> Result<Zeroizing<String>, StoreError> {
        let invalid = |message: String| StoreError::InvalidSpec {
            store: self.store.to_string(),
            message,
        };
        let name = selector
            .name
            .as_deref()
            .ok_or_else(|| invalid(format!("{field}.name is required")))?;
        let key = selector
            .key
            .as_deref()
            .ok_or_else(|| invalid(format!("{field}.key is required")))?;
        let namespace = self.namespace_of(selector.namespace.as_deref(), field)?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| StoreError::Credentials {
                store: self.store.to_string(),
                what: format!("Secret {namespace}/{name} ({field})"),
                source,
            })?
            .ok_or_else(|| invalid(format!("{field}: Secret {namespace}/{name} does not exist")))?;
        let bytes = secret
            .data
            .and_then(|mut data| data.remove(key))
            .ok_or_else(|| {
                invalid(format!(
                    "{field}: Secret {namespace}/{name} has no key {key:?}"
                ))
            })?;
        let bytes = Zeroizing::new(bytes.0);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| invalid(format!("{field}: key {key:?} is not UTF-8")))?;
        // Trailing newlines from `kubectl create secret --from-file` are never part of a token.
        Ok(Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).to_string(),
        ))
    }
}

impl CredentialReader<'_> {
    /// The PEM bundle a `caProvider` names. Its `namespace` counts for ClusterSecretStores only;
    /// a namespaced store naming another namespace is refused rather than ignored (ESO's
    /// GHSA-wv26-88m5-6h59: a cross-namespace read through a store).
    async fn ca_bundle(
        &self,
        provider: &mooring_crds::secret_store::CaProvider,
        field: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let invalid = |message: String| StoreError::InvalidSpec {
            store: self.store.to_string(),
            message,
        };
        if self.store.kind == StoreKind::SecretStore
            && provider
                .namespace
                .as_deref()
                .is_some_and(|ns| Some(ns) != self.store.namespace.as_deref())
        {
            return Err(invalid(format!(
                "{field}.namespace may only be set on a ClusterSecretStore (a SecretStore reads its own namespace)"
            )));
        }
        // A ClusterSecretStore's CA is the store owner's choice, never the consuming
        // namespace's (ESO requires the namespace too): a tenant must not pick the CA of a
        // connection other namespaces share.
        let namespace = match (self.store.kind, provider.namespace.as_deref()) {
            (StoreKind::ClusterSecretStore, None) => {
                return Err(invalid(format!(
                    "{field}.namespace is required on a ClusterSecretStore"
                )));
            }
            (_, explicit) => self.namespace_of(explicit, field)?,
        };
        let key = provider
            .key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid(format!("{field}.key is required")))?;
        let name = &provider.name;
        let read_error = |what: String| {
            move |source| StoreError::Credentials {
                store: self.store.to_string(),
                what,
                source,
            }
        };
        let bytes = match provider.type_.as_str() {
            "Secret" => {
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
                let secret = api
                    .get_opt(name)
                    .await
                    .map_err(read_error(format!("Secret {namespace}/{name} ({field})")))?
                    .ok_or_else(|| {
                        invalid(format!("{field}: Secret {namespace}/{name} does not exist"))
                    })?;
                secret
                    .data
                    .and_then(|mut data| data.remove(key))
                    .map(|b| b.0)
            }
            "ConfigMap" => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
                let map = api
                    .get_opt(name)
                    .await
                    .map_err(read_error(format!(
                        "ConfigMap {namespace}/{name} ({field})"
                    )))?
                    .ok_or_else(|| {
                        invalid(format!(
                            "{field}: ConfigMap {namespace}/{name} does not exist"
                        ))
                    })?;
                let text = map
                    .data
                    .and_then(|mut data| data.remove(key))
                    .map(String::into_bytes);
                text.or_else(|| {
                    map.binary_data
                        .and_then(|mut data| data.remove(key))
                        .map(|b| b.0)
                })
            }
            other => {
                return Err(invalid(format!(
                    "{field}.type {other:?} is not Secret or ConfigMap"
                )));
            }
        };
        bytes.ok_or_else(|| {
            invalid(format!(
                "{field}: {} {namespace}/{name} has no key {key:?}",
                provider.type_
            ))
        })
    }
}

/// Requests a 10-minute token for `account` (the login uses it once; Vault keeps its own token).
async fn service_account_token(
    client: &kube::Client,
    store: &StoreId,
    namespace: &str,
    account: &ServiceAccountSelector,
) -> Result<Zeroizing<String>, StoreError> {
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
        .create_token_request(&account.name, &PostParams::default(), &request)
        .await
        .map_err(|source| StoreError::Credentials {
            store: store.to_string(),
            what: format!("a token for ServiceAccount {namespace}/{}", account.name),
            source,
        })?;
    issued
        .status
        .and_then(|status| status.token)
        .map(Zeroizing::new)
        .ok_or_else(|| StoreError::InvalidSpec {
            store: store.to_string(),
            message: format!(
                "the TokenRequest for ServiceAccount {namespace}/{} returned no token",
                account.name
            ),
        })
}

#[cfg(feature = "vault")]
async fn vault_connection(
    vault: &mooring_crds::secret_store::VaultProvider,
    reader: &CredentialReader<'_>,
) -> Result<Connection, StoreError> {
    use mooring_provider_vault::{KvVersion, VaultAuth, VaultConfig};
    let invalid = |message: String| StoreError::InvalidSpec {
        store: reader.store.to_string(),
        message,
    };
    let version = match vault.version.as_deref() {
        None | Some("v2") => KvVersion::V2,
        Some("v1") => KvVersion::V1,
        Some(other) => {
            return Err(invalid(format!(
                "spec.provider.vault.version {other:?} is not v1 or v2"
            )));
        }
    };
    // Without `path`, ESO takes the mount from each key's first segment; so does mooring.
    let mount = vault.path.clone().unwrap_or_default();
    let trust = vault_trust(vault, reader).await?;
    let config = VaultConfig {
        server: vault.server.clone(),
        mount: mount.trim_matches('/').to_string(),
        version,
        namespace: vault.namespace.clone(),
    };
    let auth = vault
        .auth
        .as_ref()
        .ok_or_else(|| invalid("spec.provider.vault.auth is required".into()))?;
    let methods = [
        auth.token_secret_ref.is_some(),
        auth.app_role.is_some(),
        auth.kubernetes.is_some(),
    ]
    .iter()
    .filter(|m| **m)
    .count()
        + auth.unknown.len();
    if methods != 1 {
        return Err(invalid(if auth.unknown.is_empty() {
            "spec.provider.vault.auth must set exactly one of tokenSecretRef, appRole, kubernetes"
                .into()
        } else {
            format!(
                "spec.provider.vault.auth: mooring supports tokenSecretRef, appRole and kubernetes; {} is not supported",
                auth.unknown.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }));
    }
    let login = if let Some(token) = &auth.token_secret_ref {
        let token = reader
            .secret_value(token, "spec.provider.vault.auth.tokenSecretRef")
            .await?;
        VaultLogin::Ready(VaultAuth::Token(token.to_string()))
    } else if let Some(role) = &auth.app_role {
        let role_id = match (&role.role_id, &role.role_ref) {
            (Some(id), _) => Zeroizing::new(id.clone()),
            (None, Some(selector)) => {
                reader
                    .secret_value(selector, "spec.provider.vault.auth.appRole.roleRef")
                    .await?
            }
            (None, None) => {
                return Err(invalid(
                    "spec.provider.vault.auth.appRole needs roleId or roleRef".into(),
                ));
            }
        };
        let secret_id = reader
            .secret_value(
                &role.secret_ref,
                "spec.provider.vault.auth.appRole.secretRef",
            )
            .await?;
        VaultLogin::Ready(VaultAuth::AppRole {
            mount: role.path.clone().unwrap_or_else(|| "approle".into()),
            role_id: role_id.to_string(),
            secret_id: secret_id.to_string(),
        })
    } else if let Some(kubernetes) = &auth.kubernetes {
        let mount = kubernetes
            .mount_path
            .clone()
            .unwrap_or_else(|| "kubernetes".into());
        match (&kubernetes.service_account_ref, &kubernetes.secret_ref) {
            (Some(account), _) => VaultLogin::ServiceAccount {
                mount,
                role: kubernetes.role.clone(),
                namespace: reader.namespace_of(
                    account.namespace.as_deref(),
                    "spec.provider.vault.auth.kubernetes.serviceAccountRef",
                )?,
                account: account.clone(),
            },
            (None, Some(secret)) => {
                let jwt = reader
                    .secret_value(secret, "spec.provider.vault.auth.kubernetes.secretRef")
                    .await?;
                VaultLogin::Ready(VaultAuth::Kubernetes {
                    mount,
                    role: kubernetes.role.clone(),
                    jwt: jwt.to_string(),
                })
            }
            // ESO falls back to its own pod's token here, which hands the agent's identity to
            // anyone who can create a store; mooring refuses.
            (None, None) => {
                return Err(invalid(
                    "spec.provider.vault.auth.kubernetes needs serviceAccountRef or secretRef (mooring never logs in with its own identity)"
                        .into(),
                ));
            }
        }
    } else {
        return Err(invalid("spec.provider.vault.auth names no method".into()));
    };
    Ok(Connection::Vault {
        config,
        trust,
        auth: login,
    })
}

/// The CAs a Vault store trusts: `caBundle` (base64 PEM) or `caProvider` (a key of a Secret or
/// ConfigMap) — exactly those, without the system roots — or, with neither, the system roots.
#[cfg(feature = "vault")]
async fn vault_trust(
    vault: &mooring_crds::secret_store::VaultProvider,
    reader: &CredentialReader<'_>,
) -> Result<mooring_provider_vault::ServerTrust, StoreError> {
    use base64::Engine;
    use mooring_provider_vault::ServerTrust;
    let invalid = |message: String| StoreError::InvalidSpec {
        store: reader.store.to_string(),
        message,
    };
    let from_pem = |pem: &[u8], field: &str| {
        ServerTrust::from_pem(pem, field).map_err(|error| invalid(error.to_string()))
    };
    match (&vault.ca_bundle, &vault.ca_provider) {
        (None, None) => Ok(ServerTrust::SystemRoots),
        (Some(_), Some(_)) => Err(invalid(
            "spec.provider.vault sets both caBundle and caProvider; set one".into(),
        )),
        (Some(bundle), None) => {
            let field = "spec.provider.vault.caBundle";
            // ESO's caBundle is a byte array: base64 in JSON. Line breaks from `base64` are fine.
            let compact: String = bundle.split_whitespace().collect();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|_| {
                    invalid(format!(
                        "{field} is not base64 (it holds a base64-encoded PEM bundle)"
                    ))
                })?;
            from_pem(&pem, field)
        }
        (None, Some(provider)) => {
            let field = "spec.provider.vault.caProvider";
            let pem = reader.ca_bundle(provider, field).await?;
            from_pem(&pem, field)
        }
    }
}

/// The annotation ESO reads the web-identity role from (as EKS's IRSA).
#[cfg(feature = "aws")]
const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The annotation ESO reads the token audience from; `sts.amazonaws.com` without it.
#[cfg(feature = "aws")]
const AUDIENCE_ANNOTATION: &str = "eks.amazonaws.com/audience";
/// The STS session name of every mooring session (seen in CloudTrail).
#[cfg(feature = "aws")]
const AWS_SESSION_NAME: &str = "mooring-provider-aws";

#[cfg(feature = "aws")]
async fn aws_connection(
    aws: &mooring_crds::secret_store::AwsProvider,
    reader: &CredentialReader<'_>,
    settings: &ProviderSettings,
) -> Result<Connection, StoreError> {
    use mooring_provider_aws::{AssumeRole, AwsConfig, StaticCredentials};
    let invalid = |message: String| StoreError::InvalidSpec {
        store: reader.store.to_string(),
        message,
    };
    if aws.service != "SecretsManager" {
        return Err(invalid(format!(
            "spec.provider.aws.service {:?} is not supported (mooring supports SecretsManager)",
            aws.service
        )));
    }
    let region = aws
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| invalid("spec.provider.aws.region is required".into()))?;
    if aws.prefix.is_some() {
        return Err(invalid(
            "spec.provider.aws.prefix is not supported yet".into(),
        ));
    }
    let assume_role = aws
        .role
        .as_ref()
        .filter(|r| !r.is_empty())
        .map(|role_arn| AssumeRole {
            role_arn: role_arn.clone(),
            external_id: aws.external_id.clone().filter(|e| !e.is_empty()),
            session_name: AWS_SESSION_NAME.into(),
            session_duration: None,
        });
    let auth = aws.auth.as_ref();
    // As ESO: web identity first, then static keys.
    if let Some(jwt) = auth.and_then(|a| a.jwt.as_ref()) {
        let (web_identity, identity) = aws_web_identity(jwt, reader).await?;
        return Ok(Connection::Aws {
            config: AwsConfig {
                region,
                endpoint_url: settings.aws_endpoint_url.clone(),
                credentials: None,
                web_identity: Some(web_identity),
                assume_role,
            },
            identity,
        });
    }
    let keys = auth.and_then(|a| a.secret_ref.as_ref());
    // Without auth, ESO uses the controller's own identity; mooring refuses (see SECURITY.md).
    let keys = keys.ok_or_else(|| {
        invalid(
            "spec.provider.aws.auth needs secretRef or jwt (mooring never uses its own AWS identity)"
                .into(),
        )
    })?;
    let field = "spec.provider.aws.auth.secretRef";
    let access = keys
        .access_key_id_secret_ref
        .as_ref()
        .ok_or_else(|| invalid(format!("{field}.accessKeyIDSecretRef is required")))?;
    let secret = keys
        .secret_access_key_secret_ref
        .as_ref()
        .ok_or_else(|| invalid(format!("{field}.secretAccessKeySecretRef is required")))?;
    let access_key_id = reader
        .secret_value(access, &format!("{field}.accessKeyIDSecretRef"))
        .await?;
    let secret_access_key = reader
        .secret_value(secret, &format!("{field}.secretAccessKeySecretRef"))
        .await?;
    let session_token = match &keys.session_token_secret_ref {
        Some(selector) => Some(
            reader
                .secret_value(selector, &format!("{field}.sessionTokenSecretRef"))
                .await?
                .to_string(),
        ),
        None => None,
    };
    Ok(Connection::Aws {
        config: AwsConfig {
            region,
            endpoint_url: settings.aws_endpoint_url.clone(),
            credentials: Some(StaticCredentials {
                access_key_id: access_key_id.to_string(),
                secret_access_key: secret_access_key.to_string(),
                session_token,
            }),
            web_identity: None,
            assume_role,
        },
        identity: String::new(),
    })
}

/// ESO's `auth.jwt`: the role comes from the ServiceAccount's `eks.amazonaws.com/role-arn`
/// annotation, the audiences are its `eks.amazonaws.com/audience` (else `sts.amazonaws.com`)
/// plus `serviceAccountRef.audiences`. Returns the web identity and a description of the
/// ServiceAccount for the fingerprint.
#[cfg(feature = "aws")]
async fn aws_web_identity(
    jwt: &mooring_crds::secret_store::AwsJwtAuth,
    reader: &CredentialReader<'_>,
) -> Result<(mooring_provider_aws::WebIdentity, String), StoreError> {
    let field = "spec.provider.aws.auth.jwt.serviceAccountRef";
    let invalid = |message: String| StoreError::InvalidSpec {
        store: reader.store.to_string(),
        message,
    };
    let account = jwt
        .service_account_ref
        .as_ref()
        .ok_or_else(|| invalid(format!("{field} is required")))?;
    let namespace = reader.namespace_of(account.namespace.as_deref(), field)?;
    let api: Api<ServiceAccount> = Api::namespaced(reader.client.clone(), &namespace);
    let found = api
        .get_opt(&account.name)
        .await
        .map_err(|source| StoreError::Credentials {
            store: reader.store.to_string(),
            what: format!("ServiceAccount {namespace}/{} ({field})", account.name),
            source,
        })?
        .ok_or_else(|| {
            invalid(format!(
                "{field}: ServiceAccount {namespace}/{} does not exist",
                account.name
            ))
        })?;
    let annotations = found.metadata.annotations.unwrap_or_default();
    let role_arn = annotations
        .get(ROLE_ARN_ANNOTATION)
        .filter(|r| !r.is_empty())
        .cloned()
        .ok_or_else(|| {
            invalid(format!(
                "{field}: ServiceAccount {namespace}/{} has no {ROLE_ARN_ANNOTATION} annotation (the role its token is exchanged for)",
                account.name
            ))
        })?;
    let mut audiences = vec![
        annotations
            .get(AUDIENCE_ANNOTATION)
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_else(|| "sts.amazonaws.com".into()),
    ];
    audiences.extend(account.audiences.iter().flatten().cloned());
    let selector = ServiceAccountSelector {
        name: account.name.clone(),
        namespace: Some(namespace.clone()),
        audiences: Some(audiences),
    };
    let identity = format!("{namespace}/{}:{:?}", account.name, selector.audiences);
    let tokens = ServiceAccountTokens {
        client: reader.client.clone(),
        store: reader.store.clone(),
        namespace,
        account: selector,
    };
    Ok((
        mooring_provider_aws::WebIdentity {
            role_arn,
            session_name: AWS_SESSION_NAME.into(),
            session_duration: None,
            tokens: Arc::new(tokens),
        },
        identity,
    ))
}

/// Tokens for a ServiceAccount by TokenRequest, requested each time the provider needs new
/// web-identity credentials (once per credential lifetime).
#[cfg(feature = "aws")]
struct ServiceAccountTokens {
    client: kube::Client,
    store: StoreId,
    namespace: String,
    account: ServiceAccountSelector,
}

#[cfg(feature = "aws")]
#[async_trait::async_trait]
impl mooring_provider_aws::WebIdentityTokenSource for ServiceAccountTokens {
    async fn token(&self) -> Result<Zeroizing<String>, ProviderError> {
        service_account_token(&self.client, &self.store, &self.namespace, &self.account)
            .await
            .map_err(|error| {
                let detail = format!(
                    "spec.provider.aws.auth.jwt.serviceAccountRef: no token for ServiceAccount {}/{}",
                    self.namespace, self.account.name
                );
                match error {
                    StoreError::Credentials { source, .. } => ProviderError::Unavailable {
                        detail,
                        source: Some(Box::new(source)),
                    },
                    other => ProviderError::InvalidConfig(format!("{detail}: {other}")),
                }
            })
    }
}

/// A connected provider and how long it may be used.
struct Connected {
    provider: Arc<dyn SecretProvider>,
    /// After this, log in again (a lease that would otherwise expire).
    renew_at: Option<Instant>,
}

/// Logs in: the only call that costs a provider login.
async fn connect(
    client: &kube::Client,
    store: &StoreId,
    connection: &Connection,
) -> Result<Connected, StoreError> {
    let provider_error = |source| StoreError::Provider {
        store: store.to_string(),
        source,
    };
    match connection {
        #[cfg(feature = "vault")]
        Connection::Vault {
            config,
            trust,
            auth,
        } => {
            use mooring_provider_vault::{VaultAuth, VaultProvider};
            let provider = match auth {
                VaultLogin::Ready(auth) => {
                    VaultProvider::login_trusting(config.clone(), trust.clone(), auth).await
                }
                VaultLogin::ServiceAccount {
                    mount,
                    role,
                    namespace,
                    account,
                } => {
                    let jwt = service_account_token(client, store, namespace, account).await?;
                    let auth = VaultAuth::Kubernetes {
                        mount: mount.clone(),
                        role: role.clone(),
                        jwt: jwt.to_string(),
                    };
                    VaultProvider::login_trusting(config.clone(), trust.clone(), &auth).await
                }
            }
            .map_err(provider_error)?;
            // Log in again after two thirds of the lease, before the token can expire mid-use.
            let renew_at = provider
                .lease()
                .map(|lease| Instant::now() + lease.mul_f64(2.0 / 3.0));
            Ok(Connected {
                provider: Arc::new(provider),
                renew_at,
            })
        }
        #[cfg(feature = "aws")]
        Connection::Aws { config, .. } => {
            let _ = client;
            let provider =
                mooring_provider_aws::AwsSecretsManagerProvider::new(config.clone()).await;
            // STS (web identity, role) now: a refusal is a failed login, and the provider is
            // only cached with a working session.
            provider.authenticate().await.map_err(provider_error)?;
            Ok(Connected {
                provider: Arc::new(provider),
                renew_at: None,
            })
        }
    }
}

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
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let connected = connect(client, store, &connection).await?;
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
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.remove(&(store.clone(), consumer.map(str::to_string)));
    }

    /// Forgets every provider of stores no longer present (called with the live set).
    pub fn retain(&self, keep: impl Fn(&StoreId) -> bool) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|(store, _), _| keep(store));
    }

    /// Logins done so far for `store` (tests and metrics).
    pub async fn logins(&self, store: &StoreId, consumer: Option<&str>) -> u64 {
        let slot = {
            let entries = self
                .entries
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
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

/// How long to wait before validating a store again: its `refreshInterval` (seconds or a Go
/// duration), else five minutes (ESO's `--store-requeue-interval`).
pub fn store_refresh_interval(spec: &SecretStoreSpec) -> Duration {
    let default = Duration::from_secs(300);
    match &spec.refresh_interval {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .filter(|s| *s > 0)
            .map_or(default, Duration::from_secs),
        Some(serde_json::Value::String(text)) => crate::duration::parse(text)
            .ok()
            .filter(|d| !d.is_zero())
            .unwrap_or(default),
        _ => default,
    }
}

/// The `Fetched` condition reason for a provider error, also the outcome label of a failed
/// provider call: the provider's own [`ProviderError::reason`].
pub fn fetched_reason(error: &ProviderError) -> &'static str {
    error.reason()
}

/// Whether mooring handles stores of this controller class: no class, or `mooring` (ESO's
/// `spec.controller`, so both can run side by side during a migration).
pub fn is_handled_here(spec: &SecretStoreSpec) -> bool {
    spec.controller
        .as_deref()
        .is_none_or(|class| class.is_empty() || class == "mooring")
}

/// Counts one provider call in `mooring_externalsecret_provider_calls_total`.
pub fn count_provider_call(
    metrics: &ExternalSecretMetrics,
    store: &StoreId,
    call: &str,
    outcome: &str,
) {
    metrics
        .provider_calls
        .get_or_create(&StoreCallLabels {
            store: store.to_string(),
            call: call.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> SecretStoreSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn referent_stores_are_recognised() {
        let referent = spec(serde_json::json!({"provider": {"vault": {
            "server": "http://v", "path": "secret",
            "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}}}));
        assert!(is_referent(&referent));
        let pinned = spec(serde_json::json!({"provider": {"vault": {
            "server": "http://v", "path": "secret",
            "auth": {"tokenSecretRef": {"name": "t", "key": "token", "namespace": "vault"}}}}}));
        assert!(!is_referent(&pinned));
    }

    #[test]
    fn aws_web_identity_without_a_namespace_is_referent() {
        let referent = spec(serde_json::json!({"provider": {"aws": {
            "service": "SecretsManager", "region": "eu-west-1",
            "auth": {"jwt": {"serviceAccountRef": {"name": "app"}}}}}}));
        assert!(is_referent(&referent));
        let pinned = spec(serde_json::json!({"provider": {"aws": {
            "service": "SecretsManager", "region": "eu-west-1",
            "auth": {"jwt": {"serviceAccountRef": {"name": "app", "namespace": "aws"}}}}}}));
        assert!(!is_referent(&pinned));
    }

    #[cfg(feature = "aws")]
    #[test]
    fn aws_fingerprints_follow_the_service_account_and_the_role() {
        let connection = |identity: &str, external_id: Option<&str>| Connection::Aws {
            config: mooring_provider_aws::AwsConfig {
                region: "eu-west-1".into(),
                assume_role: Some(mooring_provider_aws::AssumeRole {
                    role_arn: "arn:aws:iam::1:role/r".into(),
                    external_id: external_id.map(str::to_string),
                    session_name: AWS_SESSION_NAME.into(),
                    session_duration: None,
                }),
                ..Default::default()
            },
            identity: identity.into(),
        };
        let same = connection("ns/app:[sts]", Some("a")).fingerprint();
        assert_eq!(same, connection("ns/app:[sts]", Some("a")).fingerprint());
        assert_ne!(same, connection("ns/other:[sts]", Some("a")).fingerprint());
        assert_ne!(same, connection("ns/app:[sts]", Some("b")).fingerprint());
    }

    #[test]
    fn store_refresh_interval_accepts_seconds_and_durations() {
        let with = |value: serde_json::Value| {
            let mut s = spec(serde_json::json!({"provider": {}}));
            s.refresh_interval = Some(value);
            store_refresh_interval(&s)
        };
        assert_eq!(with(serde_json::json!(60)), Duration::from_secs(60));
        assert_eq!(with(serde_json::json!("2m")), Duration::from_secs(120));
        assert_eq!(with(serde_json::json!(0)), Duration::from_secs(300));
    }

    #[test]
    fn fingerprints_change_with_credentials_only() {
        let connection = |token: &str| Connection::Vault {
            config: mooring_provider_vault::VaultConfig {
                server: "http://v".into(),
                mount: "secret".into(),
                version: mooring_provider_vault::KvVersion::V2,
                namespace: None,
            },
            trust: mooring_provider_vault::ServerTrust::SystemRoots,
            auth: VaultLogin::Ready(mooring_provider_vault::VaultAuth::Token(token.into())),
        };
        assert_eq!(connection("a").fingerprint(), connection("a").fingerprint());
        assert_ne!(connection("a").fingerprint(), connection("b").fingerprint());
    }
}
