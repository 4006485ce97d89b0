//! The ExternalSecret controller: reads values from a SecretStore's provider and writes them into
//! a Secret, as the External Secrets Operator does
//! (<https://external-secrets.io/latest/api/externalsecret/>), with these differences:
//!
//! - one connected provider per store, reused across reconciles ([`ProviderCache`]); inside a
//!   reconcile each `(key, version)` is read once, whatever properties are taken from it;
//! - the Secret is written by server-side apply (field manager `mooring`), so keys written by
//!   others stay theirs; a provider error never deletes or empties a Secret;
//! - drift (an edited or deleted Secret) is repaired from the last fetched values without a
//!   provider call; `CreatedOnce` is final;
//! - refreshes are spread by a per-object phase (no phase-locked storms after a restart, since
//!   the schedule follows `status.refreshTime`);
//! - first syncs and spec changes go ahead of periodic refreshes at a busy store
//!   ([`refresh_gate`]);
//! - `Ready` keeps ESO's reasons, and a `Fetched` condition tells NotFound, Forbidden,
//!   Unavailable and InvalidConfig apart;
//! - the ExternalSecret's own labels and annotations are never copied onto the Secret (ESO's #68).
//!
//! One file per step of a sync: `policy` (the policy fields), `schedule` (whether a read is due,
//! its urgency, the next refresh), `store` (which store, its namespace conditions, the connected
//! provider), `fetch` (reading `dataFrom` and `data`; key naming in `data_from`), `target` (the
//! Secret: desired, drift, apply, delete) and `status` (metrics, events, conditions, status);
//! `error` says why a sync failed. This file drives them: `run`, `reconcile`, `sync`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use mooring_crds::conditions::ConditionStatus;
use mooring_crds::external_secret::{
    ExternalSecret, ExternalSecretStatus, reasons, unknown_fields,
};

use crate::controllers::reconciles::Reconciles;
use crate::controllers::{Failures, RECOUNT_EVERY, backoff, lock, set_condition_counts};
use crate::events::EventSink;
use crate::external_secrets::providers::shared_reads::SharedReads;
use crate::external_secrets::providers::{ProviderCache, ProviderSettings};
use crate::metrics::{ControllerMetrics, ExternalSecretMetrics};
use fetch::{Read, read_store};
use policy::policies;
use refresh_gate::{PERIODIC_PER_STORE, RefreshGate};
use schedule::{next_refresh, refresh_due, synced_resource_version, urgency};
use status::{record, with_latest_status, write_status};
use target::{LastWrite, ensure_allowed_type, keep_or_repair, write_fetched};

mod data_from;
mod error;
mod fetch;
mod policy;
pub mod refresh_gate;
mod schedule;
mod status;
mod store;
mod target;
#[cfg(test)]
mod test_support;

pub use error::Error;

/// Label on every Secret mooring writes for an ExternalSecret (ESO's, so tools that look for
/// it keep working); the Secret watch selects on it.
pub const MANAGED_LABEL: &str = "reconcile.external-secrets.io/managed";
/// Annotation naming the ExternalSecret (same namespace) that writes the Secret.
pub const OWNER_ANNOTATION: &str = "mooring.dev/external-secret";
/// Annotation with a SHA-256 of the keys and values mooring wrote, to tell drift apart from
/// a Secret that is as written after a restart.
pub const DATA_HASH_ANNOTATION: &str = "mooring.dev/data-hash";

/// What the controller needs.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Connected providers, per store.
    pub providers: Arc<ProviderCache>,
    /// Agent-wide provider settings.
    pub settings: ProviderSettings,
    /// Reads shared across ExternalSecrets, and per-store budgets.
    pub reads: Arc<SharedReads>,
    /// Metrics.
    pub metrics: ExternalSecretMetrics,
    /// Events.
    pub events: EventSink,
    /// ExternalSecret uid → what was last written, for drift repair without a provider call.
    last: Mutex<HashMap<String, LastWrite>>,
    /// ExternalSecret uid → consecutive failures, for backoff.
    failures: Failures,
    /// ExternalSecret uid → the status this agent wrote last (the watch cache may lag).
    statuses: Mutex<HashMap<String, ExternalSecretStatus>>,
    /// Reconciles running now; shutdown waits for them.
    reconciles: Reconciles,
    /// Periodic refreshes take turns per store; first syncs and spec changes go ahead.
    gate: RefreshGate,
}

impl Context {
    /// A context with empty caches.
    pub fn new(
        client: kube::Client,
        providers: Arc<ProviderCache>,
        settings: ProviderSettings,
        reads: Arc<SharedReads>,
        metrics: ExternalSecretMetrics,
        events: EventSink,
    ) -> Context {
        Context {
            client,
            providers,
            settings,
            reads,
            metrics,
            events,
            last: Mutex::default(),
            failures: Failures::default(),
            statuses: Mutex::default(),
            reconciles: Reconciles::new(CONTROLLER, UNBOUNDED, &ControllerMetrics::default()),
            gate: RefreshGate::new(PERIODIC_PER_STORE),
        }
    }

    /// Reports reconciles, errors, queue depth and durations into the agent's shared metrics.
    pub fn with_controller_metrics(mut self, metrics: &ControllerMetrics) -> Context {
        self.reconciles = Reconciles::new(CONTROLLER, UNBOUNDED, metrics);
        self
    }
}

/// The `controller` label of this controller's metrics.
const CONTROLLER: &str = "externalsecret";

/// No bound on reconciles at once: each waits where it must (the refresh gate, the store's read
/// budget), and the refresh gate's waiters are the queue depth.
const UNBOUNDED: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// What a sync did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret was created.
    Created,
    /// The Secret was changed to the freshly read values.
    Updated,
    /// The Secret was restored from the last read values (drift), without a provider call.
    Repaired,
    /// Values were read and the Secret already matched.
    Refreshed,
    /// Nothing was due and the Secret matched.
    Unchanged,
    /// `creationPolicy: Merge` and the Secret does not exist.
    Missing,
    /// `deletionPolicy: Delete` and the remote data is gone: the Secret was deleted.
    Deleted,
    /// The store belongs to another controller class (ESO running next to mooring): nothing
    /// was done and nothing is reported.
    OtherController,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Repaired => "repaired",
            Outcome::Refreshed => "refreshed",
            Outcome::Unchanged => "unchanged",
            Outcome::Missing => "missing",
            Outcome::Deleted => "deleted",
            Outcome::OtherController => "other_controller",
        }
    }

    /// Whether values were read from the provider in this sync.
    fn fetched(self) -> bool {
        matches!(
            self,
            Outcome::Created | Outcome::Updated | Outcome::Refreshed | Outcome::Deleted
        )
    }
}

/// The result of a sync: what happened, or why it failed.
type SyncResult = Result<Outcome, Error>;

/// Runs the controller until `shutdown` completes. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (externals, secrets): (Api<ExternalSecret>, Api<PartialObjectMeta<Secret>>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(ctx.client.clone(), ns),
                Api::namespaced(ctx.client.clone(), ns),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
    let shutdown = futures::FutureExt::shared(shutdown);
    let in_flight = ctx.reconciles.subscribe();
    let controller = Controller::new(externals, watcher::Config::default());
    let housekeeping = housekeeping(controller.store(), Arc::clone(&ctx));
    // Metadata only, and only Secrets mooring manages: an edit or deletion wakes the
    // ExternalSecret named in the annotation, which repairs it from its last read.
    let managed = watcher::Config::default().labels(&format!("{MANAGED_LABEL}=true"));
    let controller = controller
        .watches(secrets, managed, |secret| {
            let owner = secret.annotations().get(OWNER_ANNOTATION)?.clone();
            Some(ObjectRef::<ExternalSecret>::new(&owner).within(&secret.namespace()?))
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_in_slot, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    crate::controllers::run_with_until_drained(controller, housekeeping, shutdown, in_flight).await;
}

/// Every 10 s: recounts the condition gauge from the watch cache, and forgets what is kept in
/// memory for ExternalSecrets that no longer exist.
async fn housekeeping(store: Store<ExternalSecret>, ctx: Arc<Context>) {
    let mut every = tokio::time::interval(RECOUNT_EVERY);
    loop {
        every.tick().await;
        let cached = store.state();
        let live: HashSet<String> = cached
            .iter()
            .map(|es| es.uid().unwrap_or_default())
            .collect();
        let statuses = cached.iter().map(|es| {
            es.status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == reasons::READY))
                .map_or(ConditionStatus::Unknown, |c| c.status)
                .as_str()
        });
        set_condition_counts(&ctx.metrics.conditions, statuses);
        if !live.is_empty() {
            lock(&ctx.last).retain(|uid, _| live.contains(uid));
            lock(&ctx.statuses).retain(|uid, _| live.contains(uid));
            ctx.failures.retain(&live);
        }
        ctx.gate.forget_idle();
    }
}

/// One reconcile: nothing while the ExternalSecret is being deleted (an owned Secret is
/// garbage-collected with it); else a sync in a slot, timed and counted.
async fn reconcile_in_slot(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    if es.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let timed = async {
        let started = std::time::Instant::now();
        let result = sync_and_report(&es, &ctx).await;
        ctx.metrics
            .reconcile_seconds
            .inc_by(started.elapsed().as_secs_f64());
        result
    };
    ctx.reconciles.run_in_slot(timed, Error::reason).await
}

/// Syncs, reports the result (metrics and events, then the status), and says when to look again.
async fn sync_and_report(es: &ExternalSecret, ctx: &Context) -> Result<Action, Error> {
    let result = sync(es, ctx).await;
    if matches!(result, Ok(Outcome::OtherController)) {
        return Ok(Action::await_change());
    }
    record(es, ctx, &result).await;
    let status = write_status(es, ctx, &result).await;
    let outcome = result?;
    status?;
    ctx.failures.clear(&es.uid().unwrap_or_default());
    Ok(next_refresh(&with_latest_status(es, ctx), outcome))
}

/// After a failed reconcile: try again after a backoff per object.
fn error_policy(es: Arc<ExternalSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = es.uid().unwrap_or_default();
    let attempts = ctx.failures.record(&uid);
    let delay = backoff(attempts, error.is_retryable());
    // Never wait longer than the refresh interval: a NotFound key that comes back is picked up
    // on schedule.
    let delay = match policies(&es.spec).ok().map(|p| p.interval) {
        Some(interval) if !interval.is_zero() => delay.min(interval),
        _ => delay,
    };
    Action::requeue(delay)
}

/// One sync, step by step: the spec is checked; when no refresh is due the Secret is kept or
/// repaired from the values last read; else the store is read and what it holds is written.
async fn sync(es: &ExternalSecret, ctx: &Context) -> SyncResult {
    let es = &with_latest_status(es, ctx);
    ensure_supported(es)?;
    ensure_allowed_type(es)?;
    let policies = policies(&es.spec)?;
    let synced_version = synced_resource_version(es);
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    if !refresh_due(es, &policies, &synced_version)
        && let Some(outcome) = keep_or_repair(es, ctx, &policies, &synced_version, &secrets).await?
    {
        return Ok(outcome);
    }
    let urgency = urgency(es, &synced_version);
    let fetched = match read_store(es, ctx, &policies, urgency).await? {
        Read::OtherController => return Ok(Outcome::OtherController),
        Read::Values(fetched) => fetched,
    };
    write_fetched(es, ctx, &policies, synced_version, fetched, &secrets).await
}

/// Refuses a spec that sets fields mooring does not implement, naming them.
fn ensure_supported(es: &ExternalSecret) -> Result<(), Error> {
    let unsupported = unknown_fields(&es.spec);
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(Error::Unsupported(unsupported))
    }
}
