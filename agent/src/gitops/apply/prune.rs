//! Prune guards: which objects that left Git may be deleted. Pure decisions, so every guard is
//! unit-tested; the engine executes them. Safety first: the inventory in the Application status
//! *and* the tracking-id annotation on the live object must both say mooring owns the object for
//! this Application, and whole-prune guards stop mass deletions after a bad render.

use std::collections::BTreeSet;

use kube::api::ObjectMeta;

use super::object::{
    ALLOW_PRUNE_ANNOTATION, AppId, ObjectKey, TRACKING_ID_ANNOTATION, has_option,
    object_sync_options,
};

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
}

impl Keep {
    /// Why, for the condition message.
    pub fn describe(&self) -> &'static str {
        match self {
            Keep::NotOwned => "its tracking id does not name this Application",
            Keep::PruneDisabled => "it has Prune=false",
            Keep::Protected => "CRDs, Namespaces and PVCs need mooring.dev/allow-prune: \"true\"",
            Keep::GeneratedSecret => "it is generated by a SealedSecret or ExternalSecret",
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
}
