//! `--merge-into`: seal new items for an existing SealedSecret and merge them into its file.

use std::path::Path;

use anyhow::{Context, bail};
use aws_lc_rs::rsa::PublicEncryptingKey;
use k8s_openapi::api::core::v1::Secret;
use mooring_crds::SealedSecret;
use mooring_sealing::Scope;

use crate::documents;
use crate::output::{self, Format};

/// What to merge and how.
pub struct Merge<'a> {
    /// The SealedSecret file to update in place.
    pub target: &'a Path,
    /// `--scope`; a non-strict value must agree with the target's scope.
    pub scope_flag: Scope,
    /// `-n`, which must agree with the target's namespace.
    pub namespace_flag: Option<&'a str>,
    /// `--allow-empty-data`.
    pub allow_empty_data: bool,
    /// `-o` when given; else the target keeps its own format.
    pub format: Option<Format>,
}

impl Merge<'_> {
    /// Seals `secret` with the target's name, namespace and scope (so the merged values open
    /// where the target's do), merges it, and rewrites the target atomically.
    pub fn run(&self, secret: Secret, public_key: &PublicEncryptingKey) -> anyhow::Result<()> {
        let target = self.target;
        let text = std::fs::read_to_string(target)
            .with_context(|| format!("failed to read --merge-into file {}", target.display()))?;
        let mut original = read_target(&text)
            .with_context(|| format!("failed to read --merge-into file {}", target.display()))?;
        let merged = self.seal_for(&original, secret, public_key)?;
        merge(&mut original, merged);

        let format = self.format.unwrap_or_else(|| Format::of_document(&text));
        let mut out = Vec::new();
        output::write_object(&mut out, format, &original)?;
        output::write_atomically(target, &out, true)
    }

    fn seal_for(
        &self,
        original: &SealedSecret,
        mut secret: Secret,
        public_key: &PublicEncryptingKey,
    ) -> anyhow::Result<SealedSecret> {
        let scope = Scope::from_annotations(
            original
                .metadata
                .annotations
                .as_ref()
                .unwrap_or(&Default::default()),
        );
        if self.scope_flag != Scope::Strict && self.scope_flag != scope {
            bail!(
                "failed to merge into {}: --scope {} differs from the target's scope {scope}",
                self.target.display(),
                self.scope_flag
            );
        }
        let namespace = original
            .metadata
            .namespace
            .clone()
            .filter(|namespace| !namespace.is_empty());
        if let (Some(flag), Some(namespace)) = (self.namespace_flag, namespace.as_deref())
            && flag != namespace
        {
            bail!(
                "namespace mismatch: --merge-into target {} is in namespace {namespace:?} but {flag:?} was specified",
                self.target.display()
            );
        }
        secret.metadata.name = original.metadata.name.clone();
        if namespace.is_some() {
            secret.metadata.namespace = namespace;
        } else if secret.metadata.namespace.is_none() {
            secret.metadata.namespace = self.namespace_flag.map(str::to_string);
        }
        mooring_sealing::seal_secret(&secret, public_key, Some(scope), self.allow_empty_data)
            .with_context(|| format!("failed to merge into {}", self.target.display()))
    }
}

/// The one SealedSecret of a `--merge-into` file.
fn read_target(text: &str) -> anyhow::Result<SealedSecret> {
    let mut documents = documents::parse_documents(text.as_bytes())?;
    if documents.len() != 1 {
        bail!(
            "expected exactly one SealedSecret, found {} documents",
            documents.len()
        );
    }
    let document = documents.remove(0);
    documents::sealed_secret_from_document(document, 1)
}

/// Upstream's merge: `encryptedData` and the template's annotations, labels and data of
/// `update` win over `original`'s; everything else of `original` stays.
fn merge(original: &mut SealedSecret, update: SealedSecret) {
    original
        .spec
        .encrypted_data
        .extend(update.spec.encrypted_data);
    let Some(update_template) = update.spec.template else {
        return;
    };
    let template = original.spec.template.get_or_insert_with(Default::default);
    if let Some(data) = update_template.data {
        template
            .data
            .get_or_insert_with(Default::default)
            .extend(data);
    }
    let Some(update_metadata) = update_template.metadata else {
        return;
    };
    let metadata = template.metadata.get_or_insert_with(Default::default);
    if let Some(annotations) = update_metadata.annotations {
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(annotations);
    }
    if let Some(labels) = update_metadata.labels {
        metadata
            .labels
            .get_or_insert_with(Default::default)
            .extend(labels);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use mooring_sealing::scope::NAMESPACE_WIDE_ANNOTATION;

    fn secret(name: &str, namespace: Option<&str>, annotations: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: namespace.map(str::to_string),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
                .filter(|a: &BTreeMap<_, _>| !a.is_empty()),
                labels: Some(BTreeMap::from([("new".into(), "label".into())])),
                ..ObjectMeta::default()
            },
            string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
            ..Secret::default()
        }
    }

    #[test]
    fn merged_values_use_the_targets_scope_and_names() {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let target_secret = secret(
            "target",
            Some("prod"),
            &[(NAMESPACE_WIDE_ANNOTATION, "true")],
        );
        let original =
            mooring_sealing::seal_secret(&target_secret, &key.public_key(), None, false).unwrap();
        let merge = Merge {
            target: Path::new("target.yaml"),
            scope_flag: Scope::Strict,
            namespace_flag: None,
            allow_empty_data: false,
            format: None,
        };
        // The input claims another name and no scope: the target's win.
        let update = merge
            .seal_for(
                &original,
                secret("input", Some("dev"), &[]),
                &key.public_key(),
            )
            .unwrap();
        let ciphertext = mooring_sealing::decode_base64(&update.spec.encrypted_data["k"]).unwrap();
        assert_eq!(
            mooring_sealing::open(&key, b"prod", &ciphertext)
                .unwrap()
                .as_slice(),
            b"v"
        );

        let mut merged = original.clone();
        merge_into_labels_check(&mut merged, update);

        let wider = Merge {
            scope_flag: Scope::ClusterWide,
            ..merge
        };
        assert!(
            wider
                .seal_for(&original, secret("x", None, &[]), &key.public_key())
                .is_err()
        );
        let elsewhere = Merge {
            namespace_flag: Some("dev"),
            ..wider
        };
        let error = Merge {
            scope_flag: Scope::Strict,
            ..elsewhere
        }
        .seal_for(&original, secret("x", None, &[]), &key.public_key())
        .unwrap_err();
        assert!(error.to_string().contains("namespace mismatch"), "{error}");
    }

    fn merge_into_labels_check(merged: &mut SealedSecret, update: SealedSecret) {
        merged
            .spec
            .template
            .as_mut()
            .unwrap()
            .metadata
            .as_mut()
            .unwrap()
            .labels = None;
        merge(merged, update);
        let metadata = merged
            .spec
            .template
            .as_ref()
            .unwrap()
            .metadata
            .as_ref()
            .unwrap();
        assert_eq!(
            metadata.labels.as_ref().unwrap()["new"],
            "label",
            "nil maps are created"
        );
        assert_eq!(
            metadata.annotations.as_ref().unwrap()[NAMESPACE_WIDE_ANNOTATION],
            "true"
        );
        assert_eq!(merged.metadata.name.as_deref(), Some("target"));
    }
}
