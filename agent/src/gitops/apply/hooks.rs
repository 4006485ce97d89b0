//! Resource hooks, as Argo CD users know them: what an object's hook annotations make of it
//! (`argocd.argoproj.io/hook`, or Helm's `helm.sh/hook` mapped the way Argo CD maps it), its
//! delete policy, and a hook's result judged from its health.
//!
//! A hook is never an ordinary object of the sync: it is not compared, not in the inventory and
//! never pruned. It runs once per sync operation (a new revision or spec generation), in its
//! phase — PreSync before anything else, Sync with the wave it names, PostSync once everything
//! is applied and healthy, SyncFail when a hook failed. The engine creates it (a `generateName`
//! hook gets a fresh name each run; a named one is server-side applied) and waits for its result
//! across reconciles: the operation's progress lives in the Application's
//! `status.operationState`, not in a reconcile that blocks.

use kube::api::ObjectMeta;
use mooring_crds::application::{HealthState, HealthStatus, HookPhase, HookType};

/// Argo CD's hook annotation: a comma-separated list of hook types.
pub const ARGO_HOOK_ANNOTATION: &str = "argocd.argoproj.io/hook";
/// Argo CD's hook delete policy annotation.
pub const ARGO_HOOK_DELETE_POLICY_ANNOTATION: &str = "argocd.argoproj.io/hook-delete-policy";
/// Helm's hook annotation; ignored when the object carries Argo CD's.
pub const HELM_HOOK_ANNOTATION: &str = "helm.sh/hook";
/// Helm's hook weight: the sync wave of an object without a sync-wave annotation.
pub const HELM_HOOK_WEIGHT_ANNOTATION: &str = "helm.sh/hook-weight";
/// Helm's hook delete policy annotation.
pub const HELM_HOOK_DELETE_POLICY_ANNOTATION: &str = "helm.sh/hook-delete-policy";

/// Hook annotation values are short words; a longer value is not read (every parser bounded).
const MAX_ANNOTATION_LEN: usize = 256;

/// What an object's hook annotations make of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// An ordinary object of the sync.
    Resource,
    /// `argocd.argoproj.io/hook: Skip`: never applied.
    Skip,
    /// A hook run in these phases (never empty, sorted, each once).
    Hook {
        /// The phases it runs in.
        types: Vec<HookType>,
        /// When the hook object is deleted.
        policy: DeletePolicy,
    },
    /// A hook of types mooring does not run (PreDelete, PostDelete, Helm's test and rollback
    /// hooks), by name: not applied, named in a condition.
    NotRun(Vec<String>),
}

/// When a hook object is deleted (`hook-delete-policy`). With none set, BeforeHookCreation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletePolicy {
    /// The previous instance is deleted before the hook is created again.
    pub before_creation: bool,
    /// Deleted once it succeeded.
    pub succeeded: bool,
    /// Deleted once it failed.
    pub failed: bool,
}

impl Default for DeletePolicy {
    fn default() -> DeletePolicy {
        DeletePolicy {
            before_creation: true,
            succeeded: false,
            failed: false,
        }
    }
}

/// The role of an object with these annotations (see the module documentation). An object with
/// Argo CD's hook annotation ignores its Helm hook annotations, as in Argo CD.
pub fn role(meta: &ObjectMeta) -> Role {
    let Some(annotations) = &meta.annotations else {
        return Role::Resource;
    };
    let value = |name: &str| {
        annotations
            .get(name)
            .filter(|value| value.len() <= MAX_ANNOTATION_LEN)
    };
    let mut types = Vec::new();
    let mut not_run = Vec::new();
    if let Some(argo) = annotations.get(ARGO_HOOK_ANNOTATION) {
        let words = words(argo);
        if words.len() == 1 && words[0] == "Skip" {
            return Role::Skip;
        }
        for word in words {
            match word {
                "PreSync" => types.push(HookType::PreSync),
                "Sync" => types.push(HookType::Sync),
                "PostSync" => types.push(HookType::PostSync),
                "SyncFail" => types.push(HookType::SyncFail),
                "PreDelete" | "PostDelete" => not_run.push(word.to_string()),
                // `Skip` beside other types, or an unknown word: ignored, as Argo CD does.
                _ => {}
            }
        }
    } else if let Some(helm) = value(HELM_HOOK_ANNOTATION) {
        let words = words(helm);
        for word in &words {
            match *word {
                "pre-install" | "pre-upgrade" => types.push(HookType::PreSync),
                "post-install" | "post-upgrade" => types.push(HookType::PostSync),
                "pre-delete" => not_run.push("PreDelete".to_string()),
                "post-delete" => not_run.push("PostDelete".to_string()),
                "test" | "test-success" | "test-failure" | "pre-rollback" | "post-rollback" => {
                    not_run.push(format!("Helm {word}"));
                }
                // `crd-install` (Helm 2): a plain CRD.
                _ => {}
            }
        }
        if types.is_empty() && not_run.is_empty() {
            return Role::Resource;
        }
    } else {
        return Role::Resource;
    }
    types.sort();
    types.dedup();
    if types.is_empty() {
        not_run.sort();
        not_run.dedup();
        return if not_run.is_empty() {
            Role::Resource
        } else {
            Role::NotRun(not_run)
        };
    }
    Role::Hook {
        types,
        policy: delete_policy(
            value(ARGO_HOOK_DELETE_POLICY_ANNOTATION).map(String::as_str),
            value(HELM_HOOK_DELETE_POLICY_ANNOTATION).map(String::as_str),
        ),
    }
}

/// The comma-separated words of an annotation value, trimmed, empty ones left out; at most 16.
fn words(value: &str) -> Vec<&str> {
    if value.len() > MAX_ANNOTATION_LEN {
        return Vec::new();
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .take(16)
        .collect()
}

/// Argo CD's and Helm's delete policies together; none known set means BeforeHookCreation.
fn delete_policy(argo: Option<&str>, helm: Option<&str>) -> DeletePolicy {
    let mut policy = DeletePolicy {
        before_creation: false,
        succeeded: false,
        failed: false,
    };
    let argo = argo.map(words).unwrap_or_default();
    let helm = helm.map(words).unwrap_or_default();
    for word in argo.into_iter().chain(helm) {
        match word {
            "BeforeHookCreation" | "before-hook-creation" => policy.before_creation = true,
            "HookSucceeded" | "hook-succeeded" => policy.succeeded = true,
            "HookFailed" | "hook-failed" => policy.failed = true,
            _ => {}
        }
    }
    if !(policy.before_creation || policy.succeeded || policy.failed) {
        return DeletePolicy::default();
    }
    policy
}

/// The order of the phases a sync walks through: PreSync, then Sync (the ordinary objects'
/// phase), then PostSync. SyncFail hooks are not walked: they run when a hook failed.
pub fn phase_rank(hook_type: HookType) -> u8 {
    match hook_type {
        HookType::PreSync => 0,
        HookType::Sync => 1,
        HookType::PostSync => 2,
        HookType::SyncFail => 3,
    }
}

/// The rank of the ordinary objects' phase (Sync).
pub const SYNC_PHASE_RANK: u8 = 1;

/// A hook's result from its health, as Argo CD judges it: Healthy (or a kind without a health
/// check) is Succeeded; Progressing, Suspended or not there yet is Running; Degraded is Failed.
/// Unknown is Failed too, except for an object the API server has not given a status yet.
pub fn result(health: &HealthStatus, has_status: bool) -> HookPhase {
    match health.status {
        HealthState::Healthy => HookPhase::Succeeded,
        HealthState::Progressing | HealthState::Suspended | HealthState::Missing => {
            HookPhase::Running
        }
        HealthState::Unknown if !has_status => HookPhase::Running,
        HealthState::Degraded | HealthState::Unknown => HookPhase::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn hook(types: &[HookType], policy: DeletePolicy) -> Role {
        Role::Hook {
            types: types.to_vec(),
            policy,
        }
    }

    #[test]
    fn argo_hook_types_are_a_comma_separated_list() {
        assert_eq!(role(&ObjectMeta::default()), Role::Resource);
        assert_eq!(
            role(&meta(&[("app", "web")])),
            Role::Resource,
            "other annotations"
        );
        assert_eq!(
            role(&meta(&[(ARGO_HOOK_ANNOTATION, "PreSync")])),
            hook(&[HookType::PreSync], DeletePolicy::default())
        );
        assert_eq!(
            role(&meta(&[(
                ARGO_HOOK_ANNOTATION,
                " PostSync , PreSync,PostSync"
            )])),
            hook(
                &[HookType::PreSync, HookType::PostSync],
                DeletePolicy::default()
            )
        );
        assert_eq!(role(&meta(&[(ARGO_HOOK_ANNOTATION, "Skip")])), Role::Skip);
        assert_eq!(
            role(&meta(&[(ARGO_HOOK_ANNOTATION, "Skip,SyncFail")])),
            hook(&[HookType::SyncFail], DeletePolicy::default()),
            "Skip counts only as the sole value"
        );
        assert_eq!(
            role(&meta(&[(ARGO_HOOK_ANNOTATION, "PostDelete")])),
            Role::NotRun(vec!["PostDelete".into()])
        );
        assert_eq!(
            role(&meta(&[(ARGO_HOOK_ANNOTATION, "Sync,PostDelete")])),
            hook(&[HookType::Sync], DeletePolicy::default())
        );
    }

    #[test]
    fn helm_hooks_map_as_argo_cd_maps_them() {
        assert_eq!(
            role(&meta(&[(HELM_HOOK_ANNOTATION, "pre-install,pre-upgrade")])),
            hook(&[HookType::PreSync], DeletePolicy::default())
        );
        assert_eq!(
            role(&meta(&[(HELM_HOOK_ANNOTATION, "post-upgrade")])),
            hook(&[HookType::PostSync], DeletePolicy::default())
        );
        assert_eq!(
            role(&meta(&[(HELM_HOOK_ANNOTATION, "crd-install")])),
            Role::Resource
        );
        assert_eq!(
            role(&meta(&[(HELM_HOOK_ANNOTATION, "test")])),
            Role::NotRun(vec!["Helm test".into()])
        );
        assert_eq!(
            role(&meta(&[(HELM_HOOK_ANNOTATION, "post-delete")])),
            Role::NotRun(vec!["PostDelete".into()])
        );
        // Argo CD's annotation wins: the Helm one is ignored.
        assert_eq!(
            role(&meta(&[
                (HELM_HOOK_ANNOTATION, "pre-install"),
                (ARGO_HOOK_ANNOTATION, "PostSync"),
            ])),
            hook(&[HookType::PostSync], DeletePolicy::default())
        );
    }

    #[test]
    fn delete_policies_default_to_before_hook_creation() {
        let with = |pairs: &[(&str, &str)]| match role(&meta(pairs)) {
            Role::Hook { policy, .. } => policy,
            other => panic!("not a hook: {other:?}"),
        };
        assert_eq!(
            with(&[(ARGO_HOOK_ANNOTATION, "PreSync")]),
            DeletePolicy::default()
        );
        assert_eq!(
            with(&[
                (ARGO_HOOK_ANNOTATION, "PreSync"),
                (ARGO_HOOK_DELETE_POLICY_ANNOTATION, "HookSucceeded")
            ]),
            DeletePolicy {
                before_creation: false,
                succeeded: true,
                failed: false
            }
        );
        assert_eq!(
            with(&[
                (ARGO_HOOK_ANNOTATION, "PreSync"),
                (
                    ARGO_HOOK_DELETE_POLICY_ANNOTATION,
                    "HookFailed,BeforeHookCreation"
                )
            ]),
            DeletePolicy {
                before_creation: true,
                succeeded: false,
                failed: true
            }
        );
        assert_eq!(
            with(&[
                (HELM_HOOK_ANNOTATION, "pre-upgrade"),
                (
                    HELM_HOOK_DELETE_POLICY_ANNOTATION,
                    "hook-succeeded,hook-failed"
                )
            ]),
            DeletePolicy {
                before_creation: false,
                succeeded: true,
                failed: true
            }
        );
        assert_eq!(
            with(&[
                (ARGO_HOOK_ANNOTATION, "PreSync"),
                (ARGO_HOOK_DELETE_POLICY_ANNOTATION, "Sometimes")
            ]),
            DeletePolicy::default(),
            "an unknown policy leaves the default"
        );
    }

    #[test]
    fn a_hook_result_follows_its_health() {
        let health = |status| HealthStatus {
            status,
            message: None,
        };
        assert_eq!(
            result(&health(HealthState::Healthy), true),
            HookPhase::Succeeded
        );
        assert_eq!(
            result(&health(HealthState::Progressing), true),
            HookPhase::Running
        );
        assert_eq!(
            result(&health(HealthState::Suspended), true),
            HookPhase::Running
        );
        assert_eq!(
            result(&health(HealthState::Degraded), true),
            HookPhase::Failed
        );
        assert_eq!(
            result(&health(HealthState::Unknown), true),
            HookPhase::Failed
        );
        assert_eq!(
            result(&health(HealthState::Unknown), false),
            HookPhase::Running
        );
    }

    #[test]
    fn phases_run_pre_sync_then_sync_then_post_sync() {
        let mut types = [
            HookType::PostSync,
            HookType::Sync,
            HookType::PreSync,
            HookType::SyncFail,
        ];
        types.sort_by_key(|t| phase_rank(*t));
        assert_eq!(
            types,
            [
                HookType::PreSync,
                HookType::Sync,
                HookType::PostSync,
                HookType::SyncFail
            ]
        );
        assert_eq!(phase_rank(HookType::Sync), SYNC_PHASE_RANK);
    }
}
