//! Vault and OpenBao KV secrets (v1 and v2), through vaultrs.
//!
//! One [`VaultProvider`] holds one authenticated client for a store and reuses it for every read.
//! This first version authenticates with a token; AppRole and Kubernetes auth arrive with the
//! ExternalSecrets work.

use std::collections::BTreeMap;

use mooring_provider::{ProviderError, RemoteRef, SecretProvider, SecretValue, json_properties};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

/// The KV engine version of the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvVersion {
    /// KV v1: unversioned.
    V1,
    /// KV v2: versioned (the default, as in ESO).
    #[default]
    V2,
}

/// Plain configuration, resolved by the agent from a SecretStore and its credential Secrets.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// The server URL (`https://vault.example:8200`).
    pub server: String,
    /// The KV mount (ESO's `path`, for example `secret`).
    pub mount: String,
    /// The KV engine version.
    pub version: KvVersion,
    /// The Vault Enterprise / OpenBao namespace, if any.
    pub namespace: Option<String>,
}

/// A Vault or OpenBao store.
pub struct VaultProvider {
    client: VaultClient,
    config: VaultConfig,
}

impl VaultProvider {
    /// A provider that authenticates with `token`.
    pub fn with_token(config: VaultConfig, token: &str) -> Result<Self, ProviderError> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings.address(&config.server).token(token);
        if let Some(namespace) = &config.namespace {
            settings.namespace(Some(namespace.clone()));
        }
        let settings = settings.build().map_err(|e| {
            ProviderError::InvalidConfig(format!("vault server {:?}: {e}", config.server))
        })?;
        let client = VaultClient::new(settings).map_err(|e| {
            ProviderError::InvalidConfig(format!("vault server {:?}: {e}", config.server))
        })?;
        Ok(VaultProvider { client, config })
    }

    /// Reads the secret at `reference.key` as its map of fields.
    async fn read_fields(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, serde_json::Value>, ProviderError> {
        let mount = &self.config.mount;
        let key = &reference.key;
        let result = match (self.config.version, &reference.version) {
            (KvVersion::V2, None) => vaultrs::kv2::read(&self.client, mount, key).await,
            (KvVersion::V2, Some(version)) => {
                let number = version.parse::<u64>().map_err(|_| {
                    ProviderError::InvalidConfig(format!(
                        "version {version:?} of {key:?} is not a KV v2 version number"
                    ))
                })?;
                vaultrs::kv2::read_version(&self.client, mount, key, number).await
            }
            (KvVersion::V1, None) => vaultrs::kv1::get(&self.client, mount, key).await,
            (KvVersion::V1, Some(_)) => {
                return Err(ProviderError::InvalidConfig(format!(
                    "{key:?}: a KV v1 mount has no versions"
                )));
            }
        };
        result.map_err(|error| classify(key, error))
    }
}

/// Maps a vaultrs error to the provider contract's classes.
fn classify(key: &str, error: ClientError) -> ProviderError {
    match error {
        ClientError::APIError { code: 404, .. } => ProviderError::NotFound {
            key: key.to_string(),
            detail: "vault answered 404".into(),
        },
        ClientError::APIError { code: 403, .. } => ProviderError::PermissionDenied {
            key: key.to_string(),
            detail: "vault answered 403".into(),
        },
        ClientError::APIError { code, .. } if (400..500).contains(&code) => {
            ProviderError::InvalidConfig(format!("vault answered {code} for {key:?}"))
        }
        other => ProviderError::Unavailable {
            detail: format!("failed to read {key:?} from vault"),
            source: Some(Box::new(other)),
        },
    }
}

/// A field as bytes: strings as they are, anything else as JSON (as ESO does).
fn field_bytes(value: serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

#[async_trait::async_trait]
impl SecretProvider for VaultProvider {
    async fn get(&self, reference: &RemoteRef) -> Result<SecretValue, ProviderError> {
        let mut fields = self.read_fields(reference).await?;
        match &reference.property {
            Some(property) => fields
                .remove(property)
                .map(|value| SecretValue::new(field_bytes(value)))
                .ok_or_else(|| ProviderError::NotFound {
                    key: reference.key.clone(),
                    detail: format!("property {property:?} is not in the secret"),
                }),
            // The whole secret is its fields as one JSON object, as ESO returns it.
            None => serde_json::to_vec(&fields)
                .map(SecretValue::new)
                .map_err(|e| ProviderError::Unavailable {
                    detail: format!("failed to encode {:?}", reference.key),
                    source: Some(Box::new(e)),
                }),
        }
    }

    async fn get_map(
        &self,
        reference: &RemoteRef,
    ) -> Result<BTreeMap<String, SecretValue>, ProviderError> {
        let whole = self
            .get(&RemoteRef {
                property: None,
                ..reference.clone()
            })
            .await?;
        json_properties(&reference.key, whole.expose())
    }

    async fn validate(&self) -> Result<(), ProviderError> {
        vaultrs::token::lookup_self(&self.client)
            .await
            .map(|_| ())
            .map_err(|error| match error {
                ClientError::APIError { code: 403, .. } => ProviderError::PermissionDenied {
                    key: String::new(),
                    detail: "vault rejected the token".into(),
                },
                other => classify("", other),
            })
    }
}
