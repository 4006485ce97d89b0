//! The end of a sync: each object's outcome filed in the report, the new inventory with each
//! object's sync status and health, the Application's sync state and its rolled-up health.

use std::collections::BTreeSet;

use kube::api::{ApiResource, GroupVersionKind};
use mooring_crds::application::{HealthState, HealthStatus, ResourceStatus, SyncState};

use super::object::ObjectKey;
use super::prepare::Desired;
use super::sync_object::Outcome;
use super::{Engine, SyncReport, health};

/// What the outcomes add up to, beside the inventory entries they make.
pub(super) struct Tally {
    /// The health of every desired object, missing ones included.
    states: Vec<HealthState>,
    /// Whether a desired object is out of sync.
    out_of_sync: bool,
}

impl SyncReport {
    /// Adds `resource` to the kinds the drift watches follow, once.
    pub(super) fn remember_kind(&mut self, resource: &ApiResource) {
        if !self.kinds.iter().any(|k| {
            k.group == resource.group && k.version == resource.version && k.kind == resource.kind
        }) {
            self.kinds.push(resource.clone());
        }
    }

    /// Files one outcome under written, drift or deferred; returns the object's sync state and
    /// its health (`None` while it does not exist).
    fn file(&mut self, key: &ObjectKey, outcome: Outcome) -> (SyncState, Option<HealthStatus>) {
        match outcome {
            Outcome::InSync(health) => (SyncState::Synced, Some(health)),
            Outcome::Written { health, drift } => {
                self.written.push(key.clone());
                self.drift.extend(drift);
                (SyncState::Synced, Some(health))
            }
            Outcome::OutOfSync { health, drift } => {
                self.drift.extend(drift);
                (SyncState::OutOfSync, health)
            }
            Outcome::Deferred(reason) => {
                self.deferred.push((key.clone(), reason));
                (SyncState::OutOfSync, None)
            }
            Outcome::Failed(_) => (SyncState::OutOfSync, None),
        }
    }
}

impl Engine {
    /// Files every outcome in `report` and adds the inventory entry of each object mooring
    /// owns.
    pub(super) async fn record_outcomes(
        &self,
        outcomes: Vec<(Desired, Outcome)>,
        in_inventory: &BTreeSet<ObjectKey>,
        report: &mut SyncReport,
    ) -> Tally {
        let mut tally = Tally {
            states: Vec::new(),
            out_of_sync: false,
        };
        for (item, outcome) in outcomes {
            let (status, live) = report.file(&item.key, outcome);
            tally.out_of_sync |= status == SyncState::OutOfSync;
            if item.served.is_none() && live.is_some() {
                // A custom resource whose CRD arrived in this sync: now cached.
                let gvk = GroupVersionKind::gvk(&item.key.group, &item.version, &item.key.kind);
                if let Ok(Some(served)) = self.discovery.resolve(&gvk).await {
                    report.remember_kind(&served.resource);
                }
            }
            let owned = live.is_some() || in_inventory.contains(&item.key);
            let health = live.unwrap_or_else(health::missing);
            tally.states.push(health.status);
            // An object never applied (deferred, failed before its first write) is not owned
            // yet: it enters the inventory only once it exists with our tracking id.
            if owned {
                report.resources.push(ResourceStatus {
                    group: item.key.group.clone(),
                    version: item.version.clone(),
                    kind: item.key.kind.clone(),
                    namespace: item.key.namespace.clone(),
                    name: item.key.name.clone(),
                    status: Some(status),
                    health: Some(health),
                    requires_pruning: None,
                });
            }
        }
        tally
    }
}

/// Completes `report`: the inventory entries kept after they left Git, the inventory sorted,
/// the Application's sync state and its rolled-up health.
pub(super) fn conclude(report: &mut SyncReport, still_owned: Vec<ResourceStatus>, tally: Tally) {
    let out_of_sync = tally.out_of_sync || !still_owned.is_empty() || !report.failures.is_empty();
    report.resources.extend(still_owned);
    report.resources.sort_by(|a, b| {
        (&a.group, &a.kind, &a.namespace, &a.name).cmp(&(&b.group, &b.kind, &b.namespace, &b.name))
    });
    report.sync = if out_of_sync {
        SyncState::OutOfSync
    } else {
        SyncState::Synced
    };
    report.health = roll_up_health(&report.resources, &tally.states);
}

/// The worst of `states`, with the messages of up to three inventory entries in that state.
fn roll_up_health(resources: &[ResourceStatus], states: &[HealthState]) -> HealthStatus {
    let worst = health::roll_up(states);
    let unhealthy: Vec<String> = resources
        .iter()
        .filter(|r| {
            r.health
                .as_ref()
                .is_some_and(|h| h.status == worst && worst != HealthState::Healthy)
        })
        .take(3)
        .map(|r| {
            format!(
                "{} {}: {}",
                r.kind,
                r.name,
                r.health
                    .as_ref()
                    .and_then(|h| h.message.clone())
                    .unwrap_or_default()
            )
        })
        .collect();
    HealthStatus {
        status: worst,
        message: (!unhealthy.is_empty()).then(|| unhealthy.join("; ")),
    }
}
