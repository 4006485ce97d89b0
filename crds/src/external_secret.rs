//! `ExternalSecret` (external-secrets.io/v1), schema-compatible with the External Secrets
//! Operator for the fields mooring implements.
//!
//! As for the stores: ESO's field names, no `default` in the schema (nothing is written back into
//! the spec), and fields mooring does not implement are kept as written and named by
//! [`unknown_fields`] in a condition.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::secret_store::UnknownFields;

/// Reads values from a store and writes them into a Secret.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "external-secrets.io",
    version = "v1",
    kind = "ExternalSecret",
    namespaced,
    status = "ExternalSecretStatus",
    shortname = "es",
    category = "external-secrets",
    doc = "ExternalSecret is the Schema for the external-secrets API.",
    printcolumn = r#"{"name":"StoreType","type":"string","jsonPath":".spec.secretStoreRef.kind"}"#,
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Refresh Interval","type":"string","jsonPath":".spec.refreshInterval"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.refreshTime"}"#
)]
#[kube(derive = "PartialEq")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The store to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store_ref: Option<SecretStoreRef>,
    /// The Secret to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExternalSecretTarget>,
    /// `Periodic` (unset), `OnChange` or `CreatedOnce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<String>,
    /// A Go duration; `0s` means fetch once. Unset means `1h`, as ESO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// One Secret key per entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<ExternalSecretData>>,
    /// Many Secret keys per entry (a JSON secret's fields); applied before `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_from: Option<Vec<ExternalSecretDataFromRemoteRef>>,
    /// Fields mooring does not implement (syncWindows, …).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `secretStoreRef`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// The store's name.
    pub name: String,
    /// `SecretStore` (unset) or `ClusterSecretStore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `target`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// The Secret's name (unset: the ExternalSecret's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Owner` (unset), `Orphan`, `Merge` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<String>,
    /// What to do when the remote data disappears: `Retain` (unset), `Delete` or `Merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// Create the Secret immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// How to shape the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
    /// Fields mooring does not implement (manifest).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `target.template`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTemplate {
    /// The Secret's `type`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// `v2` (the only engine ESO still has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Labels and annotations; values are templates too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// `Replace` (unset): only templated keys; `Merge`: templated keys over the fetched ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<String>,
    /// Secret key → Go template over the fetched values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
    /// Fields mooring does not implement (templateFrom).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `target.template.metadata`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Fields mooring does not implement (finalizers).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// One `data[]` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// The key in the Secret.
    pub secret_key: String,
    /// Where the value is.
    pub remote_ref: ExternalSecretDataRemoteRef,
    /// Fields mooring does not implement (sourceRef).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `data[].remoteRef`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataRemoteRef {
    /// The secret's key or path in the store.
    pub key: String,
    /// One field of a structured secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A version (KV v2 number, AWS stage or `uuid/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `None` (unset), `Base64`, `Base64URL` or `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<String>,
    /// `Default` (unset; only the default is implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<String>,
    /// `None` (unset; only the default is implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_policy: Option<String>,
    /// `Ignore` (unset; only the default is implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_byte_policy: Option<String>,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// One `dataFrom[]` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretDataFromRemoteRef {
    /// A JSON secret whose top-level fields become Secret keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExternalSecretDataRemoteRef>,
    /// Every secret selected by name or tags; one Secret key per secret found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<ExternalSecretFind>,
    /// Key rewrites, applied in order to the keys of `extract` or `find`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Vec<ExternalSecretRewrite>>,
    /// Fields mooring does not implement (sourceRef).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `dataFrom[].find`: secrets under `path` whose name matches `name.regexp` and that carry every
/// tag in `tags`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretFind {
    /// A folder (prefix) to search under; the whole store when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A regular expression over each secret's full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Tags (Vault KV v2 custom metadata) every secret found must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// `Default` (unset): characters other than letters, digits, `-`, `.` and `_` in a key
    /// become `_`; `Unicode`: they become `_Uxxxx_`. Only when there is no `rewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<String>,
    /// `None` (unset), `Base64`, `Base64URL` or `Auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<String>,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `dataFrom[].find.name`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct FindName {
    /// The regular expression (RE2 syntax, as Go's `regexp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// One `dataFrom[].rewrite[]` operation; exactly one of its fields is set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretRewrite {
    /// Replace every match of `source` in each key by `target` (`$1` names a group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RewriteRegexp>,
    /// Render `template` with `.value` set to each key; the output is the new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<RewriteTransform>,
    /// Fields mooring does not implement (merge).
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `rewrite[].regexp`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct RewriteRegexp {
    /// The regular expression matched in each key.
    pub source: String,
    /// The replacement; `$1`, `${name}` refer to groups.
    pub target: String,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// `rewrite[].transform`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[serde(rename_all = "camelCase")]
pub struct RewriteTransform {
    /// A Go template over `.value` (the key).
    pub template: String,
    /// Fields mooring does not implement.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// The status the agent writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretStatus {
    /// `Ready` (ESO's reasons) and `Fetched` (the provider's answer: NotFound, Forbidden,
    /// Unavailable…).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When values were last read from the provider and written, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<String>,
    /// `<generation>-<digest of labels and annotations>` of the synced spec, as ESO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// The Secret (servicebinding.io).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// A reference to the target Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Binding {
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Condition types and reasons of an ExternalSecret.
pub mod reasons {
    /// ESO's condition type.
    pub const READY: &str = "Ready";
    /// mooring's condition with the provider's own answer; also its reason when values were read.
    pub const FETCHED: &str = "Fetched";
    /// The Secret matches the provider.
    pub const SECRET_SYNCED: &str = "SecretSynced";
    /// The last sync failed; the Secret was left as it was.
    pub const SECRET_SYNCED_ERROR: &str = "SecretSyncedError";
    /// `deletionPolicy: Delete` removed the Secret.
    pub const SECRET_DELETED: &str = "SecretDeleted";
    /// `creationPolicy: Merge` and the Secret does not exist.
    pub const SECRET_MISSING: &str = "SecretMissing";

    // Why a sync failed: the reason of the error, in the error metric and the log.

    /// The spec cannot be used as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The referenced store does not exist.
    pub const STORE_NOT_FOUND: &str = "StoreNotFound";
    /// A ClusterSecretStore's `conditions` do not allow the ExternalSecret's namespace.
    pub const STORE_NOT_ALLOWED: &str = "StoreNotAllowed";
    /// The store's spec cannot be used as written.
    pub const INVALID_STORE_CONFIGURATION: &str = "InvalidStoreConfiguration";
    /// The store's credential Secret or ServiceAccount could not be read.
    pub const STORE_CREDENTIALS_UNAVAILABLE: &str = "StoreCredentialsUnavailable";
    /// A value could not be decoded as `decodingStrategy` says.
    pub const DECODE_FAILED: &str = "DecodeFailed";
    /// A template could not be rendered.
    pub const TEMPLATE_FAILED: &str = "TemplateFailed";
    /// `spec.target.template.type` asks for a Secret type mooring never makes from an
    /// ExternalSecret (`kubernetes.io/service-account-token`: the API server would mint a token
    /// for the ServiceAccount the Secret names; ESO's GHSA-fq7h).
    pub const SECRET_TYPE_FORBIDDEN: &str = "SecretTypeForbidden";
    /// The target Secret is controlled by another object.
    pub const SECRET_OWNED_BY_OTHER: &str = "SecretOwnedByOther";
    /// The target Secret is immutable and its data differs.
    pub const SECRET_IMMUTABLE: &str = "SecretImmutable";
    /// A Kubernetes API call failed.
    pub const API_ERROR: &str = "ApiError";
    /// The ExternalSecret's status could not be written.
    pub const STATUS_UPDATE_FAILED: &str = "StatusUpdateFailed";

    // The reasons of the events on an ExternalSecret (ESO's words).

    /// Event: the Secret was created.
    pub const CREATED: &str = "Created";
    /// Event: the Secret was updated or restored.
    pub const UPDATED: &str = "Updated";
    /// Event: `deletionPolicy: Delete` deleted the Secret.
    pub const DELETED: &str = "Deleted";
    /// Event: the Secret is in sync again after a failed sync.
    pub const SYNCED: &str = "Synced";
    /// Event: a sync failed.
    pub const UPDATE_FAILED: &str = "UpdateFailed";
}

/// Dotted paths of every field present but not implemented, for a condition that names them.
pub fn unknown_fields(spec: &ExternalSecretSpec) -> Vec<String> {
    let mut found = Vec::new();
    let add = |found: &mut Vec<String>, path: String, unknown: &UnknownFields| {
        found.extend(unknown.keys().map(|k| format!("spec.{path}{k}")));
    };
    add(&mut found, String::new(), &spec.unknown);
    if let Some(target) = &spec.target {
        add(&mut found, "target.".into(), &target.unknown);
        if let Some(template) = &target.template {
            add(&mut found, "target.template.".into(), &template.unknown);
            if let Some(metadata) = &template.metadata {
                add(
                    &mut found,
                    "target.template.metadata.".into(),
                    &metadata.unknown,
                );
            }
        }
    }
    for (i, data) in spec.data.iter().flatten().enumerate() {
        add(&mut found, format!("data[{i}]."), &data.unknown);
        add(
            &mut found,
            format!("data[{i}].remoteRef."),
            &data.remote_ref.unknown,
        );
        found.extend(unimplemented_choices(
            &format!("spec.data[{i}].remoteRef"),
            &data.remote_ref,
        ));
    }
    for (i, from) in spec.data_from.iter().flatten().enumerate() {
        add(&mut found, format!("dataFrom[{i}]."), &from.unknown);
        if let Some(find) = &from.find {
            add(&mut found, format!("dataFrom[{i}].find."), &find.unknown);
            if let Some(name) = &find.name {
                add(
                    &mut found,
                    format!("dataFrom[{i}].find.name."),
                    &name.unknown,
                );
            }
        }
        for (j, rewrite) in from.rewrite.iter().flatten().enumerate() {
            let path = format!("dataFrom[{i}].rewrite[{j}].");
            add(&mut found, path.clone(), &rewrite.unknown);
            if let Some(regexp) = &rewrite.regexp {
                add(&mut found, format!("{path}regexp."), &regexp.unknown);
            }
            if let Some(transform) = &rewrite.transform {
                add(&mut found, format!("{path}transform."), &transform.unknown);
            }
        }
        if let Some(extract) = &from.extract {
            add(
                &mut found,
                format!("dataFrom[{i}].extract."),
                &extract.unknown,
            );
            found.extend(
                unimplemented_choices(&format!("spec.dataFrom[{i}].extract"), extract)
                    .into_iter()
                    // dataFrom keys implement both conversion strategies.
                    .filter(|field| {
                        !(field.ends_with(".conversionStrategy")
                            && extract.conversion_strategy.as_deref() == Some("Unicode"))
                    }),
            );
        }
    }
    found
}

/// Strategy fields set to something other than their (implemented) default.
fn unimplemented_choices(path: &str, reference: &ExternalSecretDataRemoteRef) -> Vec<String> {
    let mut found = Vec::new();
    let mut check = |field: &str, value: &Option<String>, default: &str| {
        if value.as_deref().is_some_and(|v| v != default) {
            found.push(format!("{path}.{field}"));
        }
    };
    check(
        "conversionStrategy",
        &reference.conversion_strategy,
        "Default",
    );
    // `Fetch` is implemented by the stores that have metadata (they refuse it otherwise).
    if reference.metadata_policy.as_deref() != Some("Fetch") {
        check("metadataPolicy", &reference.metadata_policy, "None");
    }
    check("nullBytePolicy", &reference.null_byte_policy, "Ignore");
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ExternalSecret as ESO users write it (ESO's full example from its API reference, every field set).
    const FULL: &str = r#"
apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: db, namespace: app}
spec:
  secretStoreRef: {kind: ClusterSecretStore, name: vault}
  refreshPolicy: Periodic
  refreshInterval: 1h
  syncWindows:
    kind: deny
    windows: [{schedule: "0 22 * * 1-5", duration: 8h}]
  target:
    name: db-creds
    creationPolicy: Owner
    deletionPolicy: Retain
    immutable: false
    template:
      type: kubernetes.io/basic-auth
      engineVersion: v2
      mergePolicy: Replace
      metadata:
        labels: {app: api}
        annotations: {team: "{{ .team }}"}
      data:
        username: "{{ .user }}"
        password: "{{ .password | b64dec }}"
  data:
  - secretKey: password
    remoteRef:
      key: db/prod
      property: password
      version: ""
      decodingStrategy: None
      conversionStrategy: Default
      metadataPolicy: None
      nullBytePolicy: Ignore
  - secretKey: other
    remoteRef: {key: x}
    sourceRef: {storeRef: {name: other-store, kind: SecretStore}}
  dataFrom:
  - extract: {key: db/prod}
  - find:
      path: db/
      name: {regexp: "^db-.*"}
      tags: {env: prod}
      conversionStrategy: Default
      decodingStrategy: None
    rewrite:
    - regexp: {source: "db/(.*)", target: "$1"}
    - transform: {template: "{{ .value | upper }}"}
    - merge: {into: ""}
  - sourceRef: {generatorRef: {apiVersion: generators.external-secrets.io/v1alpha1, kind: Password, name: pw}}
"#;

    #[test]
    fn a_full_eso_manifest_parses_and_unimplemented_fields_are_named() {
        let es: ExternalSecret = serde_saphyr::from_str(FULL).unwrap();
        let store = es.spec.secret_store_ref.as_ref().unwrap();
        assert_eq!(
            (store.name.as_str(), store.kind.as_deref()),
            ("vault", Some("ClusterSecretStore"))
        );
        let target = es.spec.target.as_ref().unwrap();
        assert_eq!(target.name.as_deref(), Some("db-creds"));
        assert_eq!(target.creation_policy.as_deref(), Some("Owner"));
        let template = target.template.as_ref().unwrap();
        assert_eq!(template.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        assert_eq!(
            template.data.as_ref().unwrap()["password"],
            "{{ .password | b64dec }}"
        );
        let data = es.spec.data.as_ref().unwrap();
        assert_eq!(data[0].remote_ref.property.as_deref(), Some("password"));
        assert_eq!(
            es.spec.data_from.as_ref().unwrap()[0]
                .extract
                .as_ref()
                .unwrap()
                .key,
            "db/prod"
        );
        assert_eq!(
            unknown_fields(&es.spec),
            [
                "spec.syncWindows",
                "spec.data[1].sourceRef",
                "spec.dataFrom[1].rewrite[2].merge",
                "spec.dataFrom[2].sourceRef",
            ]
        );
        let from = &es.spec.data_from.as_ref().unwrap()[1];
        let find = from.find.as_ref().unwrap();
        assert_eq!(find.path.as_deref(), Some("db/"));
        assert_eq!(
            find.name.as_ref().unwrap().regexp.as_deref(),
            Some("^db-.*")
        );
        assert_eq!(find.tags.as_ref().unwrap()["env"], "prod");
        let rewrite = from.rewrite.as_ref().unwrap();
        assert_eq!(rewrite[0].regexp.as_ref().unwrap().target, "$1");
        assert_eq!(
            rewrite[1].transform.as_ref().unwrap().template,
            "{{ .value | upper }}"
        );
    }

    #[test]
    fn unknown_fields_survive_a_round_trip_and_no_default_is_added() {
        let es: ExternalSecret = serde_saphyr::from_str(FULL).unwrap();
        let back = serde_json::to_value(&es).unwrap();
        assert_eq!(back["spec"]["syncWindows"]["kind"], "deny");
        assert_eq!(
            back["spec"]["data"][1]["sourceRef"]["storeRef"]["name"],
            "other-store"
        );
        let minimal: ExternalSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "m"},
            "spec": {"secretStoreRef": {"name": "s"}, "data": [{"secretKey": "k", "remoteRef": {"key": "a"}}]}
        }))
        .unwrap();
        let written = serde_json::to_value(&minimal.spec).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"secretStoreRef": {"name": "s"}, "data": [{"secretKey": "k", "remoteRef": {"key": "a"}}]}),
            "nothing added to what the user wrote"
        );
    }

    #[test]
    fn the_schema_has_no_defaults() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&ExternalSecret::crd()).unwrap();
        assert!(!crd.contains("\"default\""), "{crd}");
    }
}
