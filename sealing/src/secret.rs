//! Secret ↔ SealedSecret: what `kubeseal` writes and what the controller reads back.
//!
//! [`seal_secret`] follows upstream kubeseal's `Seal` + `NewSealedSecret`; [`unseal`] follows the
//! controller's `Unseal` for the sealed part (decrypting `encryptedData`, or the legacy single
//! `spec.data` envelope). Rendering `spec.template.data` is not part of it: callers decide
//! what to do with templates.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::rsa::PublicEncryptingKey;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use mooring_crds::sealed_secret::{
    SKIP_SET_OWNER_REFERENCES_ANNOTATION, SealedSecret, SealedSecretSpec, SecretTemplateSpec,
};
use zeroize::Zeroizing;

use crate::envelope::{self, EnvelopeError};
use crate::scope::{CLUSTER_WIDE_ANNOTATION, NAMESPACE_WIDE_ANNOTATION, Scope};

/// Annotations in which kubectl and kubecfg keep a full copy of the applied object: sealing them
/// into the template would leak every value in clear (upstream #227).
pub const LAST_APPLIED_ANNOTATIONS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/last-applied-configuration",
];

/// Go's `base64.StdEncoding`: standard alphabet, padding required, non-zero trailing bits
/// tolerated (only `StdEncoding.Strict()` rejects them).
const GO_STD_ENCODING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// A value that is not valid standard base64. Carries nothing of the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to decode base64: invalid character, length or padding")]
pub struct Base64Error;

/// Decodes standard base64 exactly as Go's `base64.StdEncoding` does: the `+/` alphabet with
/// `=` padding required, but `\r` and `\n` anywhere are ignored (line-wrapped values decode).
pub fn decode_base64(value: &str) -> Result<Vec<u8>, Base64Error> {
    // The filtered copy may hold a plaintext's base64 (Secret.data): wipe it after use.
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
        value
            .bytes()
            .filter(|byte| *byte != b'\r' && *byte != b'\n')
            .collect(),
    );
    GO_STD_ENCODING
        .decode(compact.as_slice())
        .map_err(|_| Base64Error)
}

/// Encodes as Go's `base64.StdEncoding` does (what `encryptedData` and `--raw` carry).
pub fn encode_base64(bytes: &[u8]) -> String {
    GO_STD_ENCODING.encode(bytes)
}

/// Why a Secret could not be sealed. Messages name the Secret and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The Secret has neither `data` nor `stringData`, and empty Secrets were not allowed.
    #[error(
        "failed to seal secret {name:?}: data and stringData are empty, assuming this is an error; to seal a Secret without data, allow empty data (--allow-empty-data)"
    )]
    EmptyData {
        /// The Secret's name (may be empty).
        name: String,
    },
    /// The Secret has no `metadata.name`.
    #[error("failed to seal secret: metadata.name is missing")]
    MissingName,
    /// The Secret has no namespace and its scope binds one.
    #[error(
        "failed to seal secret {name:?}: metadata.namespace is missing and scope {scope} binds it"
    )]
    MissingNamespace {
        /// The Secret's name.
        name: String,
        /// The scope that needs a namespace.
        scope: Scope,
    },
    /// One value could not be sealed.
    #[error("failed to seal key {key:?} of secret {namespace}/{name}")]
    Seal {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The `data`/`stringData` key.
        key: String,
        /// What the envelope reported.
        #[source]
        source: EnvelopeError,
    },
}

/// Seals `secret` for the holder of the private key matching `public_key`, as upstream
/// `kubeseal` does.
///
/// * Scope: the input's scope annotations decide, unless `scope_override` is given; then both
///   annotations are removed and the one for that scope set (upstream `UpdateScopeAnnotations`).
///   Upstream `kubeseal` only overrides for a non-default `--scope`, so it passes `None` for
///   `strict` and the input's annotations keep deciding.
/// * The name is required, and the namespace unless the scope is cluster-wide.
/// * Server-set metadata (selfLink, uid, resourceVersion, generation, creationTimestamp,
///   deletionTimestamp, deletionGracePeriodSeconds, managedFields), ownerReferences and the
///   kubectl/kubecfg last-applied annotations are stripped from the template.
/// * Each `data` value, then each `stringData` value (overriding the same key), is sealed
///   separately under the scope's label.
/// * A Secret with neither `data` nor `stringData` is refused unless `allow_empty_data`.
pub fn seal_secret(
    secret: &Secret,
    public_key: &PublicEncryptingKey,
    scope_override: Option<Scope>,
    allow_empty_data: bool,
) -> Result<SealedSecret, SealError> {
    let data = secret.data.as_ref().filter(|data| !data.is_empty());
    let string_data = secret.string_data.as_ref().filter(|data| !data.is_empty());
    if data.is_none() && string_data.is_none() && !allow_empty_data {
        return Err(SealError::EmptyData {
            name: secret.metadata.name.clone().unwrap_or_default(),
        });
    }

    let mut metadata = template_metadata(&secret.metadata);
    if let Some(scope) = scope_override {
        metadata.annotations = update_scope_annotations(metadata.annotations.take(), scope);
    }
    let scope = Scope::from_annotations(metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()));
    let name = metadata
        .name
        .clone()
        .filter(|name| !name.is_empty())
        .ok_or(SealError::MissingName)?;
    let namespace = metadata.namespace.clone().unwrap_or_default();
    if namespace.is_empty() && scope != Scope::ClusterWide {
        return Err(SealError::MissingNamespace { name, scope });
    }

    let label = scope.label(&namespace, &name);
    let seal_one = |key: &str, value: &[u8]| {
        envelope::seal(public_key, &label, value)
            .map(|sealed| encode_base64(&sealed))
            .map_err(|source| SealError::Seal {
                namespace: namespace.clone(),
                name: name.clone(),
                key: key.to_string(),
                source,
            })
    };
    let mut encrypted_data = BTreeMap::new();
    for (key, value) in data.into_iter().flatten() {
        encrypted_data.insert(key.clone(), seal_one(key, &value.0)?);
    }
    for (key, value) in string_data.into_iter().flatten() {
        encrypted_data.insert(key.clone(), seal_one(key, value.as_bytes())?);
    }

    Ok(SealedSecret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()).filter(|namespace| !namespace.is_empty()),
            annotations: update_scope_annotations(None, scope),
            ..ObjectMeta::default()
        },
        spec: SealedSecretSpec {
            template: Some(SecretTemplateSpec {
                metadata: Some(metadata),
                type_: secret.type_.clone(),
                immutable: secret.immutable,
                data: None,
            }),
            encrypted_data,
            data: None,
        },
        status: None,
    })
}

/// Rewrites `annotations` so that they select `scope`, as upstream `UpdateScopeAnnotations`:
/// both scope annotations are removed, then the one for `scope` (if any) is set to `"true"`.
/// Returns `None` rather than an empty map, so nothing empty is serialized.
pub fn update_scope_annotations(
    annotations: Option<BTreeMap<String, String>>,
    scope: Scope,
) -> Option<BTreeMap<String, String>> {
    let mut annotations = annotations.unwrap_or_default();
    annotations.remove(NAMESPACE_WIDE_ANNOTATION);
    annotations.remove(CLUSTER_WIDE_ANNOTATION);
    match scope {
        Scope::Strict => {}
        Scope::NamespaceWide => {
            annotations.insert(NAMESPACE_WIDE_ANNOTATION.to_string(), "true".to_string());
        }
        Scope::ClusterWide => {
            annotations.insert(CLUSTER_WIDE_ANNOTATION.to_string(), "true".to_string());
        }
    }
    Some(annotations).filter(|annotations| !annotations.is_empty())
}

/// The input's metadata as the template carries it: without what the server sets, without
/// ownerReferences (upstream #243) and without last-applied annotations (upstream #227).
fn template_metadata(input: &ObjectMeta) -> ObjectMeta {
    let mut metadata = input.clone();
    metadata.self_link = None;
    metadata.uid = None;
    metadata.resource_version = None;
    metadata.generation = None;
    metadata.creation_timestamp = None;
    metadata.deletion_timestamp = None;
    metadata.deletion_grace_period_seconds = None;
    // Upstream keeps managedFields; they are server bookkeeping that no template should carry.
    metadata.managed_fields = None;
    metadata.owner_references = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        for key in LAST_APPLIED_ANNOTATIONS {
            annotations.remove(key);
        }
    }
    metadata.annotations = metadata.annotations.filter(|a| !a.is_empty());
    metadata
}

/// Why a SealedSecret could not be unsealed. Messages name keys, never values.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// Both the legacy `spec.data` and `spec.encryptedData` are set; upstream refuses this too.
    #[error(
        "cannot use the field 'encryptedData' and the deprecated field 'data' at the same time"
    )]
    BothDataFormats,
    /// Some `encryptedData` values are not base64 or could not be decrypted.
    #[error("{0}")]
    Keys(KeyErrors),
    /// The legacy `spec.data` envelope could not be decrypted.
    #[error("no key could decrypt secret (deprecated field 'data')")]
    LegacyDecrypt(#[source] EnvelopeError),
    /// The legacy envelope opened but is not a JSON v1 Secret (the parser's message is dropped:
    /// it could quote the plaintext).
    #[error("failed to parse the decrypted deprecated field 'data' as a v1 Secret")]
    LegacyNotASecret,
}

/// The keys of `encryptedData` that failed, by reason; each list is sorted and de-duplicated.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyErrors {
    /// Keys whose value is not valid standard base64.
    pub invalid_base64: Vec<String>,
    /// Keys that no key could decrypt (wrong key, wrong name/namespace/scope, or corrupted).
    pub undecryptable: Vec<String>,
}

impl KeyErrors {
    fn is_empty(&self) -> bool {
        self.invalid_base64.is_empty() && self.undecryptable.is_empty()
    }
}

impl fmt::Display for KeyErrors {
    /// Upstream's inline multierror style, which users search for:
    /// `no key could decrypt secret (password, username)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.invalid_base64.is_empty() {
            parts.push(format!(
                "illegal base64 data ({})",
                self.invalid_base64.join(", ")
            ));
        }
        if !self.undecryptable.is_empty() {
            parts.push(format!(
                "no key could decrypt secret ({})",
                self.undecryptable.join(", ")
            ));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Opens one envelope: given the OAEP label and the ciphertext, returns the plaintext. The
/// agent passes its key ring (trying each key); `kubeseal --recovery-unseal` its key files.
pub type OpenOne<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> + 'a;

/// Decrypts the sealed values of `sealed` into the Secret's `data`, using `open_one` for each
/// envelope.
///
/// The label comes from the SealedSecret's own `.metadata` (name, namespace, scope annotations),
/// never from `spec.template`: the template is not authenticated, so reading the scope from it
/// would let anyone widen a strict secret (CVE-2026-22728).
///
/// The legacy `spec.data` (the whole v1 Secret as JSON, sealed as one envelope) is opened and
/// its `data` (then `stringData`) returned. Template rendering (`spec.template.data`) is left to
/// the caller.
pub fn unseal(
    sealed: &SealedSecret,
    open_one: &mut OpenOne<'_>,
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, UnsealError> {
    let metadata = &sealed.metadata;
    let scope = Scope::from_annotations(metadata.annotations.as_ref().unwrap_or(&BTreeMap::new()));
    let label = scope.label(
        metadata.namespace.as_deref().unwrap_or_default(),
        metadata.name.as_deref().unwrap_or_default(),
    );

    if let Some(legacy) = &sealed.spec.data {
        if !sealed.spec.encrypted_data.is_empty() {
            return Err(UnsealError::BothDataFormats);
        }
        let plaintext = open_one(&label, &legacy.0).map_err(UnsealError::LegacyDecrypt)?;
        return legacy_secret_data(&plaintext);
    }

    let mut errors = KeyErrors::default();
    let mut data = BTreeMap::new();
    for (key, value) in &sealed.spec.encrypted_data {
        let Ok(ciphertext) = decode_base64(value) else {
            errors.invalid_base64.push(key.clone());
            continue;
        };
        match open_one(&label, &ciphertext) {
            Ok(plaintext) => {
                data.insert(key.clone(), plaintext);
            }
            Err(_) => errors.undecryptable.push(key.clone()),
        }
    }
    if errors.is_empty() {
        Ok(data)
    } else {
        // BTreeMap iteration already sorts the keys and has no duplicates.
        Err(UnsealError::Keys(errors))
    }
}

/// A string that is wiped when dropped (values of the legacy Secret JSON).
struct WipedString(Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for WipedString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|value| WipedString(Zeroizing::new(value)))
    }
}

/// The parts of a legacy v1 Secret that carry values.
#[derive(serde::Deserialize)]
struct LegacySecret {
    #[serde(default)]
    data: Option<BTreeMap<String, WipedString>>,
    #[serde(default, rename = "stringData")]
    string_data: Option<BTreeMap<String, WipedString>>,
}

/// The Secret a SealedSecret describes, from its opened (and rendered) `data`, as the upstream
/// controller writes it: the template's metadata with name and namespace forced to the
/// SealedSecret's and server fields dropped, its type and immutability, and one controller
/// ownerReference (only when the SealedSecret has a uid, and unless the template asks for none
/// with `sealedsecrets.bitnami.com/skip-set-owner-references: "true"`).
pub fn unsealed_secret(sealed: &SealedSecret, data: BTreeMap<String, Vec<u8>>) -> Secret {
    let template = sealed.spec.template.clone().unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = sealed.metadata.name.clone();
    metadata.namespace = sealed.metadata.namespace.clone();
    metadata.resource_version = None;
    metadata.uid = None;
    metadata.generate_name = None;
    metadata.creation_timestamp = None;
    metadata.managed_fields = None;
    let skip_owner = metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_SET_OWNER_REFERENCES_ANNOTATION))
        .is_some_and(|v| v == "true");
    let uid = sealed.metadata.uid.clone().filter(|uid| !uid.is_empty());
    if !skip_owner && let Some(uid) = uid {
        metadata.owner_references = Some(vec![OwnerReference {
            api_version: "bitnami.com/v1alpha1".into(),
            kind: "SealedSecret".into(),
            name: sealed.metadata.name.clone().unwrap_or_default(),
            uid,
            controller: Some(true),
            block_owner_deletion: None,
        }]);
    }
    Secret {
        metadata,
        type_: template.type_,
        immutable: template.immutable,
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Default::default()
    }
}

/// The values of a decrypted legacy Secret: `data` (base64), then `stringData` over it, as the
/// API server merges them when the controller writes that Secret.
fn legacy_secret_data(
    plaintext: &[u8],
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, UnsealError> {
    let secret: LegacySecret =
        serde_json::from_slice(plaintext).map_err(|_| UnsealError::LegacyNotASecret)?;
    let mut out = BTreeMap::new();
    let mut errors = KeyErrors::default();
    for (key, value) in secret.data.into_iter().flatten() {
        match decode_base64(&value.0) {
            Ok(bytes) => {
                out.insert(key, Zeroizing::new(bytes));
            }
            Err(_) => errors.invalid_base64.push(key),
        }
    }
    if !errors.is_empty() {
        return Err(UnsealError::Keys(errors));
    }
    for (key, value) in secret.string_data.into_iter().flatten() {
        out.insert(key, Zeroizing::new(value.0.as_bytes().to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    fn test_key() -> PrivateDecryptingKey {
        PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap()
    }

    /// A Secret `prod/db` with the given data and stringData.
    fn secret(data: &[(&str, &[u8])], string_data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("prod".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            )
            .filter(|d: &BTreeMap<_, _>| !d.is_empty()),
            string_data: Some(
                string_data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .filter(|d: &BTreeMap<_, _>| !d.is_empty()),
            ..Secret::default()
        }
    }

    fn with_annotation(mut secret: Secret, key: &str, value: &str) -> Secret {
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        secret
    }

    fn opener(
        key: &PrivateDecryptingKey,
    ) -> impl FnMut(&[u8], &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> + '_ {
        move |label, ciphertext| envelope::open(key, label, ciphertext)
    }

    fn unseal_with(
        key: &PrivateDecryptingKey,
        sealed: &SealedSecret,
    ) -> Result<BTreeMap<String, Vec<u8>>, UnsealError> {
        let mut open = opener(key);
        unseal(sealed, &mut open)
            .map(|data| data.into_iter().map(|(k, v)| (k, v.to_vec())).collect())
    }

    fn open_value(
        key: &PrivateDecryptingKey,
        sealed: &SealedSecret,
        item: &str,
        label: &[u8],
    ) -> Vec<u8> {
        let ciphertext = decode_base64(&sealed.spec.encrypted_data[item]).unwrap();
        envelope::open(key, label, &ciphertext).unwrap().to_vec()
    }

    #[test]
    fn go_base64_ignores_line_breaks_and_requires_padding() {
        assert_eq!(decode_base64("aGVs\r\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(
            decode_base64("aGVsbG8"),
            Err(Base64Error),
            "padding required"
        );
        assert_eq!(decode_base64("-_8="), Err(Base64Error), "no URL alphabet");
        assert_eq!(
            decode_base64("aGVs bG8="),
            Err(Base64Error),
            "spaces are not ignored"
        );
        // Go's non-strict StdEncoding tolerates non-zero trailing bits.
        assert_eq!(
            decode_base64("aGk=").unwrap(),
            decode_base64("aGl=").unwrap()
        );
        assert_eq!(encode_base64(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn data_then_string_data_seal_under_the_strict_label() {
        let key = test_key();
        let input = secret(
            &[("user", b"admin"), ("password", b"old")],
            &[("password", "new")],
        );
        let sealed = seal_secret(&input, &key.public_key(), None, false).unwrap();
        assert_eq!(sealed.metadata.name.as_deref(), Some("db"));
        assert_eq!(sealed.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(
            sealed.metadata.annotations, None,
            "strict carries no annotation"
        );
        assert_eq!(open_value(&key, &sealed, "user", b"prod/db"), b"admin");
        assert_eq!(open_value(&key, &sealed, "password", b"prod/db"), b"new");
        let base64 = &sealed.spec.encrypted_data["user"];
        assert!(
            base64.starts_with("AQ"),
            "2048-bit keys give a 0x0100 prefix"
        );
        let unsealed = unseal_with(&key, &sealed).unwrap();
        assert_eq!(unsealed.len(), 2);
        assert_eq!(unsealed["password"], b"new");
    }

    #[test]
    fn scope_comes_from_input_annotations_unless_overridden() {
        let key = test_key();
        let cluster = with_annotation(secret(&[("k", b"v")], &[]), CLUSTER_WIDE_ANNOTATION, "true");
        let sealed = seal_secret(&cluster, &key.public_key(), None, false).unwrap();
        assert_eq!(
            sealed.metadata.annotations,
            Some(BTreeMap::from([(
                CLUSTER_WIDE_ANNOTATION.into(),
                "true".into()
            )]))
        );
        assert_eq!(open_value(&key, &sealed, "k", b""), b"v");

        let sealed = seal_secret(
            &cluster,
            &key.public_key(),
            Some(Scope::NamespaceWide),
            false,
        )
        .unwrap();
        let expected = Some(BTreeMap::from([(
            NAMESPACE_WIDE_ANNOTATION.to_string(),
            "true".to_string(),
        )]));
        assert_eq!(sealed.metadata.annotations, expected);
        let template = sealed.spec.template.as_ref().unwrap();
        assert_eq!(
            template.metadata.as_ref().unwrap().annotations,
            expected,
            "the template carries the rewritten annotations too"
        );
        assert_eq!(open_value(&key, &sealed, "k", b"prod"), b"v");

        let sealed = seal_secret(&cluster, &key.public_key(), Some(Scope::Strict), false).unwrap();
        assert_eq!(sealed.metadata.annotations, None);
        assert_eq!(open_value(&key, &sealed, "k", b"prod/db"), b"v");
    }

    #[test]
    fn cluster_wide_needs_no_namespace_but_others_do() {
        let key = test_key();
        let mut input = secret(&[("k", b"v")], &[]);
        input.metadata.namespace = None;
        let error = seal_secret(&input, &key.public_key(), None, false).unwrap_err();
        assert!(
            matches!(error, SealError::MissingNamespace { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("metadata.namespace"));
        let sealed =
            seal_secret(&input, &key.public_key(), Some(Scope::ClusterWide), false).unwrap();
        assert_eq!(sealed.metadata.namespace, None);
        assert_eq!(open_value(&key, &sealed, "k", b""), b"v");

        input.metadata.name = None;
        let error = seal_secret(&input, &key.public_key(), Some(Scope::ClusterWide), false);
        assert!(matches!(error, Err(SealError::MissingName)));
    }

    #[test]
    fn empty_data_is_refused_unless_allowed() {
        let key = test_key();
        let input = secret(&[], &[]);
        let error = seal_secret(&input, &key.public_key(), None, false).unwrap_err();
        assert!(matches!(error, SealError::EmptyData { .. }));
        assert!(error.to_string().contains("--allow-empty-data"));
        let sealed = seal_secret(&input, &key.public_key(), None, true).unwrap();
        assert!(sealed.spec.encrypted_data.is_empty());
    }

    #[test]
    fn template_keeps_user_metadata_and_drops_server_and_leaky_fields() {
        let key = test_key();
        let mut input = secret(&[("k", b"v")], &[]);
        input.type_ = Some("kubernetes.io/basic-auth".into());
        input.immutable = Some(true);
        let metadata = &mut input.metadata;
        metadata.labels = Some(BTreeMap::from([("app".into(), "api".into())]));
        metadata.annotations = Some(BTreeMap::from([
            (
                LAST_APPLIED_ANNOTATIONS[0].into(),
                r#"{"data":{"k":"dg=="}}"#.into(),
            ),
            (LAST_APPLIED_ANNOTATIONS[1].into(), "{}".into()),
            ("team".into(), "payments".into()),
        ]));
        metadata.uid = Some("1234".into());
        metadata.resource_version = Some("42".into());
        metadata.generation = Some(3);
        metadata.self_link = Some("/api/v1/x".into());
        metadata.creation_timestamp = Some(Time(Default::default()));
        metadata.deletion_grace_period_seconds = Some(30);
        metadata.finalizers = Some(vec!["keep".into()]);
        metadata.owner_references = Some(vec![OwnerReference {
            name: "owner".into(),
            ..OwnerReference::default()
        }]);
        let sealed = seal_secret(&input, &key.public_key(), None, false).unwrap();
        let template = sealed.spec.template.unwrap();
        assert_eq!(template.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        assert_eq!(template.immutable, Some(true));
        assert_eq!(template.data, None);
        let meta = template.metadata.unwrap();
        assert_eq!(
            meta,
            ObjectMeta {
                name: Some("db".into()),
                namespace: Some("prod".into()),
                labels: Some(BTreeMap::from([("app".into(), "api".into())])),
                annotations: Some(BTreeMap::from([("team".into(), "payments".into())])),
                finalizers: Some(vec!["keep".into()]),
                ..ObjectMeta::default()
            }
        );
        assert_eq!(
            sealed.metadata.labels, None,
            "only name, namespace, scope on the outside"
        );
    }

    #[test]
    fn label_comes_from_the_sealed_secrets_own_metadata_not_the_template() {
        let key = test_key();
        let input = secret(&[("k", b"v")], &[]);
        let mut sealed = seal_secret(&input, &key.public_key(), None, false).unwrap();
        // Claiming cluster-wide in the (unauthenticated) template changes nothing.
        sealed
            .spec
            .template
            .as_mut()
            .unwrap()
            .metadata
            .as_mut()
            .unwrap()
            .annotations = Some(BTreeMap::from([(
            CLUSTER_WIDE_ANNOTATION.into(),
            "true".into(),
        )]));
        sealed.metadata.namespace = Some("other".into());
        let error = unseal_with(&key, &sealed).unwrap_err();
        assert_eq!(error.to_string(), "no key could decrypt secret (k)");
        sealed.metadata.namespace = Some("prod".into());
        assert_eq!(unseal_with(&key, &sealed).unwrap()["k"], b"v");
    }

    #[test]
    fn per_key_errors_name_the_keys_and_never_the_values() {
        let key = test_key();
        let mut sealed = seal_secret(
            &secret(&[("good", b"hunter2")], &[]),
            &key.public_key(),
            None,
            false,
        )
        .unwrap();
        let other = test_key();
        let foreign = envelope::seal(&other.public_key(), b"prod/db", b"hunter3").unwrap();
        let spec = &mut sealed.spec.encrypted_data;
        spec.insert("b-foreign".into(), encode_base64(&foreign));
        spec.insert("a-foreign".into(), encode_base64(&foreign));
        spec.insert("not-base64".into(), "hunter2!".into());
        spec.insert("short".into(), "AQ==".into());
        let error = unseal_with(&key, &sealed).unwrap_err();
        let message = error.to_string();
        assert_eq!(
            message,
            "illegal base64 data (not-base64), no key could decrypt secret (a-foreign, b-foreign, short)"
        );
        assert!(!message.contains("hunter"));
        let UnsealError::Keys(keys) = error else {
            panic!("expected per-key errors");
        };
        assert_eq!(keys.invalid_base64, vec!["not-base64".to_string()]);
    }

    #[test]
    fn legacy_data_opens_the_whole_secret() {
        let key = test_key();
        let legacy_json = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "prod"},
            "data": {"user": "YWRtaW4=", "password": "b2xk"},
            "stringData": {"password": "new"}
        });
        let blob = envelope::seal(
            &key.public_key(),
            b"prod/db",
            legacy_json.to_string().as_bytes(),
        )
        .unwrap();
        let mut sealed = SealedSecret::new(
            "db",
            SealedSecretSpec {
                data: Some(ByteString(blob)),
                ..SealedSecretSpec::default()
            },
        );
        sealed.metadata.namespace = Some("prod".into());
        let data = unseal_with(&key, &sealed).unwrap();
        assert_eq!(data["user"], b"admin");
        assert_eq!(data["password"], b"new");

        sealed.spec.encrypted_data.insert("x".into(), "AQ==".into());
        assert!(matches!(
            unseal_with(&key, &sealed),
            Err(UnsealError::BothDataFormats)
        ));
        sealed.spec.encrypted_data.clear();
        sealed.metadata.name = Some("renamed".into());
        assert!(matches!(
            unseal_with(&key, &sealed),
            Err(UnsealError::LegacyDecrypt(_))
        ));
    }

    #[test]
    fn legacy_data_that_is_not_a_secret_is_reported_without_its_content() {
        let key = test_key();
        let blob = envelope::seal(&key.public_key(), b"", br#"{"data": "hunter2"}"#).unwrap();
        let mut sealed = SealedSecret::new(
            "db",
            SealedSecretSpec {
                data: Some(ByteString(blob)),
                ..SealedSecretSpec::default()
            },
        );
        sealed.metadata.annotations = Some(BTreeMap::from([(
            CLUSTER_WIDE_ANNOTATION.into(),
            "true".into(),
        )]));
        let error = unseal_with(&key, &sealed).unwrap_err();
        assert!(matches!(error, UnsealError::LegacyNotASecret));
        assert!(!error.to_string().contains("hunter2"));
    }

    #[test]
    fn update_scope_annotations_matches_upstream() {
        let both = Some(BTreeMap::from([
            (CLUSTER_WIDE_ANNOTATION.to_string(), "true".to_string()),
            (NAMESPACE_WIDE_ANNOTATION.to_string(), "true".to_string()),
            ("other".to_string(), "x".to_string()),
        ]));
        assert_eq!(
            update_scope_annotations(both.clone(), Scope::Strict),
            Some(BTreeMap::from([("other".to_string(), "x".to_string())]))
        );
        let namespace_wide = update_scope_annotations(both, Scope::NamespaceWide).unwrap();
        assert_eq!(namespace_wide.len(), 2);
        assert_eq!(namespace_wide[NAMESPACE_WIDE_ANNOTATION], "true");
        assert_eq!(update_scope_annotations(None, Scope::Strict), None);
    }
}
