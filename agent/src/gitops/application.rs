//! The Application controller: fetch → render → plan → apply → prune, then status.
//!
//! Fetching and rendering sit behind [`Source`] (the Git cache and the renderers implement it),
//! so this file only decides *whether* and *how* to sync: destination checks, unsupported fields,
//! suspend, automated/selfHeal semantics, events, and the status (`sync`, `health`, `resources`,
//! `conditions`, `history`). Drift watches on the managed kinds wake an Application within
//! seconds of a manual change.
//!
//! Without `automated`, an Application is compared only. With `automated` and without
//! `selfHeal`, each new revision is applied once and drift is reported as OutOfSync, as in Argo
//! CD. With `selfHeal`, drift is reverted and an event names the field manager that made it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use mooring_crds::application::{
    Application, ApplicationStatus, HealthState, HealthStatus, RevisionHistory, SyncState,
    SyncStatus,
};
use mooring_crds::conditions::{Condition, ConditionStatus, names};

use crate::cluster::FIELD_MANAGER;
use crate::controllers::reconciles::Reconciles;
use crate::events::EventSink;
use crate::gitops::apply::object::AppId;
use crate::gitops::apply::prune::PruneSettings;
use crate::gitops::apply::watch::Watches;
use crate::gitops::apply::{Engine, Mode, SyncReport, SyncRequest};
use crate::metrics::{ApplicationMetrics, ControllerMetrics, OutcomeLabels, ReasonLabels};

/// The destinations that mean "this cluster" (Argo CD's in-cluster server URL and name).
const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";
const IN_CLUSTER_NAME: &str = "in-cluster";
/// How many Applications sync at once (Flux's default is 4).
const SYNC_CONCURRENCY: usize = 4;

/// The `controller` label of this controller's metrics.
const CONTROLLER: &str = "application";
/// Annotations of Argo CD and Helm hooks: mooring has no hook phases, so such objects are
/// applied like any other and a condition says so.
const HOOK_ANNOTATIONS: &[&str] = &["argocd.argoproj.io/hook", "helm.sh/hook"];
/// How soon an Application with deferred custom resources looks for their CRDs again.
const DEFERRED_RECHECK: Duration = Duration::from_secs(15);
/// How soon an Application waiting for a sync wave to become healthy is looked at again.
const WAVE_RECHECK: Duration = Duration::from_secs(5);
/// `status.history` length when `spec.revisionHistoryLimit` is unset, as Argo CD.
const DEFAULT_HISTORY: usize = 10;

/// The rendered desired state of an Application at one revision.
#[derive(Clone, Debug)]
pub struct Desired {
    /// The commit SHA rendered.
    pub revision: String,
    /// The objects.
    pub objects: Vec<DynamicObject>,
}

/// Why the desired state could not be produced (fetch or render failed). Nothing is applied or
/// pruned after this.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// A CamelCase reason for the condition and the event (`FetchFailed`, `RenderFailed`, …).
    pub reason: &'static str,
    /// What went wrong, naming the URL, file or line; never secret values.
    pub message: String,
    /// Whether retrying soon may help (network trouble rather than bad input).
    pub retryable: bool,
}

/// Fetch and render: the Git cache and renderers behind one call.
///
/// The agent's implementation resolves `spec.source.repoURL`/`targetRevision` with the Git cache
/// (credentials from repository Secrets) and renders `spec.source.path` with the renderers; map
/// their errors to [`SourceError`] with reasons such as `FetchFailed`, `AuthFailed` or
/// `RenderFailed`. Wire it in `Agent::run` as
/// `Context::new(client, Arc::new(source), events, max_prune_fraction, default_poll_interval)`
/// and spawn [`run`]. Tests supply a fixed list of objects instead.
pub trait Source: Send + Sync + 'static {
    /// The desired objects of `app` at its `targetRevision`.
    fn desired<'a>(&'a self, app: &'a Application) -> BoxFuture<'a, Result<Desired, SourceError>>;
}

/// What the controller needs.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// The sync engine.
    pub engine: Engine,
    /// Fetch and render.
    pub source: Arc<dyn Source>,
    /// Events.
    pub events: EventSink,
    /// The most of an inventory one sync may prune (0..=1).
    pub max_prune_fraction: f64,
    /// How often an Application is looked at without a trigger (`spec.pollInterval` wins).
    pub default_poll_interval: Duration,
    /// Only Applications matching this label selector (sharding across agents).
    selector: Option<String>,
    /// Sync slots, queue depth and results; shutdown waits for the running syncs.
    reconciles: Reconciles,
    metrics: ApplicationMetrics,
    watches: Watches,
    triggers: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<AppId>>>,
    failures: Mutex<HashMap<String, u32>>,
    /// Application uid → self-heals in a row and when the last one happened: a controller
    /// fighting mooring over a field is slowed down, not fought in a tight loop.
    heals: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
}

impl Context {
    /// A context; the drift watches start as Applications sync.
    pub fn new(
        client: kube::Client,
        source: Arc<dyn Source>,
        events: EventSink,
        max_prune_fraction: f64,
        default_poll_interval: Duration,
    ) -> Context {
        let (watches, triggers) = Watches::new(client.clone());
        Context {
            engine: Engine::new(client.clone()),
            client,
            source,
            events,
            max_prune_fraction,
            default_poll_interval,
            selector: None,
            reconciles: Reconciles::new(
                CONTROLLER,
                SYNC_CONCURRENCY,
                &ControllerMetrics::default(),
            ),
            metrics: ApplicationMetrics::default(),
            watches,
            triggers: Mutex::new(Some(triggers)),
            failures: Mutex::default(),
            heals: Mutex::default(),
        }
    }

    /// Reports reconciles, errors, queue depth and durations into the agent's shared metrics.
    pub fn with_controller_metrics(mut self, metrics: &ControllerMetrics) -> Context {
        self.reconciles = Reconciles::new(CONTROLLER, SYNC_CONCURRENCY, metrics);
        self
    }

    /// Counts syncs, errors, applied and pruned objects and source times into `metrics`.
    pub fn with_metrics(mut self, metrics: ApplicationMetrics) -> Context {
        self.metrics = metrics;
        self
    }

    /// Limits this agent to the Applications matching `selector` (a label selector such as
    /// `mooring.dev/shard=a`), so several agents can share a cluster's Applications.
    pub fn with_selector(mut self, selector: Option<String>) -> Context {
        self.selector = selector.filter(|s| !s.is_empty());
        self
    }
}

/// Why a reconcile failed (status is still written; this drives the retry).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Fetch or render failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sync as a whole failed.
    #[error(transparent)]
    Sync(#[from] crate::gitops::apply::Error),
    /// Some objects could not be applied or pruned.
    #[error("failed to sync {count} object(s): {first}")]
    Objects {
        /// How many.
        count: usize,
        /// The first failure.
        first: String,
    },
    /// The Application could not be read.
    #[error("failed to read Application {name}")]
    Read {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The resources finalizer could not be removed after the objects were deleted.
    #[error("failed to remove the resources finalizer of Application {name}")]
    Finalizer {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status could not be written.
    #[error("failed to update the status of Application {name}")]
    Status {
        /// The Application.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A CamelCase reason for the condition, the event and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Source(error) => error.reason,
            Error::Sync(_) => "SyncFailed",
            Error::Objects { .. } => "SyncFailed",
            Error::Status { .. } => "StatusUpdateFailed",
            Error::Finalizer { .. } => "FinalizerUpdateFailed",
            Error::Read { .. } => "ApiError",
        }
    }

    /// Whether retrying soon may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Source(error) => error.retryable,
            _ => true,
        }
    }
}

/// Runs the controller until `shutdown` completes. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Application> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let triggers = ctx
        .triggers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take();
    // The controller stops only once every trigger stream has ended: end the drift stream on
    // shutdown too.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let in_flight = ctx.reconciles.subscribe();
    let drift = futures::stream::unfold(triggers, |receiver| async move {
        let mut receiver = receiver?;
        let app = receiver.recv().await?;
        Some((
            ObjectRef::<Application>::new(&app.name).within(&app.namespace),
            Some(receiver),
        ))
    });
    let mut config = watcher::Config::default();
    if let Some(selector) = &ctx.selector {
        config = config.labels(selector);
    }
    let controller = Controller::new(api, config)
        .reconcile_on(drift.take_until(shutdown.clone()))
        .graceful_shutdown_on(shutdown.clone())
        .run(counted_reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    crate::controllers::run_until_drained(controller, shutdown, in_flight).await;
}

/// [`reconcile`] in a sync slot. Each sync already runs 16 requests at once: a few
/// Applications at a time keep the API server (and a cold start with hundreds of Applications)
/// responsive; the others wait, counted as the queue depth, and a shutdown waits for running
/// syncs only.
async fn counted_reconcile(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action, Error> {
    let slot = ctx.reconciles.admit().await;
    // Boxed, so an Application waiting for a slot holds a small future, not a whole sync's.
    let result = Box::pin(reconcile(app, Arc::clone(&ctx))).await;
    ctx.reconciles
        .record(result.as_ref().map(|_| ()).map_err(Error::reason));
    drop(slot);
    result
}

async fn reconcile(cached: Arc<Application>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let id = AppId {
        namespace: cached.namespace().unwrap_or_default(),
        name: cached.name_any(),
    };
    // The watch cache may not show the status this agent wrote a moment ago (a reconcile woken
    // by a drift watch right after a sync): the inventory, the history and "was this revision
    // applied already" must come from the current object, so read it.
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &id.namespace);
    let app = match api.get_opt(&id.name).await {
        Ok(Some(app)) => app,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(Error::Read {
                name: id.name.clone(),
                source,
            });
        }
    };
    if app.metadata.deletion_timestamp.is_some() {
        return finalize(&ctx, &app, &id).await;
    }
    let poll = with_jitter(poll_interval(&app, ctx.default_poll_interval));
    let mut conditions = Vec::new();
    let unsupported = unsupported_fields(&app);
    if !unsupported.is_empty() {
        conditions.push(condition(
            names::UNSUPPORTED_FIELDS,
            ConditionStatus::True,
            "UnsupportedFields",
            format!(
                "mooring does not implement {}; they are ignored",
                unsupported.join(", ")
            ),
        ));
    }
    let previous = app.status.clone().unwrap_or_default();
    if let Err(message) = check_destination(&app) {
        conditions.push(condition(
            names::INVALID_DESTINATION,
            ConditionStatus::True,
            "InvalidDestination",
            message.clone(),
        ));
        conditions.push(condition(
            names::SYNCED,
            ConditionStatus::False,
            "InvalidDestination",
            message.clone(),
        ));
        conditions.push(condition(
            names::READY,
            ConditionStatus::False,
            "InvalidDestination",
            message,
        ));
        let status = ApplicationStatus {
            sync: Some(SyncStatus {
                status: SyncState::Unknown,
                revision: None,
            }),
            conditions,
            ..previous
        };
        write_status(&ctx, &app, status).await?;
        return Ok(Action::requeue(poll));
    }
    if app.spec.suspend == Some(true) {
        conditions.push(condition(
            names::SYNCED,
            ConditionStatus::Unknown,
            "Suspended",
            "spec.suspend is true: nothing is applied or pruned".into(),
        ));
        conditions.push(condition(
            names::READY,
            ConditionStatus::False,
            "Suspended",
            "the Application is suspended".into(),
        ));
        let status = ApplicationStatus {
            health: Some(HealthStatus {
                status: HealthState::Suspended,
                message: Some("the Application is suspended".into()),
            }),
            conditions,
            ..previous
        };
        write_status(&ctx, &app, status).await?;
        return Ok(Action::await_change());
    }

    // Fetch and render. A failure keeps the old inventory and prunes nothing.
    let fetch_started = std::time::Instant::now();
    let fetched = ctx.source.desired(&app).await;
    ctx.metrics
        .source_seconds
        .observe(fetch_started.elapsed().as_secs_f64());
    let desired = match fetched {
        Ok(desired) => desired,
        Err(error) => {
            conditions.push(condition(
                names::SYNCED,
                ConditionStatus::False,
                error.reason,
                error.message.clone(),
            ));
            conditions.push(condition(
                names::READY,
                ConditionStatus::False,
                error.reason,
                error.message.clone(),
            ));
            let status = ApplicationStatus {
                sync: Some(SyncStatus {
                    status: SyncState::Unknown,
                    revision: previous.sync.as_ref().and_then(|s| s.revision.clone()),
                }),
                conditions,
                ..previous
            };
            publish(&ctx, &app, EventType::Warning, error.reason, &error.message).await;
            write_status(&ctx, &app, status).await?;
            return Err(error.into());
        }
    };

    let policy = app.spec.sync_policy.clone().unwrap_or_default();
    let automated = policy.automated.clone();
    let self_heal = automated
        .as_ref()
        .and_then(|a| a.self_heal)
        .unwrap_or(false);
    let last_synced = previous.history.last().map(|h| h.revision.as_str());
    // Without selfHeal, automated sync applies each revision once (Argo CD's semantics).
    let new_revision = last_synced != Some(desired.revision.as_str());
    let mut mode = match &automated {
        Some(_) if self_heal || new_revision => Mode::Apply,
        _ => Mode::Compare,
    };
    // Self-heal only (Git unchanged) right after another heal: compare now, heal later.
    let uid = app.uid().unwrap_or_default();
    let heal_wait = if mode == Mode::Apply && !new_revision {
        heal_backoff(&ctx.heals, &uid, tokio::time::Instant::now())
    } else {
        None
    };
    if heal_wait.is_some() {
        mode = Mode::Compare;
    }
    let hooks: Vec<String> = desired
        .objects
        .iter()
        .filter(|o| {
            o.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| HOOK_ANNOTATIONS.iter().any(|h| a.contains_key(*h)))
        })
        .filter_map(|o| {
            Some(format!(
                "{} {}",
                o.types.as_ref()?.kind,
                o.metadata.name.as_deref()?
            ))
        })
        .collect();
    if !hooks.is_empty() {
        let listed = crate::gitops::apply::prune::summarize_names(&hooks);
        match conditions
            .iter_mut()
            .find(|c| c.type_ == names::UNSUPPORTED_FIELDS)
        {
            Some(existing) => {
                existing.message = format!(
                    "{}; sync hooks on {listed} are applied as plain resources",
                    existing.message
                );
            }
            None => conditions.push(condition(
                names::UNSUPPORTED_FIELDS,
                ConditionStatus::True,
                "UnsupportedFields",
                format!("sync hooks are not implemented: {listed} are applied as plain resources"),
            )),
        }
    }
    let request = SyncRequest {
        app: id.clone(),
        objects: desired.objects,
        destination_namespace: app.spec.destination.namespace.clone(),
        sync_options: policy.sync_options.clone(),
        inventory: previous.resources.clone(),
        prune: PruneSettings {
            enabled: automated.as_ref().and_then(|a| a.prune).unwrap_or(false),
            allow_empty: automated
                .as_ref()
                .and_then(|a| a.allow_empty)
                .unwrap_or(false),
            max_fraction: ctx.max_prune_fraction,
        },
        mode,
    };
    // Owned: the rendered objects are dropped one by one as the engine prepares them.
    let report = ctx.engine.sync_owned(request).await?;
    ctx.metrics
        .objects_applied
        .inc_by(u64::try_from(report.written.len()).unwrap_or(u64::MAX));
    ctx.metrics
        .objects_pruned
        .inc_by(u64::try_from(report.pruned.len()).unwrap_or(u64::MAX));
    ctx.metrics
        .syncs
        .get_or_create(&OutcomeLabels {
            outcome: format!("{:?}", report.sync),
        })
        .inc();
    if mode == Mode::Apply && !new_revision && !report.drift.is_empty() {
        record_heal(&ctx.heals, &uid, tokio::time::Instant::now());
    }
    for kind in &report.kinds {
        ctx.watches.ensure(kind);
    }
    announce(&ctx, &app, &report, mode, heal_wait.is_some()).await;

    conditions.extend(report_conditions(&report, mode));
    conditions.push(ready_condition(&report));
    let mut history = previous.history.clone();
    // A revision counts as deployed once all of it is applied: while a custom resource waits
    // for its CRD the Application stays in apply mode, so the CR follows when the CRD arrives.
    let applied_cleanly = mode == Mode::Apply
        && report.failures.is_empty()
        && report.deferred.is_empty()
        && report.waiting.is_none();
    if applied_cleanly
        && history.last().map(|h| h.revision.as_str()) != Some(desired.revision.as_str())
    {
        history.push(RevisionHistory {
            revision: desired.revision.clone(),
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
    let status = ApplicationStatus {
        sync: Some(SyncStatus {
            status: report.sync,
            revision: Some(desired.revision.clone()),
        }),
        health: Some(report.health.clone()),
        resources: report.resources.clone(),
        conditions,
        history,
        observed_generation: app.metadata.generation,
    };
    write_status(&ctx, &app, status).await?;
    // One line per sync: how long it took and what it wrote (operators and the benchmark
    // tests/bench/gitops read it; a no-op resync shows written=0 pruned=0).
    tracing::info!(
        application = %id,
        revision = %desired.revision,
        apply = mode == Mode::Apply,
        objects = report.resources.len(),
        written = report.written.len(),
        pruned = report.pruned.len(),
        drift = report.drift.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "application synced"
    );
    if let Some(failure) = report.failures.first() {
        return Err(Error::Objects {
            count: report.failures.len(),
            first: failure.to_string(),
        });
    }
    ctx.failures
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&app.uid().unwrap_or_default());
    if let Some(wait) = heal_wait.filter(|_| !report.drift.is_empty()) {
        return Ok(Action::requeue(wait));
    }
    if report.waiting.is_some() {
        // The next wave starts once this one is healthy: look again soon.
        return Ok(Action::requeue(WAVE_RECHECK.min(poll)));
    }
    if !report.deferred.is_empty() {
        // A CRD from elsewhere (another Application, an operator) may arrive any moment.
        return Ok(Action::requeue(DEFERRED_RECHECK.min(poll)));
    }
    Ok(Action::requeue(poll))
}

/// Argo CD's finalizers that ask for the Application's resources to be deleted with it
/// (foreground, or background for the `/background` variant).
const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";
const RESOURCES_FINALIZER_BACKGROUND: &str = "resources-finalizer.argocd.argoproj.io/background";

/// An Application being deleted: with a resources finalizer, delete its objects (guarded) and
/// then release the finalizer; without one, leave the objects in place (Argo CD's default).
async fn finalize(ctx: &Context, app: &Application, id: &AppId) -> Result<Action, Error> {
    let finalizers = app.metadata.finalizers.clone().unwrap_or_default();
    let ours: Vec<&String> = finalizers
        .iter()
        .filter(|f| *f == RESOURCES_FINALIZER || *f == RESOURCES_FINALIZER_BACKGROUND)
        .collect();
    if ours.is_empty() {
        return Ok(Action::await_change());
    }
    let background = ours.iter().any(|f| *f == RESOURCES_FINALIZER_BACKGROUND);
    let status = app.status.clone().unwrap_or_default();
    let mut sync_options = app
        .spec
        .sync_policy
        .as_ref()
        .map(|p| p.sync_options.clone())
        .unwrap_or_default();
    if background {
        sync_options.push("PrunePropagationPolicy=background".into());
    }
    let request = SyncRequest {
        app: id.clone(),
        objects: Vec::new(),
        destination_namespace: app.spec.destination.namespace.clone(),
        sync_options,
        inventory: status.resources.clone(),
        prune: PruneSettings::default(),
        mode: Mode::Apply,
    };
    let report = ctx.engine.delete_all(&request).await;
    if !report.pruned.is_empty() {
        let note = format!(
            "deleted with the Application: {}",
            crate::gitops::apply::prune::summarize(&report.pruned)
        );
        publish(ctx, app, EventType::Normal, "ResourcesDeleted", &note).await;
    }
    if let Some(failure) = report.failures.first() {
        return Err(Error::Objects {
            count: report.failures.len(),
            first: failure.to_string(),
        });
    }
    let remaining: Vec<String> = finalizers
        .into_iter()
        .filter(|f| f != RESOURCES_FINALIZER && f != RESOURCES_FINALIZER_BACKGROUND)
        .collect();
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &id.namespace);
    // A JSON patch that tests the list first: another controller's finalizer change in between
    // makes it fail and retry instead of being overwritten.
    let patch = serde_json::json!([
        {"op": "test", "path": "/metadata/finalizers", "value": app.metadata.finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
    ]);
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|error| Error::Objects {
            count: 1,
            first: format!("failed to build the finalizer patch: {error}"),
        })?;
    api.patch(&id.name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|source| Error::Finalizer {
            name: id.name.clone(),
            source,
        })?;
    Ok(Action::await_change())
}

fn error_policy(app: Arc<Application>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(app = %app.name_any(), error = %crate::errors::error_chain(error), "sync failed");
    ctx.metrics
        .errors
        .get_or_create(&ReasonLabels {
            reason: error.reason().to_owned(),
        })
        .inc();
    let attempts = {
        let mut failures = ctx
            .failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(app.uid().unwrap_or_default()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    Action::requeue(retry_delay(&app, attempts, error.is_retryable()))
}

/// The first self-heal waits this long after the previous one; each next one three times as
/// long, up to [`HEAL_BACKOFF_CAP`] (Argo CD's `--self-heal-backoff-*` defaults). A quiet period
/// as long as the cap starts over.
const HEAL_BACKOFF_FIRST: Duration = Duration::from_secs(2);
const HEAL_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How long to wait before healing again, when the last heal was too recent.
fn heal_backoff(
    heals: &Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
    uid: &str,
    now: tokio::time::Instant,
) -> Option<Duration> {
    let heals = heals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (count, last) = heals.get(uid)?;
    let since = now.saturating_duration_since(*last);
    if since >= HEAL_BACKOFF_CAP {
        return None;
    }
    let exponent = count.saturating_sub(1).min(10);
    let delay = HEAL_BACKOFF_FIRST
        .saturating_mul(3u32.saturating_pow(exponent))
        .min(HEAL_BACKOFF_CAP);
    delay.checked_sub(since).filter(|d| !d.is_zero())
}

fn record_heal(
    heals: &Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
    uid: &str,
    now: tokio::time::Instant,
) {
    let mut heals = heals
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let entry = heals.entry(uid.to_string()).or_insert((0, now));
    if now.saturating_duration_since(entry.1) >= HEAL_BACKOFF_CAP {
        entry.0 = 0;
    }
    entry.0 = entry.0.saturating_add(1);
    entry.1 = now;
}

/// `syncPolicy.retry.backoff` (default 5s × 2, at most 3m, as Argo CD), per attempt.
fn retry_delay(app: &Application, attempts: u32, retryable: bool) -> Duration {
    let backoff = app
        .spec
        .sync_policy
        .as_ref()
        .and_then(|p| p.retry.as_ref())
        .and_then(|r| r.backoff.clone())
        .unwrap_or_default();
    let first = backoff
        .duration
        .as_deref()
        .and_then(|d| crate::duration::parse(d).ok())
        .unwrap_or(Duration::from_secs(5));
    let cap = backoff
        .max_duration
        .as_deref()
        .and_then(|d| crate::duration::parse(d).ok())
        .unwrap_or(Duration::from_secs(180));
    let factor = u32::try_from(backoff.factor.unwrap_or(2).clamp(1, 10)).unwrap_or(2);
    let mut delay = first;
    for _ in 1..attempts.min(20) {
        delay = delay.saturating_mul(factor);
        if delay >= cap {
            break;
        }
    }
    let delay = delay.min(cap);
    if retryable {
        delay
    } else {
        delay.max(Duration::from_secs(60))
    }
}

fn poll_interval(app: &Application, default: Duration) -> Duration {
    app.spec
        .poll_interval
        .as_deref()
        .and_then(|text| crate::duration::parse(text).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// `interval` plus a random 0–10%, so Applications started together (an agent restart, an
/// app-of-apps) do not poll their repositories in lockstep.
fn with_jitter(interval: Duration) -> Duration {
    interval.mul_f64(1.0 + rand::random_range(0.0..0.1))
}

/// The destination must be this cluster.
fn check_destination(app: &Application) -> Result<(), String> {
    let destination = &app.spec.destination;
    match (destination.server.as_deref(), destination.name.as_deref()) {
        (Some(IN_CLUSTER_SERVER) | None, Some(IN_CLUSTER_NAME) | None) => Ok(()),
        (server, name) => Err(format!(
            "mooring syncs only into its own cluster (server {IN_CLUSTER_SERVER} or name {IN_CLUSTER_NAME}); \
             spec.destination has server {} and name {}",
            server.unwrap_or("(unset)"),
            name.unwrap_or("(unset)")
        )),
    }
}

/// Set fields mooring accepts but does not implement, by their path.
pub fn unsupported_fields(app: &Application) -> Vec<String> {
    let spec = &app.spec;
    let mut found = Vec::new();
    if spec.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        found.push("spec.sources".to_string());
    }
    if spec
        .ignore_differences
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        found.push("spec.ignoreDifferences".to_string());
    }
    if spec.source.helm.is_some() {
        found.push("spec.source.helm".to_string());
    }
    if spec.source.plugin.is_some() {
        found.push("spec.source.plugin".to_string());
    }
    if spec.source.chart.is_some() {
        found.push("spec.source.chart".to_string());
    }
    if let Some(policy) = &spec.sync_policy {
        if policy.managed_namespace_metadata.is_some() {
            found.push("spec.syncPolicy.managedNamespaceMetadata".to_string());
        }
        for option in &policy.sync_options {
            let name = option
                .split_once('=')
                .map_or(option.as_str(), |(n, _)| n.trim());
            // ServerSideApply is what mooring always does; the rest are implemented.
            let known = [
                "CreateNamespace",
                "PruneLast",
                "Prune",
                "PrunePropagationPolicy",
                "ServerSideApply",
                "ApplyOutOfSyncOnly",
            ];
            if !known.contains(&name) {
                found.push(format!("spec.syncPolicy.syncOptions {option}"));
            }
        }
    }
    found
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

/// The conditions a sync report sets.
fn report_conditions(report: &SyncReport, mode: Mode) -> Vec<Condition> {
    let mut conditions = Vec::new();
    let synced = match (report.failures.first(), report.sync, mode) {
        (None, _, Mode::Apply) if report.waiting.is_some() => condition(
            names::SYNCED,
            ConditionStatus::False,
            "SyncWaveNotHealthy",
            report.waiting.clone().unwrap_or_default(),
        ),
        (Some(failure), _, _) => condition(
            names::SYNCED,
            ConditionStatus::False,
            "SyncFailed",
            format!("{} object(s) failed; first: {failure}", report.failures.len()),
        ),
        (None, SyncState::Synced, _) => condition(
            names::SYNCED,
            ConditionStatus::True,
            "Synced",
            format!("{} object(s) in sync", report.resources.len()),
        ),
        (None, _, Mode::Compare) => condition(
            names::SYNCED,
            ConditionStatus::False,
            "OutOfSync",
            "the cluster differs from Git and this sync only compares (no automated sync, or no selfHeal)".into(),
        ),
        (None, _, Mode::Apply) => condition(
            names::SYNCED,
            ConditionStatus::False,
            "OutOfSync",
            "some objects are not applied yet (deferred or left in the cluster)".into(),
        ),
    };
    conditions.push(synced);
    if !report.deferred.is_empty() {
        let message = report
            .deferred
            .iter()
            .map(|(key, reason)| format!("{key}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        conditions.push(condition(
            names::RESOURCES_DEFERRED,
            ConditionStatus::True,
            "MissingCustomResourceDefinition",
            message,
        ));
    }
    if let Some((reason, message)) = &report.prune_refused {
        conditions.push(condition(
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
        conditions.push(condition(
            names::PRUNE_PENDING,
            ConditionStatus::True,
            "PruneSkipped",
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
        conditions.push(condition(
            names::DRIFT_DETECTED,
            ConditionStatus::True,
            "ManualChange",
            message,
        ));
    }
    conditions
}

/// kstatus `Ready`: in sync with Git and healthy, so `kubectl wait --for=condition=Ready` and
/// dependants can gate on an Application.
fn ready_condition(report: &SyncReport) -> Condition {
    match (report.sync, report.health.status) {
        (SyncState::Synced, HealthState::Healthy) => condition(
            names::READY,
            ConditionStatus::True,
            "Healthy",
            "in sync with Git and healthy".into(),
        ),
        (SyncState::Synced, state) => condition(
            names::READY,
            ConditionStatus::False,
            &format!("{state:?}"),
            report
                .health
                .message
                .clone()
                .unwrap_or_else(|| format!("health is {state:?}")),
        ),
        (_, _) => condition(
            names::READY,
            ConditionStatus::False,
            "OutOfSync",
            "the cluster differs from Git".into(),
        ),
    }
}

/// Events, only for what changed: drift (naming who), writes, prunes.
async fn announce(
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
                "DriftReverted",
                format!("{}; reverted (selfHeal)", drift.describe()),
            ),
            Mode::Compare if healing_later => (
                "DriftDetected",
                format!(
                    "{}; selfHeal reverts it after a backoff (it was reverted moments ago)",
                    drift.describe()
                ),
            ),
            Mode::Compare => (
                "DriftDetected",
                format!("{}; OutOfSync (selfHeal is off)", drift.describe()),
            ),
        };
        let reference: ObjectReference = app.object_ref(&());
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "SelfHeal".into(),
            secondary: None,
        };
        ctx.events.publish_distinct(&reference, event).await;
    }
    let drifted: Vec<_> = report.drift.iter().map(|d| &d.key).collect();
    let written: Vec<_> = report
        .written
        .iter()
        .filter(|k| !drifted.contains(k))
        .collect();
    if !written.is_empty() {
        let names: Vec<String> = written.iter().take(5).map(|k| k.to_string()).collect();
        let more = written.len().saturating_sub(5);
        let note = if more > 0 {
            format!(
                "applied {} object(s): {} and {more} more",
                written.len(),
                names.join(", ")
            )
        } else {
            format!("applied {} object(s): {}", written.len(), names.join(", "))
        };
        publish(ctx, app, EventType::Normal, "Applied", &note).await;
    }
    if !report.pruned.is_empty() {
        let note = format!(
            "pruned {}",
            crate::gitops::apply::prune::summarize(&report.pruned)
        );
        publish(ctx, app, EventType::Normal, "Pruned", &note).await;
    }
}

async fn publish(ctx: &Context, app: &Application, type_: EventType, reason: &str, note: &str) {
    let reference: ObjectReference = app.object_ref(&());
    ctx.events
        .publish(
            &reference,
            Event {
                type_,
                reason: reason.into(),
                note: Some(note.chars().take(1000).collect()),
                action: "Sync".into(),
                secondary: None,
            },
        )
        .await;
}

/// Writes the status when it differs from the current one (a no-op sync writes nothing);
/// condition transition times are kept while a condition's status stays the same.
async fn write_status(
    ctx: &Context,
    app: &Application,
    mut status: ApplicationStatus,
) -> Result<(), Error> {
    let current = app.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now().to_string();
    for condition in &mut status.conditions {
        condition.observed_generation = app.metadata.generation;
        let before = current
            .conditions
            .iter()
            .find(|c| c.type_ == condition.type_);
        condition.last_transition_time = match before {
            Some(before) if before.status == condition.status => {
                before.last_transition_time.clone()
            }
            _ => Some(now.clone()),
        };
    }
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
    .map_err(|source| Error::Status {
        name: app.name_any(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use mooring_crds::application::{ApplicationDestination, ApplicationSpec, SyncPolicy};

    use super::*;

    fn app(spec: ApplicationSpec) -> Application {
        Application::new("web", spec)
    }

    #[test]
    fn polls_are_spread_by_up_to_a_tenth() {
        let base = Duration::from_secs(180);
        let delays: Vec<Duration> = (0..200).map(|_| with_jitter(base)).collect();
        assert!(delays.iter().all(|d| *d >= base && *d < base.mul_f64(1.1)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 100,
            "the delays are not spread: {distinct:?}"
        );
    }

    #[test]
    fn only_this_cluster_is_a_valid_destination() {
        let to = |server: Option<&str>, name: Option<&str>| {
            check_destination(&app(ApplicationSpec {
                destination: ApplicationDestination {
                    server: server.map(str::to_string),
                    name: name.map(str::to_string),
                    namespace: None,
                },
                ..Default::default()
            }))
        };
        assert!(to(Some("https://kubernetes.default.svc"), None).is_ok());
        assert!(to(None, Some("in-cluster")).is_ok());
        assert!(to(None, None).is_ok());
        let error = to(Some("https://prod.example.com:6443"), None).unwrap_err();
        assert!(error.contains("https://prod.example.com:6443"), "{error}");
        assert!(to(None, Some("prod")).is_err());
    }

    #[test]
    fn unsupported_fields_are_named() {
        let mut spec = ApplicationSpec::default();
        spec.source.helm = Some(serde_json::json!({"valueFiles": ["v.yaml"]}));
        spec.ignore_differences = Some(vec![serde_json::json!({"kind": "Deployment"})]);
        spec.sync_policy = Some(SyncPolicy {
            sync_options: vec!["CreateNamespace=true".into(), "Replace=true".into()],
            ..Default::default()
        });
        assert_eq!(
            unsupported_fields(&app(spec)),
            [
                "spec.ignoreDifferences",
                "spec.source.helm",
                "spec.syncPolicy.syncOptions Replace=true"
            ]
        );
        assert!(unsupported_fields(&app(ApplicationSpec::default())).is_empty());
    }

    #[test]
    fn self_heal_backs_off_when_it_keeps_reverting() {
        let heals = Mutex::default();
        let start = tokio::time::Instant::now();
        assert_eq!(
            heal_backoff(&heals, "u", start),
            None,
            "the first heal is immediate"
        );
        record_heal(&heals, "u", start);
        let after = |s| start + Duration::from_secs(s);
        assert_eq!(
            heal_backoff(&heals, "u", after(0)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            heal_backoff(&heals, "u", after(1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(heal_backoff(&heals, "u", after(2)), None);
        record_heal(&heals, "u", after(2));
        assert_eq!(
            heal_backoff(&heals, "u", after(2)),
            Some(Duration::from_secs(6))
        );
        record_heal(&heals, "u", after(8));
        assert_eq!(
            heal_backoff(&heals, "u", after(8)),
            Some(Duration::from_secs(18))
        );
        // Quiet for the cap: start over.
        assert_eq!(heal_backoff(&heals, "u", after(8 + 300)), None);
        record_heal(&heals, "u", after(8 + 300));
        assert_eq!(
            heal_backoff(&heals, "u", after(8 + 300)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(heal_backoff(&heals, "other", after(8 + 300)), None);
    }

    #[test]
    fn retry_backs_off_to_the_cap() {
        let plain = app(ApplicationSpec::default());
        assert_eq!(retry_delay(&plain, 1, true), Duration::from_secs(5));
        assert_eq!(retry_delay(&plain, 2, true), Duration::from_secs(10));
        assert_eq!(retry_delay(&plain, 30, true), Duration::from_secs(180));
        assert_eq!(retry_delay(&plain, 1, false), Duration::from_secs(60));
    }
}
