//! The ExternalSecret controller: reads values from a SecretStore's provider and writes them into
//! a Secret, as the External Secrets Operator does (reference §4), with these differences:
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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use mooring_crds::conditions::{Condition, ConditionStatus, names};
use mooring_crds::external_secret::{
    Binding, ExternalSecret, ExternalSecretDataRemoteRef, ExternalSecretStatus, reasons,
    unknown_fields,
};
use mooring_crds::secret_store::{ClusterSecretStore, SecretStore, SecretStoreSpec};
use mooring_provider::{ProviderError, RemoteRef, SecretProvider, SecretValue};
use zeroize::Zeroizing;

use crate::cluster::FIELD_MANAGER;
use crate::controllers::reconciles::Reconciles;
use crate::events::EventSink;
use crate::external_secrets::providers::shared_reads::{ReadKey, Served, SharedReads};
use crate::external_secrets::providers::{
    ProviderCache, ProviderSettings, StoreError, StoreId, StoreKind,
};
use crate::external_secrets::providers::{count_provider_call, fetched_reason, is_handled_here};
use crate::metrics::{
    ControllerMetrics, ExternalSecretMetrics, OutcomeLabels, ReasonLabels, StatusLabels,
};
use refresh_gate::{PERIODIC_PER_STORE, RefreshGate, Urgency};

mod data_from;
pub mod refresh_gate;

/// Label on every Secret mooring writes for an ExternalSecret (ESO's, so tools that look for
/// it keep working); the Secret watch selects on it.
pub const MANAGED_LABEL: &str = "reconcile.external-secrets.io/managed";
/// Annotation naming the ExternalSecret (same namespace) that writes the Secret.
pub const OWNER_ANNOTATION: &str = "mooring.dev/external-secret";
/// Annotation with a SHA-256 of the keys and values mooring wrote, to tell drift apart from
/// a Secret that is as written after a restart.
pub const DATA_HASH_ANNOTATION: &str = "mooring.dev/data-hash";
/// ESO's default `refreshInterval`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);

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
    failures: Mutex<HashMap<String, u32>>,
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
            failures: Mutex::default(),
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

/// The Secret mooring last wrote for an ExternalSecret, and the spec it came from.
#[derive(Clone)]
struct LastWrite {
    synced_version: String,
    desired: Desired,
}

/// The part of a Secret an ExternalSecret decides. Values are zeroized when dropped.
#[derive(Clone, Default)]
struct Desired {
    name: String,
    data: BTreeMap<String, Zeroizing<Vec<u8>>>,
    type_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    immutable: bool,
}

/// Why an ExternalSecret could not be synced. Messages name objects, fields and keys, never
/// values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fields mooring does not implement are set.
    #[error("unsupported fields are set: {}", .0.join(", "))]
    Unsupported(Vec<String>),
    /// The spec cannot be used as written.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The referenced store does not exist.
    #[error("{0} does not exist")]
    StoreNotFound(String),
    /// A ClusterSecretStore's conditions do not allow this namespace.
    #[error("using {store} is not allowed from namespace {namespace}: denied by spec.conditions")]
    StoreDenied {
        /// The store.
        store: String,
        /// The ExternalSecret's namespace.
        namespace: String,
    },
    /// The store could not be used (configuration, credentials, login).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A read failed.
    #[error("failed to read {key:?} from {store}: {source}")]
    Provider {
        /// The store.
        store: String,
        /// The remote key.
        key: String,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
    /// A value could not be decoded as `decodingStrategy` says.
    #[error("failed to decode the value of {key:?} with decodingStrategy {strategy}")]
    Decode {
        /// The Secret key.
        key: String,
        /// The strategy.
        strategy: String,
    },
    /// A template could not be rendered.
    #[error(transparent)]
    Template(#[from] mooring_template::TemplateError),
    /// The Secret is controlled by another object.
    #[error("Secret {0:?} is owned by another object; refusing to take it over")]
    ForeignOwner(String),
    /// The Secret is immutable and its data differs.
    #[error("Secret {0:?} is immutable and its data differs; delete it to let mooring recreate it")]
    Immutable(String),
    /// An API call failed.
    #[error("failed to {action} Secret {name:?}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The Secret.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Another read of the API failed (store, namespace).
    #[error("failed to read {what}")]
    Read {
        /// What.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("failed to update the status")]
    Status(#[source] kube::Error),
}

impl Error {
    /// A CamelCase reason for events and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Unsupported(_) => names::UNSUPPORTED_FIELDS,
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::StoreNotFound(_) => "StoreNotFound",
            Error::StoreDenied { .. } => "StoreNotAllowed",
            Error::Store(StoreError::InvalidSpec { .. }) => "InvalidStoreConfiguration",
            Error::Store(StoreError::ReadCredentials { .. }) => "StoreCredentialsUnavailable",
            Error::Store(StoreError::Login { source, .. }) | Error::Provider { source, .. } => {
                fetched_reason(source)
            }
            Error::Decode { .. } => "DecodeFailed",
            Error::Template(_) => "TemplateFailed",
            Error::ForeignOwner(_) => "SecretOwnedByOther",
            Error::Immutable(_) => "SecretImmutable",
            Error::Api { .. } | Error::Read { .. } => "ApiError",
            Error::Status(_) => "StatusUpdateFailed",
        }
    }

    /// The provider's answer, when the failure was one.
    fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Error::Provider { source, .. } => Some(source),
            Error::Store(error) => error.provider_error(),
            _ => None,
        }
    }

    /// Whether retrying soon may help, as opposed to bad input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(error) => error.is_retryable(),
            Error::Provider { source, .. } => source.is_retryable(),
            Error::Api { .. } | Error::Read { .. } | Error::Status(_) => true,
            _ => false,
        }
    }
}

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
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    let controller = async move {
        tokio::select! {
            () = controller => {},
            () = housekeeping => {},
        }
    };
    crate::controllers::run_until_drained(controller, shutdown, in_flight).await;
}

/// Every 10 s: recounts the condition gauge from the watch cache, and forgets what is kept in
/// memory for ExternalSecrets that no longer exist.
async fn housekeeping(store: Store<ExternalSecret>, ctx: Arc<Context>) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        let mut counts: BTreeMap<String, i64> = ["True", "False", "Unknown"]
            .into_iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        let mut live = std::collections::HashSet::new();
        for es in store.state() {
            live.insert(es.uid().unwrap_or_default());
            let status = es
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == reasons::READY))
                .map_or(ConditionStatus::Unknown, |c| c.status);
            *counts.entry(format!("{status:?}")).or_default() += 1;
        }
        for (status, count) in counts {
            ctx.metrics
                .conditions
                .get_or_create(&StatusLabels { status })
                .set(count);
        }
        if !live.is_empty() {
            lock(&ctx.last).retain(|uid, _| live.contains(uid));
            lock(&ctx.statuses).retain(|uid, _| live.contains(uid));
            lock(&ctx.failures).retain(|uid, _| live.contains(uid));
        }
        ctx.gate.forget_idle();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn reconcile(es: Arc<ExternalSecret>, ctx: Arc<Context>) -> Result<Action, Error> {
    if es.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let slot = ctx.reconciles.admit().await;
    let started = std::time::Instant::now();
    let result = reconcile_counted(&es, &ctx).await;
    ctx.metrics
        .reconcile_seconds
        .inc_by(started.elapsed().as_secs_f64());
    ctx.reconciles
        .record(result.as_ref().map(|_| ()).map_err(Error::reason));
    drop(slot);
    result
}

async fn reconcile_counted(es: &ExternalSecret, ctx: &Context) -> Result<Action, Error> {
    let result = sync(es, ctx).await;
    if matches!(result, Ok(Outcome::OtherController)) {
        return Ok(Action::await_change());
    }
    record(es, ctx, &result).await;
    let status = write_status(es, ctx, &result).await;
    let uid = es.uid().unwrap_or_default();
    match result {
        Ok(outcome) => {
            status?;
            lock(&ctx.failures).remove(&uid);
            Ok(next_refresh(&with_latest_status(es, ctx), outcome))
        }
        Err(error) => Err(error),
    }
}

fn error_policy(es: Arc<ExternalSecret>, error: &Error, ctx: Arc<Context>) -> Action {
    let uid = es.uid().unwrap_or_default();
    let attempts = {
        let mut failures = lock(&ctx.failures);
        let count = failures.entry(uid).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(attempts, error.is_retryable());
    // Never wait longer than the refresh interval: a NotFound key that comes back is picked up
    // on schedule.
    let delay = match policies(&es.spec).ok().map(|p| p.interval) {
        Some(interval) if !interval.is_zero() => delay.min(interval),
        _ => delay,
    };
    Action::requeue(delay)
}

/// Exponential backoff per object: 1 s, 2 s, 4 s … capped at 5 minutes, or 10 minutes for bad
/// input (a spec change wakes it at once anyway).
fn backoff(attempts: u32, retryable: bool) -> Duration {
    let cap: u64 = if retryable { 300 } else { 600 };
    let seconds = 1u64
        .checked_shl(attempts.saturating_sub(1).min(16))
        .unwrap_or(cap);
    Duration::from_secs(seconds.min(cap))
}

/// The parsed policies of a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Policies {
    creation: Creation,
    deletion: Deletion,
    refresh: Refresh,
    interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Creation {
    Owner,
    Orphan,
    Merge,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deletion {
    Retain,
    Delete,
    Merge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    Periodic,
    OnChange,
    CreatedOnce,
}

/// Reads and checks the policy fields, with ESO's defaults and its webhook's combination rules.
fn policies(spec: &mooring_crds::external_secret::ExternalSecretSpec) -> Result<Policies, Error> {
    let target = spec.target.clone().unwrap_or_default();
    let creation = match target.creation_policy.as_deref() {
        None | Some("Owner") => Creation::Owner,
        Some("Orphan") => Creation::Orphan,
        Some("Merge") => Creation::Merge,
        Some("None") => Creation::None,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.target.creationPolicy {other:?} is not one of Owner, Orphan, Merge, None"
            )));
        }
    };
    let deletion = match target.deletion_policy.as_deref() {
        None | Some("Retain") => Deletion::Retain,
        Some("Delete") => Deletion::Delete,
        Some("Merge") => Deletion::Merge,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.target.deletionPolicy {other:?} is not one of Retain, Delete, Merge"
            )));
        }
    };
    if deletion == Deletion::Delete && creation != Creation::Owner {
        return Err(Error::InvalidSpec(
            "spec.target.deletionPolicy Delete requires creationPolicy Owner".into(),
        ));
    }
    if deletion == Deletion::Merge && creation == Creation::None {
        return Err(Error::InvalidSpec(
            "spec.target.deletionPolicy Merge cannot be used with creationPolicy None".into(),
        ));
    }
    let refresh = match spec.refresh_policy.as_deref() {
        None | Some("Periodic") => Refresh::Periodic,
        Some("OnChange") => Refresh::OnChange,
        Some("CreatedOnce") => Refresh::CreatedOnce,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.refreshPolicy {other:?} is not one of Periodic, OnChange, CreatedOnce"
            )));
        }
    };
    let interval = match spec.refresh_interval.as_deref() {
        None => DEFAULT_REFRESH,
        Some(text) => parse_refresh_interval(text).ok_or_else(|| {
            Error::InvalidSpec(format!(
                "spec.refreshInterval {text:?} is not a Go duration such as 1h, 15m or 0s"
            ))
        })?,
    };
    Ok(Policies {
        creation,
        deletion,
        refresh,
        interval,
    })
}

/// A Go duration as ESO accepts it (`1h0m0s` included).
fn parse_refresh_interval(text: &str) -> Option<Duration> {
    if text == "0" || text.chars().all(|c| c == '0' || c.is_ascii_alphabetic()) {
        // "0s", "0m", "0h0m0s": all zero.
        if text.chars().any(|c| c.is_ascii_digit()) {
            return Some(Duration::ZERO);
        }
    }
    crate::duration::parse(text).ok()
}

/// ESO's `syncedResourceVersion`: the generation and a digest of labels and annotations (so a
/// `force-sync` annotation counts as a change).
fn synced_resource_version(es: &ExternalSecret) -> String {
    let meta = serde_json::json!([es.labels(), es.annotations()]);
    let bytes = serde_json::to_vec(&meta).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    let hex: String = digest.as_ref()[..14]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{hex}", es.metadata.generation.unwrap_or_default())
}

/// Where in each refresh interval an ExternalSecret refreshes: a phase in [0, interval) from the
/// store and the keys it reads. ExternalSecrets reading the same keys of the same store refresh
/// together, so their reads are shared; different keys spread over the interval, so nothing
/// refreshes in lockstep after a restart or a bulk create (ESO's #4231).
fn refresh_phase(es: &ExternalSecret, interval: Duration) -> Duration {
    let mut identity: Vec<String> = Vec::new();
    if let Some(store) = &es.spec.secret_store_ref {
        let kind = store.kind.clone().unwrap_or_else(|| "SecretStore".into());
        if kind != "ClusterSecretStore" {
            identity.push(es.namespace().unwrap_or_default());
        }
        identity.push(kind);
        identity.push(store.name.clone());
    }
    let mut keys: Vec<String> = es
        .spec
        .data
        .iter()
        .flatten()
        .map(|d| &d.remote_ref)
        .chain(
            es.spec
                .data_from
                .iter()
                .flatten()
                .filter_map(|f| f.extract.as_ref()),
        )
        .map(|r| format!("{}@{}", r.key, r.version.as_deref().unwrap_or_default()))
        .collect();
    // Finds by their query, so ExternalSecrets with one query refresh (and read) together.
    keys.extend(
        es.spec
            .data_from
            .iter()
            .flatten()
            .filter_map(|f| f.find.as_ref())
            .map(|find| serde_json::to_string(find).unwrap_or_default()),
    );
    keys.sort();
    keys.dedup();
    identity.extend(keys);
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.join("\n").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    let fraction = u64::from_be_bytes(first) as f64 / u64::MAX as f64;
    interval.mul_f64(fraction.min(0.999_999))
}

/// The next refresh after one at `last`: the first time, at least half an interval later, whose
/// wall-clock position in the interval is `phase`. The first period is between half and one and
/// a half intervals; every later one is exactly the interval.
fn scheduled_refresh(
    last: jiff::Timestamp,
    interval: Duration,
    phase: Duration,
) -> jiff::Timestamp {
    let interval_ns = i128::try_from(interval.as_nanos())
        .unwrap_or(i128::MAX)
        .max(1);
    let phase_ns = i128::try_from(phase.as_nanos()).unwrap_or(0);
    let earliest = last.as_nanosecond() + interval_ns / 2;
    let mut slot = (earliest - phase_ns).div_euclid(interval_ns) * interval_ns + phase_ns;
    if slot < earliest {
        slot += interval_ns;
    }
    jiff::Timestamp::from_nanosecond(slot).unwrap_or(last)
}

/// When to look again after a successful sync.
fn next_refresh(es: &ExternalSecret, outcome: Outcome) -> Action {
    let Ok(policies) = policies(&es.spec) else {
        return Action::await_change();
    };
    if policies.refresh != Refresh::Periodic || policies.interval.is_zero() {
        return Action::await_change();
    }
    if outcome == Outcome::Missing {
        return Action::requeue(policies.interval);
    }
    let now = jiff::Timestamp::now();
    let last = if outcome.fetched() {
        now
    } else {
        last_refresh(es).unwrap_or(now)
    };
    let due = scheduled_refresh(
        last,
        policies.interval,
        refresh_phase(es, policies.interval),
    );
    let wait = Duration::try_from(due.duration_since(now)).unwrap_or_default();
    // A few milliseconds late rather than early: an early wake-up would find nothing due.
    Action::requeue(wait + Duration::from_millis(5))
}

/// `status.refreshTime`, when there is one.
fn last_refresh(es: &ExternalSecret) -> Option<jiff::Timestamp> {
    es.status.as_ref()?.refresh_time.as_deref()?.parse().ok()
}

/// Whether the provider must be read now (reference §4.3, with `CreatedOnce` final).
fn refresh_due(es: &ExternalSecret, policies: &Policies, synced_version: &str) -> bool {
    let status = es.status.clone().unwrap_or_default();
    let never_synced = status.refresh_time.is_none();
    let spec_changed = status.synced_resource_version.as_deref() != Some(synced_version);
    match policies.refresh {
        Refresh::CreatedOnce => never_synced,
        Refresh::OnChange => never_synced || spec_changed,
        Refresh::Periodic => {
            never_synced
                || spec_changed
                || (!policies.interval.is_zero()
                    && last_refresh(es).is_none_or(|last| {
                        let phase = refresh_phase(es, policies.interval);
                        jiff::Timestamp::now() >= scheduled_refresh(last, policies.interval, phase)
                    }))
        }
    }
}

/// Whether someone waits for this read: a first sync, or a spec (or label/annotation) change
/// since the last one. Everything else is a periodic refresh, which yields to these.
fn urgency(es: &ExternalSecret, synced_version: &str) -> Urgency {
    let status = es.status.as_ref();
    let never_synced = status.is_none_or(|s| s.refresh_time.is_none());
    let changed = status.and_then(|s| s.synced_resource_version.as_deref()) != Some(synced_version);
    if never_synced || changed {
        Urgency::FirstSyncOrChange
    } else {
        Urgency::Periodic
    }
}

/// The object with the status this agent wrote last when the watch cache has not caught up
/// yet (a reconcile woken by our own Secret write), so a sync just done is not repeated.
fn with_latest_status(es: &ExternalSecret, ctx: &Context) -> ExternalSecret {
    let uid = es.uid().unwrap_or_default();
    let written = lock(&ctx.statuses).get(&uid).cloned();
    let time = |status: Option<&ExternalSecretStatus>| {
        status
            .and_then(|s| s.refresh_time.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    let cached = time(es.status.as_ref());
    match written {
        Some(written) if time(Some(&written)) > cached => {
            let mut newer = es.clone();
            newer.status = Some(written);
            newer
        }
        _ => es.clone(),
    }
}

async fn sync(es: &ExternalSecret, ctx: &Context) -> SyncResult {
    let es = &with_latest_status(es, ctx);
    let unsupported = unknown_fields(&es.spec);
    if !unsupported.is_empty() {
        return Err(Error::Unsupported(unsupported));
    }
    let policies = policies(&es.spec)?;
    let namespace = es.namespace().unwrap_or_default();
    let target_name = target_name(es);
    let synced_version = synced_resource_version(es);
    let uid = es.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);

    if !refresh_due(es, &policies, &synced_version) {
        if policies.creation == Creation::None {
            return Ok(Outcome::Unchanged);
        }
        let existing = read_secret(&api, &target_name).await?;
        let last = lock(&ctx.last)
            .get(&uid)
            .filter(|l| l.synced_version == synced_version)
            .cloned();
        match (&existing, last) {
            (None, _) if policies.creation == Creation::Merge => return Ok(Outcome::Missing),
            (Some(secret), Some(last)) if matches_desired(secret, &last.desired) => {
                return Ok(Outcome::Unchanged);
            }
            (_, Some(last)) => {
                // Drift: restore the last read values; no provider call.
                let written =
                    write_secret(es, &policies, existing.as_ref(), &last.desired, &api).await?;
                return Ok(if written == Outcome::Unchanged {
                    Outcome::Unchanged
                } else {
                    Outcome::Repaired
                });
            }
            (Some(secret), None) if is_as_written(secret) => return Ok(Outcome::Unchanged),
            // After a restart with a drifted or missing Secret: read again.
            _ => {}
        }
    }

    let (store_id, spec) = resolve_store(es, ctx).await?;
    if !is_handled_here(&spec) {
        return Ok(Outcome::OtherController);
    }
    let provider = provider_for(ctx, &store_id, &spec, &namespace).await?;
    // Periodic refreshes take turns at the store; a first sync or a spec change goes ahead.
    let turn = {
        // Waiting here is this controller's queue.
        let _queued = ctx.reconciles.queued();
        ctx.gate
            .admit(&store_id, urgency(es, &synced_version))
            .await
    };
    let source = Source {
        provider: provider.as_ref(),
        store: &store_id,
        consumer: consumer_of(&store_id, &spec, &namespace),
        max_age: policies.interval,
    };
    let fetched = fetch(es, &policies, &source, ctx).await;
    drop(turn);
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(error) => {
            if matches!(
                error.provider_error(),
                Some(ProviderError::PermissionDenied { .. })
            ) {
                // A token that expired or was revoked: log in again next time.
                ctx.providers
                    .forget(&store_id, consumer_of(&store_id, &spec, &namespace));
            }
            return Err(error);
        }
    };
    let existing = read_secret(&api, &target_name).await?;
    let Some(values) = fetched else {
        // deletionPolicy Delete and every remote value is gone; nothing is left to repair.
        lock(&ctx.last).remove(&uid);
        return delete_target(es, existing.as_ref(), &api).await;
    };
    if policies.creation == Creation::None {
        return Ok(Outcome::Refreshed);
    }
    if existing.is_none() && policies.creation == Creation::Merge {
        return Ok(Outcome::Missing);
    }
    let desired = desired_secret(es, &target_name, values)?;
    let outcome = write_secret(es, &policies, existing.as_ref(), &desired, &api).await?;
    lock(&ctx.last).insert(
        uid,
        LastWrite {
            synced_version,
            desired,
        },
    );
    Ok(match outcome {
        Outcome::Unchanged => Outcome::Refreshed,
        other => other,
    })
}

fn target_name(es: &ExternalSecret) -> String {
    es.spec
        .target
        .as_ref()
        .and_then(|t| t.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| es.name_any())
}

async fn read_secret(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    api.get_opt(name).await.map_err(|source| Error::Api {
        action: "read",
        name: name.to_string(),
        source,
    })
}

/// Finds the referenced store and checks that this namespace may use it.
async fn resolve_store(
    es: &ExternalSecret,
    ctx: &Context,
) -> Result<(StoreId, SecretStoreSpec), Error> {
    let namespace = es.namespace().unwrap_or_default();
    let reference = es
        .spec
        .secret_store_ref
        .as_ref()
        .filter(|r| !r.name.is_empty())
        .ok_or_else(|| Error::InvalidSpec("spec.secretStoreRef.name is required".into()))?;
    let kind = match reference.kind.as_deref() {
        None | Some("SecretStore") => StoreKind::SecretStore,
        Some("ClusterSecretStore") => StoreKind::ClusterSecretStore,
        Some(other) => {
            return Err(Error::InvalidSpec(format!(
                "spec.secretStoreRef.kind {other:?} is not SecretStore or ClusterSecretStore"
            )));
        }
    };
    let id = StoreId {
        kind,
        namespace: (kind == StoreKind::SecretStore).then(|| namespace.clone()),
        name: reference.name.clone(),
    };
    let read_error = |source| Error::Read {
        what: id.to_string(),
        source,
    };
    let spec = match kind {
        StoreKind::SecretStore => {
            let api: Api<SecretStore> = Api::namespaced(ctx.client.clone(), &namespace);
            api.get_opt(&reference.name)
                .await
                .map_err(read_error)?
                .map(|store| store.spec)
        }
        StoreKind::ClusterSecretStore => {
            let api: Api<ClusterSecretStore> = Api::all(ctx.client.clone());
            api.get_opt(&reference.name)
                .await
                .map_err(read_error)?
                .map(|store| store.spec.as_store_spec())
        }
    }
    .ok_or_else(|| Error::StoreNotFound(id.to_string()))?;
    if kind == StoreKind::ClusterSecretStore {
        ensure_namespace_allowed(ctx, &id, &spec, &namespace).await?;
    }
    Ok((id, spec))
}

/// Enforces a ClusterSecretStore's `conditions` for `namespace`, on every use (ESO's
/// `shouldProcessSecret`): a name list, label selectors, and name regexes; any match allows.
async fn ensure_namespace_allowed(
    ctx: &Context,
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: &str,
) -> Result<(), Error> {
    let Some(conditions) = spec.conditions.as_ref().filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let labels = api
        .get_opt(namespace)
        .await
        .map_err(|source| Error::Read {
            what: format!("Namespace {namespace}"),
            source,
        })?
        .map(|ns| ns.metadata.labels.unwrap_or_default())
        .unwrap_or_default();
    let allowed = conditions.iter().any(|condition| {
        let by_name = condition
            .namespaces
            .iter()
            .flatten()
            .any(|name| name == namespace);
        let by_selector = condition
            .namespace_selector
            .as_ref()
            .is_some_and(|selector| selector_matches(selector, namespace, &labels));
        let by_regex = condition.namespace_regexes.iter().flatten().any(|pattern| {
            // An invalid pattern allows nothing.
            regex::Regex::new(pattern).is_ok_and(|re| re.is_match(namespace))
        });
        by_name || by_selector || by_regex
    });
    if allowed {
        Ok(())
    } else {
        Err(Error::StoreDenied {
            store: store.to_string(),
            namespace: namespace.to_string(),
        })
    }
}

/// A label selector over a namespace's labels (plus the implicit `kubernetes.io/metadata.name`).
fn selector_matches(
    selector: &LabelSelector,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The consuming namespace that keys the provider cache: set for referent ClusterSecretStores.
fn consumer_of<'a>(store: &StoreId, spec: &SecretStoreSpec, namespace: &'a str) -> Option<&'a str> {
    (store.kind == StoreKind::ClusterSecretStore
        && crate::external_secrets::providers::is_referent(spec))
    .then_some(namespace)
}

/// The connected provider for a store, from the cache when its configuration is unchanged.
async fn provider_for(
    ctx: &Context,
    store: &StoreId,
    spec: &SecretStoreSpec,
    namespace: &str,
) -> Result<Arc<dyn SecretProvider>, Error> {
    let consumer = consumer_of(store, spec, namespace);
    let connection = crate::external_secrets::providers::resolve(
        &ctx.client,
        store,
        spec,
        Some(namespace),
        &ctx.settings,
    )
    .await?;
    let handle = ctx
        .providers
        .get(&ctx.client, store, consumer, connection)
        .await
        .inspect_err(|error| {
            let outcome = error.provider_error().map_or("StoreError", fetched_reason);
            count_call(ctx, store, "login", outcome);
        })?;
    if handle.fresh {
        count_call(ctx, store, "login", "ok");
    }
    Ok(handle.provider)
}

fn count_call(ctx: &Context, store: &StoreId, call: &str, outcome: &str) {
    count_provider_call(&ctx.metrics, store, call, outcome);
}

/// Reads every `dataFrom` and `data` entry. `None` when `deletionPolicy: Delete` and every
/// remote value is gone. Each `(key, version)` is read once; properties are taken locally.
async fn fetch(
    es: &ExternalSecret,
    policies: &Policies,
    source: &Source<'_>,
    ctx: &Context,
) -> Result<Option<BTreeMap<String, Zeroizing<Vec<u8>>>>, Error> {
    let store = source.store;
    let mut documents: HashMap<(String, Option<String>), Result<SecretValue, ProviderError>> =
        HashMap::new();
    let mut values: BTreeMap<String, Zeroizing<Vec<u8>>> = BTreeMap::new();
    let mut missing = 0usize;
    let mut entries = 0usize;
    // ESO's precedence: dataFrom entries in order (later ones win), then data[] over all.
    for (index, from) in es.spec.data_from.iter().flatten().enumerate() {
        let rewrites = from.rewrite.as_deref();
        let (map, decoding, remote) = if let Some(find) = &from.find {
            // find before extract, as ESO when both are set.
            entries += 1;
            let found = read_found(source, index, find, ctx).await?;
            let named = found.map(|found| {
                data_from::name_keys(
                    index,
                    rewrites,
                    find.conversion_strategy.as_deref(),
                    "find.conversionStrategy",
                    found,
                )
            });
            (
                named,
                find.decoding_strategy.as_deref(),
                format!("spec.dataFrom[{index}].find"),
            )
        } else if let Some(extract) = &from.extract {
            entries += 1;
            let document = read_document(&mut documents, source, extract, ctx).await;
            let map = document
                .and_then(|doc| mooring_provider::json_properties(&extract.key, doc.expose()));
            let named = map.map(|map| {
                data_from::name_keys(
                    index,
                    rewrites,
                    extract.conversion_strategy.as_deref(),
                    "extract.conversionStrategy",
                    map,
                )
            });
            (
                named,
                extract.decoding_strategy.as_deref(),
                extract.key.clone(),
            )
        } else {
            continue;
        };
        match map {
            Ok(named) => {
                for (key, value) in named? {
                    let decoded = decode(&key, value.expose(), decoding)?;
                    values.insert(key, decoded);
                }
            }
            Err(error) => missing += tolerate(policies, store, &remote, error)?,
        }
    }
    for data in es.spec.data.iter().flatten() {
        entries += 1;
        let reference = &data.remote_ref;
        let document = read_document(&mut documents, source, reference, ctx).await;
        let value = document.and_then(|doc| {
            let remote = RemoteRef {
                key: reference.key.clone(),
                property: reference.property.clone().filter(|p| !p.is_empty()),
                version: None,
            };
            mooring_provider::select_property(&remote, doc.expose().to_vec())
        });
        match value {
            Ok(value) => {
                let decoded = decode(
                    &data.secret_key,
                    value.expose(),
                    reference.decoding_strategy.as_deref(),
                )?;
                values.insert(data.secret_key.clone(), decoded);
            }
            Err(error) => missing += tolerate(policies, store, &reference.key, error)?,
        }
    }
    if entries == 0 {
        return Err(Error::InvalidSpec(
            "spec.data or spec.dataFrom must have at least one entry".into(),
        ));
    }
    if missing == entries && policies.deletion == Deletion::Delete {
        return Ok(None);
    }
    Ok(Some(values))
}

/// The secrets `dataFrom[index].find` selects, keyed by their full names: one read of the query
/// shared with every ExternalSecret of the store that asks within the read window, admitted by
/// the store's budget like any read; counts the call. No match at all is NotFound, so an empty
/// result never empties a Secret (the deletion policies decide, as for a missing key).
async fn read_found(
    source: &Source<'_>,
    index: usize,
    find: &mooring_crds::external_secret::ExternalSecretFind,
    ctx: &Context,
) -> Result<Result<BTreeMap<String, SecretValue>, ProviderError>, Error> {
    let query = data_from::find_query(index, find)?;
    let shared_key = ReadKey {
        store: source.store.clone(),
        consumer: source.consumer.map(str::to_string),
        key: data_from::find_read_key(&query),
        version: None,
    };
    let provider = source.provider;
    let read = async { provider.find(&query).await.map(data_from::encode_found) };
    let (result, served) = ctx.reads.get(shared_key, source.max_age, read).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => fetched_reason(error),
    };
    let call = match served {
        Served::Provider => "find",
        Served::Coalesced => "coalesced",
    };
    count_call(ctx, source.store, call, outcome);
    let field = format!("spec.dataFrom[{index}].find");
    Ok(result.and_then(|encoded| {
        let found =
            data_from::decode_found(&encoded).ok_or_else(|| ProviderError::Unavailable {
                detail: format!("failed to decode the shared result of {field}"),
                source: None,
            })?;
        if found.is_empty() {
            return Err(ProviderError::NotFound {
                key: field.clone(),
                detail: "no secret matches the query".into(),
            });
        }
        Ok(found)
    }))
}

/// Where one sync reads from.
#[derive(Clone, Copy)]
struct Source<'a> {
    provider: &'a dyn SecretProvider,
    store: &'a StoreId,
    consumer: Option<&'a str>,
    /// The ExternalSecret's refresh interval: a shared read older than this is not reused.
    max_age: Duration,
}

/// Reads `(key, version)` once per reconcile (and shares it with other ExternalSecrets within
/// the read window); counts the call.
async fn read_document(
    documents: &mut HashMap<(String, Option<String>), Result<SecretValue, ProviderError>>,
    source: &Source<'_>,
    reference: &ExternalSecretDataRemoteRef,
    ctx: &Context,
) -> Result<SecretValue, ProviderError> {
    let Source {
        provider,
        store,
        consumer,
        max_age,
    } = *source;
    let version = reference.version.clone().filter(|v| !v.is_empty());
    let cache_key = (reference.key.clone(), version.clone());
    if let Some(found) = documents.get(&cache_key) {
        return crate::external_secrets::providers::shared_reads::copy_result(found);
    }
    let remote = RemoteRef {
        key: reference.key.clone(),
        property: None,
        version: version.clone(),
    };
    let shared_key = ReadKey {
        store: store.clone(),
        consumer: consumer.map(str::to_string),
        key: reference.key.clone(),
        version,
    };
    let (result, served) = ctx
        .reads
        .get(shared_key, max_age, provider.get(&remote))
        .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => fetched_reason(error),
    };
    let call = match served {
        Served::Provider => "get",
        Served::Coalesced => "coalesced",
    };
    count_call(ctx, store, call, outcome);
    let copy = crate::external_secrets::providers::shared_reads::copy_result(&result);
    documents.insert(cache_key, result);
    copy
}

/// A missing remote value is tolerated (counted) when `deletionPolicy` is Delete or Merge;
/// anything else fails the sync, leaving the Secret as it is.
fn tolerate(
    policies: &Policies,
    store: &StoreId,
    key: &str,
    error: ProviderError,
) -> Result<usize, Error> {
    let tolerated = matches!(error, ProviderError::NotFound { .. })
        && matches!(policies.deletion, Deletion::Delete | Deletion::Merge);
    if tolerated {
        Ok(1)
    } else {
        Err(Error::Provider {
            store: store.to_string(),
            key: key.to_string(),
            source: error,
        })
    }
}

/// Applies `decodingStrategy` (ESO's `runtime/decoding`).
fn decode(key: &str, value: &[u8], strategy: Option<&str>) -> Result<Zeroizing<Vec<u8>>, Error> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let failed = |strategy: &str| Error::Decode {
        key: key.to_string(),
        strategy: strategy.to_string(),
    };
    let text = || std::str::from_utf8(value).map(str::trim);
    match strategy {
        None | Some("") | Some("None") => Ok(Zeroizing::new(value.to_vec())),
        Some("Base64") => text()
            .ok()
            .and_then(|t| STANDARD.decode(t).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| failed("Base64")),
        Some("Base64URL") => text()
            .ok()
            .and_then(|t| URL_SAFE.decode(t).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| failed("Base64URL")),
        Some("Auto") => Ok(Zeroizing::new(
            text()
                .ok()
                .and_then(|t| STANDARD.decode(t).ok().or_else(|| URL_SAFE.decode(t).ok()))
                .unwrap_or_else(|| value.to_vec()),
        )),
        Some(other) => Err(Error::InvalidSpec(format!(
            "decodingStrategy {other:?} of {key:?} is not one of None, Base64, Base64URL, Auto"
        ))),
    }
}

/// The Secret to write: fetched values through `target.template` (reference §3's merge order
/// for mooring's subset: `template.data` over the fetched values only with `mergePolicy: Merge`).
fn desired_secret(
    es: &ExternalSecret,
    name: &str,
    values: BTreeMap<String, Zeroizing<Vec<u8>>>,
) -> Result<Desired, Error> {
    let target = es.spec.target.clone().unwrap_or_default();
    let template = target.template.unwrap_or_default();
    let templates = template.data.clone().unwrap_or_default();
    let data = if templates.is_empty() {
        values.clone()
    } else {
        let rendered = mooring_template::render_all(&templates, &values)?;
        if template.merge_policy.as_deref() == Some("Merge") {
            let mut merged = values.clone();
            merged.extend(rendered);
            merged
        } else {
            rendered
        }
    };
    let metadata = template.metadata.clone().unwrap_or_default();
    let render_strings =
        |map: Option<BTreeMap<String, String>>| -> Result<BTreeMap<String, String>, Error> {
            let map = map.unwrap_or_default();
            if map.is_empty() {
                return Ok(map);
            }
            let rendered = mooring_template::render_all(&map, &values)?;
            rendered
                .into_iter()
                .map(|(k, v)| {
                    String::from_utf8(v.to_vec())
                        .map(|text| (k.clone(), text))
                        .map_err(|_| {
                            Error::InvalidSpec(format!(
                                "template metadata {k:?} did not render to UTF-8 text"
                            ))
                        })
                })
                .collect()
        };
    Ok(Desired {
        name: name.to_string(),
        data,
        type_: template.type_.clone().filter(|t| !t.is_empty()),
        labels: render_strings(metadata.labels)?,
        annotations: render_strings(metadata.annotations)?,
        immutable: target.immutable == Some(true),
    })
}

/// SHA-256 (hex) of the keys and values mooring writes.
fn data_hash(data: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for (key, value) in data {
        context.update(&(key.len() as u64).to_be_bytes());
        context.update(key.as_bytes());
        context.update(&(value.len() as u64).to_be_bytes());
        context.update(value);
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the Secret holds exactly what `desired` says for the parts mooring writes.
fn matches_desired(secret: &Secret, desired: &Desired) -> bool {
    let data = secret.data.clone().unwrap_or_default();
    let values_match = desired
        .data
        .iter()
        .all(|(k, v)| data.get(k).is_some_and(|have| have.0 == v.as_slice()));
    let labels = secret.labels();
    let annotations = secret.annotations();
    values_match
        && desired.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && desired
            .annotations
            .iter()
            .all(|(k, v)| annotations.get(k) == Some(v))
        && annotations.get(DATA_HASH_ANNOTATION) == Some(&data_hash(&desired.data))
        && desired
            .type_
            .as_ref()
            .is_none_or(|t| secret.type_.as_ref() == Some(t))
}

/// After a restart (nothing in memory): whether the keys mooring applied still hash to the
/// annotation it wrote. The keys are those the `mooring` field manager owns under `data`.
fn is_as_written(secret: &Secret) -> bool {
    let Some(expected) = secret.annotations().get(DATA_HASH_ANNOTATION) else {
        return false;
    };
    let owned: Vec<String> = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })
        .filter_map(|m| m.fields_v1.as_ref())
        .filter_map(|fields| fields.0.get("f:data")?.as_object().cloned())
        .flat_map(|keys| {
            keys.keys()
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let data = secret.data.clone().unwrap_or_default();
    let written: BTreeMap<String, Zeroizing<Vec<u8>>> = owned
        .into_iter()
        .filter_map(|k| data.get(&k).map(|v| (k, Zeroizing::new(v.0.clone()))))
        .collect();
    &data_hash(&written) == expected
}

fn is_controlled_by(secret: &Secret, es: &ExternalSecret) -> bool {
    let uid = es.uid();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// Server-side applies the desired Secret (only when it differs), per `creationPolicy`.
async fn write_secret(
    es: &ExternalSecret,
    policies: &Policies,
    existing: Option<&Secret>,
    desired: &Desired,
    api: &Api<Secret>,
) -> Result<Outcome, Error> {
    let name = desired.name.clone();
    match (policies.creation, existing) {
        (Creation::None, _) => return Ok(Outcome::Unchanged),
        (Creation::Merge, None) => return Ok(Outcome::Missing),
        _ => {}
    }
    if let Some(existing) = existing {
        let foreign_controller = existing
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true))
            && !is_controlled_by(existing, es);
        if policies.creation == Creation::Owner && foreign_controller {
            return Err(Error::ForeignOwner(name));
        }
        let owned_as_wanted =
            policies.creation != Creation::Owner || is_controlled_by(existing, es);
        if matches_desired(existing, desired) && owned_as_wanted {
            return Ok(Outcome::Unchanged);
        }
        if existing.immutable == Some(true) {
            return Err(Error::Immutable(name));
        }
    }
    let mut labels = desired.labels.clone();
    labels.insert(MANAGED_LABEL.into(), "true".into());
    let mut annotations = desired.annotations.clone();
    annotations.insert(OWNER_ANNOTATION.into(), es.name_any());
    annotations.insert(DATA_HASH_ANNOTATION.into(), data_hash(&desired.data));
    let data: BTreeMap<&String, String> = desired
        .data
        .iter()
        .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
        .collect();
    let mut metadata = serde_json::json!({
        "name": name,
        "namespace": es.namespace(),
        "labels": labels,
        "annotations": annotations,
    });
    if policies.creation == Creation::Owner {
        let owner = es.controller_owner_ref(&()).map(|mut owner| {
            owner.block_owner_deletion = None;
            owner
        });
        metadata["ownerReferences"] = serde_json::json!(owner.into_iter().collect::<Vec<_>>());
    }
    let mut body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "data": data,
    });
    if let Some(type_) = &desired.type_ {
        body["type"] = serde_json::json!(type_);
    }
    if desired.immutable {
        body["immutable"] = serde_json::json!(true);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::Api {
        action: "apply",
        name: name.clone(),
        source,
    })?;
    Ok(if existing.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// `deletionPolicy: Delete` with every remote value gone: deletes the Secret if this
/// ExternalSecret controls it.
async fn delete_target(
    es: &ExternalSecret,
    existing: Option<&Secret>,
    api: &Api<Secret>,
) -> SyncResult {
    let Some(existing) = existing.filter(|s| is_controlled_by(s, es)) else {
        return Ok(Outcome::Deleted);
    };
    let name = existing.name_any();
    api.delete(&name, &DeleteParams::default())
        .await
        .map_err(|source| Error::Api {
            action: "delete",
            name,
            source,
        })?;
    Ok(Outcome::Deleted)
}

/// Metrics and events for one reconcile; events only when something changed.
async fn record(es: &ExternalSecret, ctx: &Context, result: &SyncResult) {
    let previous = es
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == reasons::READY));
    let event = match result {
        Ok(outcome) => {
            ctx.metrics
                .syncs
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.label().into(),
                })
                .inc();
            let (reason, note) = match outcome {
                Outcome::Created => ("Created", "secret created"),
                Outcome::Updated => ("Updated", "secret updated"),
                Outcome::Repaired => ("Updated", "secret restored from the last values read"),
                Outcome::Deleted => (
                    "Deleted",
                    "secret deleted: every remote value is gone (deletionPolicy Delete)",
                ),
                Outcome::Refreshed
                | Outcome::Unchanged
                | Outcome::Missing
                | Outcome::OtherController => {
                    if previous.is_some_and(|c| c.status == ConditionStatus::True)
                        || previous.is_none()
                    {
                        return;
                    }
                    ("Synced", "secret in sync again")
                }
            };
            Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(note.into()),
                action: "Sync".into(),
                secondary: None,
            }
        }
        Err(error) => {
            ctx.metrics
                .errors
                .get_or_create(&ReasonLabels {
                    reason: error.reason().into(),
                })
                .inc();
            let message = crate::errors::error_chain(error);
            if previous.is_some_and(|c| c.status == ConditionStatus::False && c.message == message)
            {
                return;
            }
            tracing::warn!(
                externalsecret = %format!("{}/{}", es.namespace().unwrap_or_default(), es.name_any()),
                reason = error.reason(),
                error = %message,
                "failed to sync ExternalSecret"
            );
            Event {
                type_: EventType::Warning,
                reason: "UpdateFailed".into(),
                note: Some(message),
                action: "Sync".into(),
                secondary: None,
            }
        }
    };
    ctx.events.publish(&es.object_ref(&()), event).await;
}

fn condition(type_: &str, status: ConditionStatus, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: None,
    }
}

/// The conditions for a result (pure); `previous` keeps `Fetched` when nothing was read.
fn conditions(
    result: &SyncResult,
    previous: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    let ready = match result {
        Ok(Outcome::Missing) => condition(
            reasons::READY,
            ConditionStatus::True,
            reasons::SECRET_MISSING,
            "the target Secret does not exist (creationPolicy Merge never creates it)".into(),
        ),
        Ok(Outcome::Deleted) => condition(
            reasons::READY,
            ConditionStatus::False,
            reasons::SECRET_DELETED,
            "the Secret was deleted: every remote value is gone (deletionPolicy Delete)".into(),
        ),
        Ok(_) => condition(
            reasons::READY,
            ConditionStatus::True,
            reasons::SECRET_SYNCED,
            "secret synced".into(),
        ),
        Err(error) => condition(
            reasons::READY,
            ConditionStatus::False,
            reasons::SECRET_SYNCED_ERROR,
            crate::errors::error_chain(error),
        ),
    };
    let fetched = match result {
        Ok(outcome) if outcome.fetched() => Some(condition(
            reasons::FETCHED,
            ConditionStatus::True,
            "Fetched",
            "values read from the store".into(),
        )),
        Err(error) => error.provider_error().map(|provider| {
            condition(
                reasons::FETCHED,
                ConditionStatus::False,
                fetched_reason(provider),
                crate::errors::error_chain(error),
            )
        }),
        Ok(_) => None,
    }
    .or_else(|| {
        previous
            .iter()
            .find(|c| c.type_ == reasons::FETCHED)
            .cloned()
    });
    let mut all = vec![ready];
    all.extend(fetched);
    if let Err(Error::Unsupported(fields)) = result {
        all.push(condition(
            names::UNSUPPORTED_FIELDS,
            ConditionStatus::True,
            names::UNSUPPORTED_FIELDS,
            format!("mooring does not implement: {}", fields.join(", ")),
        ));
    }
    for c in &mut all {
        c.observed_generation = generation;
        // Keep the transition time when the status did not change.
        c.last_transition_time = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
    }
    all
}

/// Writes the status only when it changed (conditions, refresh time, synced version).
async fn write_status(
    es: &ExternalSecret,
    ctx: &Context,
    result: &SyncResult,
) -> Result<(), Error> {
    let current = es.status.clone().unwrap_or_default();
    let mut new = current.clone();
    new.conditions = conditions(result, &current.conditions, es.metadata.generation);
    let now = jiff::Timestamp::now().to_string();
    for c in &mut new.conditions {
        if c.last_transition_time.is_none() {
            c.last_transition_time = Some(now.clone());
        }
    }
    if let Ok(outcome) = result {
        if outcome.fetched() {
            new.refresh_time = Some(now.clone());
        }
        if outcome.fetched() || new.synced_resource_version.is_none() {
            new.synced_resource_version = Some(synced_resource_version(es));
        }
        new.binding = Some(Binding {
            name: target_name(es),
        });
    }
    let uid = es.uid().unwrap_or_default();
    let same = |a: &ExternalSecretStatus, b: &ExternalSecretStatus| {
        let strip = |s: &ExternalSecretStatus| {
            let mut s = s.clone();
            for c in &mut s.conditions {
                c.last_transition_time = None;
            }
            s
        };
        strip(a) == strip(b)
    };
    let written_last = lock(&ctx.statuses).get(&uid).is_some_and(|w| same(w, &new));
    if same(&current, &new) || (written_last && !result.as_ref().is_ok_and(|o| o.fetched())) {
        return Ok(());
    }
    let api: Api<ExternalSecret> =
        Api::namespaced(ctx.client.clone(), &es.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": new });
    api.patch_status(
        &es.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Status)?;
    lock(&ctx.statuses).insert(uid, new);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use mooring_crds::external_secret::ExternalSecretSpec;

    fn es(spec: serde_json::Value) -> ExternalSecret {
        let spec: ExternalSecretSpec = serde_json::from_value(spec).unwrap();
        let mut es = ExternalSecret::new("db", spec);
        es.metadata.namespace = Some("app".into());
        es.metadata.uid = Some("uid-1".into());
        es.metadata.generation = Some(1);
        es
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, Zeroizing<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Zeroizing::new(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn policies_have_eso_defaults_and_combination_rules() {
        let defaults = policies(&es(serde_json::json!({})).spec).unwrap();
        assert_eq!(
            defaults,
            Policies {
                creation: Creation::Owner,
                deletion: Deletion::Retain,
                refresh: Refresh::Periodic,
                interval: DEFAULT_REFRESH,
            }
        );
        let bad = policies(
            &es(serde_json::json!({"target": {"creationPolicy": "Orphan", "deletionPolicy": "Delete"}})).spec,
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("requires creationPolicy Owner")
        );
        let once = policies(&es(serde_json::json!({"refreshInterval": "0s"})).spec).unwrap();
        assert_eq!(once.interval, Duration::ZERO);
        let eso_default =
            policies(&es(serde_json::json!({"refreshInterval": "1h0m0s"})).spec).unwrap();
        assert_eq!(eso_default.interval, Duration::from_secs(3600));
        assert!(policies(&es(serde_json::json!({"refreshInterval": "soon"})).spec).is_err());
    }

    #[test]
    fn created_once_is_final_and_spec_changes_refresh() {
        let mut object = es(serde_json::json!({"refreshPolicy": "CreatedOnce"}));
        let version = synced_resource_version(&object);
        let p = policies(&object.spec).unwrap();
        assert!(refresh_due(&object, &p, &version), "never synced");
        object.status = Some(ExternalSecretStatus {
            refresh_time: Some(jiff::Timestamp::now().to_string()),
            synced_resource_version: Some("0-old".into()),
            ..Default::default()
        });
        assert!(
            !refresh_due(&object, &p, &version),
            "CreatedOnce never refreshes again"
        );
        let mut periodic = object.clone();
        periodic.spec.refresh_policy = None;
        let p = policies(&periodic.spec).unwrap();
        assert!(refresh_due(&periodic, &p, &version), "spec changed");
        periodic.status.as_mut().unwrap().synced_resource_version = Some(version.clone());
        assert!(!refresh_due(&periodic, &p, &version), "fresh and unchanged");
        let mut on_change = periodic.clone();
        on_change.spec.refresh_policy = Some("OnChange".into());
        on_change.status.as_mut().unwrap().refresh_time = Some("2020-01-01T00:00:00Z".into());
        let p = policies(&on_change.spec).unwrap();
        assert!(
            !refresh_due(&on_change, &p, &version),
            "OnChange ignores time"
        );
        assert!(
            refresh_due(&on_change, &p, "2-other"),
            "OnChange follows the spec"
        );
        let mut stale = periodic.clone();
        stale.status.as_mut().unwrap().refresh_time = Some("2020-01-01T00:00:00Z".into());
        let p = policies(&stale.spec).unwrap();
        assert!(
            refresh_due(&stale, &p, &version),
            "Periodic after the interval"
        );
    }

    #[test]
    fn first_syncs_and_spec_changes_are_urgent_and_refreshes_periodic() {
        let mut object = es(serde_json::json!({"refreshInterval": "1m"}));
        let version = synced_resource_version(&object);
        assert_eq!(urgency(&object, &version), Urgency::FirstSyncOrChange);
        object.status = Some(ExternalSecretStatus {
            refresh_time: Some("2020-01-01T00:00:00Z".into()),
            synced_resource_version: Some(version.clone()),
            ..Default::default()
        });
        assert_eq!(
            urgency(&object, &version),
            Urgency::Periodic,
            "due on schedule"
        );
        object.metadata.generation = Some(2);
        let changed = synced_resource_version(&object);
        assert_eq!(urgency(&object, &changed), Urgency::FirstSyncOrChange);
    }

    #[test]
    fn refreshes_share_a_phase_per_store_and_keys_and_keep_the_interval() {
        let minute = Duration::from_secs(60);
        let spec = |key: &str| {
            serde_json::json!({"secretStoreRef": {"name": "vault"},
                "data": [{"secretKey": "p", "remoteRef": {"key": key}}]})
        };
        let (mut a, b, other) = (es(spec("db")), es(spec("db")), es(spec("cache")));
        a.metadata.uid = Some("another-uid".into());
        assert_eq!(refresh_phase(&a, minute), refresh_phase(&b, minute));
        assert_ne!(refresh_phase(&a, minute), refresh_phase(&other, minute));
        let last: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let phase = refresh_phase(&a, minute);
        let first = scheduled_refresh(last, minute, phase);
        let after = Duration::try_from(first.duration_since(last)).unwrap();
        assert!(after >= minute / 2 && after < minute * 3 / 2, "{after:?}");
        let second = scheduled_refresh(first, minute, phase);
        assert_eq!(
            Duration::try_from(second.duration_since(first)).unwrap(),
            minute
        );
    }

    #[test]
    fn decoding_strategies() {
        assert_eq!(
            decode("k", b"aGk=", Some("Base64")).unwrap().as_slice(),
            b"hi"
        );
        assert_eq!(
            decode("k", b"aGk", Some("Base64URL")).unwrap_err().reason(),
            "DecodeFailed"
        );
        assert_eq!(
            decode("k", b"aGk=", Some("Auto")).unwrap().as_slice(),
            b"hi"
        );
        assert_eq!(
            decode("k", b"not base64!", Some("Auto"))
                .unwrap()
                .as_slice(),
            b"not base64!"
        );
        assert_eq!(decode("k", b"aGk=", None).unwrap().as_slice(), b"aGk=");
        let error = decode("k", b"s3cr3t!!", Some("Base64")).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    #[test]
    fn template_replaces_by_default_and_merges_on_request() {
        let replace = es(serde_json::json!({"target": {"template": {
            "type": "kubernetes.io/basic-auth",
            "metadata": {"labels": {"user": "{{ .user }}"}},
            "data": {"dsn": "postgres://{{ .user }}:{{ .password }}@db"}}}}));
        let desired = desired_secret(
            &replace,
            "db",
            values(&[("user", "app"), ("password", "pw")]),
        )
        .unwrap();
        assert_eq!(desired.data.keys().collect::<Vec<_>>(), ["dsn"]);
        assert_eq!(desired.data["dsn"].as_slice(), b"postgres://app:pw@db");
        assert_eq!(desired.labels["user"], "app");
        assert_eq!(desired.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let mut merge = replace.clone();
        merge
            .spec
            .target
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .merge_policy = Some("Merge".into());
        let desired =
            desired_secret(&merge, "db", values(&[("user", "app"), ("password", "pw")])).unwrap();
        assert_eq!(
            desired.data.keys().collect::<Vec<_>>(),
            ["dsn", "password", "user"]
        );
    }

    fn secret_with(data: &[(&str, &str)], annotations: &[(&str, String)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                ),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn drift_is_detected_on_the_keys_mooring_writes_only() {
        let desired = Desired {
            name: "db".into(),
            data: values(&[("password", "pw")]),
            ..Default::default()
        };
        let hash = data_hash(&desired.data);
        let same = secret_with(
            &[("password", "pw"), ("extra", "theirs")],
            &[(DATA_HASH_ANNOTATION, hash.clone())],
        );
        assert!(
            matches_desired(&same, &desired),
            "keys of others are left alone"
        );
        let edited = secret_with(&[("password", "edited")], &[(DATA_HASH_ANNOTATION, hash)]);
        assert!(!matches_desired(&edited, &desired));
    }

    #[test]
    fn stores_of_another_controller_class_are_left_alone() {
        let with = |class: Option<&str>| {
            let mut spec: SecretStoreSpec =
                serde_json::from_value(serde_json::json!({"provider": {}})).unwrap();
            spec.controller = class.map(str::to_string);
            is_handled_here(&spec)
        };
        assert!(with(None));
        assert!(with(Some("")));
        assert!(with(Some("mooring")));
        assert!(!with(Some("eso")));
    }

    #[test]
    fn namespace_selectors() {
        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let selector: LabelSelector =
            serde_json::from_value(serde_json::json!({"matchLabels": {"team": "a"}})).unwrap();
        assert!(selector_matches(&selector, "x", &labels));
        assert!(!selector_matches(&selector, "x", &BTreeMap::new()));
        let by_name: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["x"]}]})).unwrap();
        assert!(selector_matches(&by_name, "x", &BTreeMap::new()));
        assert!(!selector_matches(&by_name, "y", &BTreeMap::new()));
    }

    #[test]
    fn conditions_keep_eso_reasons_and_tell_provider_errors_apart() {
        let not_found: SyncResult = Err(Error::Provider {
            store: "SecretStore app/vault".into(),
            key: "db".into(),
            source: ProviderError::NotFound {
                key: "db".into(),
                detail: "vault answered 404".into(),
            },
        });
        let all = conditions(&not_found, &[], Some(1));
        assert_eq!(
            (all[0].type_.as_str(), all[0].reason.as_str()),
            ("Ready", "SecretSyncedError")
        );
        assert_eq!(
            (all[1].type_.as_str(), all[1].reason.as_str()),
            ("Fetched", "NotFound")
        );
        let denied: SyncResult = Err(Error::Provider {
            store: "s".into(),
            key: "db".into(),
            source: ProviderError::PermissionDenied {
                key: "db".into(),
                detail: "403".into(),
            },
        });
        assert_eq!(conditions(&denied, &[], None)[1].reason, "Forbidden");
        let ok = conditions(&Ok(Outcome::Unchanged), &all, Some(1));
        assert_eq!(ok[0].reason, "SecretSynced");
        assert_eq!(
            ok[1].reason, "NotFound",
            "Fetched kept when nothing was read"
        );
        let unsupported = conditions(
            &Err(Error::Unsupported(vec!["spec.dataFrom[0].find".into()])),
            &[],
            None,
        );
        assert_eq!(unsupported[1].type_, "UnsupportedFields");
        assert!(unsupported[1].message.contains("spec.dataFrom[0].find"));
    }
}
