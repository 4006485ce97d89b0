//! `SealedSecret` (bitnami.com/v1alpha1), schema-compatible with bitnami sealed-secrets.
//!
//! The generated CRD matches upstream's: same names, printer columns, status subresource,
//! `x-kubernetes-preserve-unknown-fields` on `encryptedData` and `template.metadata`, and the
//! status shape (a `Synced` condition with `lastUpdateTime`) that Argo CD's health check reads.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on the SealedSecret's template: the Secret gets no ownerReference, so it survives
/// the deletion of its SealedSecret.
pub const SKIP_SET_OWNER_REFERENCES_ANNOTATION: &str =
    "sealedsecrets.bitnami.com/skip-set-owner-references";
/// Annotation on an existing Secret: a SealedSecret of the same name may take it over.
pub const MANAGED_ANNOTATION: &str = "sealedsecrets.bitnami.com/managed";
/// Annotation on an existing Secret: a SealedSecret may merge its keys into it.
pub const PATCH_ANNOTATION: &str = "sealedsecrets.bitnami.com/patch";
/// The condition type of a SealedSecret.
pub const SYNCED: &str = "Synced";

/// The reasons of the `Synced` condition, of events and of the `reason` metric label. The same
/// failure has the same word as for an ExternalSecret (`TemplateFailed`, `SecretImmutable`).
pub mod reasons {
    /// Every value was opened and the Secret matches.
    pub const UNSEALED: &str = "Unsealed";
    /// No sealing key is loaded yet.
    pub const NO_SEALING_KEY: &str = "NoSealingKey";
    /// A value opens under another scope's label (renamed, moved, scope annotation changed).
    pub const SCOPE_MISMATCH: &str = "ScopeMismatch";
    /// A value is not valid base64.
    pub const INVALID_BASE64: &str = "InvalidBase64";
    /// A value is shorter than its own envelope says.
    pub const TRUNCATED_DATA: &str = "TruncatedData";
    /// A value's session key opened but its data did not (tampered with).
    pub const CORRUPTED_DATA: &str = "CorruptedData";
    /// No loaded key opens a value.
    pub const DECRYPT_FAILED: &str = "DecryptFailed";
    /// Both `encryptedData` and the legacy `data` are set.
    pub const CONFLICTING_DATA: &str = "ConflictingData";
    /// The legacy `data` does not open into a Secret.
    pub const INVALID_LEGACY_DATA: &str = "InvalidLegacyData";
    /// A `template.data` entry could not be rendered.
    pub const TEMPLATE_FAILED: &str = "TemplateFailed";
    /// `spec.template.type` asks for a Secret type mooring never makes from a SealedSecret
    /// (`kubernetes.io/service-account-token`: the API server would mint a token for the
    /// ServiceAccount the Secret names).
    pub const SECRET_TYPE_FORBIDDEN: &str = "SecretTypeForbidden";
    /// A Secret of that name exists and is not managed by the SealedSecret.
    pub const UNMANAGED: &str = "Unmanaged";
    /// The existing Secret is immutable and its data differs.
    pub const SECRET_IMMUTABLE: &str = "SecretImmutable";
    /// RBAC refused a request: the message names the verb and the kind.
    pub const FORBIDDEN: &str = "Forbidden";
    /// Another API request failed.
    pub const API_ERROR: &str = "ApiError";
    /// The status could not be written.
    pub const STATUS_UPDATE_FAILED: &str = "StatusUpdateFailed";
}

/// A Secret sealed with the cluster's public key; only the agent can open it.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "bitnami.com",
    version = "v1alpha1",
    kind = "SealedSecret",
    namespaced,
    status = "SealedSecretStatus",
    doc = "SealedSecret is the K8s representation of a \"sealed Secret\" - a regular k8s Secret that has been sealed (encrypted) using the controller's key.",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[0].message"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[0].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretSpec {
    /// The Secret to create: metadata, type, immutability and templated keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SecretTemplateSpec>,
    /// Each key's value sealed separately: base64 of the hybrid envelope.
    #[schemars(schema_with = "encrypted_data_schema", transform = drop_default)]
    #[serde(default)]
    pub encrypted_data: BTreeMap<String, String>,
    /// Deprecated: the whole Secret sealed as one envelope. Still opened; never written.
    #[schemars(schema_with = "legacy_data_schema")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ByteString>,
}

/// The shape of the Secret a SealedSecret produces.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplateSpec {
    /// Labels, annotations and finalizers for the Secret; name and namespace are forced to the
    /// SealedSecret's.
    #[schemars(schema_with = "template_metadata_schema")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// The Secret's `type` (for example `kubernetes.io/tls`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Whether the Secret is immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Keys rendered with Go-template syntax over the decrypted values.
    #[schemars(extend("nullable" = true))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
}

/// The status the controller writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretStatus {
    /// The `Synced` condition (upstream writes exactly one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SealedSecretCondition>,
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Upstream's condition shape, with `lastUpdateTime`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SealedSecretCondition {
    /// `Synced`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// When the condition was last written, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    /// When `status` last changed, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// A CamelCase reason (mooring sets it; upstream leaves it empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Empty on success, else what went wrong (never a secret value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Upstream's schema for `encryptedData`: strings, unknown fields kept, no default written back.
fn encrypted_data_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Each key's value sealed separately: base64 of the hybrid envelope.",
        "type": "object",
        "additionalProperties": {"type": "string"},
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Removes the `default` that `#[serde(default)]` adds, so the API server never writes it back.
fn drop_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Upstream's schema for the legacy `data`: base64 bytes.
fn legacy_data_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Data is deprecated and will be removed eventually. Use per-value EncryptedData instead.",
        "type": "string",
        "format": "byte"
    })
}

/// Upstream's schema for `template.metadata`: the fields users set, unknown fields kept.
fn template_metadata_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Standard object's metadata.",
        "nullable": true,
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "name": {"type": "string"},
            "namespace": {"type": "string"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What upstream kubeseal writes parses, and keeps its fields.
    #[test]
    fn kubeseal_output_round_trips() {
        let json = serde_json::json!({
            "kind": "SealedSecret",
            "apiVersion": "bitnami.com/v1alpha1",
            "metadata": {"name": "db", "namespace": "prod", "creationTimestamp": null},
            "spec": {
                "template": {
                    "metadata": {"name": "db", "namespace": "prod", "creationTimestamp": null,
                                 "labels": {"app": "api"}},
                    "type": "Opaque"
                },
                "encryptedData": {"password": "AgBy3i4OJSWK+PiTySYZZA=="}
            }
        });
        let sealed: SealedSecret = serde_json::from_value(json).unwrap();
        assert_eq!(
            sealed.spec.encrypted_data["password"],
            "AgBy3i4OJSWK+PiTySYZZA=="
        );
        let template = sealed.spec.template.as_ref().unwrap();
        assert_eq!(template.type_.as_deref(), Some("Opaque"));
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels["app"], "api");
        let back = serde_json::to_value(&sealed.spec).unwrap();
        assert!(back.get("data").is_none(), "legacy data is never written");
    }

    /// The legacy single-blob `spec.data` is accepted.
    #[test]
    fn legacy_data_parses() {
        let spec: SealedSecretSpec =
            serde_json::from_value(serde_json::json!({"data": "AgAB", "encryptedData": {}}))
                .unwrap();
        assert_eq!(spec.data.unwrap().0, vec![0x02, 0x00, 0x01]);
    }
}
