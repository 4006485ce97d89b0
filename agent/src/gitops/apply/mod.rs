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
//!
//! One file per part of the flow: `prepare` (the destination namespace, every object validated
//! and keyed), `steps` (step by step, waves, CRDs Established), `sync_object` (one object: read,
//! compare, apply) with `prefetch` (one LIST instead of many GETs), [`prune`] (guards and
//! deletion), `report` (inventory, sync state, health roll-up); [`failure`] types what went
//! wrong with one object; [`hooks`] (what hook annotations mean) and `hook_run` (creating,
//! judging and deleting hooks, resumed from the operation's record in [`Hooks::Run`]).

pub mod compare;
pub mod discovery;
pub mod failure;
pub mod health;
mod hook_run;
pub mod hooks;
pub mod object;
pub mod order;
mod prefetch;
mod prepare;
pub mod prune;
mod report;
mod steps;
mod sync_object;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use mooring_crds::application::{
    HealthStatus, HookStatus, OperationPhase, ResourceStatus, SyncState,
};

use self::discovery::{Discovery, Served};
pub use self::failure::{ObjectFailure, Step};
use self::object::{AppId, ObjectKey};
use self::prune::{Keep, PruneSettings};

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
    /// Whether this sync runs the resource hooks of the set.
    pub hooks: Hooks,
}

/// Whether a sync runs the resource hooks of its set (see [`hooks`]).
#[derive(Clone, Debug, Default)]
pub enum Hooks {
    /// Hooks are left out: neither applied nor compared (no operation runs, or it finished).
    #[default]
    Ignore,
    /// The operation runs (or resumes): `started` are the hooks it started so far, with their
    /// results (from `status.operationState`).
    Run {
        /// The hooks this operation started so far.
        started: Vec<HookStatus>,
    },
}

/// How far a sync operation with hooks got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationProgress {
    /// Running (a hook or a wave is awaited), Succeeded or Failed.
    pub phase: OperationPhase,
    /// What it waits for, or why it failed.
    pub message: Option<String>,
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
    /// With [`Hooks::Run`]: every hook the operation started, with its result so far.
    pub hooks: Vec<HookStatus>,
    /// With [`Hooks::Run`]: how far the operation got.
    pub operation: Option<OperationProgress>,
}

impl SyncReport {
    /// Whether a hook of the operation (not a SyncFail one) failed: the later phases are not
    /// applied and the SyncFail hooks run.
    pub fn hook_failed(&self) -> bool {
        self.hooks.iter().any(|hook| {
            hook.hook_phase == mooring_crds::application::HookPhase::Failed
                && hook.hook_type != mooring_crds::application::HookType::SyncFail
        })
    }
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

/// A per-object rule (an AppProject's) the engine asks before it applies an object whose kind
/// it resolved only during the sync, and before it prunes one: `Err` says which rule refuses.
pub trait Permit: Send + Sync {
    /// Whether `key` (its namespace already resolved) of a kind of this scope may be written.
    fn check(&self, key: &ObjectKey, namespaced: bool) -> Result<(), String>;
}

/// The reason of an object refused by a [`Permit`].
pub const NOT_PERMITTED: &str = "ProjectViolation";

/// (app, object) → (resourceVersion, applied hash) of objects a dry-run proved in sync.
type Verified = Mutex<HashMap<(AppId, ObjectKey), (String, String)>>;

/// The sync engine, shared by every Application: one discovery cache, one client.
pub struct Engine {
    /// Writes and reads of the Application's objects (impersonating its ServiceAccount in a
    /// [`Engine::scoped`] engine).
    client: kube::Client,
    /// The agent's own client: discovery, CRD establishment and other Applications' status.
    agent_client: kube::Client,
    discovery: Arc<Discovery>,
    /// (app, object) → (resourceVersion, applied hash) that a dry-run proved in sync: the next
    /// sync of an unchanged object needs neither a dry-run nor a write.
    verified: Arc<Verified>,
    crd_timeout: Duration,
    permit: Option<Arc<dyn Permit>>,
}

impl Engine {
    /// An engine with an empty discovery cache.
    pub fn new(client: kube::Client) -> Engine {
        Engine {
            discovery: Arc::new(Discovery::new(client.clone())),
            agent_client: client.clone(),
            client,
            verified: Arc::default(),
            crd_timeout: Duration::from_secs(60),
            permit: None,
        }
    }

    /// This engine for one Application: its objects read and written with `client` (one
    /// impersonating the Application's ServiceAccount) when given, and `permit` asked before
    /// any late-resolved object is applied and before any object is pruned. The caches are
    /// shared with `self`.
    pub fn scoped(&self, client: Option<kube::Client>, permit: Option<Arc<dyn Permit>>) -> Engine {
        Engine {
            client: client.unwrap_or_else(|| self.client.clone()),
            agent_client: self.agent_client.clone(),
            discovery: Arc::clone(&self.discovery),
            verified: Arc::clone(&self.verified),
            crd_timeout: self.crd_timeout,
            permit,
        }
    }

    /// Why `key` may not be written, when a [`Permit`] is set and refuses it.
    fn refused(&self, key: &ObjectKey, namespaced: bool) -> Option<String> {
        self.permit
            .as_ref()
            .and_then(|permit| permit.check(key, namespaced).err())
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
        if let Hooks::Run { started, .. } = &request.hooks {
            report.hooks = started.clone();
        }
        self.create_destination_namespace(request).await?;
        let in_inventory: BTreeSet<ObjectKey> =
            request.inventory.iter().map(ObjectKey::of_status).collect();
        let prepared = self
            .prepare_all(request, objects, &mut report.failures)
            .await;
        let outcomes = self
            .apply_steps(
                request,
                prepared.steps,
                &prepared.crds,
                &in_inventory,
                &mut report,
            )
            .await;
        if report.hook_failed() {
            self.run_sync_fail_hooks(request, prepared.sync_fail, &mut report)
                .await;
        }
        let still_owned = self
            .prune_left_git(request, &in_inventory, &prepared.keys, &mut report)
            .await;
        let tally = self
            .record_outcomes(outcomes, &in_inventory, &mut report)
            .await;
        report::conclude(&mut report, still_owned, tally);
        report.operation = hook_run::progress(request, &report);
        Ok(report)
    }

    /// Deletes everything in an Application's inventory (the Application is being deleted with
    /// Argo CD's resources finalizer). The per-object guards still hold: only objects whose
    /// tracking id names the Application, never `Prune=false` ones, CRDs, Namespaces or PVCs
    /// without the opt-in, or generated Secrets. `request.objects` is ignored.
    pub async fn delete_all(&self, request: &SyncRequest) -> SyncReport {
        let mut report = SyncReport::default();
        let entries: HashMap<ObjectKey, &ResourceStatus> =
            prune::entries_by_key(&request.inventory);
        let candidates: Vec<ObjectKey> = entries.keys().cloned().collect();
        report.resources = self
            .prune(request, &candidates, &entries, &mut report)
            .await;
        report
    }

    /// The API for objects of `served` in `namespace` (ignored for cluster-scoped kinds).
    fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace {
            Some(namespace) if served.namespaced => {
                Api::namespaced_with(self.client.clone(), namespace, &served.resource)
            }
            _ => Api::all_with(self.client.clone(), &served.resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_shows_each_cause_of_a_sync_error_once() {
        // A kube error whose message holds no cause of its own: what the chain prints beyond
        // it is what mooring's errors add.
        let cause = || kube::Error::LinesCodecMaxLineLengthExceeded;
        let namespace = Error::CreateNamespace {
            namespace: "team".into(),
            source: cause(),
        };
        assert_eq!(
            crate::errors::error_chain(&namespace),
            "failed to create namespace team: Error finding newline character"
        );
        let discovery = discovery::DiscoveryError {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            source: cause(),
        };
        assert_eq!(
            crate::errors::error_chain(&discovery),
            "failed to discover the resource for example.com/v1 Widget: Error finding newline character"
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
