//! Prune: which objects that left Git may be deleted, and deleting them. The guards are pure
//! decisions, so every one is unit-tested; [`Engine`] executes them. Safety first: the inventory
//! in the Application status *and* the tracking-id annotation on the live object must both say
//! mooring owns the object for this Application, and whole-prune guards stop mass deletions
//! after a bad render.

use std::collections::{BTreeSet, HashMap};

use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, PropagationPolicy,
};
use mooring_crds::application::{ResourceStatus, SyncState};

use super::failure::{ObjectFailure, Step};
use super::object::{
    ALLOW_PRUNE_ANNOTATION, AppId, ObjectKey, TRACKING_ID_ANNOTATION, has_option,
    object_sync_options,
};
use super::order::{self, OrderKey};
use super::{Engine, Mode, SyncReport, SyncRequest};
use crate::controllers::lock;

/// The fraction of the inventory one sync may prune unless configured otherwise.
pub const DEFAULT_MAX_PRUNE_FRACTION: f64 = 0.5;

/// How one Application prunes.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneSettings {
    /// `syncPolicy.automated.prune`.
    pub enabled: bool,
    /// `syncPolicy.automated.allowEmpty`: an empty render may prune everything.
    pub allow_empty: bool,
    /// The most of the inventory one sync may delete (0..=1).
    pub max_fraction: f64,
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings {
            enabled: false,
            allow_empty: false,
            max_fraction: DEFAULT_MAX_PRUNE_FRACTION,
        }
    }
}

/// The outcome of the whole-prune guards.
#[derive(Clone, Debug, PartialEq)]
pub struct PrunePlan {
    /// Objects in the inventory that are no longer desired: to prune unless refused.
    pub candidates: Vec<ObjectKey>,
    /// Why nothing is pruned this time, when a guard refused (a sentence for the condition).
    pub refused: Option<Refusal>,
}

/// Why a whole prune was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// `automated.prune` is off: objects that left Git stay (reported as requiring pruning).
    Disabled,
    /// The render was empty and `allowEmpty` is off.
    EmptyRender,
    /// More than the allowed fraction of the inventory would go.
    TooMany {
        /// How many objects would be pruned.
        candidates: usize,
        /// The inventory size.
        inventory: usize,
        /// The allowed fraction.
        max_fraction: f64,
    },
}

impl Refusal {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Disabled => "PruneDisabled",
            Refusal::EmptyRender => "EmptyRender",
            Refusal::TooMany { .. } => "PruneLimitExceeded",
        }
    }

    /// The condition message.
    pub fn message(&self, candidates: &[ObjectKey]) -> String {
        let names = summarize(candidates);
        match self {
            Refusal::Disabled => {
                format!(
                    "automated prune is off; {} object(s) left Git and remain: {names}",
                    candidates.len()
                )
            }
            Refusal::EmptyRender => format!(
                "the render is empty and allowEmpty is off: refusing to prune all {} object(s)",
                candidates.len()
            ),
            Refusal::TooMany {
                candidates: count,
                inventory,
                max_fraction,
            } => format!(
                "refusing to prune {count} of {inventory} object(s) at once (more than {:.0}% of the inventory): {names}",
                max_fraction * 100.0
            ),
        }
    }
}

/// At most five object names, then a count of the rest.
pub fn summarize(keys: &[ObjectKey]) -> String {
    let names: Vec<String> = keys.iter().map(ToString::to_string).collect();
    summarize_names(&names)
}

/// At most five names, then a count of the rest: messages stay short for big sets.
pub fn summarize_names(names: &[String]) -> String {
    let mut text: Vec<String> = names.iter().take(5).cloned().collect();
    if names.len() > 5 {
        text.push(format!("and {} more", names.len() - 5));
    }
    text.join(", ")
}

/// Applies the whole-prune guards. Only call this after a render *and* an apply that both
/// succeeded: a failed step must never lead to deletions.
pub fn plan(
    inventory: &BTreeSet<ObjectKey>,
    desired: &BTreeSet<ObjectKey>,
    settings: &PruneSettings,
) -> PrunePlan {
    let candidates: Vec<ObjectKey> = inventory.difference(desired).cloned().collect();
    let refused = if candidates.is_empty() {
        None
    } else if !settings.enabled {
        Some(Refusal::Disabled)
    } else if desired.is_empty() {
        (!settings.allow_empty).then_some(Refusal::EmptyRender)
    } else if candidates.len() > 1
        && candidates.len() as f64 > settings.max_fraction * inventory.len() as f64
    {
        // One object is never a mass deletion: renaming the only object of a small
        // Application must not need the limit raised.
        Some(Refusal::TooMany {
            candidates: candidates.len(),
            inventory: inventory.len(),
            max_fraction: settings.max_fraction,
        })
    } else {
        None
    };
    PrunePlan {
        candidates,
        refused,
    }
}

/// Why one object is kept although it left Git.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The live object's tracking id names another owner (or none): it is not ours to delete.
    NotOwned,
    /// `Prune=false` in its sync options.
    PruneDisabled,
    /// A CRD, Namespace or PersistentVolumeClaim without `mooring.dev/allow-prune: "true"`.
    Protected,
    /// A Secret generated by a SealedSecret or ExternalSecret (its controller owns it).
    GeneratedSecret,
    /// The Application's project does not permit the object (its kind or namespace).
    NotPermitted,
}

impl Keep {
    /// Why, for the condition message.
    pub fn describe(&self) -> &'static str {
        match self {
            Keep::NotOwned => "its tracking id does not name this Application",
            Keep::PruneDisabled => "it has Prune=false",
            Keep::Protected => "CRDs, Namespaces and PVCs need mooring.dev/allow-prune: \"true\"",
            Keep::GeneratedSecret => "it is generated by a SealedSecret or ExternalSecret",
            Keep::NotPermitted => "the Application's project does not permit it",
        }
    }
}

/// Whether the live object `key` may be deleted for `app`, checked on the live object itself.
pub fn may_prune(app: &AppId, key: &ObjectKey, live: &ObjectMeta) -> Result<(), Keep> {
    let annotations = live.annotations.as_ref();
    let tracking = annotations.and_then(|a| a.get(TRACKING_ID_ANNOTATION));
    if tracking.map(String::as_str) != Some(key.tracking_id(app).as_str()) {
        return Err(Keep::NotOwned);
    }
    if has_option(&object_sync_options(live), "Prune", "false") {
        return Err(Keep::PruneDisabled);
    }
    let protected = matches!(
        (key.group.as_str(), key.kind.as_str()),
        ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("", "Namespace")
            | ("", "PersistentVolumeClaim")
    );
    let allowed = annotations
        .and_then(|a| a.get(ALLOW_PRUNE_ANNOTATION))
        .is_some_and(|v| v == "true");
    if protected && !allowed {
        return Err(Keep::Protected);
    }
    let generated = key.group.is_empty()
        && key.kind == "Secret"
        && live.owner_references.iter().flatten().any(|owner| {
            matches!(
                (owner.api_version.split('/').next(), owner.kind.as_str()),
                (Some("bitnami.com"), "SealedSecret")
                    | (Some("external-secrets.io"), "ExternalSecret")
            )
        });
    if generated {
        return Err(Keep::GeneratedSecret);
    }
    Ok(())
}

/// Whether an object is pruned in the final step (`PruneLast=true` on it or the Application).
pub fn prune_last(app_options: &[String], live: &ObjectMeta) -> bool {
    has_option(app_options, "PruneLast", "true")
        || has_option(&object_sync_options(live), "PruneLast", "true")
}

/// What to do with one prune candidate, decided on its live object.
enum Candidate {
    /// It is gone already, or its kind is (its CRD was deleted): drop it from the inventory.
    Gone,
    /// It could not be checked: it stays in the inventory and the next sync retries it.
    Failed(ObjectFailure),
    /// A guard keeps it.
    Kept(Keep),
    /// Delete it, in this order among the others.
    Delete {
        order: (bool, std::cmp::Reverse<OrderKey>),
        /// Boxed: an `Api` is large beside the other variants.
        api: Box<Api<DynamicObject>>,
    },
}

impl Engine {
    /// Prunes what left Git when every object applied and the whole-prune guards allow it.
    /// Returns the inventory entries still owned: kept, refused and failed objects stay
    /// tracked (requiring pruning) so the next sync decides again.
    pub(super) async fn prune_left_git(
        &self,
        request: &SyncRequest,
        in_inventory: &BTreeSet<ObjectKey>,
        desired: &BTreeSet<ObjectKey>,
        report: &mut SyncReport,
    ) -> Vec<ResourceStatus> {
        // Only after every object applied (deferred ones are not failures).
        let prunable =
            request.mode == Mode::Apply && report.failures.is_empty() && report.waiting.is_none();
        let plan = plan(in_inventory, desired, &request.prune);
        if plan.candidates.is_empty() {
            return Vec::new();
        }
        let refusal = if prunable {
            plan.refused.clone()
        } else if request.mode == Mode::Compare {
            Some(Refusal::Disabled)
        } else {
            None
        };
        let entries = entries_by_key(&request.inventory);
        if let Some(refusal) = &refusal {
            report.prune_refused = Some((refusal.reason(), refusal.message(&plan.candidates)));
        }
        if refusal.is_some() || !prunable {
            // Refused, or a failed apply: keep everything, decide next time.
            return plan
                .candidates
                .iter()
                .filter_map(|key| entries.get(key))
                .map(|entry| requires_pruning(entry))
                .collect();
        }
        self.prune(request, &plan.candidates, &entries, report)
            .await
    }

    /// Deletes the candidates that pass the per-object guards, in reverse apply order
    /// (`PruneLast` ones at the very end). Returns the inventory entries still owned: kept and
    /// failed objects stay tracked so the next sync retries them.
    pub(super) async fn prune(
        &self,
        request: &SyncRequest,
        candidates: &[ObjectKey],
        entries: &HashMap<ObjectKey, &ResourceStatus>,
        report: &mut SyncReport,
    ) -> Vec<ResourceStatus> {
        let mut still_owned = Vec::new();
        let mut targets = Vec::new();
        for key in candidates {
            let Some(entry) = entries.get(key) else {
                continue;
            };
            match self.check_candidate(request, key, entry).await {
                Candidate::Gone => {}
                Candidate::Failed(failure) => {
                    report.failures.push(failure);
                    still_owned.push(requires_pruning(entry));
                }
                Candidate::Kept(keep) => {
                    // Not ours (any more): drop it from the inventory unless only a guard
                    // keeps it.
                    if keep != Keep::NotOwned {
                        still_owned.push(requires_pruning(entry));
                    }
                    report.kept.push((key.clone(), keep));
                }
                Candidate::Delete { order, api } => targets.push((order, key, api, *entry)),
            }
        }
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        let propagation = propagation_policy(&request.sync_options);
        for (_, key, api, entry) in targets {
            match self.delete(request, key, &api, &propagation).await {
                Ok(()) => report.pruned.push(key.clone()),
                Err(failure) => {
                    report.failures.push(failure);
                    still_owned.push(requires_pruning(entry));
                }
            }
        }
        still_owned
    }

    /// Looks the candidate up live and applies the per-object guards to it.
    async fn check_candidate(
        &self,
        request: &SyncRequest,
        key: &ObjectKey,
        entry: &ResourceStatus,
    ) -> Candidate {
        let gvk = GroupVersionKind::gvk(&key.group, &entry.version, &key.kind);
        let served = match self.discovery.resolve(&gvk).await {
            Ok(Some(served)) => served,
            // The kind is gone (its CRD was deleted): so is the object.
            Ok(None) => return Candidate::Gone,
            Err(error) => {
                return Candidate::Failed(ObjectFailure::discovery(
                    key.clone(),
                    Step::Prune,
                    &error,
                ));
            }
        };
        // Prune only what the project would let this Application write: an inventory edited
        // by hand must not delete another tenant's object.
        if self.refused(key, served.namespaced).is_some() {
            return Candidate::Kept(Keep::NotPermitted);
        }
        let api = self.api(&served, key.namespace.as_deref());
        let live = match api.get_opt(&key.name).await {
            Ok(Some(live)) => live,
            Ok(None) => return Candidate::Gone,
            Err(error) => return self.unreadable(key, &gvk, &error).await,
        };
        let decision = may_prune(&request.app, key, &live.metadata).and_then(|()| {
            // `Prune=false` in the Application's own syncOptions protects every object.
            if has_option(&request.sync_options, "Prune", "false") {
                Err(Keep::PruneDisabled)
            } else {
                Ok(())
            }
        });
        if let Err(keep) = decision {
            return Candidate::Kept(keep);
        }
        let last = prune_last(&request.sync_options, &live.metadata);
        let wave = order::sync_wave(&live.metadata);
        Candidate::Delete {
            order: order::prune_key(key, wave, last),
            api: Box::new(api),
        }
    }

    /// A candidate whose live object could not be read: gone when a 404 came with its kind
    /// (the CRD was deleted, and the object with it), failed otherwise.
    async fn unreadable(
        &self,
        key: &ObjectKey,
        gvk: &GroupVersionKind,
        error: &kube::Error,
    ) -> Candidate {
        if let kube::Error::Api(status) = error
            && status.code == 404
        {
            self.discovery.forget(gvk);
            if let Ok(None) = self.discovery.resolve(gvk).await {
                return Candidate::Gone;
            }
        }
        Candidate::Failed(ObjectFailure::api(
            key.clone(),
            Step::Prune,
            error,
            &format!("failed to read {key}"),
        ))
    }

    /// Deletes one object; one already gone counts as deleted.
    async fn delete(
        &self,
        request: &SyncRequest,
        key: &ObjectKey,
        api: &Api<DynamicObject>,
        propagation: &PropagationPolicy,
    ) -> Result<(), ObjectFailure> {
        let params = DeleteParams {
            propagation_policy: Some(propagation.clone()),
            ..DeleteParams::default()
        };
        match api.delete(&key.name, &params).await {
            Ok(_) => {
                lock(&self.verified).remove(&(request.app.clone(), key.clone()));
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(ObjectFailure::api(
                key.clone(),
                Step::Prune,
                &error,
                &format!("failed to delete {key}"),
            )),
        }
    }
}

/// The inventory entries by object.
pub(super) fn entries_by_key(inventory: &[ResourceStatus]) -> HashMap<ObjectKey, &ResourceStatus> {
    inventory
        .iter()
        .map(|entry| (ObjectKey::of_status(entry), entry))
        .collect()
}

/// An inventory entry kept although it left Git.
fn requires_pruning(entry: &ResourceStatus) -> ResourceStatus {
    ResourceStatus {
        status: Some(SyncState::OutOfSync),
        requires_pruning: Some(true),
        ..entry.clone()
    }
}

/// `PrunePropagationPolicy=foreground|background|orphan`; foreground by default, as Argo CD:
/// a pruned Deployment is gone only when its pods are.
fn propagation_policy(options: &[String]) -> PropagationPolicy {
    if has_option(options, "PrunePropagationPolicy", "background") {
        PropagationPolicy::Background
    } else if has_option(options, "PrunePropagationPolicy", "orphan") {
        PropagationPolicy::Orphan
    } else {
        PropagationPolicy::Foreground
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::gitops::apply::object::ARGO_SYNC_OPTIONS_ANNOTATION;

    fn key(kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
        }
    }

    fn keys(names: &[&str]) -> BTreeSet<ObjectKey> {
        names.iter().map(|n| key("ConfigMap", n)).collect()
    }

    fn on() -> PruneSettings {
        PruneSettings {
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn candidates_are_the_inventory_minus_the_desired_set() {
        let plan = plan(&keys(&["a", "b", "c"]), &keys(&["a", "b", "d"]), &on());
        assert_eq!(plan.candidates, vec![key("ConfigMap", "c")]);
        assert_eq!(plan.refused, None);
    }

    #[test]
    fn prune_off_keeps_everything() {
        let plan = plan(&keys(&["a", "b"]), &keys(&["a"]), &PruneSettings::default());
        assert_eq!(plan.refused, Some(Refusal::Disabled));
        assert_eq!(plan.candidates.len(), 1);
    }

    #[test]
    fn an_empty_render_prunes_nothing_unless_allow_empty() {
        let inventory = keys(&["a", "b"]);
        let refused = plan(&inventory, &BTreeSet::new(), &on());
        assert_eq!(refused.refused, Some(Refusal::EmptyRender));
        let allowed = plan(
            &inventory,
            &BTreeSet::new(),
            &PruneSettings {
                allow_empty: true,
                ..on()
            },
        );
        assert_eq!(allowed.refused, None);
        assert_eq!(allowed.candidates.len(), 2);
    }

    #[test]
    fn one_object_may_always_go() {
        let renamed = plan(&keys(&["old"]), &keys(&["new"]), &on());
        assert_eq!(renamed.refused, None);
        assert_eq!(renamed.candidates, vec![key("ConfigMap", "old")]);
        let two_of_three = plan(&keys(&["a", "b", "c"]), &keys(&["c"]), &on());
        assert!(matches!(
            two_of_three.refused,
            Some(Refusal::TooMany { .. })
        ));
    }

    #[test]
    fn more_than_the_fraction_is_refused_and_exactly_the_fraction_is_not() {
        let inventory = keys(&["a", "b", "c", "d"]);
        let half = plan(&inventory, &keys(&["a", "b"]), &on());
        assert_eq!(half.refused, None);
        let most = plan(&inventory, &keys(&["a"]), &on());
        assert!(matches!(
            most.refused,
            Some(Refusal::TooMany {
                candidates: 3,
                inventory: 4,
                ..
            })
        ));
        let message = most.refused.unwrap().message(&most.candidates);
        assert!(message.contains("refusing to prune 3 of 4"), "{message}");
        assert!(message.contains("50%"), "{message}");
        let looser = plan(
            &inventory,
            &keys(&["a"]),
            &PruneSettings {
                max_fraction: 0.8,
                ..on()
            },
        );
        assert_eq!(looser.refused, None);
    }

    fn app() -> AppId {
        AppId {
            namespace: "argocd".into(),
            name: "web".into(),
        }
    }

    fn owned(key: &ObjectKey, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut annotations =
            BTreeMap::from([(TRACKING_ID_ANNOTATION.to_string(), key.tracking_id(&app()))]);
        for (k, v) in extra {
            annotations.insert(k.to_string(), v.to_string());
        }
        ObjectMeta {
            annotations: Some(annotations),
            ..Default::default()
        }
    }

    #[test]
    fn only_objects_whose_tracking_id_names_this_app_are_pruned() {
        let config = key("ConfigMap", "a");
        assert_eq!(may_prune(&app(), &config, &owned(&config, &[])), Ok(()));
        assert_eq!(
            may_prune(&app(), &config, &ObjectMeta::default()),
            Err(Keep::NotOwned)
        );
        let other_app = AppId {
            namespace: "argocd".into(),
            name: "other".into(),
        };
        let theirs = ObjectMeta {
            annotations: Some(BTreeMap::from([(
                TRACKING_ID_ANNOTATION.to_string(),
                config.tracking_id(&other_app),
            )])),
            ..Default::default()
        };
        assert_eq!(may_prune(&app(), &config, &theirs), Err(Keep::NotOwned));
    }

    #[test]
    fn prune_false_protected_kinds_and_generated_secrets_are_kept() {
        let config = key("ConfigMap", "a");
        let disabled = owned(&config, &[(ARGO_SYNC_OPTIONS_ANNOTATION, "Prune=false")]);
        assert_eq!(
            may_prune(&app(), &config, &disabled),
            Err(Keep::PruneDisabled)
        );

        let claim = key("PersistentVolumeClaim", "data");
        assert_eq!(
            may_prune(&app(), &claim, &owned(&claim, &[])),
            Err(Keep::Protected)
        );
        let opted_in = owned(&claim, &[(ALLOW_PRUNE_ANNOTATION, "true")]);
        assert_eq!(may_prune(&app(), &claim, &opted_in), Ok(()));
        let namespace = ObjectKey {
            namespace: None,
            ..key("Namespace", "team")
        };
        assert_eq!(
            may_prune(&app(), &namespace, &owned(&namespace, &[])),
            Err(Keep::Protected)
        );
        let crd = ObjectKey {
            group: "apiextensions.k8s.io".into(),
            namespace: None,
            ..key("CustomResourceDefinition", "widgets.example.com")
        };
        assert_eq!(
            may_prune(&app(), &crd, &owned(&crd, &[])),
            Err(Keep::Protected)
        );

        let secret = key("Secret", "db");
        let mut generated = owned(&secret, &[]);
        generated.owner_references = Some(vec![OwnerReference {
            api_version: "bitnami.com/v1alpha1".into(),
            kind: "SealedSecret".into(),
            name: "db".into(),
            uid: "u".into(),
            ..Default::default()
        }]);
        assert_eq!(
            may_prune(&app(), &secret, &generated),
            Err(Keep::GeneratedSecret)
        );
        assert_eq!(may_prune(&app(), &secret, &owned(&secret, &[])), Ok(()));
    }

    #[test]
    fn prune_last_from_the_app_or_the_object() {
        let meta = owned(
            &key("ConfigMap", "a"),
            &[(ARGO_SYNC_OPTIONS_ANNOTATION, "PruneLast=true")],
        );
        assert!(prune_last(&[], &meta));
        assert!(prune_last(
            &["PruneLast=true".into()],
            &ObjectMeta::default()
        ));
        assert!(!prune_last(&[], &ObjectMeta::default()));
    }

    #[test]
    fn propagation_defaults_to_foreground() {
        assert!(matches!(
            propagation_policy(&[]),
            PropagationPolicy::Foreground
        ));
        assert!(matches!(
            propagation_policy(&["PrunePropagationPolicy=background".into()]),
            PropagationPolicy::Background
        ));
        assert!(matches!(
            propagation_policy(&["PrunePropagationPolicy=orphan".into()]),
            PropagationPolicy::Orphan
        ));
    }
}
