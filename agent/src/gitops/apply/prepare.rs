//! Preparing a sync: the destination namespace when `CreateNamespace=true`, then every rendered
//! object validated, keyed (discovery tells its scope) and turned into the manifest mooring
//! applies, ordered and cut into the steps the sync runs one after the other.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

use super::discovery::Served;
use super::failure::{ObjectFailure, Step};
use super::hooks::{self, DeletePolicy, Role};
use super::object::{
    APPLIED_HASH_ANNOTATION, AppId, ObjectKey, TRACKING_ID_ANNOTATION, has_option,
    split_api_version,
};
use super::{Engine, Error, Hooks, Mode, SyncRequest, compare, order};
use crate::cluster::FIELD_MANAGER;
use mooring_crds::application::HookType;

/// Metadata fields the API server owns: copied from a live object into Git, they would make
/// the apply fail or lie.
const SERVER_OWNED_FIELDS: [&str; 6] = [
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
];

/// A desired object, validated and keyed.
pub(super) struct Desired {
    pub(super) key: ObjectKey,
    pub(super) version: String,
    pub(super) served: Option<Served>,
    /// What mooring applies, as compact JSON: a fraction of the size of the same manifest as a
    /// [`Value`] (a tree of small maps), and every object of a step is held until the step
    /// ends. Parsed again while the object is compared and applied.
    pub(super) manifest: String,
    pub(super) hash: String,
    pub(super) wave: i64,
    /// Set for a hook: it is created in its phase and awaited, never compared or pruned.
    pub(super) hook: Option<HookItem>,
}

/// What makes a desired object a hook.
#[derive(Clone, Debug)]
pub(super) struct HookItem {
    /// The phase it runs in (one item per phase for a hook of several).
    pub(super) hook_type: HookType,
    /// When it is deleted.
    pub(super) policy: DeletePolicy,
    /// Its `metadata.generateName` when it has no name: created with a fresh name each run
    /// (its key carries the generateName as its name).
    pub(super) generate_name: Option<String>,
}

/// The desired set, ready to sync.
pub(super) struct Prepared {
    /// The valid objects in apply order, cut into steps: the first stage, then one per wave.
    pub(super) steps: Vec<Vec<Desired>>,
    /// The keys of the valid objects: what prune compares the inventory with.
    pub(super) keys: BTreeSet<ObjectKey>,
    /// CRDs in the desired set: (group, kind) → CRD name, so a custom resource waiting for one
    /// can name it.
    pub(super) crds: BTreeMap<(String, String), String>,
    /// The SyncFail hooks, in order: run only when a hook of the operation failed.
    pub(super) sync_fail: Vec<Desired>,
}

impl Engine {
    /// Creates the destination namespace first when the sync writes and `CreateNamespace=true`.
    pub(super) async fn create_destination_namespace(
        &self,
        request: &SyncRequest,
    ) -> Result<(), Error> {
        if request.mode == Mode::Apply
            && has_option(&request.sync_options, "CreateNamespace", "true")
            && let Some(namespace) = &request.destination_namespace
        {
            self.ensure_namespace(namespace).await?;
        }
        Ok(())
    }

    async fn ensure_namespace(&self, namespace: &str) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let fail = |source| Error::CreateNamespace {
            namespace: namespace.to_string(),
            source,
        };
        if api.get_opt(namespace).await.map_err(fail)?.is_some() {
            return Ok(());
        }
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
        });
        api.patch(
            namespace,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&manifest),
        )
        .await
        .map_err(fail)?;
        Ok(())
    }

    /// The objects `permit` refuses, each with the rule's message, keyed as the sync keys them
    /// (its own namespace, else `destination_namespace`; cluster-scoped kinds have none). Asked
    /// before a sync, so that one refused object stops the whole sync before anything is
    /// written (Argo CD refuses the whole sync too). A kind not served yet is judged by the
    /// scope its key suggests, and asked again once it resolves during the sync.
    pub async fn refused_objects(
        &self,
        objects: &[DynamicObject],
        destination_namespace: Option<&str>,
        permit: &dyn super::Permit,
    ) -> Vec<(ObjectKey, String)> {
        let mut refused = Vec::new();
        for object in objects {
            // A hook without a name is judged by its generateName.
            let Some(mut key) = ObjectKey::of_object(object).or_else(|| ObjectKey::of_hook(object))
            else {
                // Not keyed: the sync refuses it as invalid and never applies it.
                continue;
            };
            let api_version = object
                .types
                .as_ref()
                .map(|t| t.api_version.as_str())
                .unwrap_or_default();
            let (group, version) = split_api_version(api_version);
            let gvk = GroupVersionKind::gvk(group, version, &key.kind);
            // A discovery failure fails that object in the sync itself; judge it by its key.
            let served = self.discovery.resolve(&gvk).await.ok().flatten();
            key.namespace = namespace_of(&key, served.as_ref(), destination_namespace);
            let namespaced = served.map_or(key.namespace.is_some(), |s| s.namespaced);
            if let Err(message) = permit.check(&key, namespaced) {
                refused.push((key, message));
            }
        }
        refused
    }

    /// Validates and keys every object; the invalid ones and duplicates go to `failures`.
    pub(super) async fn prepare_all<O, I>(
        &self,
        request: &SyncRequest,
        objects: I,
        failures: &mut Vec<ObjectFailure>,
    ) -> Prepared
    where
        O: std::borrow::Borrow<DynamicObject> + Send,
        I: IntoIterator<Item = O>,
        I::IntoIter: Send,
    {
        let mut crds = BTreeMap::new();
        let mut desired: Vec<Desired> = Vec::new();
        let mut keys = BTreeSet::new();
        let mut hook_keys = BTreeSet::new();
        let mut sync_fail = Vec::new();
        let run_hooks = matches!(request.hooks, Hooks::Run { .. });
        for object in objects {
            let object = object.borrow();
            let destination = request.destination_namespace.as_deref();
            let (types, policy) = match hooks::role(&object.metadata) {
                Role::Resource => (Vec::new(), DeletePolicy::default()),
                // Never applied; deletion-time hooks are named by the controller.
                Role::Skip | Role::NotRun(_) => continue,
                // Outside an operation hooks are left alone: not applied, not compared.
                Role::Hook { .. } if !run_hooks => continue,
                Role::Hook { types, policy } => (types, policy),
            };
            if types.is_empty() {
                crds.extend(crd_in_set(object));
            }
            match self
                .prepare(&request.app, object, destination, !types.is_empty())
                .await
            {
                Ok(item) if !types.is_empty() => {
                    let generate_name = object
                        .metadata
                        .name
                        .is_none()
                        .then(|| object.metadata.generate_name.clone())
                        .flatten();
                    for hook_type in types {
                        if !hook_keys.insert((item.key.clone(), hook_type)) {
                            failures.push(ObjectFailure {
                                reason: "DuplicateObject",
                                ..ObjectFailure::invalid(
                                    item.key.clone(),
                                    "the hook appears twice in the render",
                                )
                            });
                            continue;
                        }
                        let hook = Desired {
                            key: item.key.clone(),
                            version: item.version.clone(),
                            served: item.served.clone(),
                            manifest: item.manifest.clone(),
                            hash: item.hash.clone(),
                            wave: item.wave,
                            hook: Some(HookItem {
                                hook_type,
                                policy,
                                generate_name: generate_name.clone(),
                            }),
                        };
                        if hook_type == HookType::SyncFail {
                            sync_fail.push(hook);
                        } else {
                            desired.push(hook);
                        }
                    }
                }
                Ok(item) => {
                    if keys.insert(item.key.clone()) {
                        desired.push(item);
                    } else {
                        failures.push(ObjectFailure {
                            reason: "DuplicateObject",
                            ..ObjectFailure::invalid(
                                item.key,
                                "the object appears twice in the render",
                            )
                        });
                    }
                }
                Err(failure) => failures.push(failure),
            }
        }
        let mut keyed: Vec<_> = desired
            .into_iter()
            .map(|item| (sort_key(&item), item))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        sync_fail.sort_by_key(sort_key);
        Prepared {
            steps: order::steps(keyed),
            keys,
            crds,
            sync_fail,
        }
    }

    /// Keys an object, resolves its kind and builds the manifest mooring applies.
    async fn prepare(
        &self,
        app: &AppId,
        object: &DynamicObject,
        destination_namespace: Option<&str>,
        is_hook: bool,
    ) -> Result<Desired, ObjectFailure> {
        let keyed = if is_hook {
            ObjectKey::of_hook(object)
        } else {
            ObjectKey::of_object(object)
        };
        let mut key = keyed.ok_or_else(|| {
            ObjectFailure::invalid(
                unkeyed(object),
                "the object has no apiVersion, kind or metadata.name",
            )
        })?;
        if is_service_account_token(&key, object) {
            return Err(ObjectFailure {
                reason: "SecretTypeForbidden",
                ..ObjectFailure::invalid(
                    key,
                    "type kubernetes.io/service-account-token: the API server would fill it with a token of the ServiceAccount it names, so mooring never applies one (nor makes one from a SealedSecret or ExternalSecret)",
                )
            });
        }
        let api_version = object
            .types
            .as_ref()
            .map(|t| t.api_version.clone())
            .unwrap_or_default();
        let (group, version) = split_api_version(&api_version);
        let gvk = GroupVersionKind::gvk(group, version, &key.kind);
        let served = self
            .discovery
            .resolve(&gvk)
            .await
            .map_err(|error| ObjectFailure::discovery(key.clone(), Step::Discover, &error))?;
        key.namespace = namespace_of(&key, served.as_ref(), destination_namespace);
        if served.as_ref().is_some_and(|served| served.namespaced) && key.namespace.is_none() {
            return Err(ObjectFailure {
                reason: "MissingNamespace",
                ..ObjectFailure::invalid(
                    key,
                    "metadata.namespace is not set and the Application has no destination namespace",
                )
            });
        }
        let (manifest, hash) = manifest_of(object, &key, app)
            .map_err(|error| ObjectFailure::invalid(key.clone(), encode_failed(&error)))?;
        Ok(Desired {
            wave: order::sync_wave(&object.metadata),
            key,
            version: version.to_string(),
            served,
            manifest,
            hash,
            hook: None,
        })
    }
}

/// Where an item goes in the apply order: its phase (the Sync phase for ordinary objects),
/// then wave and kind.
fn sort_key(item: &Desired) -> order::OrderKey {
    let phase = item.hook.as_ref().map_or(hooks::SYNC_PHASE_RANK, |hook| {
        hooks::phase_rank(hook.hook_type)
    });
    order::phase_order_key(phase, &item.key, item.wave)
}

/// The key of an object that has none, for the failure that says so.
fn unkeyed(object: &DynamicObject) -> ObjectKey {
    ObjectKey {
        group: String::new(),
        kind: object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default(),
        namespace: object.metadata.namespace.clone(),
        name: object.metadata.name.clone().unwrap_or_default(),
    }
}

/// The namespace `key` lives in: none for a cluster-scoped kind, else its own or the
/// destination namespace. Unknown kinds (deferred) are keyed as namespaced when they name a
/// namespace or one is given, as their CRD most likely says.
fn namespace_of(
    key: &ObjectKey,
    served: Option<&Served>,
    destination_namespace: Option<&str>,
) -> Option<String> {
    match served {
        Some(served) if !served.namespaced => None,
        _ => key
            .namespace
            .clone()
            .or_else(|| destination_namespace.map(str::to_string)),
    }
}

fn encode_failed(error: &serde_json::Error) -> String {
    format!("failed to encode the object: {error}")
}

/// The manifest mooring applies for `object` as compact JSON, and its hash: keyed to `key`'s
/// namespace, without server-owned fields or status, with the tracking id and the applied-hash
/// annotation (the hash of everything else).
fn manifest_of(
    object: &DynamicObject,
    key: &ObjectKey,
    app: &AppId,
) -> Result<(String, String), serde_json::Error> {
    let mut manifest = serde_json::to_value(object)?;
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_OWNED_FIELDS {
            metadata.remove(field);
        }
        match &key.namespace {
            Some(namespace) => {
                metadata.insert("namespace".into(), Value::String(namespace.clone()));
            }
            None => {
                metadata.remove("namespace");
            }
        }
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if !annotations.is_object() {
            *annotations = Value::Object(Default::default());
        }
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                TRACKING_ID_ANNOTATION.into(),
                Value::String(key.tracking_id(app)),
            );
            annotations.remove(APPLIED_HASH_ANNOTATION);
        }
    }
    if let Some(map) = manifest.as_object_mut() {
        map.remove("status");
    }
    let hash = compare::manifest_hash(&manifest);
    if let Some(annotations) = manifest
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(APPLIED_HASH_ANNOTATION.into(), Value::String(hash.clone()));
    }
    Ok((serde_json::to_string(&manifest)?, hash))
}

/// When `object` is a CRD: the (group, kind) it serves and its name.
fn crd_in_set(object: &DynamicObject) -> Option<((String, String), String)> {
    let is_crd = object.types.as_ref().is_some_and(|t| {
        t.kind == "CustomResourceDefinition" && t.api_version.starts_with("apiextensions.k8s.io/")
    });
    if !is_crd {
        return None;
    }
    let group = object.data.pointer("/spec/group")?.as_str()?;
    let kind = object.data.pointer("/spec/names/kind")?.as_str()?;
    Some((
        (group.to_string(), kind.to_string()),
        object.metadata.name.clone()?,
    ))
}

/// A core Secret of type `kubernetes.io/service-account-token` (ESO's GHSA-fq7h, from Git): the
/// token controller would mint a token for whichever ServiceAccount its annotation names.
fn is_service_account_token(key: &ObjectKey, object: &DynamicObject) -> bool {
    key.group.is_empty()
        && key.kind == "Secret"
        && object.data.get("type").and_then(serde_json::Value::as_str)
            == Some("kubernetes.io/service-account-token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_in_the_set_are_found_by_group_and_kind() {
        let crd: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}}
        }))
        .unwrap();
        let found: BTreeMap<_, _> = crd_in_set(&crd).into_iter().collect();
        assert_eq!(
            found
                .get(&("example.com".to_string(), "Widget".to_string()))
                .map(String::as_str),
            Some("widgets.example.com")
        );
    }

    #[test]
    fn only_core_secrets_of_the_token_type_are_service_account_tokens() {
        let object = |api_version: &str, kind: &str, type_: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "type": type_,
            }))
            .unwrap()
        };
        let token = object("v1", "Secret", "kubernetes.io/service-account-token");
        assert!(is_service_account_token(
            &ObjectKey::of_object(&token).unwrap(),
            &token
        ));
        for other in [
            object("v1", "Secret", "Opaque"),
            object(
                "example.com/v1",
                "Secret",
                "kubernetes.io/service-account-token",
            ),
            object("v1", "ConfigMap", "kubernetes.io/service-account-token"),
        ] {
            assert!(!is_service_account_token(
                &ObjectKey::of_object(&other).unwrap(),
                &other
            ));
        }
    }
}
