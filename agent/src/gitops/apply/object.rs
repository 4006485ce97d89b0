//! Object identity: the key of an object in the inventory and the `mooring.dev/tracking-id`
//! annotation that records, on the object itself, which Application owns it.

use std::fmt;

use kube::api::DynamicObject;
use mooring_crds::application::ResourceStatus;

/// The annotation recording the owning Application on every object mooring applies.
pub const TRACKING_ID_ANNOTATION: &str = "mooring.dev/tracking-id";
/// The annotation holding a digest of the manifest mooring last applied to the object: when the
/// desired manifest hashes the same, Git did not change it.
pub const APPLIED_HASH_ANNOTATION: &str = "mooring.dev/applied-hash";
/// Argo CD's per-object sync options (`Prune=false`, `PruneLast=true`, …), honoured as is.
pub const ARGO_SYNC_OPTIONS_ANNOTATION: &str = "argocd.argoproj.io/sync-options";
/// mooring's own spelling of the same per-object sync options.
pub const SYNC_OPTIONS_ANNOTATION: &str = "mooring.dev/sync-options";
/// Argo CD's sync wave annotation.
pub const ARGO_SYNC_WAVE_ANNOTATION: &str = "argocd.argoproj.io/sync-wave";
/// mooring's sync wave annotation; wins over Argo CD's when both are set.
pub const SYNC_WAVE_ANNOTATION: &str = "mooring.dev/sync-wave";
/// The opt-in that lets a CRD, Namespace or PersistentVolumeClaim be pruned (value `"true"`):
/// deleting those loses data, so it never happens by default.
pub const ALLOW_PRUNE_ANNOTATION: &str = "mooring.dev/allow-prune";

/// The Application an object belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId {
    /// The Application's namespace.
    pub namespace: String,
    /// The Application's name.
    pub name: String,
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What identifies an object across versions: group, kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group, empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    /// `Kind group/namespace/name` without empty parts, for messages: `Deployment apps/ns/web`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        match &self.namespace {
            Some(namespace) => write!(f, " {namespace}/{}", self.name),
            None => write!(f, " {}", self.name),
        }
    }
}

impl ObjectKey {
    /// The key of an inventory entry.
    pub fn of_status(entry: &ResourceStatus) -> ObjectKey {
        ObjectKey {
            group: entry.group.clone(),
            kind: entry.kind.clone(),
            namespace: entry.namespace.clone().filter(|ns| !ns.is_empty()),
            name: entry.name.clone(),
        }
    }

    /// The key of an object as it stands (its namespace as set on it).
    pub fn of_object(object: &DynamicObject) -> Option<ObjectKey> {
        ObjectKey::named(object, object.metadata.name.clone()?)
    }

    /// The key of a hook: as [`ObjectKey::of_object`], but a hook without a name is keyed by
    /// its `metadata.generateName` (it gets a fresh name each time it is created).
    pub fn of_hook(object: &DynamicObject) -> Option<ObjectKey> {
        let name = match &object.metadata.name {
            Some(name) => name.clone(),
            None => object
                .metadata
                .generate_name
                .clone()
                .filter(|name| !name.is_empty())?,
        };
        ObjectKey::named(object, name)
    }

    /// The key of `object` under `name`.
    fn named(object: &DynamicObject, name: String) -> Option<ObjectKey> {
        let types = object.types.as_ref()?;
        let (group, _) = split_api_version(&types.api_version);
        Some(ObjectKey {
            group: group.to_string(),
            kind: types.kind.clone(),
            namespace: object
                .metadata
                .namespace
                .clone()
                .filter(|ns| !ns.is_empty()),
            name,
        })
    }

    /// The `mooring.dev/tracking-id` value for this object owned by `app`:
    /// `<app-namespace>/<app-name>:<group>/<kind>:<namespace>/<name>`.
    pub fn tracking_id(&self, app: &AppId) -> String {
        format!(
            "{}/{}:{}/{}:{}/{}",
            app.namespace,
            app.name,
            self.group,
            self.kind,
            self.namespace.as_deref().unwrap_or_default(),
            self.name
        )
    }
}

/// The owning Application named by a tracking id, and the object it describes.
pub fn parse_tracking_id(id: &str) -> Option<(AppId, ObjectKey)> {
    let mut parts = id.splitn(3, ':');
    let (app, group_kind, namespace_name) = (parts.next()?, parts.next()?, parts.next()?);
    let (app_namespace, app_name) = app.split_once('/')?;
    let (group, kind) = group_kind.split_once('/')?;
    let (namespace, name) = namespace_name.split_once('/')?;
    if app_namespace.is_empty() || app_name.is_empty() || kind.is_empty() || name.is_empty() {
        return None;
    }
    Some((
        AppId {
            namespace: app_namespace.into(),
            name: app_name.into(),
        },
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
            name: name.into(),
        },
    ))
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// The per-object sync options of an object (Argo CD's annotation and mooring's), e.g.
/// `Prune=false`. Values are comma-separated, as in Argo CD.
pub fn object_sync_options(object: &kube::api::ObjectMeta) -> Vec<String> {
    let Some(annotations) = &object.annotations else {
        return Vec::new();
    };
    [ARGO_SYNC_OPTIONS_ANNOTATION, SYNC_OPTIONS_ANNOTATION]
        .iter()
        .filter_map(|name| annotations.get(*name))
        .flat_map(|value| value.split(','))
        .map(|option| option.trim().to_string())
        .filter(|option| !option.is_empty())
        .collect()
}

/// Whether `options` contain `name=value` (case-insensitive value, as Argo CD).
pub fn has_option(options: &[String], name: &str, value: &str) -> bool {
    options.iter().any(|option| {
        option
            .split_once('=')
            .is_some_and(|(n, v)| n.trim() == name && v.trim().eq_ignore_ascii_case(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppId {
        AppId {
            namespace: "argocd".into(),
            name: "platform-api".into(),
        }
    }

    #[test]
    fn a_hook_without_a_name_is_keyed_by_its_generate_name() {
        let object = |metadata: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            }))
            .unwrap()
        };
        let generated = object(serde_json::json!({"generateName": "migrate-", "namespace": "ns"}));
        assert_eq!(ObjectKey::of_object(&generated), None);
        let key = ObjectKey::of_hook(&generated).unwrap();
        assert_eq!(
            (key.group.as_str(), key.kind.as_str(), key.name.as_str()),
            ("batch", "Job", "migrate-")
        );
        assert_eq!(key.namespace.as_deref(), Some("ns"));
        let named = object(serde_json::json!({"name": "migrate", "generateName": "x-"}));
        assert_eq!(ObjectKey::of_hook(&named).unwrap().name, "migrate");
        assert_eq!(ObjectKey::of_hook(&object(serde_json::json!({}))), None);
    }

    #[test]
    fn tracking_id_round_trips_for_namespaced_and_cluster_objects() {
        let deployment = ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("platform-api".into()),
            name: "web".into(),
        };
        let id = deployment.tracking_id(&app());
        assert_eq!(id, "argocd/platform-api:apps/Deployment:platform-api/web");
        assert_eq!(parse_tracking_id(&id), Some((app(), deployment)));

        let namespace = ObjectKey {
            group: String::new(),
            kind: "Namespace".into(),
            namespace: None,
            name: "platform-api".into(),
        };
        let id = namespace.tracking_id(&app());
        assert_eq!(id, "argocd/platform-api:/Namespace:/platform-api");
        assert_eq!(parse_tracking_id(&id), Some((app(), namespace)));
    }

    #[test]
    fn malformed_tracking_ids_are_not_parsed() {
        for id in [
            "",
            "platform-api:apps/Deployment:ns/web",
            "argocd/app:Deployment:ns/web",
            "argocd/app:apps/Deployment:web",
            "argocd/app:apps/:ns/web",
        ] {
            assert_eq!(parse_tracking_id(id), None, "{id}");
        }
    }

    #[test]
    fn sync_options_come_from_both_annotations() {
        let meta = kube::api::ObjectMeta {
            annotations: Some(
                [
                    (
                        ARGO_SYNC_OPTIONS_ANNOTATION.to_string(),
                        "Prune=false, PruneLast=true".to_string(),
                    ),
                    (SYNC_OPTIONS_ANNOTATION.to_string(), "Other=1".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let options = object_sync_options(&meta);
        assert!(has_option(&options, "Prune", "false"));
        assert!(has_option(&options, "PruneLast", "TRUE"));
        assert!(!has_option(&options, "Prune", "true"));
        assert_eq!(options.len(), 3);
    }
}
