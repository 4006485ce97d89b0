//! Argo CD's orphaned-resource warning: with the project's `orphanedResources.warn`, the
//! objects in the Application's destination namespace, of the kinds it manages, that no
//! Application tracks, become an `OrphanedResourceWarning` condition (a warning only: nothing is
//! deleted). As Argo CD, objects with an owner (a ReplicaSet of a Deployment) are not orphans,
//! nor are the namespace's own `default` ServiceAccount and `kube-root-ca.crt` ConfigMap, nor
//! what `orphanedResources.ignore` (`group`, `kind`, `name` glob) lists.

use kube::api::{Api, ListParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use mooring_crds::application::Application;
use mooring_crds::conditions::{Condition, ConditionStatus};

use crate::gitops::apply::SyncReport;
use crate::gitops::apply::object::TRACKING_ID_ANNOTATION;
use crate::gitops::project::Project;
use crate::gitops::render::Glob;

/// The condition's type and reason, Argo CD's word.
pub(super) const ORPHANED_RESOURCE_WARNING: &str = "OrphanedResourceWarning";

/// At most this many objects of one kind are looked at: a warning, not an inventory.
const MAX_LISTED: u32 = 500;

/// How many orphans the message names before it only counts.
const NAMED: usize = 5;

/// One `orphanedResources.ignore` entry.
struct Ignore {
    group: Option<String>,
    kind: Option<String>,
    name: Option<Glob>,
}

impl Ignore {
    fn parse(value: &serde_json::Value) -> Ignore {
        let field = |name: &str| {
            value
                .get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty() && *s != "*")
                .map(str::to_string)
        };
        Ignore {
            group: field("group"),
            kind: field("kind"),
            // An invalid glob ignores nothing (the warning then names the object).
            name: field("name").and_then(|pattern| Glob::new(&pattern).ok()),
        }
    }

    fn covers(&self, group: &str, kind: &str, name: &str) -> bool {
        self.group.as_deref().is_none_or(|g| g == group)
            && self.kind.as_deref().is_none_or(|k| k == kind)
            && self.name.as_ref().is_none_or(|glob| glob.matches(name))
    }
}

/// Whether an object of `group`/`kind` is an orphan: untracked, unowned, not the namespace's
/// own and not ignored.
fn is_orphan(group: &str, kind: &str, meta: &kube::core::ObjectMeta, ignore: &[Ignore]) -> bool {
    let name = meta.name.as_deref().unwrap_or_default();
    let tracked = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(TRACKING_ID_ANNOTATION));
    let owned = meta
        .owner_references
        .as_ref()
        .is_some_and(|o| !o.is_empty());
    let namespace_own = group.is_empty()
        && matches!(
            (kind, name),
            ("ServiceAccount", "default") | ("ConfigMap", "kube-root-ca.crt")
        );
    !tracked && !owned && !namespace_own && !ignore.iter().any(|i| i.covers(group, kind, name))
}

/// The warning for `app` after a sync whose report is `report`, when its project asks for it.
pub(super) async fn warning(
    client: &kube::Client,
    project: &Project,
    app: &Application,
    report: &SyncReport,
) -> Option<Condition> {
    let settings = project.spec.orphaned_resources.as_ref()?;
    if settings.warn != Some(true) {
        return None;
    }
    let namespace = app.spec.destination.namespace.as_deref()?;
    let ignore: Vec<Ignore> = settings
        .ignore
        .iter()
        .flatten()
        .map(Ignore::parse)
        .collect();
    let mut kinds: Vec<&ApiResource> = report
        .kinds
        .iter()
        .filter(|kind| {
            report.resources.iter().any(|r| {
                r.group == kind.group
                    && r.kind == kind.kind
                    && r.namespace.as_deref() == Some(namespace)
            })
        })
        .collect();
    kinds.dedup_by(|a, b| a.group == b.group && a.kind == b.kind);
    let mut orphans = Vec::new();
    for kind in kinds {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, kind);
        let listed = match api
            .list_metadata(&ListParams::default().limit(MAX_LISTED))
            .await
        {
            Ok(listed) => listed,
            Err(error) => {
                tracing::debug!(kind = %kind.kind, error = %crate::errors::error_chain(&error), "orphaned resources not listed");
                continue;
            }
        };
        orphans.extend(
            listed
                .items
                .iter()
                .map(|item: &PartialObjectMeta<DynamicObject>| &item.metadata)
                .filter(|meta| is_orphan(&kind.group, &kind.kind, meta, &ignore))
                .map(|meta| format!("{}/{}", kind.kind, meta.name.as_deref().unwrap_or_default())),
        );
    }
    if orphans.is_empty() {
        return None;
    }
    orphans.sort();
    let count = orphans.len();
    let mut named = orphans
        .into_iter()
        .take(NAMED)
        .collect::<Vec<_>>()
        .join(", ");
    if count > NAMED {
        named.push_str(&format!(" and {} more", count - NAMED));
    }
    Some(Condition::new(
        ORPHANED_RESOURCE_WARNING,
        ConditionStatus::True,
        ORPHANED_RESOURCE_WARNING,
        format!("Application has {count} orphaned resources in namespace {namespace}: {named}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, annotated: bool, owned: bool) -> kube::core::ObjectMeta {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "annotations": if annotated {
                serde_json::json!({TRACKING_ID_ANNOTATION: "ns/app:/ConfigMap:ns/x"})
            } else {
                serde_json::json!({})
            },
            "ownerReferences": if owned {
                serde_json::json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u"}])
            } else {
                serde_json::json!([])
            },
        }))
        .unwrap()
    }

    #[test]
    fn untracked_unowned_objects_are_orphans_unless_ignored_or_the_namespaces_own() {
        let none: Vec<Ignore> = Vec::new();
        assert!(is_orphan(
            "",
            "ConfigMap",
            &meta("stray", false, false),
            &none
        ));
        assert!(!is_orphan(
            "",
            "ConfigMap",
            &meta("managed", true, false),
            &none
        ));
        assert!(!is_orphan(
            "apps",
            "ReplicaSet",
            &meta("web-1", false, true),
            &none
        ));
        assert!(!is_orphan(
            "",
            "ConfigMap",
            &meta("kube-root-ca.crt", false, false),
            &none
        ));
        assert!(!is_orphan(
            "",
            "ServiceAccount",
            &meta("default", false, false),
            &none
        ));
        let ignore = vec![Ignore::parse(
            &serde_json::json!({"kind": "ConfigMap", "name": "stray-*"}),
        )];
        assert!(!is_orphan(
            "",
            "ConfigMap",
            &meta("stray-1", false, false),
            &ignore
        ));
        assert!(is_orphan(
            "",
            "ConfigMap",
            &meta("other", false, false),
            &ignore
        ));
        assert!(is_orphan(
            "",
            "Service",
            &meta("stray-1", false, false),
            &ignore
        ));
    }
}
