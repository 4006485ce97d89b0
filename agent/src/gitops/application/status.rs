//! The status a reconcile writes: `sync`, `health`, `resources`, `conditions` and `history` for
//! each outcome (wrong destination, suspended, source failed, synced), written only when it
//! differs from the current one.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use mooring_crds::application::{
    Application, ApplicationStatus, HealthState, HealthStatus, RevisionHistory, SyncState,
    SyncStatus, reasons,
};
use mooring_crds::conditions::{Condition, ConditionStatus, names, stamp};

use super::{Context, Error, SourceError, first_failure};
use crate::cluster::FIELD_MANAGER;
use crate::gitops::apply::{Mode, SyncReport};

/// `status.history` length when `spec.revisionHistoryLimit` is unset, as Argo CD.
const DEFAULT_HISTORY: usize = 10;

/// The status of an Application its project refuses (`InvalidSpecError`: a missing project, a
/// repository or destination it does not permit, no ServiceAccount for it) or whose rendered
/// objects it refuses (`ProjectViolation`): nothing was applied or pruned, the inventory is
/// kept.
pub(super) fn refused_by_project(
    previous: ApplicationStatus,
    mut conditions: Vec<Condition>,
    reason: &str,
    message: String,
) -> ApplicationStatus {
    conditions.push(Condition::new(
        reasons::INVALID_SPEC,
        ConditionStatus::True,
        reason,
        message.clone(),
    ));
    conditions.push(Condition::new(
        names::SYNCED,
        ConditionStatus::False,
        reason,
        message.clone(),
    ));
    conditions.push(Condition::new(
        names::READY,
        ConditionStatus::False,
        reason,
        message,
    ));
    ApplicationStatus {
        sync: Some(SyncStatus {
            status: SyncState::OutOfSync,
            revision: previous.sync.as_ref().and_then(|s| s.revision.clone()),
        }),
        conditions,
        ..previous
    }
}

/// The destination is not this cluster: nothing was compared.
pub(super) fn invalid_destination(
    previous: ApplicationStatus,
    mut conditions: Vec<Condition>,
    message: String,
) -> ApplicationStatus {
    conditions.push(Condition::new(
        names::INVALID_DESTINATION,
        ConditionStatus::True,
        reasons::INVALID_DESTINATION,
        message.clone(),
    ));
    conditions.push(Condition::new(
        names::SYNCED,
        ConditionStatus::False,
        reasons::INVALID_DESTINATION,
        message.clone(),
    ));
    conditions.push(Condition::new(
        names::READY,
        ConditionStatus::False,
        reasons::INVALID_DESTINATION,
        message,
    ));
    ApplicationStatus {
        sync: Some(SyncStatus {
            status: SyncState::Unknown,
            revision: None,
        }),
        conditions,
        ..previous
    }
}

/// `spec.suspend`: the rest of the status stays as the last sync left it.
pub(super) fn suspended(
    previous: ApplicationStatus,
    mut conditions: Vec<Condition>,
) -> ApplicationStatus {
    conditions.push(Condition::new(
        names::SYNCED,
        ConditionStatus::Unknown,
        reasons::SUSPENDED,
        "spec.suspend is true: nothing is applied or pruned",
    ));
    conditions.push(Condition::new(
        names::READY,
        ConditionStatus::False,
        reasons::SUSPENDED,
        "the Application is suspended",
    ));
    ApplicationStatus {
        health: Some(HealthStatus {
            status: HealthState::Suspended,
            message: Some("the Application is suspended".into()),
        }),
        conditions,
        ..previous
    }
}

/// Fetch or render failed: the sync state is unknown, the inventory and revision stay.
pub(super) fn source_failed(
    previous: ApplicationStatus,
    mut conditions: Vec<Condition>,
    error: &SourceError,
) -> ApplicationStatus {
    conditions.push(Condition::new(
        names::SYNCED,
        ConditionStatus::False,
        error.reason,
        error.message.clone(),
    ));
    conditions.push(Condition::new(
        names::READY,
        ConditionStatus::False,
        error.reason,
        error.message.clone(),
    ));
    ApplicationStatus {
        sync: Some(SyncStatus {
            status: SyncState::Unknown,
            revision: previous.sync.as_ref().and_then(|s| s.revision.clone()),
        }),
        conditions,
        ..previous
    }
}

/// After a sync of `revision`: the report's inventory, health and conditions, and the revision
/// added to the history once it is fully applied.
pub(super) fn synced(
    app: &Application,
    previous: ApplicationStatus,
    report: &SyncReport,
    revision: &str,
    mode: Mode,
    mut conditions: Vec<Condition>,
) -> ApplicationStatus {
    conditions.extend(report_conditions(report, mode));
    conditions.push(ready_condition(report));
    // A revision counts as deployed once all of it is applied: while a custom resource waits
    // for its CRD the Application stays in apply mode, so the CR follows when the CRD arrives.
    let applied_cleanly = mode == Mode::Apply
        && report.failures.is_empty()
        && report.deferred.is_empty()
        && report.waiting.is_none();
    let mut history = previous.history;
    if applied_cleanly {
        record_deployment(app, &mut history, revision);
    }
    ApplicationStatus {
        sync: Some(SyncStatus {
            status: report.sync,
            revision: Some(revision.to_string()),
        }),
        health: Some(report.health.clone()),
        resources: report.resources.clone(),
        conditions,
        history,
        observed_generation: app.metadata.generation,
        operation_state: previous.operation_state,
    }
}

/// A sync of an empty render without `allowEmpty`: not Synced, not Ready, no history entry; the
/// inventory stays (its objects were not pruned), and with no objects at all the health is
/// Missing rather than a vacuous Healthy.
pub(super) fn empty_render(status: &mut ApplicationStatus, report: &SyncReport, message: String) {
    for condition in &mut status.conditions {
        if condition.type_ == names::SYNCED || condition.type_ == names::READY {
            *condition = Condition::new(
                &condition.type_.clone(),
                ConditionStatus::False,
                reasons::EMPTY_RENDER,
                message.clone(),
            );
        }
    }
    if let Some(sync) = &mut status.sync {
        sync.status = SyncState::OutOfSync;
    }
    if report.resources.is_empty() {
        status.health = Some(HealthStatus {
            status: HealthState::Missing,
            message: Some(message),
        });
    }
}

/// Appends `revision` unless it is the last entry already, keeping `spec.revisionHistoryLimit`
/// entries.
fn record_deployment(app: &Application, history: &mut Vec<RevisionHistory>, revision: &str) {
    if history.last().map(|h| h.revision.as_str()) == Some(revision) {
        return;
    }
    history.push(RevisionHistory {
        revision: revision.to_string(),
        deployed_at: jiff::Timestamp::now().to_string(),
    });
    let limit = app
        .spec
        .revision_history_limit
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(DEFAULT_HISTORY);
    let excess = history.len().saturating_sub(limit);
    history.drain(..excess);
}

/// The conditions a sync report sets.
fn report_conditions(report: &SyncReport, mode: Mode) -> Vec<Condition> {
    let mut conditions = vec![synced_condition(report, mode)];
    if !report.deferred.is_empty() {
        let message = report
            .deferred
            .iter()
            .map(|(key, reason)| format!("{key}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        conditions.push(Condition::new(
            names::RESOURCES_DEFERRED,
            ConditionStatus::True,
            reasons::MISSING_CUSTOM_RESOURCE_DEFINITION,
            message,
        ));
    }
    if let Some((reason, message)) = &report.prune_refused {
        conditions.push(Condition::new(
            names::PRUNE_PENDING,
            ConditionStatus::True,
            reason,
            message.clone(),
        ));
    } else if !report.kept.is_empty() {
        let message = report
            .kept
            .iter()
            .map(|(key, keep)| format!("{key} kept: {}", keep.describe()))
            .collect::<Vec<_>>()
            .join("; ");
        conditions.push(Condition::new(
            names::PRUNE_PENDING,
            ConditionStatus::True,
            reasons::PRUNE_SKIPPED,
            message,
        ));
    }
    if mode == Mode::Compare && !report.drift.is_empty() {
        let message = report
            .drift
            .iter()
            .map(|d| d.describe())
            .collect::<Vec<_>>()
            .join("; ");
        conditions.push(Condition::new(
            names::DRIFT_DETECTED,
            ConditionStatus::True,
            reasons::MANUAL_CHANGE,
            message,
        ));
    }
    conditions
}

/// `Synced`: a failure first, then a wave still rolling out, then whether the cluster matches.
fn synced_condition(report: &SyncReport, mode: Mode) -> Condition {
    match (first_failure(report), report.sync, mode) {
        (None, _, Mode::Apply) if report.waiting.is_some() => Condition::new(
            names::SYNCED,
            ConditionStatus::False,
            reasons::SYNC_WAVE_NOT_HEALTHY,
            report.waiting.clone().unwrap_or_default(),
        ),
        // A failed hook fails the whole operation: the condition names it.
        (Some(_), _, _) if let Some(hook) = failed_hook(report) => Condition::new(
            names::SYNCED,
            ConditionStatus::False,
            reasons::HOOK_FAILED,
            format!("the sync operation failed, later phases were not applied: {hook}"),
        ),
        (Some(first), _, _) => Condition::new(
            names::SYNCED,
            ConditionStatus::False,
            reasons::SYNC_FAILED,
            format!("{} object(s) failed; first: {first}", report.failures.len()),
        ),
        (None, SyncState::Synced, _) => Condition::new(
            names::SYNCED,
            ConditionStatus::True,
            reasons::SYNCED,
            format!("{} object(s) in sync", report.resources.len()),
        ),
        (None, _, Mode::Compare) => Condition::new(
            names::SYNCED,
            ConditionStatus::False,
            reasons::OUT_OF_SYNC,
            "the cluster differs from Git and this sync only compares (no automated sync, or no selfHeal)",
        ),
        (None, _, Mode::Apply) => Condition::new(
            names::SYNCED,
            ConditionStatus::False,
            reasons::OUT_OF_SYNC,
            "some objects are not applied yet (deferred or left in the cluster)",
        ),
    }
}

/// The failed hook of the sync, as "object: why".
fn failed_hook(report: &SyncReport) -> Option<String> {
    report
        .failures
        .iter()
        .find(|f| f.reason == reasons::HOOK_FAILED)
        .map(ToString::to_string)
}

/// kstatus `Ready`: in sync with Git and healthy, so `kubectl wait --for=condition=Ready` and
/// dependants can gate on an Application.
fn ready_condition(report: &SyncReport) -> Condition {
    match (report.sync, report.health.status) {
        (SyncState::Synced, HealthState::Healthy) => Condition::new(
            names::READY,
            ConditionStatus::True,
            reasons::HEALTHY,
            "in sync with Git and healthy",
        ),
        (SyncState::Synced, state) => Condition::new(
            names::READY,
            ConditionStatus::False,
            &format!("{state:?}"),
            report
                .health
                .message
                .clone()
                .unwrap_or_else(|| format!("health is {state:?}")),
        ),
        (_, _) => Condition::new(
            names::READY,
            ConditionStatus::False,
            reasons::OUT_OF_SYNC,
            "the cluster differs from Git",
        ),
    }
}

/// Writes the status when it differs from the current one (a no-op sync writes nothing);
/// condition transition times are kept while a condition's status stays the same.
pub(super) async fn write(
    ctx: &Context,
    app: &Application,
    mut status: ApplicationStatus,
) -> Result<(), Error> {
    let current = app.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now().to_string();
    stamp(
        &mut status.conditions,
        &current.conditions,
        app.metadata.generation,
        &now,
    );
    status.observed_generation = app.metadata.generation;
    if status == current {
        return Ok(());
    }
    let api: Api<Application> =
        Api::namespaced(ctx.client.clone(), &app.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": Application::api_version(&()),
        "kind": Application::kind(&()),
        "metadata": {"name": app.name_any(), "namespace": app.namespace()},
        "status": status,
    });
    api.patch_status(
        &app.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        name: app.name_any(),
        source,
    })?;
    Ok(())
}
