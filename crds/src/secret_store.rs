//! `SecretStore` and `ClusterSecretStore` (external-secrets.io/v1), schema-compatible with the
//! External Secrets Operator for the fields mooring implements.
//!
//! Field names are exactly ESO's, so existing manifests apply unchanged. Objects mooring does not
//! model field by field keep `x-kubernetes-preserve-unknown-fields`: fields it does not know are
//! stored as written (never pruned, never defaulted) and collected by [`unknown_fields`] so the
//! controller can name them in a condition instead of ignoring them silently. No schema carries a
//! `default`, so the API server never writes defaults back into a user's spec (ESO's permanent
//! Argo CD diff: <https://github.com/external-secrets/external-secrets/issues/5895>).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;

/// Fields present in an object but not modelled by mooring, by name, with their values.
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

/// Where the secrets live and how to authenticate; usable from its own namespace only.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "SecretStore",
    namespaced,
    status = "SecretStoreStatus",
    shortname = "ss",
    category = "external-secrets",
    doc = "SecretStore represents a secure external location for storing secrets, which can be referenced as part of `storeRef` fields.",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[kube(derive = "PartialEq")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreSpec {
    /// Which provider to read from: exactly one of `vault`, `aws`, `azurekv`.
    pub provider: SecretStoreProvider,
    /// The controller class that should handle this store (ESO's `--controller-class`); mooring
    /// handles stores with no class and with class `mooring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Provider-side HTTP retries (kept for compatibility; mooring retries with its own backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub retry_settings: Option<serde_json::Value>,
    /// How often the store is validated again: seconds, or a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub refresh_interval: Option<serde_json::Value>,
    /// ClusterSecretStore only: the namespaces allowed to use it (any entry matching allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ClusterSecretStoreCondition>>,
    /// Fields mooring does not implement, reported in a condition.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// Like a SecretStore, but cluster-scoped: usable from any namespace its `conditions` allow.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ClusterSecretStore",
    status = "SecretStoreStatus",
    shortname = "css",
    category = "external-secrets",
    doc = "ClusterSecretStore represents a secure external location for storing secrets, which can be referenced as part of `storeRef` fields.",
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Capabilities","type":"string","jsonPath":".status.capabilities"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[kube(derive = "PartialEq")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreSpec {
    /// Which provider to read from: exactly one of `vault`, `aws`, `azurekv`.
    pub provider: SecretStoreProvider,
    /// The controller class that should handle this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// Provider-side HTTP retries (kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub retry_settings: Option<serde_json::Value>,
    /// How often the store is validated again: seconds, or a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub refresh_interval: Option<serde_json::Value>,
    /// The namespaces allowed to use this store; enforced on every use. Absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<ClusterSecretStoreCondition>>,
    /// Fields mooring does not implement, reported in a condition.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

impl ClusterSecretStoreSpec {
    /// The same content as a namespaced store's spec: both kinds share ESO's `SecretStoreSpec`.
    pub fn as_store_spec(&self) -> SecretStoreSpec {
        SecretStoreSpec {
            provider: self.provider.clone(),
            controller: self.controller.clone(),
            retry_settings: self.retry_settings.clone(),
            refresh_interval: self.refresh_interval.clone(),
            conditions: self.conditions.clone(),
            unknown: self.unknown.clone(),
        }
    }
}

/// One rule of which namespaces may use a ClusterSecretStore; a namespace matching any field of
/// any rule is allowed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretStoreCondition {
    /// Namespaces whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Namespaces whose name matches one of these regular expressions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_regexes: Option<Vec<String>>,
}

/// The provider one-of. Providers ESO has and mooring does not are kept in `unknown` and named
/// in the store's condition.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreProvider {
    /// HashiCorp Vault or OpenBao.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProvider>,
    /// AWS (service `SecretsManager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsProvider>,
    /// Azure Key Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azurekv: Option<AzureKvProvider>,
    /// Other providers (gcpsm, kubernetes, …), kept as written.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// The one provider a store reads from, borrowed from its [`SecretStoreProvider`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProviderSpec<'a> {
    /// `spec.provider.vault`.
    Vault(&'a VaultProvider),
    /// `spec.provider.aws`.
    Aws(&'a AwsProvider),
    /// `spec.provider.azurekv`.
    AzureKv(&'a AzureKvProvider),
}

impl ProviderSpec<'_> {
    /// The field under `spec.provider` that sets this provider.
    pub fn field(self) -> &'static str {
        match self {
            ProviderSpec::Vault(_) => "vault",
            ProviderSpec::Aws(_) => "aws",
            ProviderSpec::AzureKv(_) => "azurekv",
        }
    }
}

/// Why `spec.provider` does not name exactly one provider mooring implements.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderChoiceError {
    /// No provider is set.
    #[error("spec.provider must set exactly one of vault, aws, azurekv")]
    Missing,
    /// More than one provider is set.
    #[error(
        "spec.provider must set exactly one of vault, aws, azurekv, not {}",
        .fields.join(" and ")
    )]
    Several {
        /// The fields set, in declaration order.
        fields: Vec<&'static str>,
    },
    /// A provider ESO has and mooring does not is set.
    #[error(
        "spec.provider.{} is not supported by mooring (supported: vault, aws, azurekv)",
        .fields.join(", spec.provider.")
    )]
    Unsupported {
        /// The unsupported fields, by name.
        fields: Vec<String>,
    },
}

impl SecretStoreProvider {
    /// The provider this one-of sets: exactly one, and one mooring implements.
    pub fn kind(&self) -> Result<ProviderSpec<'_>, ProviderChoiceError> {
        // Destructured, so a provider added to the struct must be added here too.
        let SecretStoreProvider {
            vault,
            aws,
            azurekv,
            unknown,
        } = self;
        if !unknown.is_empty() {
            return Err(ProviderChoiceError::Unsupported {
                fields: unknown.keys().cloned().collect(),
            });
        }
        let set: Vec<ProviderSpec<'_>> = [
            vault.as_ref().map(ProviderSpec::Vault),
            aws.as_ref().map(ProviderSpec::Aws),
            azurekv.as_ref().map(ProviderSpec::AzureKv),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [] => Err(ProviderChoiceError::Missing),
            [one] => Ok(*one),
            several => Err(ProviderChoiceError::Several {
                fields: several.iter().map(|p| p.field()).collect(),
            }),
        }
    }
}

/// A key of a Kubernetes Secret, as ESO's `SecretKeySelector`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Secret's namespace; honoured for ClusterSecretStores only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The key inside the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A ServiceAccount whose token the agent requests (TokenRequest) to log in with.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSelector {
    /// The ServiceAccount's name.
    pub name: String,
    /// Its namespace; honoured for ClusterSecretStores only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Audiences of the requested token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
}

/// ESO's `spec.provider.vault`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct VaultProvider {
    /// The server URL.
    pub server: String,
    /// The KV mount (`secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `v1` or `v2` (unset means `v2`, as ESO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Vault Enterprise / OpenBao namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PEM CA bundle (base64) for the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Where to read the CA bundle from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_provider: Option<CaProvider>,
    /// How to log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<VaultAuth>,
    /// Fields mooring does not implement (tls, headers, readYourWrites, …).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// A CA bundle in a Secret or ConfigMap.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CaProvider {
    /// `Secret` or `ConfigMap`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The object's name.
    pub name: String,
    /// The key holding the PEM bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The object's namespace; ClusterSecretStores only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// ESO's `spec.provider.vault.auth`: exactly one method.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct VaultAuth {
    /// A namespace for the login only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A static token in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeySelector>,
    /// AppRole login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRole>,
    /// Kubernetes auth with a ServiceAccount token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    /// Other methods (ldap, jwt, cert, iam, userPass, gcp), kept as written.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// AppRole login.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRole {
    /// The auth mount (unset: `approle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The role id, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    /// The role id, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_ref: Option<SecretKeySelector>,
    /// The secret id.
    pub secret_ref: SecretKeySelector,
}

/// Kubernetes auth.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// The auth mount (unset: `kubernetes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// The Vault role.
    pub role: String,
    /// A ServiceAccount the agent requests a token for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// A token stored in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

/// ESO's `spec.provider.aws`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct AwsProvider {
    /// `SecretsManager` (mooring's only AWS service).
    pub service: String,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role to assume after the base credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The STS `ExternalId` sent when assuming `role`.
    #[serde(
        default,
        rename = "externalID",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<String>,
    /// How to get the base credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
    /// A prefix added to every key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Fields mooring does not implement (additionalRoles, sessionTags, …).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// ESO's `spec.provider.aws.auth`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct AwsAuth {
    /// Static access keys in Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
    /// Web identity (IRSA) for a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<AwsJwtAuth>,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// Static AWS access keys.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    /// The access key id.
    #[serde(
        default,
        rename = "accessKeyIDSecretRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub access_key_id_secret_ref: Option<SecretKeySelector>,
    /// The secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeySelector>,
    /// An optional session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_secret_ref: Option<SecretKeySelector>,
}

/// Web identity from a ServiceAccount token.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsJwtAuth {
    /// The ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
}

/// ESO's `spec.provider.azurekv`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct AzureKvProvider {
    /// `https://<name>.vault.azure.net`.
    pub vault_url: String,
    /// `ServicePrincipal` (unset), `ManagedIdentity` or `WorkloadIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
    /// The Entra ID tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Service principal credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<AzureAuthSecretRef>,
    /// The ServiceAccount for workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<ServiceAccountSelector>,
    /// Which managed identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_id: Option<String>,
    /// `PublicCloud` (unset), `USGovernmentCloud` or `ChinaCloud`: the authority and resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_type: Option<String>,
    /// Another cloud's endpoints (its `activeDirectoryEndpoint` is the authority host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_cloud_config: Option<AzureCustomCloudConfig>,
    /// ESO's switch to its newer Go SDK; mooring always uses Microsoft's Rust SDK.
    #[serde(
        default,
        rename = "useAzureSDK",
        skip_serializing_if = "Option::is_none"
    )]
    pub use_azure_sdk: Option<bool>,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// ESO's `customCloudConfig`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AzureCustomCloudConfig {
    /// Entra ID's authority host, `https://login.example`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_directory_endpoint: Option<String>,
    /// The Key Vault resource tokens are for, `https://vault.example`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_endpoint: Option<String>,
    /// The vault host suffix (informational: the vault is `vaultUrl`).
    #[serde(
        default,
        rename = "keyVaultDNSSuffix",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_vault_dns_suffix: Option<String>,
    /// Azure Resource Manager (not used to read secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_manager_endpoint: Option<String>,
}

/// Service principal credentials.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AzureAuthSecretRef {
    /// The client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<SecretKeySelector>,
    /// The client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<SecretKeySelector>,
    /// A client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<SecretKeySelector>,
    /// The tenant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<SecretKeySelector>,
}

/// The status the agent writes on a store.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreStatus {
    /// The `Ready` condition: a real authenticated round trip succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `ReadOnly` (mooring never writes to providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<String>,
}

/// Store condition reasons, as ESO.
pub mod reasons {
    /// The store's one condition type.
    pub const READY: &str = "Ready";
    /// A referent ClusterSecretStore: credentials resolve per consuming namespace, so it is
    /// validated on use.
    pub const VALIDATION_UNKNOWN: &str = "ValidationUnknown";
    /// The provider answered an authenticated request.
    pub const VALID: &str = "Valid";
    /// The spec cannot be used (a missing field, an unsupported provider).
    pub const INVALID_PROVIDER_CONFIG: &str = "InvalidProviderConfig";
    /// The round trip failed.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
}

/// `{"type": "object", "x-kubernetes-preserve-unknown-fields": true}`: kept as written.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A `metav1.LabelSelector`.
fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string"},
                    "values": {"type": "array", "items": {"type": "string"}}
                }
            }}
        }
    })
}

/// An integer or a string, as ESO's `intstr` fields.
pub(crate) fn int_or_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true
    })
}

/// Dotted paths (`spec.provider.vault.tls`) of every field present but not modelled, for a
/// condition that names them.
pub fn unknown_fields(spec: &SecretStoreSpec, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut add = |path: &str, unknown: &UnknownFields| {
        found.extend(unknown.keys().map(|k| format!("{prefix}.{path}{k}")));
    };
    add("", &spec.unknown);
    add("provider.", &spec.provider.unknown);
    if let Some(vault) = &spec.provider.vault {
        add("provider.vault.", &vault.unknown);
        if let Some(auth) = &vault.auth {
            add("provider.vault.auth.", &auth.unknown);
        }
    }
    if let Some(aws) = &spec.provider.aws {
        add("provider.aws.", &aws.unknown);
        if let Some(auth) = &aws.auth {
            add("provider.aws.auth.", &auth.unknown);
        }
    }
    if let Some(azure) = &spec.provider.azurekv {
        add("provider.azurekv.", &azure.unknown);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT_TOKEN: &str = r#"
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: vault-backend, namespace: example}
spec:
  provider:
    vault:
      server: "https://vault.acme.org"
      path: "secret"
      version: "v2"
      auth:
        tokenSecretRef:
          name: "vault-token"
          key: "token"
"#;

    const VAULT_APPROLE_AND_K8S: &str = r#"
apiVersion: external-secrets.io/v1
kind: ClusterSecretStore
metadata: {name: vault}
spec:
  controller: ""
  retrySettings: {maxRetries: 3, retryInterval: 10s}
  refreshInterval: 300
  conditions:
  - namespaceSelector: {matchLabels: {team: a}}
  - namespaces: [app1, app2]
  - namespaceRegexes: ["^team-a-.*"]
  provider:
    vault:
      server: "http://vault.vault.svc:8200"
      path: secret
      version: v1
      namespace: team-a
      caProvider: {type: ConfigMap, name: vault-ca, key: ca.crt, namespace: vault}
      readYourWrites: true
      auth:
        appRole:
          path: approle
          roleId: "db02de05-fa39-4855-059b-67221c5c2f63"
          secretRef: {name: approle, key: secret-id, namespace: vault}
        kubernetes:
          mountPath: kubernetes
          role: demo
          serviceAccountRef: {name: default, audiences: [vault]}
"#;

    const AWS: &str = r#"
apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {name: aws, namespace: example}
spec:
  provider:
    aws:
      service: SecretsManager
      region: eu-central-1
      role: arn:aws:iam::123456789012:role/team-a
      additionalRoles: [arn:aws:iam::123456789012:role/hop]
      auth:
        secretRef:
          accessKeyIDSecretRef: {name: awssm-secret, key: access-key}
          secretAccessKeySecretRef: {name: awssm-secret, key: secret-access-key}
        jwt:
          serviceAccountRef: {name: my-sa}
"#;

    const AZURE_AND_OTHERS: &str = r#"
apiVersion: external-secrets.io/v1
kind: ClusterSecretStore
metadata: {name: azure}
spec:
  provider:
    azurekv:
      tenantId: "d3bc2180-cb1e-40f7-b59a-154105743342"
      vaultUrl: "https://my-vault.vault.azure.net"
      authSecretRef:
        clientId: {name: azure-secret-sp, key: ClientID}
        clientSecret: {name: azure-secret-sp, key: ClientSecret}
      environmentType: PublicCloud
"#;

    #[test]
    fn vault_token_store_parses() {
        let store: SecretStore = serde_saphyr::from_str(VAULT_TOKEN).unwrap();
        let vault = store.spec.provider.vault.as_ref().unwrap();
        assert_eq!(vault.server, "https://vault.acme.org");
        assert_eq!(vault.path.as_deref(), Some("secret"));
        let token = vault
            .auth
            .as_ref()
            .unwrap()
            .token_secret_ref
            .as_ref()
            .unwrap();
        assert_eq!(token.name.as_deref(), Some("vault-token"));
        assert!(unknown_fields(&store.spec, "spec").is_empty());
    }

    #[test]
    fn cluster_store_with_conditions_and_two_auth_methods_parses() {
        let store: ClusterSecretStore = serde_saphyr::from_str(VAULT_APPROLE_AND_K8S).unwrap();
        let conditions = store.spec.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 3);
        assert_eq!(
            conditions[1].namespaces.as_deref(),
            Some(&["app1".to_string(), "app2".to_string()][..])
        );
        let auth = store
            .spec
            .provider
            .vault
            .as_ref()
            .unwrap()
            .auth
            .as_ref()
            .unwrap();
        assert_eq!(
            auth.app_role.as_ref().unwrap().path.as_deref(),
            Some("approle")
        );
        let kubernetes = auth.kubernetes.as_ref().unwrap();
        assert_eq!(kubernetes.role, "demo");
        assert_eq!(
            kubernetes.service_account_ref.as_ref().unwrap().name,
            "default"
        );
        assert_eq!(
            unknown_fields(&store.spec.as_store_spec(), "spec"),
            ["spec.provider.vault.readYourWrites"]
        );
    }

    #[test]
    fn aws_store_parses_with_the_exact_eso_key_names() {
        let store: SecretStore = serde_saphyr::from_str(AWS).unwrap();
        let aws = store.spec.provider.aws.as_ref().unwrap();
        assert_eq!(aws.service, "SecretsManager");
        let keys = aws.auth.as_ref().unwrap().secret_ref.as_ref().unwrap();
        assert_eq!(
            keys.access_key_id_secret_ref
                .as_ref()
                .unwrap()
                .key
                .as_deref(),
            Some("access-key")
        );
        let back = serde_json::to_value(&store.spec).unwrap();
        assert!(back["provider"]["aws"]["auth"]["secretRef"]["accessKeyIDSecretRef"].is_object());
        assert_eq!(
            unknown_fields(&store.spec, "spec"),
            ["spec.provider.aws.additionalRoles"]
        );
    }

    #[test]
    fn aws_role_external_id_and_jwt_use_eso_key_names() {
        let store: SecretStore = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "a"},
            "spec": {"provider": {"aws": {"service": "SecretsManager", "region": "eu-west-1",
                "role": "arn:aws:iam::1:role/r", "externalID": "tenant-a",
                "auth": {"jwt": {"serviceAccountRef": {"name": "app", "audiences": ["x"]}}}}}}
        }))
        .unwrap();
        let aws = store.spec.provider.aws.as_ref().unwrap();
        assert_eq!(aws.external_id.as_deref(), Some("tenant-a"));
        let jwt = aws.auth.as_ref().unwrap().jwt.as_ref().unwrap();
        assert_eq!(jwt.service_account_ref.as_ref().unwrap().name, "app");
        assert!(unknown_fields(&store.spec, "spec").is_empty());
        let back = serde_json::to_value(&store.spec).unwrap();
        assert_eq!(back["provider"]["aws"]["externalID"], "tenant-a");
    }

    #[test]
    fn azure_and_unknown_providers_are_kept() {
        let store: ClusterSecretStore = serde_saphyr::from_str(AZURE_AND_OTHERS).unwrap();
        let azure = store.spec.provider.azurekv.as_ref().unwrap();
        assert_eq!(azure.vault_url, "https://my-vault.vault.azure.net");
        assert_eq!(azure.environment_type.as_deref(), Some("PublicCloud"));
        assert!(unknown_fields(&store.spec.as_store_spec(), "spec").is_empty());
        let gcp: SecretStore = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "g"},
            "spec": {"provider": {"gcpsm": {"projectID": "p"}}}
        }))
        .unwrap();
        assert_eq!(unknown_fields(&gcp.spec, "spec"), ["spec.provider.gcpsm"]);
    }

    fn provider(json: serde_json::Value) -> SecretStoreProvider {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn no_provider_is_missing() {
        let empty = provider(serde_json::json!({}));
        assert_eq!(empty.kind(), Err(ProviderChoiceError::Missing));
        assert_eq!(
            empty.kind().unwrap_err().to_string(),
            "spec.provider must set exactly one of vault, aws, azurekv"
        );
    }

    #[test]
    fn one_provider_is_its_kind() {
        let vault = provider(serde_json::json!({"vault": {"server": "http://v"}}));
        assert!(matches!(vault.kind(), Ok(ProviderSpec::Vault(v)) if v.server == "http://v"));
        let aws = provider(serde_json::json!({"aws": {"service": "SecretsManager"}}));
        assert_eq!(aws.kind().unwrap().field(), "aws");
        let azure = provider(serde_json::json!({"azurekv": {"vaultUrl": "https://a"}}));
        assert!(matches!(azure.kind(), Ok(ProviderSpec::AzureKv(_))));
    }

    #[test]
    fn two_providers_are_named() {
        let two = provider(serde_json::json!({
            "vault": {"server": "http://v"}, "aws": {"service": "SecretsManager"}}));
        assert_eq!(
            two.kind(),
            Err(ProviderChoiceError::Several {
                fields: vec!["vault", "aws"]
            })
        );
        assert_eq!(
            two.kind().unwrap_err().to_string(),
            "spec.provider must set exactly one of vault, aws, azurekv, not vault and aws"
        );
    }

    #[test]
    fn unsupported_providers_are_named_alone_or_beside_another() {
        let alone = provider(serde_json::json!({"gcpsm": {"projectID": "p"}}));
        assert_eq!(
            alone.kind().unwrap_err().to_string(),
            "spec.provider.gcpsm is not supported by mooring (supported: vault, aws, azurekv)"
        );
        let beside = provider(serde_json::json!({
            "vault": {"server": "http://v"}, "gcpsm": {}, "kubernetes": {}}));
        assert_eq!(
            beside.kind(),
            Err(ProviderChoiceError::Unsupported {
                fields: vec!["gcpsm".into(), "kubernetes".into()]
            })
        );
        assert_eq!(
            beside.kind().unwrap_err().to_string(),
            "spec.provider.gcpsm, spec.provider.kubernetes is not supported by mooring (supported: vault, aws, azurekv)"
        );
    }

    #[test]
    fn the_schemas_have_no_defaults_and_keep_unknown_fields() {
        use kube::CustomResourceExt;
        for crd in [SecretStore::crd(), ClusterSecretStore::crd()] {
            let text = serde_json::to_string(&crd).unwrap();
            assert!(!text.contains("\"default\""), "{text}");
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let provider =
                &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["provider"];
            assert_eq!(provider["x-kubernetes-preserve-unknown-fields"], true);
        }
        assert_eq!(ClusterSecretStore::crd().spec.scope, "Cluster");
    }
}
