//! The sync engine: takes the desired objects of one Application (already rendered) and makes
//! the cluster match them — ordered server-side apply, guarded prune, health and sync status.
//!
//! Flow of [`Engine::sync`]: validate and key every object → apply step by step (CRDs and
//! Namespaces first and wait for CRDs to be Established, then one step per sync wave in kind
//! order) → prune what left Git, guarded → assess health → the new inventory. Only objects whose
//! desired state differs from live are written: a digest of the applied manifest sits in the
//! `mooring.dev/applied-hash` annotation, a field-level check confirms live still holds every
//! field mooring sets, and a server-side dry-run settles the rest (API-server normalisation is
//! not drift). A custom resource whose CRD is neither served nor in the set is deferred, not
//! failed, and the rest of the set still applies.

pub mod compare;
pub mod discovery;
pub mod failure;
pub mod health;
pub mod object;
pub mod order;
pub mod prune;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PropagationPolicy,
};
use kube::runtime::wait::{await_condition, conditions};
use mooring_crds::application::{HealthState, HealthStatus, ResourceStatus, SyncState};
use serde_json::Value;

use self::discovery::{Discovery, DiscoveryError, Served};
pub use self::failure::{ObjectFailure, Step};
use self::object::{
    APPLIED_HASH_ANNOTATION, AppId, ObjectKey, TRACKING_ID_ANNOTATION, has_option,
    parse_tracking_id, split_api_version,
};
use self::prune::{Keep, PruneSettings, Refusal};
use crate::cluster::FIELD_MANAGER;
use crate::controllers::lock;

/// How many objects of one step are compared or applied at once.
const CONCURRENCY: usize = 16;
/// From how many objects of one kind in one namespace a step LISTs them instead of GETting each.
const LIST_THRESHOLD: usize = 4;

/// Live objects listed ahead of a step: (resource, namespace) → name → object as compact JSON
/// (a fraction of the size of a [`Value`], and every object of the step waits here). Each
/// object is taken out, and parsed, when its desired counterpart is compared.
type Prefetched = Mutex<HashMap<(String, Option<String>), HashMap<String, String>>>;
/// Objects per LIST page when prefetching: bounds what one response holds in memory.
const LIST_PAGE: u32 = 100;

/// `group/version/plural`: one key per listable resource.
fn resource_id(resource: &ApiResource) -> String {
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

/// Whether a sync writes or only compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Apply and prune (automated sync, or self-heal).
    Apply,
    /// Compare only: report OutOfSync, write nothing (no `automated`, or drift without selfHeal).
    Compare,
}

/// One sync of one Application.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    /// The Application.
    pub app: AppId,
    /// The rendered objects.
    pub objects: Vec<DynamicObject>,
    /// `spec.destination.namespace`: the namespace of namespaced objects that set none.
    pub destination_namespace: Option<String>,
    /// `spec.syncPolicy.syncOptions` (`CreateNamespace=true`, `PruneLast=true`,
    /// `PrunePropagationPolicy=background`, …).
    pub sync_options: Vec<String>,
    /// The inventory from the Application's status: what mooring applied before.
    pub inventory: Vec<ResourceStatus>,
    /// How to prune.
    pub prune: PruneSettings,
    /// Write, or only compare.
    pub mode: Mode,
}

/// What one sync found and did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// The new inventory, with each object's sync status and health.
    pub resources: Vec<ResourceStatus>,
    /// Objects written (created or changed).
    pub written: Vec<ObjectKey>,
    /// Objects changed or deleted in the cluster behind mooring's back.
    pub drift: Vec<Drift>,
    /// Objects not applied because their kind is not served, with the reason (naming the CRD).
    pub deferred: Vec<(ObjectKey, String)>,
    /// Objects deleted by prune.
    pub pruned: Vec<ObjectKey>,
    /// Objects that left Git but were kept, and why.
    pub kept: Vec<(ObjectKey, Keep)>,
    /// Why nothing was pruned, when a whole-prune guard refused.
    pub prune_refused: Option<(&'static str, String)>,
    /// Objects that could not be applied or pruned: the step, the reason and the message.
    pub failures: Vec<ObjectFailure>,
    /// The Application's sync state.
    pub sync: SyncState,
    /// The Application's rolled-up health.
    pub health: HealthStatus,
    /// The kinds of the objects in the inventory, for the drift watches.
    pub kinds: Vec<ApiResource>,
    /// Why the sync stopped before a later sync wave: an object of an earlier wave is not
    /// healthy yet (as Argo CD, a wave starts when the previous one is healthy). Nothing is
    /// pruned; the caller looks again shortly.
    pub waiting: Option<String>,
}

/// A managed object that someone else changed or deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// The object.
    pub key: ObjectKey,
    /// The field managers other than mooring that changed it (empty when deleted).
    pub managers: Vec<String>,
    /// The fields that differ from Git (`spec.replicas`), at most five.
    pub fields: Vec<String>,
    /// It was deleted.
    pub deleted: bool,
}

impl Drift {
    /// A sentence for the event: what changed, and who changed it.
    pub fn describe(&self) -> String {
        if self.deleted {
            return format!("{} was deleted outside mooring", self.key);
        }
        let mut text = format!("{} was changed outside mooring", self.key);
        if !self.fields.is_empty() {
            text.push_str(&format!(" ({})", self.fields.join(", ")));
        }
        if !self.managers.is_empty() {
            text.push_str(&format!(" by field manager {}", self.managers.join(", ")));
        }
        text
    }
}

/// Why a whole sync could not run (per-object problems are in [`SyncReport::failures`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The destination namespace could not be created.
    #[error("failed to create namespace {namespace}")]
    CreateNamespace {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// The sync engine, shared by every Application: one discovery cache, one client.
pub struct Engine {
    client: kube::Client,
    discovery: Discovery,
    /// (app, object) → (resourceVersion, applied hash) that a dry-run proved in sync: the next
    /// sync of an unchanged object needs neither a dry-run nor a write.
    verified: Mutex<HashMap<(AppId, ObjectKey), (String, String)>>,
    crd_timeout: Duration,
}

/// A desired object, validated and keyed.
struct Desired {
    key: ObjectKey,
    version: String,
    served: Option<Served>,
    /// What mooring applies, as compact JSON: a fraction of the size of the same manifest as a
    /// [`Value`] (a tree of small maps), and every object of a step is held until the step
    /// ends. Parsed again while the object is compared and applied.
    manifest: String,
    hash: String,
    wave: i64,
}

/// What happened to one desired object. The live object itself is not kept: its health is
/// judged as soon as the object is compared or applied, so a sync of many objects holds one
/// small [`HealthStatus`] per object instead of every live object until the sync ends.
enum Outcome {
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

impl Engine {
    /// An engine with an empty discovery cache.
    pub fn new(client: kube::Client) -> Engine {
        Engine {
            discovery: Discovery::new(client.clone()),
            client,
            verified: Mutex::default(),
            crd_timeout: Duration::from_secs(60),
        }
    }

    /// The discovery cache.
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Syncs one Application: see the module documentation.
    pub async fn sync(&self, request: &SyncRequest) -> Result<SyncReport, Error> {
        self.sync_objects(request, &request.objects).await
    }

    /// [`Engine::sync`], taking the rendered objects out of `request`: each is dropped as soon
    /// as it is turned into the manifest mooring applies, so a large render is not held twice
    /// during the sync.
    pub async fn sync_owned(&self, mut request: SyncRequest) -> Result<SyncReport, Error> {
        let objects = std::mem::take(&mut request.objects);
        self.sync_objects(&request, objects).await
    }

    /// The sync of `objects` (not `request.objects`) as `request` says.
    async fn sync_objects<O, I>(
        &self,
        request: &SyncRequest,
        objects: I,
    ) -> Result<SyncReport, Error>
    where
        O: std::borrow::Borrow<DynamicObject> + Send,
        I: IntoIterator<Item = O>,
        I::IntoIter: Send,
    {
        let mut report = SyncReport::default();
        if request.mode == Mode::Apply
            && has_option(&request.sync_options, "CreateNamespace", "true")
            && let Some(namespace) = &request.destination_namespace
        {
            self.ensure_namespace(namespace).await?;
        }
        let in_inventory: BTreeSet<ObjectKey> =
            request.inventory.iter().map(ObjectKey::of_status).collect();
        // CRDs in the desired set: (group, kind) → CRD name, so a custom resource waiting for
        // one can name it.
        let mut crds_in_set = BTreeMap::new();

        // Validate and key every object; discovery tells the scope.
        let mut desired: Vec<Desired> = Vec::new();
        let mut seen = BTreeSet::new();
        for object in objects {
            let object = object.borrow();
            crds_in_set.extend(crd_in_set(object));
            match self
                .prepare(
                    &request.app,
                    object,
                    request.destination_namespace.as_deref(),
                )
                .await
            {
                Ok(item) => {
                    if seen.insert(item.key.clone()) {
                        desired.push(item);
                    } else {
                        report.failures.push(ObjectFailure {
                            reason: "DuplicateObject",
                            ..ObjectFailure::invalid(
                                item.key.clone(),
                                "the object appears twice in the render",
                            )
                        });
                    }
                }
                Err(failure) => report.failures.push(failure),
            }
        }
        let desired_keys: BTreeSet<ObjectKey> = seen;

        let mut keyed: Vec<_> = desired
            .into_iter()
            .map(|item| (order::order_key(&item.key, item.wave), item))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut outcomes: Vec<(Desired, Outcome)> = Vec::new();
        let mut failed_step = !report.failures.is_empty();
        let steps = order::steps(keyed);
        let last_step = steps.len().saturating_sub(1);
        for (index, step) in steps.into_iter().enumerate() {
            // After a failure or a wave that is not healthy yet, later steps are only compared:
            // they may depend on what is missing, but their status is still reported.
            let mode = if failed_step || report.waiting.is_some() {
                Mode::Compare
            } else {
                request.mode
            };
            for item in &step {
                if let Some(served) = &item.served {
                    remember_kind(&mut report.kinds, &served.resource);
                }
            }
            let prefetched = self.prefetch(&step).await;
            let (crds, inventory_keys, prefetched) = (&crds_in_set, &in_inventory, &prefetched);
            let results: Vec<(Desired, Outcome)> = futures::stream::iter(step)
                .map(|item| async move {
                    let was_applied = inventory_keys.contains(&item.key);
                    let outcome = self
                        .sync_object(request, mode, &item, prefetched, crds, was_applied)
                        .await;
                    (item, outcome)
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            for (_, outcome) in &results {
                if let Outcome::Failed(failure) = outcome {
                    report.failures.push(failure.clone());
                    failed_step = true;
                }
            }
            if mode == Mode::Apply && !failed_step {
                let mut results = results;
                for (item, outcome) in &mut results {
                    if item.key.group != "apiextensions.k8s.io"
                        || item.key.kind != "CustomResourceDefinition"
                    {
                        continue;
                    }
                    match self.wait_established(&item.key).await {
                        // Its health is judged on the Established object, not the apply answer.
                        Ok(established) => match outcome {
                            Outcome::InSync(health) | Outcome::Written { health, .. } => {
                                *health =
                                    health::assess(&item.key.group, &item.key.kind, &established);
                            }
                            _ => {}
                        },
                        Err(failure) => {
                            report.failures.push(failure);
                            failed_step = true;
                        }
                    }
                }
                if index < last_step && !failed_step {
                    report.waiting = wave_not_ready(&results);
                }
                outcomes.extend(results);
                continue;
            }
            outcomes.extend(results);
        }

        // Prune: only after every object applied (deferred ones are not failures).
        let mut still_owned: Vec<ResourceStatus> = Vec::new();
        let prunable =
            request.mode == Mode::Apply && report.failures.is_empty() && report.waiting.is_none();
        let plan = prune::plan(&in_inventory, &desired_keys, &request.prune);
        if !plan.candidates.is_empty() {
            let refusal = if prunable {
                plan.refused.clone()
            } else if request.mode == Mode::Compare {
                Some(Refusal::Disabled)
            } else {
                None
            };
            let entries: HashMap<ObjectKey, &ResourceStatus> = request
                .inventory
                .iter()
                .map(|entry| (ObjectKey::of_status(entry), entry))
                .collect();
            match (&refusal, prunable) {
                (Some(refusal), _) => {
                    report.prune_refused =
                        Some((refusal.reason(), refusal.message(&plan.candidates)));
                    for key in &plan.candidates {
                        if let Some(entry) = entries.get(key) {
                            still_owned.push(requires_pruning(entry));
                        }
                    }
                }
                (None, false) => {
                    // A failed apply: keep everything, decide next time.
                    for key in &plan.candidates {
                        if let Some(entry) = entries.get(key) {
                            still_owned.push(requires_pruning(entry));
                        }
                    }
                }
                (None, true) => {
                    let kept = self
                        .prune(request, &plan.candidates, &entries, &mut report)
                        .await;
                    still_owned.extend(kept);
                }
            }
        }

        // Inventory, sync status and health.
        let mut states = Vec::new();
        let mut out_of_sync = !still_owned.is_empty();
        for (item, outcome) in outcomes {
            let (status, live) = match outcome {
                Outcome::InSync(health) => (SyncState::Synced, Some(health)),
                Outcome::Written { health, drift } => {
                    report.written.push(item.key.clone());
                    report.drift.extend(drift);
                    (SyncState::Synced, Some(health))
                }
                Outcome::OutOfSync { health, drift } => {
                    report.drift.extend(drift);
                    (SyncState::OutOfSync, health)
                }
                Outcome::Deferred(reason) => {
                    report.deferred.push((item.key.clone(), reason));
                    (SyncState::OutOfSync, None)
                }
                Outcome::Failed(_) => (SyncState::OutOfSync, None),
            };
            out_of_sync |= status == SyncState::OutOfSync;
            if item.served.is_none() && live.is_some() {
                // A custom resource whose CRD arrived in this sync: now cached.
                let gvk = GroupVersionKind::gvk(&item.key.group, &item.version, &item.key.kind);
                if let Ok(Some(served)) = self.discovery.resolve(&gvk).await {
                    remember_kind(&mut report.kinds, &served.resource);
                }
            }
            let owned = live.is_some() || in_inventory.contains(&item.key);
            let health = live.unwrap_or_else(health::missing);
            states.push(health.status);
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
        report.resources.extend(still_owned);
        report.resources.sort_by(|a, b| {
            (&a.group, &a.kind, &a.namespace, &a.name).cmp(&(
                &b.group,
                &b.kind,
                &b.namespace,
                &b.name,
            ))
        });
        out_of_sync |= !report.failures.is_empty();
        report.sync = if out_of_sync {
            SyncState::OutOfSync
        } else {
            SyncState::Synced
        };
        let worst = health::roll_up(&states);
        let unhealthy: Vec<String> = report
            .resources
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
        report.health = HealthStatus {
            status: worst,
            message: (!unhealthy.is_empty()).then(|| unhealthy.join("; ")),
        };
        Ok(report)
    }

    /// Keys an object, resolves its kind and builds the manifest mooring applies.
    async fn prepare(
        &self,
        app: &AppId,
        object: &DynamicObject,
        destination_namespace: Option<&str>,
    ) -> Result<Desired, ObjectFailure> {
        let mut key = ObjectKey::of_object(object).ok_or_else(|| {
            ObjectFailure::invalid(
                ObjectKey {
                    group: String::new(),
                    kind: object
                        .types
                        .as_ref()
                        .map(|t| t.kind.clone())
                        .unwrap_or_default(),
                    namespace: object.metadata.namespace.clone(),
                    name: object.metadata.name.clone().unwrap_or_default(),
                },
                "the object has no apiVersion, kind or metadata.name",
            )
        })?;
        let api_version = object
            .types
            .as_ref()
            .map(|t| t.api_version.clone())
            .unwrap_or_default();
        let (group, version) = split_api_version(&api_version);
        let gvk = GroupVersionKind::gvk(group, version, &key.kind);
        let served = self
            .discovery
            .resolve(&gvk)
            .await
            .map_err(|error: DiscoveryError| {
                ObjectFailure::discovery(key.clone(), Step::Discover, &error)
            })?;
        match &served {
            Some(served) if !served.namespaced => key.namespace = None,
            // Unknown kinds (deferred) are keyed as namespaced when they name a namespace or
            // one is given, as their CRD most likely says.
            _ => {
                if key.namespace.is_none() {
                    key.namespace = destination_namespace.map(str::to_string);
                }
                if served.is_some() && key.namespace.is_none() {
                    return Err(ObjectFailure {
                        reason: "MissingNamespace",
                        ..ObjectFailure::invalid(
                            key,
                            "metadata.namespace is not set and the Application has no destination namespace",
                        )
                    });
                }
            }
        }
        let mut manifest = serde_json::to_value(object).map_err(|error| {
            ObjectFailure::invalid(key.clone(), format!("failed to encode the object: {error}"))
        })?;
        let tracking_id = key.tracking_id(app);
        if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
            // Server-owned fields from a copied live object would make the apply fail or lie.
            for field in [
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "managedFields",
                "generation",
                "selfLink",
            ] {
                metadata.remove(field);
            }
            match &key.namespace {
                Some(namespace) => {
                    metadata.insert("namespace".into(), Value::String(namespace.clone()));
                }
                None => {
                    metadata.remove("namespace");
                }
            }
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if !annotations.is_object() {
                *annotations = Value::Object(Default::default());
            }
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(TRACKING_ID_ANNOTATION.into(), Value::String(tracking_id));
                annotations.remove(APPLIED_HASH_ANNOTATION);
            }
        }
        if let Some(map) = manifest.as_object_mut() {
            map.remove("status");
        }
        let hash = compare::manifest_hash(&manifest);
        if let Some(annotations) = manifest
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.insert(APPLIED_HASH_ANNOTATION.into(), Value::String(hash.clone()));
        }
        let manifest = serde_json::to_string(&manifest).map_err(|error| {
            ObjectFailure::invalid(key.clone(), format!("failed to encode the object: {error}"))
        })?;
        Ok(Desired {
            wave: order::sync_wave(&object.metadata),
            key,
            version: version.to_string(),
            served,
            manifest,
            hash,
        })
    }

    fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(namespace) if served.namespaced => {
                Api::namespaced_with(self.client.clone(), namespace, &served.resource)
            }
            _ => Api::all_with(self.client.clone(), &served.resource),
        }
    }

    async fn sync_object(
        &self,
        request: &SyncRequest,
        mode: Mode,
        item: &Desired,
        prefetched: &Prefetched,
        crds_in_set: &BTreeMap<(String, String), String>,
        was_applied: bool,
    ) -> Outcome {
        let manifest: Value = match serde_json::from_str(&item.manifest) {
            Ok(manifest) => manifest,
            Err(error) => {
                return Outcome::Failed(ObjectFailure::invalid(
                    item.key.clone(),
                    format!("failed to decode the manifest of {}: {error}", item.key),
                ));
            }
        };
        let served = match &item.served {
            Some(served) => served.clone(),
            None => {
                // Its CRD may have been applied in the first step: look again.
                let (group, _) = split_api_version(
                    manifest
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                let gvk = GroupVersionKind::gvk(group, &item.version, &item.key.kind);
                let crd = crds_in_set.get(&(item.key.group.clone(), item.key.kind.clone()));
                match self.resolve_after_crd(&gvk, crd.is_some()).await {
                    Ok(Some(served)) => served,
                    Ok(None) => {
                        let reason = match crd {
                            Some(name) => format!(
                                "waiting for CustomResourceDefinition {name} to serve {}/{} {}",
                                item.key.group, item.version, item.key.kind
                            ),
                            None => format!(
                                "no CustomResourceDefinition serves {}/{} {} (neither in the cluster nor in the set)",
                                item.key.group, item.version, item.key.kind
                            ),
                        };
                        return Outcome::Deferred(reason);
                    }
                    Err(error) => {
                        return Outcome::Failed(ObjectFailure::discovery(
                            item.key.clone(),
                            Step::Discover,
                            &error,
                        ));
                    }
                }
            }
        };
        let api = self.api(&served, item.key.namespace.as_deref());
        // Taken out of the prefetched set: each listed object is dropped as soon as it is
        // compared, so the step's memory shrinks as it goes.
        let listed = lock(prefetched)
            .get_mut(&(resource_id(&served.resource), item.key.namespace.clone()))
            .map(|listed| listed.remove(&item.key.name));
        let live = match listed {
            Some(live) => live.map(|json| serde_json::from_str(&json).unwrap_or_default()),
            None => match api.get_opt(&item.key.name).await {
                Ok(live) => live.map(live_value),
                Err(error) => {
                    if let Some(deferred) = self.kind_gone(item, &error).await {
                        return deferred;
                    }
                    return Outcome::Failed(ObjectFailure::api(
                        item.key.clone(),
                        Step::Read,
                        &error,
                        format!("failed to read {}: {error}", item.key),
                    ));
                }
            },
        };
        let cache_key = (request.app.clone(), item.key.clone());
        let mut drift = None;
        if let Some(live) = &live {
            if let Some(owner) = foreign_owner(live, &request.app)
                && !self.released_by(&owner, &item.key).await
            {
                return Outcome::Failed(ObjectFailure {
                    key: item.key.clone(),
                    step: Step::CheckOwner,
                    reason: "SharedResource",
                    // Only a change in Git (of one of the two Applications) resolves it.
                    retryable: false,
                    message: format!(
                        "{} is already managed by Application {owner}; remove it from one of them",
                        item.key
                    ),
                });
            }
            let live_hash = live
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    APPLIED_HASH_ANNOTATION.replace('/', "~1")
                ))
                .and_then(Value::as_str);
            let unchanged_in_git = live_hash == Some(item.hash.as_str());
            let in_sync = || Outcome::InSync(health::assess(&item.key.group, &item.key.kind, live));
            if unchanged_in_git && compare::is_subset(&manifest, live) {
                return in_sync();
            }
            let resource_version = live
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let verified = lock(&self.verified)
                .get(&cache_key)
                .is_some_and(|(rv, hash)| rv == resource_version && *hash == item.hash);
            if verified {
                return in_sync();
            }
            // The field check failed or Git changed: ask the API server what an apply would do.
            let dry_run = PatchParams::apply(FIELD_MANAGER).force().dry_run();
            let would_be = match api
                .patch(&item.key.name, &dry_run, &Patch::Apply(&manifest))
                .await
            {
                Ok(result) => {
                    let result = serde_json::to_value(&result).unwrap_or_default();
                    if compare::dry_run_matches_live(&result, live) {
                        lock(&self.verified).insert(
                            cache_key.clone(),
                            (resource_version.to_string(), item.hash.clone()),
                        );
                        return in_sync();
                    }
                    result
                }
                Err(error) => {
                    return Outcome::Failed(ObjectFailure::api(
                        item.key.clone(),
                        Step::DryRun,
                        &error,
                        format!("failed to apply {} (dry run): {error}", item.key),
                    ));
                }
            };
            if unchanged_in_git {
                // Who changed what: the drifted paths and the managers that own them now.
                // Compared on the dry-run's (normalised) values, so `0.5` vs `500m` is no drift.
                let normalised = compare::project(&manifest, &would_be);
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
                drift = Some(Drift {
                    key: item.key.clone(),
                    managers,
                    fields,
                    deleted: false,
                });
            }
        } else if was_applied {
            drift = Some(Drift {
                key: item.key.clone(),
                managers: Vec::new(),
                fields: Vec::new(),
                deleted: true,
            });
        }
        if mode == Mode::Compare {
            let health = live
                .as_ref()
                .map(|live| health::assess(&item.key.group, &item.key.kind, live));
            return Outcome::OutOfSync { health, drift };
        }
        // Not needed for the write: free it before the apply answer arrives.
        drop(live);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch(&item.key.name, &params, &Patch::Apply(&manifest))
            .await
        {
            Ok(applied) => {
                let applied = serde_json::to_value(&applied).unwrap_or_default();
                let resource_version = applied
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                lock(&self.verified)
                    .insert(cache_key, (resource_version.to_string(), item.hash.clone()));
                Outcome::Written {
                    health: health::assess(&item.key.group, &item.key.kind, &applied),
                    drift,
                }
            }
            Err(error) => {
                if let Some(deferred) = self.kind_gone(item, &error).await {
                    return deferred;
                }
                Outcome::Failed(ObjectFailure::api(
                    item.key.clone(),
                    Step::Apply,
                    &error,
                    format!("failed to apply {}: {error}", item.key),
                ))
            }
        }
    }

    /// Lists, once per kind and namespace, the live objects of a step where it has at least
    /// [`LIST_THRESHOLD`] objects of that kind there: one LIST instead of one GET per object
    /// keeps a no-op resync of a large set well under a second.
    ///
    /// Memory stays bounded by the step, not by the namespace: the LIST is read in pages of
    /// [`LIST_PAGE`], each page converted and dropped before the next, and only the objects the
    /// step wants are kept, without mooring's own `managedFields` entry (see [`live_value`]).
    async fn prefetch(&self, step: &[Desired]) -> Prefetched {
        type Group<'a> = (ApiResource, bool, BTreeSet<&'a str>);
        let mut groups: HashMap<(String, Option<String>), Group<'_>> = HashMap::new();
        for item in step {
            if let Some(served) = &item.served {
                let entry = groups
                    .entry((resource_id(&served.resource), item.key.namespace.clone()))
                    .or_insert((served.resource.clone(), served.namespaced, BTreeSet::new()));
                entry.2.insert(&item.key.name);
            }
        }
        let mut prefetched = HashMap::new();
        for ((id, namespace), (resource, namespaced, wanted)) in groups {
            if wanted.len() < LIST_THRESHOLD {
                continue;
            }
            let served = Served {
                resource: resource.clone(),
                namespaced,
            };
            let api = self.api(&served, namespace.as_deref());
            let mut objects = HashMap::new();
            let mut params = kube::api::ListParams::default().limit(LIST_PAGE);
            let complete = loop {
                // A failed LIST (RBAC may allow get but not list, an expired continue token)
                // falls back to one GET per object.
                let Ok(page) = api.list(&params).await else {
                    break false;
                };
                let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
                for mut object in page.items {
                    let Some(name) = object.metadata.name.take() else {
                        continue;
                    };
                    if !wanted.contains(name.as_str()) {
                        continue;
                    }
                    object.metadata.name = Some(name.clone());
                    // List items carry no apiVersion/kind; the comparisons expect them.
                    if object.types.is_none() {
                        object.types = Some(kube::api::TypeMeta {
                            api_version: resource.api_version.clone(),
                            kind: resource.kind.clone(),
                        });
                    }
                    slim(&mut object);
                    objects.insert(name, serde_json::to_string(&object).unwrap_or_default());
                }
                match next {
                    Some(token) => params = params.continue_token(&token),
                    None => break true,
                }
            };
            if complete {
                prefetched.insert((id, namespace), objects);
            }
        }
        Mutex::new(prefetched)
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
                tokio::time::sleep(Duration::from_millis(250)).await;
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
            Api::namespaced(self.client.clone(), &owner.namespace);
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

    /// Waits until the CRD `key` is Established and returns it as JSON.
    async fn wait_established(&self, key: &ObjectKey) -> Result<Value, ObjectFailure> {
        let name = &key.name;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let established = await_condition(api, name, conditions::is_crd_established());
        let message = match tokio::time::timeout(self.crd_timeout, established).await {
            Ok(Ok(crd)) => return Ok(serde_json::to_value(&crd).unwrap_or_default()),
            Ok(Err(error)) => {
                format!("failed to watch CustomResourceDefinition {name}: {error}")
            }
            Err(_) => format!(
                "CustomResourceDefinition {name} was not Established within {:?}",
                self.crd_timeout
            ),
        };
        Err(ObjectFailure {
            key: key.clone(),
            step: Step::WaitEstablished,
            reason: "CrdNotEstablished",
            // The API server may only be slow to accept a new CRD.
            retryable: true,
            message,
        })
    }

    async fn ensure_namespace(&self, namespace: &str) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let fail = |source| Error::CreateNamespace {
            namespace: namespace.to_string(),
            source,
        };
        if api.get_opt(namespace).await.map_err(fail)?.is_some() {
            return Ok(());
        }
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
        });
        api.patch(
            namespace,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&manifest),
        )
        .await
        .map_err(fail)?;
        Ok(())
    }

    /// Deletes everything in an Application's inventory (the Application is being deleted with
    /// Argo CD's resources finalizer). The per-object guards still hold: only objects whose
    /// tracking id names the Application, never `Prune=false` ones, CRDs, Namespaces or PVCs
    /// without the opt-in, or generated Secrets. `request.objects` is ignored.
    pub async fn delete_all(&self, request: &SyncRequest) -> SyncReport {
        let mut report = SyncReport::default();
        let entries: HashMap<ObjectKey, &ResourceStatus> = request
            .inventory
            .iter()
            .map(|entry| (ObjectKey::of_status(entry), entry))
            .collect();
        let candidates: Vec<ObjectKey> = entries.keys().cloned().collect();
        report.resources = self
            .prune(request, &candidates, &entries, &mut report)
            .await;
        report
    }

    /// Deletes the candidates that pass the per-object guards, in reverse apply order
    /// (`PruneLast` ones at the very end). Returns the inventory entries still owned: kept and
    /// failed objects stay tracked so the next sync retries them.
    async fn prune(
        &self,
        request: &SyncRequest,
        candidates: &[ObjectKey],
        entries: &HashMap<ObjectKey, &ResourceStatus>,
        report: &mut SyncReport,
    ) -> Vec<ResourceStatus> {
        let propagation = propagation_policy(&request.sync_options);
        let mut still_owned = Vec::new();
        let mut targets = Vec::new();
        for key in candidates {
            let Some(entry) = entries.get(key) else {
                continue;
            };
            let gvk = GroupVersionKind::gvk(&key.group, &entry.version, &key.kind);
            let served = match self.discovery.resolve(&gvk).await {
                Ok(Some(served)) => served,
                // The kind is gone (its CRD was deleted): so is the object.
                Ok(None) => continue,
                Err(error) => {
                    report.failures.push(ObjectFailure::discovery(
                        key.clone(),
                        Step::Prune,
                        &error,
                    ));
                    still_owned.push(requires_pruning(entry));
                    continue;
                }
            };
            let api = self.api(&served, key.namespace.as_deref());
            let live = match api.get_opt(&key.name).await {
                Ok(Some(live)) => live,
                Ok(None) => continue,
                Err(error @ kube::Error::Api(_)) if is_not_found(&error) => {
                    // The kind may be gone with its CRD, and the object with it.
                    self.discovery.forget(&gvk);
                    if let Ok(None) = self.discovery.resolve(&gvk).await {
                        continue;
                    }
                    let message = match &error {
                        kube::Error::Api(status) => status.message.clone(),
                        _ => error.to_string(),
                    };
                    report.failures.push(ObjectFailure::api(
                        key.clone(),
                        Step::Prune,
                        &error,
                        format!("failed to read {key}: {message}"),
                    ));
                    still_owned.push(requires_pruning(entry));
                    continue;
                }
                Err(error) => {
                    report.failures.push(ObjectFailure::api(
                        key.clone(),
                        Step::Prune,
                        &error,
                        format!("failed to read {key}: {error}"),
                    ));
                    still_owned.push(requires_pruning(entry));
                    continue;
                }
            };
            let decision = prune::may_prune(&request.app, key, &live.metadata).and_then(|()| {
                // `Prune=false` in the Application's own syncOptions protects every object.
                if has_option(&request.sync_options, "Prune", "false") {
                    Err(Keep::PruneDisabled)
                } else {
                    Ok(())
                }
            });
            if let Err(keep) = decision {
                // Not ours (any more): drop it from the inventory unless only a guard keeps it.
                if keep != Keep::NotOwned {
                    still_owned.push(requires_pruning(entry));
                }
                report.kept.push((key.clone(), keep));
                continue;
            }
            let last = prune::prune_last(&request.sync_options, &live.metadata);
            let wave = order::sync_wave(&live.metadata);
            targets.push((order::prune_key(key, wave, last), key.clone(), api, *entry));
        }
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, key, api, entry) in targets {
            let params = DeleteParams {
                propagation_policy: Some(propagation.clone()),
                ..DeleteParams::default()
            };
            match api.delete(&key.name, &params).await {
                Ok(_) => {
                    lock(&self.verified).remove(&(request.app.clone(), key.clone()));
                    report.pruned.push(key);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => report.pruned.push(key),
                Err(error) => {
                    report.failures.push(ObjectFailure::api(
                        key.clone(),
                        Step::Prune,
                        &error,
                        format!("failed to delete {key}: {error}"),
                    ));
                    still_owned.push(requires_pruning(entry));
                }
            }
        }
        still_owned
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
fn slim(object: &mut DynamicObject) {
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

/// When `object` is a CRD: the (group, kind) it serves and its name.
fn crd_in_set(object: &DynamicObject) -> Option<((String, String), String)> {
    let is_crd = object.types.as_ref().is_some_and(|t| {
        t.kind == "CustomResourceDefinition" && t.api_version.starts_with("apiextensions.k8s.io/")
    });
    if !is_crd {
        return None;
    }
    let group = object.data.pointer("/spec/group")?.as_str()?;
    let kind = object.data.pointer("/spec/names/kind")?.as_str()?;
    Some((
        (group.to_string(), kind.to_string()),
        object.metadata.name.clone()?,
    ))
}

/// Whether a step's objects are healthy enough for the next wave to start; if not, the
/// sentence that says which are not.
fn wave_not_ready(results: &[(Desired, Outcome)]) -> Option<String> {
    let pending: Vec<String> = results
        .iter()
        .filter_map(|(item, outcome)| {
            let health = match outcome {
                Outcome::InSync(health) | Outcome::Written { health, .. } => health,
                // Deferred objects wait for their CRD, not for a wave.
                _ => return None,
            };
            matches!(
                health.status,
                HealthState::Progressing | HealthState::Degraded | HealthState::Missing
            )
            .then(|| {
                format!(
                    "{} (wave {}) is {:?}{}",
                    item.key,
                    item.wave,
                    health.status,
                    health
                        .message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            })
        })
        .collect();
    (!pending.is_empty())
        .then(|| format!("waiting before the next sync wave: {}", pending.join("; ")))
}

fn remember_kind(kinds: &mut Vec<ApiResource>, resource: &ApiResource) {
    if !kinds.iter().any(|k| {
        k.group == resource.group && k.version == resource.version && k.kind == resource.kind
    }) {
        kinds.push(resource.clone());
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
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
    use super::*;

    fn desired(kind: &str, group: &str, name: &str, wave: i64) -> Desired {
        Desired {
            key: ObjectKey {
                group: group.into(),
                kind: kind.into(),
                namespace: Some("ns".into()),
                name: name.into(),
            },
            version: "v1".into(),
            served: None,
            manifest: String::new(),
            hash: String::new(),
            wave,
        }
    }

    #[test]
    fn a_wave_waits_for_progressing_objects_but_not_for_deferred_ones() {
        let running_job = serde_json::json!({"status": {"active": 1}});
        let done_job =
            serde_json::json!({"status": {"conditions": [{"type": "Complete", "status": "True"}]}});
        let waiting = wave_not_ready(&[
            (
                desired("Job", "batch", "migrate", -1),
                Outcome::Written {
                    health: health::assess("batch", "Job", &running_job),
                    drift: None,
                },
            ),
            (
                desired("ConfigMap", "", "settings", -1),
                Outcome::InSync(health::assess("", "ConfigMap", &serde_json::json!({}))),
            ),
            (
                desired("Widget", "example.com", "w", -1),
                Outcome::Deferred("no CRD".into()),
            ),
        ])
        .unwrap();
        assert!(
            waiting.contains("Job.batch ns/migrate (wave -1) is Progressing"),
            "{waiting}"
        );
        assert!(
            !waiting.contains("settings") && !waiting.contains("Widget"),
            "{waiting}"
        );
        assert_eq!(
            wave_not_ready(&[(
                desired("Job", "batch", "migrate", -1),
                Outcome::InSync(health::assess("batch", "Job", &done_job))
            )]),
            None
        );
    }

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

    #[test]
    fn crds_in_the_set_are_found_by_group_and_kind() {
        let crd: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}}
        }))
        .unwrap();
        let found: BTreeMap<_, _> = crd_in_set(&crd).into_iter().collect();
        assert_eq!(
            found
                .get(&("example.com".to_string(), "Widget".to_string()))
                .map(String::as_str),
            Some("widgets.example.com")
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

    #[test]
    fn drift_names_the_field_manager() {
        let key = ObjectKey {
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: Some("ns".into()),
            name: "web".into(),
        };
        let drift = Drift {
            key,
            managers: vec!["kubectl-edit".into()],
            fields: vec!["spec.replicas".into()],
            deleted: false,
        };
        assert_eq!(
            drift.describe(),
            "Deployment.apps ns/web was changed outside mooring (spec.replicas) by field manager kubectl-edit"
        );
    }
}
