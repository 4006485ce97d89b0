//! The target Secret: what it should hold (fetched values through the template), whether it does
//! (drift), and writing or deleting it by server-side apply.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mooring_crds::external_secret::ExternalSecret;
use zeroize::Zeroizing;

use super::fetch::Values;
use super::policy::{Creation, Policies};
use super::{
    Context, DATA_HASH_ANNOTATION, Error, MANAGED_LABEL, OWNER_ANNOTATION, Outcome, SyncResult,
};
use crate::cluster::FIELD_MANAGER;
use crate::controllers::lock;

/// The Secret mooring last wrote for an ExternalSecret, and the spec it came from.
#[derive(Clone)]
pub(super) struct LastWrite {
    /// The `syncedResourceVersion` of the spec the values were read for.
    pub(super) synced_version: String,
    /// What was written.
    pub(super) desired: Desired,
}

/// The part of a Secret an ExternalSecret decides. Values are zeroized when dropped.
#[derive(Clone, Default)]
pub(super) struct Desired {
    /// The Secret's name.
    pub(super) name: String,
    /// The keys and values mooring writes.
    pub(super) data: BTreeMap<String, Zeroizing<Vec<u8>>>,
    /// `type`, when the template sets one.
    pub(super) type_: Option<String>,
    /// Labels from the template.
    pub(super) labels: BTreeMap<String, String>,
    /// Annotations from the template.
    pub(super) annotations: BTreeMap<String, String>,
    /// `spec.target.immutable`.
    pub(super) immutable: bool,
}

/// The Secret's name: `spec.target.name`, else the ExternalSecret's.
pub(super) fn target_name(es: &ExternalSecret) -> String {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| es.name_any())
}

/// The Secret type the API server turns into a ServiceAccount token: whoever may have such a
/// Secret made may mint a token for any ServiceAccount of the namespace (ESO's GHSA-fq7h), so
/// the agent's own Secret rights are never lent to an ExternalSecret author for it.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Refuses an ExternalSecret whose template asks for a ServiceAccount-token Secret; checked
/// before the store is read, so nothing is fetched and nothing is written.
pub(super) fn ensure_allowed_type(es: &ExternalSecret) -> Result<(), Error> {
    let type_ = es
        .spec
        .target
        .as_ref()
        .and_then(|t| t.template.as_ref())
        .and_then(|t| t.type_.as_deref());
    match type_ {
        Some(type_) if type_ == SERVICE_ACCOUNT_TOKEN_TYPE => {
            Err(Error::SecretTypeForbidden(type_.to_string()))
        }
        _ => Ok(()),
    }
}

/// The target Secret, if it exists.
async fn read_secret(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    api.get_opt(name).await.map_err(|source| Error::ReadSecret {
        name: name.to_string(),
        source,
    })
}

/// When no refresh is due: the Secret as it is, or restored from the values last read (drift),
/// without a provider call. `None` when the provider must be read anyway: after a restart
/// (nothing in memory) with a drifted or missing Secret.
pub(super) async fn keep_or_repair(
    es: &ExternalSecret,
    ctx: &Context,
    policies: &Policies,
    synced_version: &str,
    api: &Api<Secret>,
) -> Result<Option<Outcome>, Error> {
    if policies.creation == Creation::None {
        return Ok(Some(Outcome::Unchanged));
    }
    let existing = read_secret(api, &target_name(es)).await?;
    let last = lock(&ctx.last)
        .get(&es.uid().unwrap_or_default())
        .filter(|l| l.synced_version == synced_version)
        .cloned();
    let outcome = match (&existing, last) {
        (None, _) if policies.creation == Creation::Merge => Outcome::Missing,
        (Some(secret), Some(last)) if matches_desired(secret, &last.desired) => Outcome::Unchanged,
        (_, Some(last)) => {
            // Drift: restore the last read values; no provider call.
            let written = write_secret(es, policies, existing.as_ref(), &last.desired, api).await?;
            if written == Outcome::Unchanged {
                Outcome::Unchanged
            } else {
                Outcome::Repaired
            }
        }
        (Some(secret), None) if is_as_written(secret) => Outcome::Unchanged,
        // After a restart with a drifted or missing Secret: read again.
        _ => return Ok(None),
    };
    Ok(Some(outcome))
}

/// Writes freshly read values per `creationPolicy`, and remembers them for drift repair; deletes
/// the Secret when `fetched` is `None` (`deletionPolicy: Delete` and every remote value gone).
pub(super) async fn write_fetched(
    es: &ExternalSecret,
    ctx: &Context,
    policies: &Policies,
    synced_version: String,
    fetched: Option<Values>,
    api: &Api<Secret>,
) -> SyncResult {
    let uid = es.uid().unwrap_or_default();
    let name = target_name(es);
    let existing = read_secret(api, &name).await?;
    let Some(values) = fetched else {
        // Nothing is left to repair.
        lock(&ctx.last).remove(&uid);
        return delete_target(es, existing.as_ref(), api).await;
    };
    if policies.creation == Creation::None {
        return Ok(Outcome::Refreshed);
    }
    if existing.is_none() && policies.creation == Creation::Merge {
        return Ok(Outcome::Missing);
    }
    let desired = desired_secret(es, &name, values)?;
    let outcome = write_secret(es, policies, existing.as_ref(), &desired, api).await?;
    lock(&ctx.last).insert(
        uid,
        LastWrite {
            synced_version,
            desired,
        },
    );
    Ok(match outcome {
        Outcome::Unchanged => Outcome::Refreshed,
        other => other,
    })
}

/// The Secret to write: fetched values through `target.template`. As in ESO's templating
/// (<https://external-secrets.io/latest/guides/templating/>), the rendered `template.data`
/// replaces the fetched values, unless `mergePolicy: Merge` lays it over them.
fn desired_secret(
    es: &ExternalSecret,
    name: &str,
    values: BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Desired, Error> {
    let target = es.spec.target.clone().unwrap_or_default();
    let template = target.template.unwrap_or_default();
    let templates = template.data.clone().unwrap_or_default();
    let data = if templates.is_empty() {
        values.clone()
    } else {
        let rendered = mooring_template::render_all(&templates, &values)?;
        if template.merge_policy.as_deref() == Some("Merge") {
            let mut merged = values.clone();
            merged.extend(rendered);
            merged
        } else {
            rendered
        }
    };
    let metadata = template.metadata.clone().unwrap_or_default();
    let render_strings =
        |map: Option<BTreeMap<String, String>>| -> Result<BTreeMap<String, String>, Error> {
            let map = map.unwrap_or_default();
            if map.is_empty() {
                return Ok(map);
            }
            let rendered = mooring_template::render_all(&map, &values)?;
            rendered
                .into_iter()
                .map(|(k, v)| {
                    String::from_utf8(v.to_vec())
                        .map(|text| (k.clone(), text))
                        .map_err(|_| {
                            Error::InvalidSpec(format!(
                                "template metadata {k:?} did not render to UTF-8 text"
                            ))
                        })
                })
                .collect()
        };
    Ok(Desired {
        name: name.to_string(),
        data,
        type_: template.type_.clone().filter(|t| !t.is_empty()),
        labels: render_strings(metadata.labels)?,
        annotations: render_strings(metadata.annotations)?,
        immutable: target.immutable == Some(true),
    })
}

/// SHA-256 (hex) of the keys and values mooring writes.
fn data_hash(data: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (key, value) in data {
        context.update(&(key.len() as u64).to_be_bytes());
        context.update(key.as_bytes());
        context.update(&(value.len() as u64).to_be_bytes());
        context.update(value);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the Secret holds exactly what `desired` says for the parts mooring writes.
fn matches_desired(secret: &Secret, desired: &Desired) -> bool {
    let data = secret.data.clone().unwrap_or_default();
    let values_match = desired
        .data
        .iter()
        .all(|(k, v)| data.get(k).is_some_and(|have| have.0 == v.as_slice()));
    let labels = secret.labels();
    let annotations = secret.annotations();
    values_match
        && desired.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && desired
            .annotations
            .iter()
            .all(|(k, v)| annotations.get(k) == Some(v))
        && annotations.get(DATA_HASH_ANNOTATION) == Some(&data_hash(&desired.data))
        && desired
            .type_
            .as_ref()
            .is_none_or(|t| secret.type_.as_ref() == Some(t))
}

/// After a restart (nothing in memory): whether the keys mooring applied still hash to the
/// annotation it wrote. The keys are those the `mooring` field manager owns under `data`.
fn is_as_written(secret: &Secret) -> bool {
    let Some(expected) = secret.annotations().get(DATA_HASH_ANNOTATION) else {
        return false;
    };
    let owned: Vec<String> = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })
        .filter_map(|m| m.fields_v1.as_ref())
        .filter_map(|fields| fields.0.get("f:data")?.as_object().cloned())
        .flat_map(|keys| {
            keys.keys()
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let data = secret.data.clone().unwrap_or_default();
    let written: BTreeMap<String, Zeroizing<Vec<u8>>> = owned
        .into_iter()
        .filter_map(|k| data.get(&k).map(|v| (k, Zeroizing::new(v.0.clone()))))
        .collect();
    &data_hash(&written) == expected
}

/// Whether `es` is the Secret's controller (its owner reference with `controller: true`).
fn is_controlled_by(secret: &Secret, es: &ExternalSecret) -> bool {
    let uid = es.uid();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// Server-side applies the desired Secret (only when it differs), per `creationPolicy`.
async fn write_secret(
    es: &ExternalSecret,
    policies: &Policies,
    existing: Option<&Secret>,
    desired: &Desired,
    api: &Api<Secret>,
) -> Result<Outcome, Error> {
    let name = desired.name.clone();
    match (policies.creation, existing) {
        (Creation::None, _) => return Ok(Outcome::Unchanged),
        (Creation::Merge, None) => return Ok(Outcome::Missing),
        _ => {}
    }
    if let Some(existing) = existing {
        let foreign_controller = existing
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true))
            && !is_controlled_by(existing, es);
        if policies.creation == Creation::Owner && foreign_controller {
            return Err(Error::ForeignOwner(name));
        }
        let owned_as_wanted =
            policies.creation != Creation::Owner || is_controlled_by(existing, es);
        if matches_desired(existing, desired) && owned_as_wanted {
            return Ok(Outcome::Unchanged);
        }
        if existing.immutable == Some(true) {
            return Err(Error::Immutable(name));
        }
    }
    let body = applied_secret(es, policies, desired);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::ApplySecret {
        name: name.clone(),
        source,
    })?;
    Ok(if existing.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// The Secret mooring applies: the desired keys, labels and annotations, plus the managed label,
/// the owner annotation and the data hash; owned by the ExternalSecret with `creationPolicy: Owner`.
fn applied_secret(
    es: &ExternalSecret,
    policies: &Policies,
    desired: &Desired,
) -> serde_json::Value {
    let mut labels = desired.labels.clone();
    labels.insert(MANAGED_LABEL.into(), "true".into());
    let mut annotations = desired.annotations.clone();
    annotations.insert(OWNER_ANNOTATION.into(), es.name_any());
    annotations.insert(DATA_HASH_ANNOTATION.into(), data_hash(&desired.data));
    let data: BTreeMap<&String, String> = desired
        .data
        .iter()
        .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
        .collect();
    let mut metadata = serde_json::json!({
        "name": desired.name,
        "namespace": es.namespace(),
        "labels": labels,
        "annotations": annotations,
    });
    if policies.creation == Creation::Owner {
        let owner = es.controller_owner_ref(&()).map(|mut owner| {
            owner.block_owner_deletion = None;
            owner
        });
        metadata["ownerReferences"] = serde_json::json!(owner.into_iter().collect::<Vec<_>>());
    }
    let mut body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "data": data,
    });
    if let Some(type_) = &desired.type_ {
        body["type"] = serde_json::json!(type_);
    }
    if desired.immutable {
        body["immutable"] = serde_json::json!(true);
    }
    body
}

/// `deletionPolicy: Delete` with every remote value gone: deletes the Secret if this
/// ExternalSecret controls it.
async fn delete_target(
    es: &ExternalSecret,
    existing: Option<&Secret>,
    api: &Api<Secret>,
) -> SyncResult {
    let Some(existing) = existing.filter(|s| is_controlled_by(s, es)) else {
        return Ok(Outcome::Deleted);
    };
    let name = existing.name_any();
    api.delete(&name, &DeleteParams::default())
        .await
        .map_err(|source| Error::DeleteSecret { name, source })?;
    Ok(Outcome::Deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::external_secret::test_support::{es, values};
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn template_replaces_by_default_and_merges_on_request() {
        let replace = es(serde_json::json!({"target": {"template": {
            "type": "kubernetes.io/basic-auth",
            "metadata": {"labels": {"user": "{{ .user }}"}},
            "data": {"dsn": "postgres://{{ .user }}:{{ .password }}@db"}}}}));
        let desired = desired_secret(
            &replace,
            "db",
            values(&[("user", "app"), ("password", "pw")]),
        )
        .unwrap();
        assert_eq!(desired.data.keys().collect::<Vec<_>>(), ["dsn"]);
        assert_eq!(desired.data["dsn"].as_slice(), b"postgres://app:pw@db");
        assert_eq!(desired.labels["user"], "app");
        assert_eq!(desired.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let mut merge = replace.clone();
        merge
            .spec
            .target
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .merge_policy = Some("Merge".into());
        let desired =
            desired_secret(&merge, "db", values(&[("user", "app"), ("password", "pw")])).unwrap();
        assert_eq!(
            desired.data.keys().collect::<Vec<_>>(),
            ["dsn", "password", "user"]
        );
    }

    #[test]
    fn a_service_account_token_type_is_refused() {
        let with_type =
            |type_: &str| es(serde_json::json!({"target": {"template": {"type": type_}}}));
        let error =
            ensure_allowed_type(&with_type("kubernetes.io/service-account-token")).unwrap_err();
        assert_eq!(error.reason(), "SecretTypeForbidden");
        assert!(!error.is_retryable());
        assert!(
            error
                .to_string()
                .starts_with("spec.target.template.type \"kubernetes.io/service-account-token\""),
            "{error}"
        );
        for allowed in ["Opaque", "kubernetes.io/dockerconfigjson", ""] {
            assert!(
                ensure_allowed_type(&with_type(allowed)).is_ok(),
                "{allowed}"
            );
        }
        assert!(ensure_allowed_type(&es(serde_json::json!({}))).is_ok());
    }

    fn secret_with(data: &[(&str, &str)], annotations: &[(&str, String)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                ),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn drift_is_detected_on_the_keys_mooring_writes_only() {
        let desired = Desired {
            name: "db".into(),
            data: values(&[("password", "pw")]),
            ..Default::default()
        };
        let hash = data_hash(&desired.data);
        let same = secret_with(
            &[("password", "pw"), ("extra", "theirs")],
            &[(DATA_HASH_ANNOTATION, hash.clone())],
        );
        assert!(
            matches_desired(&same, &desired),
            "keys of others are left alone"
        );
        let edited = secret_with(&[("password", "edited")], &[(DATA_HASH_ANNOTATION, hash)]);
        assert!(!matches_desired(&edited, &desired));
    }
}
