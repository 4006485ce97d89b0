//! The Application controller: fetch → render → plan → apply → prune, then status.
//!
//! Fetching and rendering sit behind [`Source`] (the Git cache and the renderers implement it),
//! so this controller only decides *whether* and *how* to sync. `reconcile` reads as the list
//! of steps; each step lives with its kind of decision:
//!
//! - `checks`: the destination must be this cluster; fields and hook types mooring does not
//!   implement are named in a condition.
//! - `operation`: whether this sync runs resource hooks (once per revision and spec
//!   generation), and the `status.operationState` that lets an operation resume.
//! - `mode`: apply or only compare (automated, selfHeal and its backoff), and when to look again.
//! - `status`: the conditions and status of each outcome, written only when they changed.
//! - `events`: drift (naming the field manager that made it), writes and prunes.
//! - `finalize`: Argo CD's resources finalizer.
//! - `tenancy`: the AppProject, whether an Application outside the agent's namespace is
//!   admitted, and the ServiceAccount its syncs impersonate. Every rendered object is checked
//!   against the project before anything is written; one refused object refuses the sync.
//!
//! Drift watches on the managed kinds wake an Application within seconds of a manual change.

mod checks;
mod error;
mod events;
mod finalize;
mod looks;
mod mode;
mod operation;
mod orphans;
mod status;
mod tenancy;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use mooring_crds::app_project::AppProject;
use mooring_crds::application::{Application, ApplicationStatus, reasons};
use mooring_crds::conditions::Condition;

pub use self::checks::unsupported_fields;
pub use self::error::Error;
use self::error::{failed_objects, first_failure};
use crate::controllers::reconciles::Reconciles;
use crate::controllers::{Failures, lock};
use crate::events::EventSink;
use crate::gitops::apply::object::AppId;
use crate::gitops::apply::watch::Watches;
use crate::gitops::apply::{Engine, Mode, SyncReport};
use crate::metrics::{ApplicationMetrics, ControllerMetrics, OutcomeLabels, ReasonLabels};

/// How many Applications sync at once (Flux's default is 4).
const SYNC_CONCURRENCY: usize = 4;
/// The `controller` label of this controller's metrics.
const CONTROLLER: &str = "application";

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
/// The agent's implementation, [`crate::gitops::source::GitSource`], resolves
/// `spec.source.repoURL`/`targetRevision` with the Git cache (credentials from repository
/// Secrets) and renders `spec.source.path` with the renderers; it maps their errors to
/// [`SourceError`] with reasons such as `FetchFailed`, `AuthFailed` or `RenderFailed`. The GitOps
/// job wires it as
/// `Context::new(client, Arc::new(source), events, max_prune_fraction, default_poll_interval)`
/// and spawns [`run`]. Tests supply a fixed list of objects instead.
pub trait Source: Send + Sync + 'static {
    /// The desired objects of `app` at its `targetRevision`.
    fn desired<'a>(&'a self, app: &'a Application) -> BoxFuture<'a, Result<Desired, SourceError>>;

    /// The desired objects of `app` at `commit`, which its `targetRevision` resolved to a moment
    /// ago, without asking the remote again where the source keeps that commit. By default (a
    /// source without a cache) the same as [`Source::desired`].
    fn desired_again<'a>(
        &'a self,
        app: &'a Application,
        commit: &'a str,
    ) -> BoxFuture<'a, Result<Desired, SourceError>> {
        let _ = commit;
        self.desired(app)
    }
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
    /// The shortest `spec.pollInterval` honoured.
    pub min_poll_interval: Duration,
    /// Only Applications matching this label selector (sharding across agents).
    selector: Option<String>,
    /// Sync slots, queue depth and results; shutdown waits for the running syncs.
    reconciles: Reconciles,
    metrics: ApplicationMetrics,
    watches: Watches,
    triggers: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<AppId>>>,
    /// Failed reconciles in a row per Application uid, for the retry backoff.
    failures: Failures,
    /// Application uid → self-heals in a row and when the last one happened: a controller
    /// fighting mooring over a field is slowed down, not fought in a tight loop.
    heals: mode::Heals,
    /// The agent's namespace (projects, the default project's reach) and impersonation.
    tenancy: tenancy::Tenancy,
    /// The commit each Application's last look at its repository found.
    looks: looks::Looks,
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
            min_poll_interval: mode::Polling::default().min,
            selector: None,
            reconciles: Reconciles::new(
                CONTROLLER,
                SYNC_CONCURRENCY,
                &ControllerMetrics::default(),
            ),
            metrics: ApplicationMetrics::default(),
            watches,
            triggers: Mutex::new(Some(triggers)),
            failures: Failures::default(),
            heals: Mutex::default(),
            tenancy: tenancy::Tenancy::default(),
            looks: looks::Looks::default(),
        }
    }

    /// AppProjects are read from `agent_namespace`, and the built-in `default` project admits
    /// only Applications there; Applications elsewhere need a project whose `sourceNamespaces`
    /// lists their namespace. Clients impersonating ServiceAccounts start from `kubeconfig`
    /// (`None`: inferred). Without this (library use) each Application's own namespace plays
    /// the agent's.
    pub fn with_tenancy(
        mut self,
        agent_namespace: String,
        kubeconfig: Option<std::path::PathBuf>,
    ) -> Context {
        self.tenancy.agent_namespace = Some(agent_namespace);
        self.tenancy.kubeconfig = kubeconfig;
        self
    }

    /// Reads Argo CD's own AppProjects (`argoproj.io`) too, where no mooring.dev AppProject of
    /// that name exists (`--argocd-api`).
    pub fn with_argocd_api(mut self, argocd_api: bool) -> Context {
        self.tenancy.argocd_api = argocd_api;
        self
    }

    /// Polls at most this often, whatever an Application's `spec.pollInterval` says.
    pub fn with_min_poll_interval(mut self, min: Duration) -> Context {
        self.min_poll_interval = min;
        self
    }

    fn polling(&self) -> mode::Polling {
        mode::Polling {
            default: self.default_poll_interval,
            min: self.min_poll_interval,
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
    let triggers = lock(&ctx.triggers).take();
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
    // Only what the user or a webhook changed wakes an Application: its spec (generation), its
    // metadata (the refresh annotation, labels) or its deletion. The controller's own status
    // writes do not, so a sync is not followed by a second look at the remote.
    let (reader, writer) = reflector::store();
    let changes = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .predicate_filter(looks::wakes_on, PredicateConfig::default());
    let controller = Controller::for_stream(changes, reader);
    // A project created or changed wakes the Applications naming it (one outside the agent's
    // namespace is admitted as soon as a project lists its namespace).
    let store = controller.store();
    let naming = move |name: String| {
        store
            .state()
            .into_iter()
            .filter(|app| crate::gitops::project::project_name(app) == name)
            .map(|app| ObjectRef::from_obj(app.as_ref()))
            .collect::<Vec<_>>()
    };
    let projects: Api<AppProject> = match &ctx.tenancy.agent_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let wake = naming.clone();
    let mut controller = controller.watches(projects, watcher::Config::default(), move |project| {
        wake(project.name_any())
    });
    if ctx.tenancy.argocd_api {
        let resource = mooring_crds::app_project::argocd_api_resource();
        let argocd: Api<DynamicObject> = match &ctx.tenancy.agent_namespace {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
            None => Api::all_with(ctx.client.clone(), &resource),
        };
        controller = controller.watches_with(
            argocd,
            resource,
            watcher::Config::default(),
            move |project| naming(project.name_any()),
        );
    }
    let controller = controller
        .reconcile_on(drift.take_until(shutdown.clone()))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_in_slot, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    crate::controllers::run_until_drained(controller, shutdown, in_flight).await;
}

/// [`reconcile`] in a sync slot. Each sync already runs 16 requests at once: a few
/// Applications at a time keep the API server (and a cold start with hundreds of Applications)
/// responsive; the others wait, counted as the queue depth, and a shutdown waits for running
/// syncs only.
async fn reconcile_in_slot(app: Arc<Application>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconciles
        .run_in_slot(reconcile(app, Arc::clone(&ctx)), Error::reason)
        .await
}

/// One Application, step by step: read it, finalize or check it, fetch and render, sync, then
/// events, status and when to look again.
async fn reconcile(cached: Arc<Application>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let id = AppId {
        namespace: cached.namespace().unwrap_or_default(),
        name: cached.name_any(),
    };
    let Some(app) = read_current(&ctx, &id).await? else {
        return Ok(Action::await_change());
    };
    let poll = mode::poll(&app, ctx.polling());
    let previous = app.status.clone().unwrap_or_default();
    let (project, service_account) = match tenancy::admit(&ctx, &app).await? {
        tenancy::Admission::Ignored => {
            tracing::debug!(application = %id, "ignored: no project admits its namespace");
            return Ok(Action::await_change());
        }
        tenancy::Admission::Refused(message) if app.metadata.deletion_timestamp.is_none() => {
            let conditions = checks::unsupported_fields_condition(&app, &[])
                .into_iter()
                .collect();
            let status =
                status::refused_by_project(previous, conditions, reasons::INVALID_SPEC, message);
            status::write(&ctx, &app, status).await?;
            return Ok(Action::requeue(poll));
        }
        // Being deleted but refused: its objects stay (nothing this project allows to touch).
        tenancy::Admission::Refused(_) => return Ok(Action::await_change()),
        tenancy::Admission::Admitted {
            project,
            service_account,
        } => (project, service_account),
    };
    let engine = tenancy::engine_for(&ctx, &project, service_account.as_ref()).await?;
    if app.metadata.deletion_timestamp.is_some() {
        ctx.looks.forget(&app);
        return finalize::finalize(&ctx, &engine, &app, &id).await;
    }
    let mut conditions: Vec<Condition> =
        checks::unsupported_fields_condition(&app, &project.unsupported_fields())
            .into_iter()
            .collect();
    if let Err(message) = checks::check_destination(&app) {
        let status = status::invalid_destination(previous, conditions, message);
        status::write(&ctx, &app, status).await?;
        return Ok(Action::requeue(poll));
    }
    if app.spec.suspend == Some(true) {
        status::write(&ctx, &app, status::suspended(previous, conditions)).await?;
        return Ok(Action::await_change());
    }
    // A failed fetch or render keeps the old inventory and prunes nothing.
    let desired = match fetch_desired(&ctx, &app).await {
        Ok(desired) => desired,
        Err(error) => {
            ctx.looks.forget(&app);
            events::source_failed(&ctx, &app, &error).await;
            let status = status::source_failed(previous, conditions, &error);
            status::write(&ctx, &app, status).await?;
            return Err(error.into());
        }
    };
    let poll = ctx.looks.due_in(&app, poll);
    checks::note_hooks_not_run(&mut conditions, &desired.objects);
    // Every object is checked before anything is written: one the project refuses stops the
    // whole sync (Argo CD does the same), and nothing is pruned either.
    let mut refused = engine
        .refused_objects(
            &desired.objects,
            app.spec.destination.namespace.as_deref(),
            project.as_ref(),
        )
        .await;
    // `CreateNamespace=true` writes a Namespace too: the project must allow that kind.
    if let Some(namespace) = created_namespace(&app) {
        refused.extend(
            engine
                .refused_objects(&[namespace], None, project.as_ref())
                .await,
        );
    }
    if !refused.is_empty() {
        let message = refused_message(&refused);
        tracing::warn!(application = %id, %message, "sync refused by the project");
        let status =
            status::refused_by_project(previous, conditions, reasons::PROJECT_VIOLATION, message);
        status::write(&ctx, &app, status).await?;
        return Ok(Action::requeue(poll));
    }
    // Nothing rendered without allowEmpty is never "Synced": the sync below applies nothing and
    // its prune guards delete nothing, and the status says why.
    let empty_render = checks::empty_render(&app, &desired.objects);
    let plan = mode::plan(&app, &previous, &desired.revision, &ctx.heals);
    let hook_plan = operation::plan(
        &app,
        &previous,
        &desired.revision,
        &desired.objects,
        plan.mode,
    );
    let report = sync(
        &ctx,
        &engine,
        &app,
        &id,
        &previous,
        desired.objects,
        &plan,
        hook_plan.hooks.clone(),
    )
    .await?;
    events::announce(&ctx, &app, &report, plan.mode, plan.heal_wait.is_some()).await;
    conditions.extend(orphans::warning(&ctx.client, &project, &app, &report).await);
    let history_before = previous.history.clone();
    let previous_operation = previous.operation_state.clone();
    let mut status = status::synced(
        &app,
        previous,
        &report,
        &desired.revision,
        plan.mode,
        conditions,
    );
    if let Some(message) = empty_render {
        status::empty_render(&mut status, &report, message);
        // Nothing was deployed.
        status.history = history_before;
    }
    status.operation_state = operation::state(
        &app,
        previous_operation.as_ref(),
        &desired.revision,
        &hook_plan,
        &report,
    );
    status::write(&ctx, &app, status).await?;
    log_sync(&id, &desired.revision, plan.mode, &report, started);
    if let Some(error) = failed_objects(&report) {
        return Err(error);
    }
    ctx.failures.clear(&app.uid().unwrap_or_default());
    Ok(mode::next_look(&report, &plan, poll))
}

/// The Application as stored now, `None` once it is gone.
///
/// The watch cache may not show the status this agent wrote a moment ago (a reconcile woken by
/// a drift watch right after a sync): the inventory, the history and "was this revision applied
/// already" must come from the current object, so read it.
async fn read_current(ctx: &Context, id: &AppId) -> Result<Option<Application>, Error> {
    let api: Api<Application> = Api::namespaced(ctx.client.clone(), &id.namespace);
    api.get_opt(&id.name)
        .await
        .map_err(|source| Error::ReadApplication {
            name: id.name.clone(),
            source,
        })
}

/// Fetches and renders the desired state, timing it: at the commit of the last look if that is
/// still good (see [`looks`]), else at whatever `targetRevision` resolves to now.
async fn fetch_desired(ctx: &Context, app: &Application) -> Result<Desired, SourceError> {
    let fetch_started = std::time::Instant::now();
    let interval = mode::poll_interval(app, ctx.polling());
    let fetched = match ctx.looks.reusable(app, interval) {
        Some(commit) => ctx.source.desired_again(app, &commit).await,
        None => {
            let looked_at = tokio::time::Instant::now();
            let fetched = ctx.source.desired(app).await;
            if let Ok(desired) = &fetched {
                ctx.looks.record(app, &desired.revision, looked_at);
            }
            fetched
        }
    };
    ctx.metrics
        .source_seconds
        .observe(fetch_started.elapsed().as_secs_f64());
    fetched
}

/// Applies (or only compares) `objects`, counts the outcome, remembers a self-heal for its
/// backoff, and watches the synced kinds for drift.
#[allow(clippy::too_many_arguments)]
async fn sync(
    ctx: &Context,
    engine: &Engine,
    app: &Application,
    id: &AppId,
    previous: &ApplicationStatus,
    objects: Vec<DynamicObject>,
    plan: &mode::Plan,
    hooks: crate::gitops::apply::Hooks,
) -> Result<SyncReport, Error> {
    let request = mode::request(
        app,
        id,
        previous,
        objects,
        plan.mode,
        ctx.max_prune_fraction,
        hooks,
    );
    // Owned: the rendered objects are dropped one by one as the engine prepares them.
    let report = engine.sync_owned(request).await?;
    count_sync(&ctx.metrics, &report);
    if plan.healed(&report) {
        let uid = app.uid().unwrap_or_default();
        mode::record_heal(&ctx.heals, &uid, tokio::time::Instant::now());
    }
    for kind in &report.kinds {
        ctx.watches.ensure(kind);
    }
    Ok(report)
}

/// "the project refuses N object(s): …", each naming the object and the rule (at most five).
/// The Namespace `CreateNamespace=true` would create, as an object for the project to judge.
fn created_namespace(app: &Application) -> Option<DynamicObject> {
    let options = app.spec.sync_policy.as_ref()?.sync_options.as_slice();
    if !crate::gitops::apply::object::has_option(options, "CreateNamespace", "true") {
        return None;
    }
    let name = app.spec.destination.namespace.as_deref()?;
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))
    .ok()
}

fn refused_message(refused: &[(crate::gitops::apply::object::ObjectKey, String)]) -> String {
    const SHOWN: usize = 5;
    let mut message = format!(
        "the project refuses {} object(s), nothing was applied: {}",
        refused.len(),
        refused
            .iter()
            .take(SHOWN)
            .map(|(_, rule)| rule.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    );
    if refused.len() > SHOWN {
        message.push_str(&format!(" and {} more", refused.len() - SHOWN));
    }
    message
}

fn count_sync(metrics: &ApplicationMetrics, report: &SyncReport) {
    metrics
        .objects_applied
        .inc_by(u64::try_from(report.written.len()).unwrap_or(u64::MAX));
    metrics
        .objects_pruned
        .inc_by(u64::try_from(report.pruned.len()).unwrap_or(u64::MAX));
    metrics
        .syncs
        .get_or_create(&OutcomeLabels {
            outcome: format!("{:?}", report.sync),
        })
        .inc();
}

/// One line per sync: how long it took and what it wrote (operators and the benchmark
/// tests/bench/gitops read it; a no-op resync shows written=0 pruned=0).
fn log_sync(
    id: &AppId,
    revision: &str,
    mode: Mode,
    report: &SyncReport,
    started: tokio::time::Instant,
) {
    tracing::info!(
        application = %id,
        revision = %revision,
        apply = mode == Mode::Apply,
        objects = report.resources.len(),
        written = report.written.len(),
        pruned = report.pruned.len(),
        drift = report.drift.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "application synced"
    );
}

/// A failed reconcile: logged once with its causes, counted by reason, retried after Argo CD's
/// `syncPolicy.retry.backoff` for this many failures in a row.
fn error_policy(app: Arc<Application>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(app = %app.name_any(), error = %crate::errors::error_chain(error), "sync failed");
    ctx.metrics
        .errors
        .get_or_create(&ReasonLabels {
            reason: error.reason().to_owned(),
        })
        .inc();
    let attempts = ctx.failures.record(&app.uid().unwrap_or_default());
    Action::requeue(mode::retry_delay(&app, attempts, error.is_retryable()))
}
