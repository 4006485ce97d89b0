//! The sync operation of a revision with resource hooks, kept in `status.operationState`.
//!
//! An operation starts when an Application in apply mode meets a revision or spec generation
//! its last operation did not sync, and its rendered set has hooks. The engine walks it again on
//! every reconcile from what the status recorded (each hook started once, its result kept), so
//! waiting for a hook Job never holds a reconcile: the step reports what it waits for and the
//! controller looks again within seconds (the hook's drift watch wakes it sooner). A finished
//! operation is not run again for the same revision and generation: no-op resyncs, self-heals and
//! drift reconciles run no hooks. A failed one stays failed (the Synced condition names the
//! hook) until a new revision or a spec change.

use kube::api::DynamicObject;
use mooring_crds::application::{Application, ApplicationStatus, OperationPhase, OperationState};

use crate::gitops::apply::hooks::{self, Role};
use crate::gitops::apply::{Hooks, Mode, SyncReport};

/// Whether this sync runs hooks, and whether the set has any.
pub(super) struct HookPlan {
    /// What the engine does with the hooks.
    pub hooks: Hooks,
    /// The rendered set has hooks this sync could run.
    pub in_set: bool,
}

/// The hook plan of a sync of `revision` in `mode`.
pub(super) fn plan(
    app: &Application,
    previous: &ApplicationStatus,
    revision: &str,
    objects: &[DynamicObject],
    mode: Mode,
) -> HookPlan {
    let in_set = objects
        .iter()
        .any(|o| matches!(hooks::role(&o.metadata), Role::Hook { .. }));
    let hooks = match &previous.operation_state {
        _ if !in_set || mode == Mode::Compare => Hooks::Ignore,
        Some(state) if is_current(state, app, revision) => match state.phase {
            OperationPhase::Succeeded => Hooks::Ignore,
            OperationPhase::Running | OperationPhase::Failed => Hooks::Run {
                started: state.hooks.clone(),
            },
        },
        _ => Hooks::Run {
            started: Vec::new(),
        },
    };
    HookPlan { hooks, in_set }
}

/// Whether `state` is the operation of `revision` at the Application's current generation.
fn is_current(state: &OperationState, app: &Application, revision: &str) -> bool {
    state.revision == revision && state.generation == app.metadata.generation
}

/// The `status.operationState` after this sync: the report's progress when the operation ran,
/// the last one's when it did not, none once the set has no hooks.
pub(super) fn state(
    app: &Application,
    previous: Option<&OperationState>,
    revision: &str,
    plan: &HookPlan,
    report: &SyncReport,
) -> Option<OperationState> {
    let Some(progress) = &report.operation else {
        return if plan.in_set { previous.cloned() } else { None };
    };
    let same = previous.filter(|p| is_current(p, app, revision));
    let now = || jiff::Timestamp::now().to_string();
    let started_at = same.and_then(|p| p.started_at.clone()).unwrap_or_else(now);
    let finished_at = match progress.phase {
        OperationPhase::Running => None,
        _ => Some(
            same.filter(|p| p.phase == progress.phase)
                .and_then(|p| p.finished_at.clone())
                .unwrap_or_else(now),
        ),
    };
    Some(OperationState {
        revision: revision.to_string(),
        generation: app.metadata.generation,
        phase: progress.phase,
        message: progress.message.clone(),
        started_at: Some(started_at),
        finished_at,
        hooks: report.hooks.clone(),
    })
}

#[cfg(test)]
mod tests {
    use mooring_crds::application::{ApplicationSpec, HookPhase, HookStatus, HookType};

    use super::*;
    use crate::gitops::apply::OperationProgress;

    fn app(generation: i64) -> Application {
        let mut app = Application::new("web", ApplicationSpec::default());
        app.metadata.generation = Some(generation);
        app
    }

    fn objects(hook: bool) -> Vec<DynamicObject> {
        let mut annotations = serde_json::Map::new();
        if hook {
            annotations.insert("argocd.argoproj.io/hook".into(), "PreSync".into());
        }
        vec![
            serde_json::from_value(serde_json::json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "migrate", "annotations": annotations},
            }))
            .unwrap(),
        ]
    }

    fn status(revision: &str, generation: i64, phase: OperationPhase) -> ApplicationStatus {
        ApplicationStatus {
            operation_state: Some(OperationState {
                revision: revision.into(),
                generation: Some(generation),
                phase,
                hooks: vec![HookStatus {
                    kind: "Job".into(),
                    group: "batch".into(),
                    name: "migrate".into(),
                    hook_type: HookType::PreSync,
                    hook_phase: HookPhase::Succeeded,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn runs(plan: &HookPlan) -> Option<usize> {
        match &plan.hooks {
            Hooks::Run { started } => Some(started.len()),
            Hooks::Ignore => None,
        }
    }

    #[test]
    fn hooks_run_once_per_revision_and_generation() {
        let none = ApplicationStatus::default();
        // A first sync with hooks starts an operation.
        assert_eq!(
            runs(&plan(&app(1), &none, "a", &objects(true), Mode::Apply)),
            Some(0)
        );
        // Without hooks, or only comparing: nothing runs.
        assert_eq!(
            runs(&plan(&app(1), &none, "a", &objects(false), Mode::Apply)),
            None
        );
        assert_eq!(
            runs(&plan(&app(1), &none, "a", &objects(true), Mode::Compare)),
            None
        );
        // The same revision and generation once succeeded: a resync runs no hook.
        let done = status("a", 1, OperationPhase::Succeeded);
        assert_eq!(
            runs(&plan(&app(1), &done, "a", &objects(true), Mode::Apply)),
            None
        );
        // A new revision or a spec change starts over.
        assert_eq!(
            runs(&plan(&app(1), &done, "b", &objects(true), Mode::Apply)),
            Some(0)
        );
        assert_eq!(
            runs(&plan(&app(2), &done, "a", &objects(true), Mode::Apply)),
            Some(0)
        );
        // A running or failed operation resumes from what it recorded.
        let running = status("a", 1, OperationPhase::Running);
        assert_eq!(
            runs(&plan(&app(1), &running, "a", &objects(true), Mode::Apply)),
            Some(1)
        );
        let failed = status("a", 1, OperationPhase::Failed);
        assert_eq!(
            runs(&plan(&app(1), &failed, "a", &objects(true), Mode::Apply)),
            Some(1)
        );
    }

    #[test]
    fn the_state_keeps_its_start_and_finish_times() {
        let running = status("a", 1, OperationPhase::Running);
        let mut previous = running.operation_state.clone().unwrap();
        previous.started_at = Some("2026-01-01T00:00:00Z".into());
        let plan = plan(&app(1), &running, "a", &objects(true), Mode::Apply);
        let report = SyncReport {
            operation: Some(OperationProgress {
                phase: OperationPhase::Succeeded,
                message: None,
            }),
            ..Default::default()
        };
        let state = state(&app(1), Some(&previous), "a", &plan, &report).unwrap();
        assert_eq!(state.started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert!(state.finished_at.is_some());
        assert_eq!(state.phase, OperationPhase::Succeeded);
        let again = super::state(&app(1), Some(&state), "a", &plan, &report).unwrap();
        assert_eq!(again, state, "a finished operation's state does not change");
        // No hooks left in the set: no operation state.
        let no_hooks = HookPlan {
            hooks: Hooks::Ignore,
            in_set: false,
        };
        let quiet = SyncReport::default();
        assert_eq!(
            super::state(&app(1), Some(&state), "a", &no_hooks, &quiet),
            None
        );
    }
}
