//! `--recovery-unseal`: open SealedSecrets offline with the controller's private keys.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use aws_lc_rs::rsa::PrivateDecryptingKey;
use k8s_openapi::api::core::v1::Secret;
use mooring_crds::SealedSecret;
use mooring_sealing::{EnvelopeError, parse_private_key_pem};
use zeroize::Zeroizing;

use crate::documents;

/// Reads every private key in `paths`: each file is a PEM private key, or a JSON/YAML Secret
/// or v1 List of Secrets holding one in `data["tls.key"]` (the controller's key backup).
pub fn read_private_keys(paths: &[impl AsRef<Path>]) -> anyhow::Result<Vec<PrivateDecryptingKey>> {
    let mut keys = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let contents = Zeroizing::new(
            std::fs::read(path)
                .with_context(|| format!("failed to read private key file {}", path.display()))?,
        );
        keys.extend(
            keys_in_file(&contents)
                .with_context(|| format!("failed to read private key file {}", path.display()))?,
        );
    }
    if keys.is_empty() {
        bail!("failed to unseal: no private key given (--recovery-private-key)");
    }
    Ok(keys)
}

/// The keys of one file: a PEM key first, else Secrets (possibly in a List).
fn keys_in_file(contents: &[u8]) -> anyhow::Result<Vec<PrivateDecryptingKey>> {
    if let Ok(key) = parse_private_key_pem(contents) {
        return Ok(vec![key]);
    }
    let documents = documents::parse_documents(contents)
        .context("not a PEM private key, a Secret or a List of Secrets")?;
    let mut keys = Vec::new();
    let items = documents.into_iter().flat_map(documents::list_items);
    for (index, item) in items.enumerate() {
        let secret = documents::secret_from_document(item, index + 1)?;
        let name = secret.metadata.name.clone().unwrap_or_default();
        let Some(pem) = secret.data.as_ref().and_then(|data| data.get("tls.key")) else {
            bail!("secret {name:?} has no data[\"tls.key\"]");
        };
        let key = parse_private_key_pem(&pem.0)
            .with_context(|| format!("failed to read data[\"tls.key\"] of secret {name:?}"))?;
        // The decoded Secret holds the PEM key: wipe it.
        if let Some(mut data) = secret.data {
            for value in data.values_mut() {
                zeroize::Zeroize::zeroize(&mut value.0);
            }
        }
        keys.push(key);
    }
    if keys.is_empty() {
        bail!("not a PEM private key, a Secret or a List of Secrets");
    }
    Ok(keys)
}

/// The Secret the controller would write for `sealed`, opened with any of `keys`, with
/// `spec.template.data` rendered as the controller renders it.
pub fn recover(sealed: &SealedSecret, keys: &[PrivateDecryptingKey]) -> anyhow::Result<Secret> {
    let mut open_one =
        |label: &[u8], ciphertext: &[u8]| -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
            let mut last = EnvelopeError::DecryptSessionKey;
            for key in keys {
                match mooring_sealing::open(key, label, ciphertext) {
                    Ok(plaintext) => return Ok(plaintext),
                    Err(error) => last = error,
                }
            }
            Err(last)
        };
    let name = sealed.metadata.name.clone().unwrap_or_default();
    let mut data = mooring_sealing::unseal(sealed, &mut open_one)
        .with_context(|| format!("failed to unseal sealed secret {name:?}"))?;
    let templates = sealed.spec.template.as_ref().and_then(|t| t.data.as_ref());
    if let Some(templates) = templates.filter(|t| !t.is_empty()) {
        let rendered = mooring_template::render_all(templates, &data)
            .with_context(|| format!("failed to render sealed secret {name:?}"))?;
        data.extend(rendered);
    }
    let data: BTreeMap<String, Vec<u8>> = data.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
    Ok(mooring_sealing::secret::unsealed_secret(sealed, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::KeySize;
    use mooring_crds::sealed_secret::{SealedSecretSpec, SecretTemplateSpec};
    use mooring_sealing::Scope;

    fn key() -> PrivateDecryptingKey {
        PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap()
    }

    fn sealed_for(key: &PrivateDecryptingKey) -> SealedSecret {
        let value = mooring_sealing::seal(
            &key.public_key(),
            &Scope::Strict.label("prod", "db"),
            b"s3cret",
        )
        .unwrap();
        let mut sealed = SealedSecret::new(
            "db",
            SealedSecretSpec {
                template: Some(SecretTemplateSpec {
                    type_: Some("Opaque".into()),
                    data: Some(BTreeMap::from([("dsn".into(), "{{ .password }}".into())])),
                    ..SecretTemplateSpec::default()
                }),
                encrypted_data: BTreeMap::from([(
                    "password".into(),
                    mooring_sealing::encode_base64(&value),
                )]),
                data: None,
            },
        );
        sealed.metadata.namespace = Some("prod".into());
        sealed
    }

    #[test]
    fn any_of_the_keys_opens_and_the_secret_looks_like_the_controllers() {
        let right = key();
        let mut sealed = sealed_for(&right);
        sealed.metadata.uid = Some("uid-1".into());
        let secret = recover(&sealed, &[key(), right]).unwrap();
        let data = secret.data.clone().unwrap();
        assert_eq!(data["password"].0, b"s3cret");
        assert_eq!(
            data["dsn"].0, b"s3cret",
            "template.data rendered as the controller does"
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("db"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let owner = &secret.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("SealedSecret", "uid-1", Some(true))
        );
    }

    #[test]
    fn the_wrong_keys_name_the_undecryptable_keys() {
        let sealed = sealed_for(&key());
        let error = recover(&sealed, &[key()]).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "failed to unseal sealed secret \"db\": no key could decrypt secret (password)"
        );
    }

    #[test]
    fn secret_files_without_tls_key_are_refused() {
        let secret =
            br#"{"kind": "Secret", "metadata": {"name": "k"}, "data": {"tls.crt": "AA=="}}"#;
        let error = keys_in_file(secret).err().unwrap();
        assert!(error.to_string().contains("tls.key"), "{error}");
        assert!(keys_in_file(b"plain text").is_err());
    }
}
