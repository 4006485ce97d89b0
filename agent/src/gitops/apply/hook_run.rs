//! Running the hooks of one step of a sync operation, and the SyncFail hooks after a failure.
//!
//! Each reconcile walks the operation again from the start; the hooks it already started are in
//! [`Hooks::Run`]'s `started` (from `status.operationState`): a finished one is not touched, a
//! running one is read and judged by its health, a new one is created. So a hook runs once per
//! operation however many reconciles the operation takes, and no reconcile waits for a Job: the
//! step reports what it waits for, the drift watch (hooks carry the tracking id) or a short
//! requeue looks again.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use mooring_crds::application::{HookPhase, HookStatus, HookType, OperationPhase};
use serde_json::Value;

use super::discovery::Served;
use super::failure::{ObjectFailure, Step};
use super::hooks;
use super::object::{TRACKING_ID_ANNOTATION, parse_tracking_id};
use super::prepare::Desired;
use super::{Engine, Hooks, OperationProgress, SyncReport, SyncRequest, health};
use crate::cluster::FIELD_MANAGER;

/// How long a hook's previous instance may take to go away (BeforeHookCreation) before the
/// reconcile moves on and looks again on the next one.
const DELETION_WAIT: Duration = Duration::from_secs(10);

/// At most this many objects of a `generateName` hook's kind are looked through for its
/// previous instances.
const PREVIOUS_LISTED: u32 = 500;

/// The reason of a failed hook in the failure list.
pub const HOOK_FAILED: &str = mooring_crds::application::reasons::HOOK_FAILED;

/// Where a hook stands after this reconcile.
enum State {
    /// Finished (Succeeded or Failed), or running.
    Recorded(HookPhase),
    /// Not created yet: its previous instance is still being deleted.
    Pending(String),
}

impl Engine {
    /// Runs (starts, or looks at) the hooks of one step in apply mode. Returns what the step
    /// waits for, if a hook has not finished. A failed hook goes to `report.failures`.
    pub(super) async fn run_hooks(
        &self,
        request: &SyncRequest,
        items: &[Desired],
        report: &mut SyncReport,
    ) -> Option<String> {
        let mut waiting = Vec::new();
        for item in items {
            let Some(hook) = &item.hook else { continue };
            match self.run_hook(request, item, report).await {
                State::Recorded(HookPhase::Succeeded) => {}
                State::Recorded(HookPhase::Running) => {
                    let message = record_of(report, item)
                        .and_then(|r| r.message.clone())
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    waiting.push(format!("{:?} hook {}{message}", hook.hook_type, item.key));
                }
                State::Recorded(HookPhase::Failed) => {
                    let message = record_of(report, item)
                        .and_then(|r| r.message.clone())
                        .unwrap_or_else(|| "the hook failed".into());
                    report.failures.push(ObjectFailure {
                        key: item.key.clone(),
                        step: Step::Hook,
                        reason: HOOK_FAILED,
                        // A new revision or spec change starts the operation again.
                        retryable: false,
                        message: format!("{:?} hook failed: {message}", hook.hook_type),
                    });
                }
                State::Pending(message) => waiting.push(message),
            }
        }
        (!waiting.is_empty()).then(|| format!("waiting for hooks: {}", waiting.join("; ")))
    }

    /// Runs the SyncFail hooks once a hook of the operation failed; they are not waited for
    /// beyond being looked at on each reconcile until they finish.
    pub(super) async fn run_sync_fail_hooks(
        &self,
        request: &SyncRequest,
        items: Vec<Desired>,
        report: &mut SyncReport,
    ) {
        for item in &items {
            if let Some(served) = &item.served {
                report.remember_kind(&served.resource);
            }
            // A SyncFail hook's own failure is recorded on it; the operation failed already.
            let _ = self.run_hook(request, item, report).await;
        }
    }

    /// One hook: its recorded result if it finished, else its live result, else created now.
    async fn run_hook(
        &self,
        request: &SyncRequest,
        item: &Desired,
        report: &mut SyncReport,
    ) -> State {
        let Some(hook) = &item.hook else {
            return State::Recorded(HookPhase::Succeeded);
        };
        if let Some(served) = &item.served {
            report.remember_kind(&served.resource);
        }
        let recorded = record_of(report, item).cloned();
        if let Some(record) = &recorded
            && record.hook_phase != HookPhase::Running
        {
            return State::Recorded(record.hook_phase);
        }
        let served = match self.hook_served(item).await {
            Ok(served) => served,
            Err(message) => {
                let record = recorded.unwrap_or_else(|| new_record(item, item.key.name.clone()));
                return self.settle(report, record, HookPhase::Failed, Some(message));
            }
        };
        let api = self.api(&served, item.key.namespace.as_deref());
        if let Some(record) = recorded {
            // Started by an earlier reconcile: judge it as it is now.
            let (phase, message) = match api.get_opt(&record.name).await {
                Ok(Some(live)) => judge(item, &live),
                Ok(None) => (
                    HookPhase::Failed,
                    Some("the hook was deleted before it finished".into()),
                ),
                Err(error) => {
                    // An API hiccup: still running as far as anyone knows; look again.
                    tracing::warn!(hook = %item.key, error = %crate::errors::error_chain(&error), "failed to read a hook");
                    (HookPhase::Running, record.message.clone())
                }
            };
            return self
                .finish(&api, report, record, hook.policy, phase, message)
                .await;
        }
        if let Some(owner) = self.foreign_owner(request, item, &api).await {
            let record = new_record(item, item.key.name.clone());
            let message = format!(
                "{} exists and belongs to Application {owner}: the hook would replace it",
                item.key
            );
            return self.settle(report, record, HookPhase::Failed, Some(message));
        }
        if let Some(pending) = self.delete_before_creation(request, item, &api).await {
            return State::Pending(pending);
        }
        match self.create_hook(item, &api).await {
            Ok(created) => {
                let name = created
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_else(|| item.key.name.clone());
                tracing::info!(hook = %item.key, %name, hook_type = ?hook.hook_type, "hook created");
                let (phase, message) = judge(item, &created);
                let record = new_record(item, name);
                self.finish(&api, report, record, hook.policy, phase, message)
                    .await
            }
            Err(error) => {
                let failure = ObjectFailure::api(
                    item.key.clone(),
                    Step::Hook,
                    &error,
                    "failed to create the hook",
                );
                if failure.retryable {
                    // An API outage or a conflict: the hook has not run; try again next look.
                    return State::Pending(format!(
                        "{:?} hook {}: {}",
                        hook.hook_type, item.key, failure.message
                    ));
                }
                let record = new_record(item, item.key.name.clone());
                self.settle(report, record, HookPhase::Failed, Some(failure.message))
            }
        }
    }

    /// The resource serving a hook's kind, if served and the project permits the hook in it.
    async fn hook_served(&self, item: &Desired) -> Result<Served, String> {
        if let Some(served) = &item.served {
            return Ok(served.clone());
        }
        let gvk = kube::api::GroupVersionKind::gvk(&item.key.group, &item.version, &item.key.kind);
        let served = match self.discovery.resolve(&gvk).await {
            Ok(Some(served)) => served,
            Ok(None) => {
                return Err(format!(
                    "no resource serves {} (is its CRD installed?)",
                    item.key
                ));
            }
            Err(error) => return Err(crate::errors::error_chain(&error)),
        };
        match self.refused(&item.key, served.namespaced) {
            Some(rule) => Err(rule),
            None => Ok(served),
        }
    }

    /// A named hook is server-side applied (a finished instance left in place by its policy is
    /// not run again: it stays Complete); a `generateName` one is created with a fresh name.
    async fn create_hook(
        &self,
        item: &Desired,
        api: &Api<DynamicObject>,
    ) -> Result<DynamicObject, kube::Error> {
        let manifest: Value =
            serde_json::from_str(&item.manifest).map_err(kube::Error::SerdeError)?;
        if item
            .hook
            .as_ref()
            .is_some_and(|h| h.generate_name.is_some())
        {
            let object: DynamicObject =
                serde_json::from_value(manifest).map_err(kube::Error::SerdeError)?;
            return api.create(&PostParams::default(), &object).await;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&item.key.name, &params, &Patch::Apply(&manifest))
            .await
    }

    /// The Application owning the live object of a named hook, when it is another one: a hook
    /// never deletes or overwrites another Application's object.
    async fn foreign_owner(
        &self,
        request: &SyncRequest,
        item: &Desired,
        api: &Api<DynamicObject>,
    ) -> Option<String> {
        if item.hook.as_ref()?.generate_name.is_some() {
            return None;
        }
        let live = api.get_opt(&item.key.name).await.ok()??;
        let id = live
            .metadata
            .annotations
            .as_ref()?
            .get(TRACKING_ID_ANNOTATION)?;
        let (owner, _) = parse_tracking_id(id)?;
        (owner != request.app).then(|| owner.to_string())
    }

    /// BeforeHookCreation: deletes the hook's previous instance (by name; for a `generateName`
    /// hook, every object of its kind in its namespace carrying its tracking id) and waits a
    /// little for it to go. `Some` says what is still being deleted.
    async fn delete_before_creation(
        &self,
        request: &SyncRequest,
        item: &Desired,
        api: &Api<DynamicObject>,
    ) -> Option<String> {
        let hook = item.hook.as_ref()?;
        if !hook.policy.before_creation {
            return None;
        }
        let names: Vec<String> = if hook.generate_name.is_none() {
            vec![item.key.name.clone()]
        } else {
            let tracking_id = item.key.tracking_id(&request.app);
            match api
                .list_metadata(&ListParams::default().limit(PREVIOUS_LISTED))
                .await
            {
                Ok(list) => list
                    .items
                    .into_iter()
                    .filter(|o| {
                        o.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(TRACKING_ID_ANNOTATION))
                            == Some(&tracking_id)
                    })
                    .filter_map(|o| o.metadata.name)
                    .collect(),
                Err(error) => {
                    return Some(format!(
                        "failed to list the previous instances of hook {}: {}",
                        item.key,
                        crate::errors::error_chain(&error)
                    ));
                }
            }
        };
        for name in names {
            let Ok(Some(live)) = api.get_opt(&name).await else {
                continue;
            };
            if let Err(error) = api.delete(&name, &DeleteParams::background()).await
                && !is_not_found(&error)
            {
                return Some(format!(
                    "failed to delete the previous {name} of hook {}: {}",
                    item.key,
                    crate::errors::error_chain(&error)
                ));
            }
            let uid = live.metadata.uid.clone().unwrap_or_default();
            let gone = await_condition(api.clone(), &name, conditions::is_deleted(&uid));
            if !matches!(tokio::time::timeout(DELETION_WAIT, gone).await, Ok(Ok(_))) {
                return Some(format!(
                    "waiting for the previous {name} of hook {} to be deleted",
                    item.key
                ));
            }
        }
        None
    }

    /// Records the hook's result; once it finished, deletes it if its policy says so.
    async fn finish(
        &self,
        api: &Api<DynamicObject>,
        report: &mut SyncReport,
        record: HookStatus,
        policy: hooks::DeletePolicy,
        phase: HookPhase,
        message: Option<String>,
    ) -> State {
        let delete = match phase {
            HookPhase::Succeeded => policy.succeeded,
            HookPhase::Failed => policy.failed,
            HookPhase::Running => false,
        };
        if delete
            && let Err(error) = api.delete(&record.name, &DeleteParams::background()).await
            && !is_not_found(&error)
        {
            // The result stands; the object is left for the next operation's BeforeHookCreation.
            tracing::warn!(hook = %record.name, error = %crate::errors::error_chain(&error), "failed to delete a finished hook");
        }
        self.settle(report, record, phase, message)
    }

    /// Puts the hook's record, with `phase` and `message`, into the report.
    fn settle(
        &self,
        report: &mut SyncReport,
        mut record: HookStatus,
        phase: HookPhase,
        message: Option<String>,
    ) -> State {
        record.hook_phase = phase;
        record.message = message.filter(|m| !m.is_empty());
        match report.hooks.iter_mut().find(|r| same_hook(r, &record)) {
            Some(existing) => *existing = record,
            None => report.hooks.push(record),
        }
        State::Recorded(phase)
    }
}

/// The record of `item` in the report, if the operation started it.
fn record_of<'a>(report: &'a SyncReport, item: &Desired) -> Option<&'a HookStatus> {
    let probe = new_record(item, item.key.name.clone());
    report.hooks.iter().find(|r| same_hook(r, &probe))
}

/// Whether two records are the same hook of the operation: the same object in Git (its name, or
/// its generateName) in the same phase.
fn same_hook(a: &HookStatus, b: &HookStatus) -> bool {
    a.group == b.group
        && a.kind == b.kind
        && a.namespace == b.namespace
        && a.hook_type == b.hook_type
        && a.generate_name == b.generate_name
        && (a.generate_name.is_some() || a.name == b.name)
}

/// A record of `item` created as `name`, running.
fn new_record(item: &Desired, name: String) -> HookStatus {
    let hook = item.hook.as_ref();
    HookStatus {
        group: item.key.group.clone(),
        version: item.version.clone(),
        kind: item.key.kind.clone(),
        namespace: item.key.namespace.clone(),
        name,
        generate_name: hook.and_then(|h| h.generate_name.clone()),
        hook_type: hook.map_or(HookType::Sync, |h| h.hook_type),
        hook_phase: HookPhase::Running,
        message: None,
    }
}

/// A hook's result and message from the live object.
fn judge(item: &Desired, live: &DynamicObject) -> (HookPhase, Option<String>) {
    let value = serde_json::to_value(live).unwrap_or_default();
    let health = health::assess(&item.key.group, &item.key.kind, &value);
    let has_status = value.get("status").is_some_and(|s| !s.is_null());
    (hooks::result(&health, has_status), health.message)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// How far the operation got, with [`Hooks::Run`]: Failed once a hook failed and the SyncFail
/// hooks finished; Running while anything is awaited or failed to apply (the retry resumes it);
/// else Succeeded.
pub(super) fn progress(request: &SyncRequest, report: &SyncReport) -> Option<OperationProgress> {
    if !matches!(request.hooks, Hooks::Run { .. }) {
        return None;
    }
    let sync_fail_running = report
        .hooks
        .iter()
        .any(|h| h.hook_type == HookType::SyncFail && h.hook_phase == HookPhase::Running);
    if report.hook_failed() {
        let failed = report
            .failures
            .iter()
            .find(|f| f.reason == HOOK_FAILED)
            .map(ToString::to_string);
        return Some(OperationProgress {
            phase: if sync_fail_running {
                OperationPhase::Running
            } else {
                OperationPhase::Failed
            },
            message: failed,
        });
    }
    if let Some(waiting) = &report.waiting {
        return Some(OperationProgress {
            phase: OperationPhase::Running,
            message: Some(waiting.clone()),
        });
    }
    if let Some(failure) = report.failures.first() {
        return Some(OperationProgress {
            phase: OperationPhase::Running,
            message: Some(format!("retrying after a failure: {failure}")),
        });
    }
    if !report.deferred.is_empty() {
        return Some(OperationProgress {
            phase: OperationPhase::Running,
            message: Some("waiting for CustomResourceDefinitions".into()),
        });
    }
    Some(OperationProgress {
        phase: OperationPhase::Succeeded,
        message: Some("successfully synced (all phases and hooks)".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::apply::object::{AppId, ObjectKey};
    use crate::gitops::apply::prune::PruneSettings;
    use crate::gitops::apply::{Mode, SyncRequest};

    fn request(hooks: Hooks) -> SyncRequest {
        SyncRequest {
            app: AppId {
                namespace: "argocd".into(),
                name: "web".into(),
            },
            objects: Vec::new(),
            destination_namespace: None,
            sync_options: Vec::new(),
            inventory: Vec::new(),
            prune: PruneSettings::default(),
            mode: Mode::Apply,
            hooks,
        }
    }

    fn record(name: &str, hook_type: HookType, hook_phase: HookPhase) -> HookStatus {
        HookStatus {
            group: "batch".into(),
            kind: "Job".into(),
            name: name.into(),
            hook_type,
            hook_phase,
            ..Default::default()
        }
    }

    fn phase(report: &SyncReport) -> Option<OperationPhase> {
        progress(&request(Hooks::Run { started: vec![] }), report).map(|p| p.phase)
    }

    #[test]
    fn an_operation_fails_once_its_sync_fail_hooks_finished() {
        assert_eq!(
            progress(&request(Hooks::Ignore), &SyncReport::default()),
            None,
            "no operation without hooks"
        );
        assert_eq!(
            phase(&SyncReport::default()),
            Some(OperationPhase::Succeeded)
        );
        let waiting = SyncReport {
            waiting: Some("waiting for hooks: PreSync hook Job.batch migrate".into()),
            ..Default::default()
        };
        assert_eq!(phase(&waiting), Some(OperationPhase::Running));
        let failure = ObjectFailure {
            key: ObjectKey {
                group: "batch".into(),
                kind: "Job".into(),
                namespace: Some("ns".into()),
                name: "migrate".into(),
            },
            step: Step::Hook,
            reason: HOOK_FAILED,
            retryable: false,
            message: "PreSync hook failed: Job has reached the specified backoff limit".into(),
        };
        let mut failed = SyncReport {
            hooks: vec![
                record("migrate", HookType::PreSync, HookPhase::Failed),
                record("cleanup", HookType::SyncFail, HookPhase::Running),
            ],
            failures: vec![failure.clone()],
            ..Default::default()
        };
        assert_eq!(
            phase(&failed),
            Some(OperationPhase::Running),
            "the SyncFail hook still runs"
        );
        failed.hooks[1].hook_phase = HookPhase::Succeeded;
        let progress = progress(&request(Hooks::Run { started: vec![] }), &failed).unwrap();
        assert_eq!(progress.phase, OperationPhase::Failed);
        assert!(
            progress
                .message
                .as_deref()
                .is_some_and(|m| m.contains("Job.batch ns/migrate") && m.contains("backoff limit")),
            "{progress:?}"
        );
        // A failed SyncFail hook alone does not count as the operation's failure.
        let only_sync_fail = SyncReport {
            hooks: vec![record("cleanup", HookType::SyncFail, HookPhase::Failed)],
            ..Default::default()
        };
        assert!(!only_sync_fail.hook_failed());
        // An apply failure keeps the operation running: the retry resumes it.
        let apply_failed = SyncReport {
            failures: vec![ObjectFailure {
                reason: "Invalid",
                step: Step::Apply,
                ..failure
            }],
            ..Default::default()
        };
        assert_eq!(phase(&apply_failed), Some(OperationPhase::Running));
    }

    #[test]
    fn the_same_hook_is_matched_by_name_or_generate_name_and_phase() {
        let named = record("migrate", HookType::PreSync, HookPhase::Running);
        assert!(same_hook(&named, &named.clone()));
        let other_phase = record("migrate", HookType::PostSync, HookPhase::Running);
        assert!(!same_hook(&named, &other_phase));
        let generated = HookStatus {
            name: "smoke-x7k2p".into(),
            generate_name: Some("smoke-".into()),
            ..record("", HookType::PostSync, HookPhase::Running)
        };
        let probe = HookStatus {
            name: "smoke-".into(),
            ..generated.clone()
        };
        assert!(same_hook(&generated, &probe));
        assert!(!same_hook(&generated, &other_phase));
    }
}
