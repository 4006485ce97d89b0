//! Apply order: CRDs and Namespaces first, then by sync wave, then by a kind order like Argo CD's
//! and Flux's (Helm's install order), then by group, kind, namespace and name. Kinds are matched
//! by group *and* kind, so a custom resource named `Namespace` in another group is not mistaken
//! for a core Namespace (fluxcd/pkg#689). Prune runs the same order in reverse.

use kube::api::ObjectMeta;

use super::object::{ARGO_SYNC_WAVE_ANNOTATION, ObjectKey, SYNC_WAVE_ANNOTATION};

/// Known kinds in install order (group, kind). Kinds not listed come after all of these, except
/// the admission webhook configurations, which go last so they cannot block the rest.
const KIND_ORDER: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("policy", "PodDisruptionBudget"),
    ("", "ServiceAccount"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("storage.k8s.io", "StorageClass"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("", "Service"),
    ("apps", "DaemonSet"),
    ("", "Pod"),
    ("", "ReplicationController"),
    ("apps", "ReplicaSet"),
    ("apps", "Deployment"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("apps", "StatefulSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "Ingress"),
    ("apiregistration.k8s.io", "APIService"),
];

/// Applied after every other kind (and so pruned before every other kind).
const LAST: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
];

/// Whether objects of this kind go in the first stage (before any wave), after which mooring
/// waits for CRDs to be Established: everything else may depend on them.
pub fn is_first_stage(group: &str, kind: &str) -> bool {
    (group.is_empty() && kind == "Namespace")
        || (group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition")
}

/// The sync wave of an object: `mooring.dev/sync-wave`, else `argocd.argoproj.io/sync-wave`,
/// else Helm's `helm.sh/hook-weight`, else 0. An unparsable value counts as 0 (Argo CD does the
/// same).
pub fn sync_wave(meta: &ObjectMeta) -> i64 {
    let Some(annotations) = &meta.annotations else {
        return 0;
    };
    [
        SYNC_WAVE_ANNOTATION,
        ARGO_SYNC_WAVE_ANNOTATION,
        super::hooks::HELM_HOOK_WEIGHT_ANNOTATION,
    ]
    .iter()
    .find_map(|name| annotations.get(*name))
    .and_then(|value| value.trim().parse().ok())
    .unwrap_or(0)
}

/// The sort key of an object: (phase, stage, wave, kind rank, group, kind, namespace, name).
pub type OrderKey = (u8, u8, i64, usize, String, String, String, String);

/// The position of the ordinary object `key` (with sync wave `wave`) in the apply order: in
/// the Sync phase. The first stage ignores waves among CRDs and Namespaces only to keep them
/// ahead of everything that needs them.
pub fn order_key(key: &ObjectKey, wave: i64) -> OrderKey {
    phase_order_key(super::hooks::SYNC_PHASE_RANK, key, wave)
}

/// The position of `key` in phase `phase` (see [`super::hooks::phase_rank`]): phases first,
/// then as [`order_key`]. The first stage holds the ordinary CRDs and Namespaces and comes
/// before every phase; a hook is ordered by its wave and kind whatever its kind.
pub fn phase_order_key(phase: u8, key: &ObjectKey, wave: i64) -> OrderKey {
    let first = phase == super::hooks::SYNC_PHASE_RANK && is_first_stage(&key.group, &key.kind);
    // The set's CRDs and Namespaces go before the PreSync hooks too (Argo CD moves them in
    // front of the first hook that needs them): a hook may live in one, or be a custom resource.
    let phase = if first { 0 } else { phase };
    let pair = (key.group.as_str(), key.kind.as_str());
    let rank = if let Some(index) = KIND_ORDER.iter().position(|known| *known == pair) {
        index
    } else if let Some(index) = LAST.iter().position(|known| *known == pair) {
        KIND_ORDER.len() + 1 + index
    } else {
        KIND_ORDER.len()
    };
    (
        phase,
        u8::from(!first),
        wave,
        rank,
        key.group.clone(),
        key.kind.clone(),
        key.namespace.clone().unwrap_or_default(),
        key.name.clone(),
    )
}

/// The sort key of a prune: the apply order reversed (webhook configurations first, CRDs and
/// Namespaces last), and objects marked `PruneLast` after all others.
pub fn prune_key(key: &ObjectKey, wave: i64, last: bool) -> (bool, std::cmp::Reverse<OrderKey>) {
    (last, std::cmp::Reverse(order_key(key, wave)))
}

/// Groups items already sorted by [`order_key`] into steps that must finish before the next
/// starts: the first stage, then per phase one step per wave.
pub fn steps<T>(sorted: Vec<(OrderKey, T)>) -> Vec<Vec<T>> {
    let mut steps: Vec<Vec<T>> = Vec::new();
    let mut current: Option<(u8, u8, i64)> = None;
    for (key, item) in sorted {
        let step = if key.1 == 0 {
            (key.0, 0, 0)
        } else {
            (key.0, 1, key.2)
        };
        if current != Some(step) {
            steps.push(Vec::new());
            current = Some(step);
        }
        if let Some(last) = steps.last_mut() {
            last.push(item);
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group: group.into(),
            kind: kind.into(),
            namespace: (kind != "Namespace" && kind != "CustomResourceDefinition")
                .then(|| "ns".to_string()),
            name: name.into(),
        }
    }

    fn sorted(items: &[(ObjectKey, i64)]) -> Vec<String> {
        let mut keyed: Vec<_> = items
            .iter()
            .map(|(k, wave)| (order_key(k, *wave), k.clone()))
            .collect();
        keyed.sort();
        keyed
            .into_iter()
            .map(|(_, k)| format!("{}/{}", k.kind, k.name))
            .collect()
    }

    #[test]
    fn crds_and_namespaces_come_first_then_kind_order_then_custom_resources() {
        let order = sorted(&[
            (key("apps", "Deployment", "web"), 0),
            (key("example.com", "Widget", "w"), 0),
            (key("", "Service", "web"), 0),
            (key("", "ConfigMap", "config"), 0),
            (
                key(
                    "apiextensions.k8s.io",
                    "CustomResourceDefinition",
                    "widgets.example.com",
                ),
                0,
            ),
            (key("", "Namespace", "ns"), 0),
            (
                key(
                    "admissionregistration.k8s.io",
                    "ValidatingWebhookConfiguration",
                    "v",
                ),
                0,
            ),
            (key("", "ServiceAccount", "sa"), 0),
        ]);
        assert_eq!(
            order,
            [
                "Namespace/ns",
                "CustomResourceDefinition/widgets.example.com",
                "ServiceAccount/sa",
                "ConfigMap/config",
                "Service/web",
                "Deployment/web",
                "Widget/w",
                "ValidatingWebhookConfiguration/v",
            ]
        );
    }

    #[test]
    fn waves_order_before_kinds_and_may_be_negative() {
        let order = sorted(&[
            (key("", "ConfigMap", "late"), 2),
            (key("apps", "Deployment", "early"), -1),
            (key("", "ConfigMap", "default"), 0),
            (key("", "Namespace", "ns"), 5),
        ]);
        assert_eq!(
            order,
            [
                "Namespace/ns",
                "Deployment/early",
                "ConfigMap/default",
                "ConfigMap/late"
            ]
        );
    }

    #[test]
    fn a_custom_kind_named_like_a_core_kind_is_not_ranked_as_it() {
        let custom = order_key(&key("example.com", "Namespace", "x"), 0);
        let core_service = order_key(&key("", "Service", "s"), 0);
        assert!(
            custom > core_service,
            "custom Namespace must sort with custom resources"
        );
        assert!(!is_first_stage("example.com", "Namespace"));
    }

    #[test]
    fn waves_come_from_mooring_annotation_first_then_argo() {
        let meta = |pairs: &[(&str, &str)]| ObjectMeta {
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(sync_wave(&meta(&[(ARGO_SYNC_WAVE_ANNOTATION, "-3")])), -3);
        assert_eq!(
            sync_wave(&meta(&[
                (ARGO_SYNC_WAVE_ANNOTATION, "1"),
                (SYNC_WAVE_ANNOTATION, "4")
            ])),
            4
        );
        assert_eq!(sync_wave(&meta(&[(SYNC_WAVE_ANNOTATION, "soon")])), 0);
        let helm = super::super::hooks::HELM_HOOK_WEIGHT_ANNOTATION;
        assert_eq!(sync_wave(&meta(&[(helm, "-7")])), -7);
        assert_eq!(
            sync_wave(&meta(&[(helm, "-7"), (ARGO_SYNC_WAVE_ANNOTATION, "2")])),
            2
        );
        assert_eq!(sync_wave(&ObjectMeta::default()), 0);
    }

    #[test]
    fn prune_runs_in_reverse_with_prune_last_at_the_end() {
        let items = [
            (key("", "Namespace", "ns"), 0, false),
            (key("apps", "Deployment", "web"), 0, false),
            (key("", "ConfigMap", "kept-for-last"), 0, true),
            (key("", "ConfigMap", "config"), 0, false),
            (
                key(
                    "apiextensions.k8s.io",
                    "CustomResourceDefinition",
                    "widgets.example.com",
                ),
                0,
                false,
            ),
            (
                key(
                    "admissionregistration.k8s.io",
                    "ValidatingWebhookConfiguration",
                    "v",
                ),
                0,
                false,
            ),
            (key("", "ConfigMap", "late-wave"), 3, false),
        ];
        let mut keyed: Vec<_> = items
            .iter()
            .map(|(k, wave, last)| (prune_key(k, *wave, *last), format!("{}/{}", k.kind, k.name)))
            .collect();
        keyed.sort();
        let order: Vec<_> = keyed.into_iter().map(|(_, name)| name).collect();
        assert_eq!(
            order,
            [
                "ConfigMap/late-wave",
                "ValidatingWebhookConfiguration/v",
                "Deployment/web",
                "ConfigMap/config",
                "CustomResourceDefinition/widgets.example.com",
                "Namespace/ns",
                "ConfigMap/kept-for-last",
            ]
        );
    }

    #[test]
    fn steps_split_the_first_stage_and_each_wave() {
        let mut keyed: Vec<_> = [
            (key("", "Namespace", "ns"), 3),
            (key("", "ConfigMap", "a"), 0),
            (key("", "ConfigMap", "b"), 0),
            (key("", "ConfigMap", "c"), 1),
        ]
        .into_iter()
        .map(|(k, w)| (order_key(&k, w), k.name))
        .collect();
        keyed.sort();
        assert_eq!(steps(keyed), vec![vec!["ns"], vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn phases_order_before_waves_and_the_first_stage() {
        use super::super::hooks::phase_rank;
        use mooring_crds::application::HookType;
        let mut keyed: Vec<_> = [
            (
                phase_rank(HookType::PostSync),
                key("batch", "Job", "smoke"),
                -5,
            ),
            (1, key("apps", "Deployment", "web"), 0),
            (1, key("", "Namespace", "ns"), 3),
            (
                phase_rank(HookType::PreSync),
                key("batch", "Job", "migrate"),
                2,
            ),
            (
                phase_rank(HookType::PreSync),
                key("", "ConfigMap", "seed"),
                2,
            ),
            (
                phase_rank(HookType::PreSync),
                key("", "Namespace", "hook-ns"),
                5,
            ),
            (phase_rank(HookType::Sync), key("batch", "Job", "during"), 1),
            (1, key("", "ConfigMap", "late"), 1),
        ]
        .into_iter()
        .map(|(phase, k, w)| (phase_order_key(phase, &k, w), k.name))
        .collect();
        keyed.sort();
        assert_eq!(
            steps(keyed),
            vec![
                vec!["ns"],
                vec!["seed", "migrate"],
                vec!["hook-ns"],
                vec!["web"],
                vec!["late", "during"],
                vec!["smoke"],
            ]
        );
    }
}
