//! The sync of one desired object, step by step: the resource that serves its kind (deferred
//! while no CRD does), the live object, the comparison (ownership, applied hash and fields, a
//! server-side dry-run), then the server-side apply. Only objects whose desired state differs
//! from live are written.

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use mooring_crds::application::HealthStatus;
use serde_json::Value;

use super::discovery::{DiscoveryError, Served};
use super::failure::{ObjectFailure, Step};
use super::object::{
    APPLIED_HASH_ANNOTATION, AppId, ObjectKey, TRACKING_ID_ANNOTATION, parse_tracking_id,
    split_api_version,
};
use super::prefetch::{Prefetched, resource_id};
use super::prepare::Desired;
use super::{Drift, Engine, Mode, SyncRequest, compare, health};
use crate::cluster::FIELD_MANAGER;
use crate::controllers::lock;

/// What happened to one desired object. The live object itself is not kept: its health is
/// judged as soon as the object is compared or applied, so a sync of many objects holds one
/// small [`HealthStatus`] per object instead of every live object until the sync ends.
pub(super) enum Outcome {
    InSync(HealthStatus),
    Written {
        health: HealthStatus,
        drift: Option<Drift>,
    },
    OutOfSync {
        /// `None` when the object does not exist.
        health: Option<HealthStatus>,
        drift: Option<Drift>,
    },
    Deferred(String),
    Failed(ObjectFailure),
}

/// A step's result, or in `Err` the object's outcome when it is settled before the last step
/// (in sync, deferred, failed).
type Settled<T> = Result<T, Outcome>;

impl Engine {
    /// Syncs one object of a step in `mode`; `was_applied` when it is in the inventory.
    pub(super) async fn sync_object(
        &self,
        request: &SyncRequest,
        mode: Mode,
        item: &Desired,
        prefetched: &Prefetched,
        crds_in_set: &BTreeMap<(String, String), String>,
        was_applied: bool,
    ) -> Outcome {
        let steps = async {
            let manifest: Value =
                serde_json::from_str(&item.manifest).map_err(|error| undecodable(item, &error))?;
            let served = self.served(item, &manifest, crds_in_set).await?;
            let api = self.api(&served, item.key.namespace.as_deref());
            let live = self.read_live(item, &api, &served, prefetched).await?;
            let drift = match &live {
                Some(live) => self.compare(request, item, &api, &manifest, live).await?,
                None => was_applied.then(|| Drift {
                    key: item.key.clone(),
                    managers: Vec::new(),
                    fields: Vec::new(),
                    deleted: true,
                }),
            };
            if mode == Mode::Compare {
                let health = live
                    .as_ref()
                    .map(|live| health::assess(&item.key.group, &item.key.kind, live));
                return Ok(Outcome::OutOfSync { health, drift });
            }
            // Not needed for the write: free it before the apply answer arrives.
            drop(live);
            Ok::<_, Outcome>(self.write(request, item, &api, &manifest, drift).await)
        };
        match steps.await {
            Ok(outcome) | Err(outcome) => outcome,
        }
    }

    /// The resource serving the object's kind; when discovery did not know it while preparing,
    /// its CRD may have been applied in the first step: look again.
    async fn served(
        &self,
        item: &Desired,
        manifest: &Value,
        crds_in_set: &BTreeMap<(String, String), String>,
    ) -> Settled<Served> {
        if let Some(served) = &item.served {
            return Ok(served.clone());
        }
        let (group, _) = split_api_version(
            manifest
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let gvk = GroupVersionKind::gvk(group, &item.version, &item.key.kind);
        let crd = crds_in_set.get(&(item.key.group.clone(), item.key.kind.clone()));
        match self.resolve_after_crd(&gvk, crd.is_some()).await {
            // Its scope is known only now: the project's rules are asked again.
            Ok(Some(served)) => match self.refused(&item.key, served.namespaced) {
                Some(message) => Err(Outcome::Failed(ObjectFailure {
                    reason: super::NOT_PERMITTED,
                    ..ObjectFailure::invalid(item.key.clone(), message)
                })),
                None => Ok(served),
            },
            Ok(None) => Err(Outcome::Deferred(not_served(item, crd))),
            Err(error) => Err(Outcome::Failed(ObjectFailure::discovery(
                item.key.clone(),
                Step::Discover,
                &error,
            ))),
        }
    }

    /// The live object, slimmed (see [`live_value`]), or `None` when it does not exist.
    async fn read_live(
        &self,
        item: &Desired,
        api: &Api<DynamicObject>,
        served: &Served,
        prefetched: &Prefetched,
    ) -> Settled<Option<Value>> {
        // Taken out of the prefetched set: each listed object is dropped as soon as it is
        // compared, so the step's memory shrinks as it goes.
        let listed = lock(prefetched)
            .get_mut(&(resource_id(&served.resource), item.key.namespace.clone()))
            .map(|listed| listed.remove(&item.key.name));
        if let Some(live) = listed {
            return Ok(live.map(|json| serde_json::from_str(&json).unwrap_or_default()));
        }
        match api.get_opt(&item.key.name).await {
            Ok(live) => Ok(live.map(live_value)),
            Err(error) => {
                let message = format!("failed to read {}", item.key);
                Err(self
                    .failed_unless_kind_gone(item, Step::Read, &error, message)
                    .await)
            }
        }
    }

    /// Whether the live object already matches Git (settled as in sync), else the drift to
    /// report when Git did not change: someone else changed the object.
    async fn compare(
        &self,
        request: &SyncRequest,
        item: &Desired,
        api: &Api<DynamicObject>,
        manifest: &Value,
        live: &Value,
    ) -> Settled<Option<Drift>> {
        self.ensure_not_foreign(request, item, live).await?;
        let live_hash = live
            .pointer(&format!(
                "/metadata/annotations/{}",
                APPLIED_HASH_ANNOTATION.replace('/', "~1")
            ))
            .and_then(Value::as_str);
        let unchanged_in_git = live_hash == Some(item.hash.as_str());
        let in_sync = || Outcome::InSync(health::assess(&item.key.group, &item.key.kind, live));
        if unchanged_in_git && compare::is_subset(manifest, live) {
            return Err(in_sync());
        }
        let resource_version = live
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let cache_key = (request.app.clone(), item.key.clone());
        let verified = lock(&self.verified)
            .get(&cache_key)
            .is_some_and(|(rv, hash)| rv == resource_version && *hash == item.hash);
        if verified {
            return Err(in_sync());
        }
        // The field check failed or Git changed: ask the API server what an apply would do.
        let would_be = dry_run(item, api, manifest).await?;
        if compare::dry_run_matches_live(&would_be, live) {
            lock(&self.verified)
                .insert(cache_key, (resource_version.to_string(), item.hash.clone()));
            return Err(in_sync());
        }
        Ok(unchanged_in_git.then(|| drift_of(item, manifest, &would_be, live)))
    }

    /// Fails the object when another Application's tracking id is on it and that Application
    /// has not let go of it.
    async fn ensure_not_foreign(
        &self,
        request: &SyncRequest,
        item: &Desired,
        live: &Value,
    ) -> Settled<()> {
        let Some(owner) = foreign_owner(live, &request.app) else {
            return Ok(());
        };
        if self.released_by(&owner, &item.key).await {
            return Ok(());
        }
        Err(Outcome::Failed(ObjectFailure {
            key: item.key.clone(),
            step: Step::CheckOwner,
            reason: "SharedResource",
            // Only a change in Git (of one of the two Applications) resolves it.
            retryable: false,
            message: format!(
                "{} is already managed by Application {owner}; remove it from one of them",
                item.key
            ),
        }))
    }

    /// The server-side apply; the new resourceVersion is remembered as verified.
    async fn write(
        &self,
        request: &SyncRequest,
        item: &Desired,
        api: &Api<DynamicObject>,
        manifest: &Value,
        drift: Option<Drift>,
    ) -> Outcome {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch(&item.key.name, &params, &Patch::Apply(manifest))
            .await
        {
            Ok(applied) => {
                let applied = serde_json::to_value(&applied).unwrap_or_default();
                let resource_version = applied
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                lock(&self.verified).insert(
                    (request.app.clone(), item.key.clone()),
                    (resource_version.to_string(), item.hash.clone()),
                );
                Outcome::Written {
                    health: health::assess(&item.key.group, &item.key.kind, &applied),
                    drift,
                }
            }
            Err(error) => {
                let message = format!("failed to apply {}", item.key);
                self.failed_unless_kind_gone(item, Step::Apply, &error, message)
                    .await
            }
        }
    }

    /// Looks `gvk` up; when its CRD is in the set (and so was just Established), gives the
    /// API server's discovery a few seconds to catch up before calling the kind missing.
    async fn resolve_after_crd(
        &self,
        gvk: &GroupVersionKind,
        crd_in_set: bool,
    ) -> Result<Option<Served>, DiscoveryError> {
        let attempts = if crd_in_set { 20 } else { 1 };
        for attempt in 1..=attempts {
            if let Some(served) = self.discovery.resolve(gvk).await? {
                return Ok(Some(served));
            }
            if attempt < attempts {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
        Ok(None)
    }

    /// Whether Application `owner` has let go of `key`, so another Application may take it over
    /// in place (no delete and re-create): `owner` no longer exists, or its inventory lists the
    /// object as left Git (`requiresPruning`, kept because its prune is off or refused). Once
    /// taken over, the object's tracking id names the new owner and `owner`'s prune skips it.
    async fn released_by(&self, owner: &AppId, key: &ObjectKey) -> bool {
        let api: Api<mooring_crds::Application> =
            Api::namespaced(self.agent_client.clone(), &owner.namespace);
        match api.get_opt(&owner.name).await {
            Ok(None) => true,
            Ok(Some(app)) => app.status.is_some_and(|status| {
                status.resources.iter().any(|entry| {
                    ObjectKey::of_status(entry) == *key && entry.requires_pruning == Some(true)
                })
            }),
            // Unknown: keep the conflict; the next sync asks again.
            Err(_) => false,
        }
    }

    /// The outcome of a failed read or apply: deferred when the kind went away with its CRD,
    /// failed otherwise.
    async fn failed_unless_kind_gone(
        &self,
        item: &Desired,
        step: Step,
        error: &kube::Error,
        message: String,
    ) -> Outcome {
        match self.kind_gone(item, error).await {
            Some(deferred) => deferred,
            None => Outcome::Failed(ObjectFailure::api(item.key.clone(), step, error, &message)),
        }
    }

    /// After a 404 for a kind discovery had cached: when its CRD was deleted, forget the kind
    /// and defer the object instead of failing it on every sync.
    async fn kind_gone(&self, item: &Desired, error: &kube::Error) -> Option<Outcome> {
        if !matches!(error, kube::Error::Api(status) if status.code == 404) {
            return None;
        }
        let gvk = GroupVersionKind::gvk(&item.key.group, &item.version, &item.key.kind);
        self.discovery.forget(&gvk);
        match self.discovery.resolve(&gvk).await {
            Ok(None) => Some(Outcome::Deferred(format!(
                "no CustomResourceDefinition serves {}/{} {} any more",
                item.key.group, item.version, item.key.kind
            ))),
            _ => None,
        }
    }
}

/// The manifest mooring applies could not be parsed again from its compact form.
fn undecodable(item: &Desired, error: &serde_json::Error) -> Outcome {
    Outcome::Failed(ObjectFailure::invalid(
        item.key.clone(),
        format!("failed to decode the manifest of {}: {error}", item.key),
    ))
}

/// What the API server would make of the manifest (a server-side apply dry-run).
async fn dry_run(item: &Desired, api: &Api<DynamicObject>, manifest: &Value) -> Settled<Value> {
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    match api
        .patch(&item.key.name, &params, &Patch::Apply(manifest))
        .await
    {
        Ok(result) => Ok(serde_json::to_value(&result).unwrap_or_default()),
        Err(error) => Err(Outcome::Failed(ObjectFailure::api(
            item.key.clone(),
            Step::DryRun,
            &error,
            &format!("failed to apply {} (dry run)", item.key),
        ))),
    }
}

/// Who changed what: the drifted paths and the managers that own them now. Compared on the
/// dry-run's (normalised) values, so `0.5` vs `500m` is no drift.
fn drift_of(item: &Desired, manifest: &Value, would_be: &Value, live: &Value) -> Drift {
    let normalised = compare::project(manifest, would_be);
    let fields = compare::differences(&normalised, live, 5);
    let mut managers: Vec<String> = Vec::new();
    for field in &fields {
        for manager in compare::managers_of(live, field) {
            if !managers.contains(&manager) {
                managers.push(manager);
            }
        }
    }
    if managers.is_empty() {
        managers = compare::other_managers(live);
    }
    Drift {
        key: item.key.clone(),
        managers,
        fields,
        deleted: false,
    }
}

/// Why an object whose kind is not served is deferred, naming the CRD when it is in the set.
fn not_served(item: &Desired, crd: Option<&String>) -> String {
    match crd {
        Some(name) => format!(
            "waiting for CustomResourceDefinition {name} to serve {}/{} {}",
            item.key.group, item.version, item.key.kind
        ),
        None => format!(
            "no CustomResourceDefinition serves {}/{} {} (neither in the cluster nor in the set)",
            item.key.group, item.version, item.key.kind
        ),
    }
}

/// A live object as the comparisons read it, without mooring's own `managedFields` entry.
///
/// That entry is most of a live object's size (a tree of every field mooring applies; as a
/// `Value` of small maps it is tens of kilobytes) and nothing reads it: the comparisons ignore
/// `managedFields`, and drift reports only name the *other* managers ([`compare::managers_of`],
/// [`compare::other_managers`]), whose entries are kept.
fn live_value(mut object: DynamicObject) -> Value {
    slim(&mut object);
    serde_json::to_value(&object).unwrap_or_default()
}

/// Drops mooring's own `managedFields` entry from a live object: see [`live_value`].
pub(super) fn slim(object: &mut DynamicObject) {
    if let Some(entries) = object.metadata.managed_fields.as_mut() {
        entries.retain(|entry| entry.manager.as_deref() != Some(FIELD_MANAGER));
    }
}

/// The Application named by `live`'s tracking id, when it is another one than `app`.
fn foreign_owner(live: &Value, app: &AppId) -> Option<AppId> {
    let id = live
        .pointer(&format!(
            "/metadata/annotations/{}",
            TRACKING_ID_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)?;
    let (owner, _) = parse_tracking_id(id)?;
    (owner != *app).then_some(owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_tracked_by_another_application_is_foreign() {
        let app = AppId {
            namespace: "argocd".into(),
            name: "web".into(),
        };
        let other = AppId {
            namespace: "argocd".into(),
            name: "api".into(),
        };
        let key = ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: Some("ns".into()),
            name: "c".into(),
        };
        let live = |id: String| serde_json::json!({"metadata": {"annotations": {TRACKING_ID_ANNOTATION: id}}});
        assert_eq!(
            foreign_owner(&live(key.tracking_id(&other)), &app),
            Some(other)
        );
        assert_eq!(foreign_owner(&live(key.tracking_id(&app)), &app), None);
        assert_eq!(
            foreign_owner(&serde_json::json!({"metadata": {}}), &app),
            None
        );
    }

    #[test]
    fn a_live_object_loses_only_moorings_own_managed_fields_entry() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "ns", "resourceVersion": "7",
                "annotations": {TRACKING_ID_ANNOTATION: "argocd/web:apps/Deployment:ns/web"},
                "managedFields": [
                    {"manager": FIELD_MANAGER, "operation": "Apply", "time": "2026-01-01T00:00:00Z",
                     "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}}},
                    {"manager": "kubectl-edit", "operation": "Update", "time": "2026-01-02T00:00:00Z",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
                ]
            },
            "spec": {"replicas": 3}
        }))
        .unwrap();
        let live = live_value(object);
        let managers: Vec<&str> = live["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|entry| entry["manager"].as_str())
            .collect();
        assert_eq!(managers, ["kubectl-edit"]);
        // What the comparisons and the drift report read is still there.
        assert_eq!(live["spec"]["replicas"], 3);
        assert_eq!(live["metadata"]["resourceVersion"], "7");
        assert_eq!(live["kind"], "Deployment");
        assert_eq!(
            compare::managers_of(&live, "spec.replicas"),
            ["kubectl-edit"]
        );
        assert_eq!(compare::other_managers(&live), ["kubectl-edit"]);
        let other = AppId {
            namespace: "argocd".into(),
            name: "api".into(),
        };
        assert!(
            foreign_owner(&live, &other).is_some(),
            "the tracking id is kept"
        );
    }
}
