//! The Events an Application's reconcile publishes, only for what changed: drift (naming the
//! field manager that made it), writes, prunes, a failed source and objects deleted with the
//! Application.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType};
use mooring_crds::application::{Application, reasons};
use mooring_crds::conditions::names;

use super::{Context, SourceError};
use crate::gitops::apply::{Mode, SyncReport};

/// How many objects an `Applied` event names before "and N more".
const NAMED_OBJECTS: usize = 5;
/// Notes are cut to this many characters (the Events API caps a note at 1 kB).
const NOTE_CHARS: usize = 1000;

/// Drift, applied objects and pruned objects of one sync. `healing_later` says a self-heal was
/// postponed by its backoff.
pub(super) async fn announce(
    ctx: &Context,
    app: &Application,
    report: &SyncReport,
    mode: Mode,
    healing_later: bool,
) {
    announce_drift(ctx, app, report, mode, healing_later).await;
    announce_applied(ctx, app, report).await;
    if !report.pruned.is_empty() {
        let note = format!(
            "pruned {}",
            crate::gitops::apply::prune::summarize(&report.pruned)
        );
        publish(ctx, app, EventType::Normal, reasons::PRUNED, &note).await;
    }
}

/// One Warning per drifted object, as `DriftReverted` or `DriftDetected`.
async fn announce_drift(
    ctx: &Context,
    app: &Application,
    report: &SyncReport,
    mode: Mode,
    healing_later: bool,
) {
    // Drift that is only reported stays until someone acts: announce it once, not on every
    // reconcile (the DriftDetected condition keeps saying it).
    let reported_before = app
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == names::DRIFT_DETECTED)
        })
        .map(|c| c.message.clone())
        .unwrap_or_default();
    for drift in &report.drift {
        if mode == Mode::Compare && reported_before.contains(&drift.describe()) {
            continue;
        }
        let (reason, note) = match mode {
            Mode::Apply => (
                reasons::DRIFT_REVERTED,
                format!("{}; reverted (selfHeal)", drift.describe()),
            ),
            Mode::Compare if healing_later => (
                reasons::DRIFT_DETECTED,
                format!(
                    "{}; selfHeal reverts it after a backoff (it was reverted moments ago)",
                    drift.describe()
                ),
            ),
            Mode::Compare => (
                reasons::DRIFT_DETECTED,
                format!("{}; OutOfSync (selfHeal is off)", drift.describe()),
            ),
        };
        let reference: ObjectReference = app.object_ref(&());
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(NOTE_CHARS).collect()),
            action: "SelfHeal".into(),
            secondary: None,
        };
        ctx.events.publish_distinct(&reference, event).await;
    }
}

/// `Applied`, naming the written objects that were not drift (those had their own event).
async fn announce_applied(ctx: &Context, app: &Application, report: &SyncReport) {
    let drifted: Vec<_> = report.drift.iter().map(|d| &d.key).collect();
    let written: Vec<_> = report
        .written
        .iter()
        .filter(|k| !drifted.contains(k))
        .collect();
    if written.is_empty() {
        return;
    }
    let names: Vec<String> = written
        .iter()
        .take(NAMED_OBJECTS)
        .map(|k| k.to_string())
        .collect();
    let more = written.len().saturating_sub(NAMED_OBJECTS);
    let note = if more > 0 {
        format!(
            "applied {} object(s): {} and {more} more",
            written.len(),
            names.join(", ")
        )
    } else {
        format!("applied {} object(s): {}", written.len(), names.join(", "))
    };
    publish(ctx, app, EventType::Normal, reasons::APPLIED, &note).await;
}

/// A Warning with the source's reason and message.
pub(super) async fn source_failed(ctx: &Context, app: &Application, error: &SourceError) {
    publish(ctx, app, EventType::Warning, error.reason, &error.message).await;
}

/// `ResourcesDeleted`, when the resources finalizer deleted objects.
pub(super) async fn resources_deleted(ctx: &Context, app: &Application, report: &SyncReport) {
    if report.pruned.is_empty() {
        return;
    }
    let note = format!(
        "deleted with the Application: {}",
        crate::gitops::apply::prune::summarize(&report.pruned)
    );
    publish(
        ctx,
        app,
        EventType::Normal,
        reasons::RESOURCES_DELETED,
        &note,
    )
    .await;
}

async fn publish(ctx: &Context, app: &Application, type_: EventType, reason: &str, note: &str) {
    let reference: ObjectReference = app.object_ref(&());
    ctx.events
        .publish(
            &reference,
            Event {
                type_,
                reason: reason.into(),
                note: Some(note.chars().take(NOTE_CHARS).collect()),
                action: "Sync".into(),
                secondary: None,
            },
        )
        .await;
}
