//! Prometheus metrics, prefix `mooring_`, low cardinality: labels are reasons and states, never
//! object names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// CamelCase reason, as in the condition.
    pub reason: String,
}

/// A `status` label (`True`, `False`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The condition status.
    pub status: String,
}

/// The SealedSecret controller's metrics.
#[derive(Clone, Debug, Default)]
pub struct SealedSecretMetrics {
    /// Reconciles that unsealed successfully.
    pub unseals: Counter,
    /// Reconciles that failed, by reason.
    pub errors: Family<ReasonLabels, Counter>,
    /// RSA private-key operations (one per key tried per value).
    pub rsa_operations: Counter,
    /// SealedSecrets by `Synced` status, as last reconciled.
    pub conditions: Family<StatusLabels, Gauge>,
    /// Sealing keys loaded.
    pub keys: Gauge,
    /// Age in seconds of the newest sealing key.
    pub newest_key_age_seconds: Gauge,
}

/// An `outcome` label (`created`, `updated`, `unchanged`…).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What a sync did.
    pub outcome: String,
}

/// A provider call: which store, which call (`login`, `get`), and its outcome (`ok` or the
/// provider's reason). Stores are few, so naming them is cheap.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreCallLabels {
    /// `SecretStore <namespace>/<name>` or `ClusterSecretStore <name>`.
    pub store: String,
    /// `login` or `get`.
    pub call: String,
    /// `ok`, `NotFound`, `Forbidden`, `Unavailable`, `InvalidConfig`…
    pub outcome: String,
}

/// The ExternalSecret and SecretStore controllers' metrics.
#[derive(Clone, Debug, Default)]
pub struct ExternalSecretMetrics {
    /// Successful syncs by outcome.
    pub syncs: Family<OutcomeLabels, Counter>,
    /// Failed syncs by reason.
    pub errors: Family<ReasonLabels, Counter>,
    /// Calls to providers by store, call and outcome.
    pub provider_calls: Family<StoreCallLabels, Counter>,
    /// ExternalSecrets by `Ready` status, as last reconciled.
    pub conditions: Family<StatusLabels, Gauge>,
    /// Time spent reconciling, in seconds.
    pub reconcile_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The Application controller's metrics.
#[derive(Clone, Debug)]
pub struct ApplicationMetrics {
    /// Syncs that ran to the end, by the resulting sync status (`Synced`, `OutOfSync`).
    pub syncs: Family<OutcomeLabels, Counter>,
    /// Failed reconciles, by reason (`AuthenticationFailed`, `KustomizeFailed`, `SyncFailed`…).
    pub errors: Family<ReasonLabels, Counter>,
    /// Objects written by server-side apply (created or changed).
    pub objects_applied: Counter,
    /// Objects deleted by prune.
    pub objects_pruned: Counter,
    /// Time to fetch and render an Application's source, in seconds (a remote-ref check only,
    /// when the commit did not change).
    pub source_seconds: Histogram,
}

impl Default for ApplicationMetrics {
    fn default() -> Self {
        ApplicationMetrics {
            syncs: Family::default(),
            errors: Family::default(),
            objects_applied: Counter::default(),
            objects_pruned: Counter::default(),
            source_seconds: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 90.0]),
        }
    }
}

/// A `controller` label: `sealedsecret`, `externalsecret`, `secretstore`, `application`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller.
    pub controller: String,
}

/// A controller and the result of one reconcile (`success` or `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerResultLabels {
    /// The controller.
    pub controller: String,
    /// `success` or `error`.
    pub result: String,
}

/// A controller and the reason a reconcile failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerReasonLabels {
    /// The controller.
    pub controller: String,
    /// CamelCase reason, as in the condition.
    pub reason: String,
}

/// What every controller reports the same way (the names of controller-runtime's metrics, so
/// existing dashboards read them): reconciles by result and by error reason, how many objects
/// wait for a reconcile slot (queue depth), how many reconciles run, and how long they take.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// Reconciles by controller and result.
    pub reconciles: Family<ControllerResultLabels, Counter>,
    /// Failed reconciles by controller and reason.
    pub errors: Family<ControllerReasonLabels, Counter>,
    /// Objects due for a reconcile that wait for a free slot.
    pub queue_depth: Family<ControllerLabels, Gauge>,
    /// Reconciles running now.
    pub in_flight: Family<ControllerLabels, Gauge>,
    /// Reconcile duration, in seconds.
    pub duration: Family<ControllerLabels, Histogram>,
}

fn reconcile_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics {
            reconciles: Family::default(),
            errors: Family::default(),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(reconcile_buckets),
        }
    }
}

/// An `outcome` label of a Git operation: `ok` or the error's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitOutcomeLabels {
    /// `check` (the remote refs were listed, nothing new) or `fetch` (a pack was downloaded).
    pub operation: String,
    /// `ok`, `AuthenticationFailed`, `HostKeyMismatch`, `RefNotFound`, `Timeout`…
    pub outcome: String,
}

/// The Git cache's metrics.
#[derive(Clone, Debug)]
pub struct GitMetrics {
    /// Resolves of a (repository, revision) by operation and outcome.
    pub operations: Family<GitOutcomeLabels, Counter>,
    /// Duration of resolves that downloaded a pack (ref check, fetch, checkout), in seconds.
    pub fetch_seconds: Histogram,
    /// Duration of resolves that only listed the remote refs, in seconds.
    pub check_seconds: Histogram,
}

impl Default for GitMetrics {
    fn default() -> Self {
        GitMetrics {
            operations: Family::default(),
            fetch_seconds: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 90.0]),
            check_seconds: Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        }
    }
}

/// Every metric of the agent, and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// SealedSecret metrics.
    pub sealed_secrets: SealedSecretMetrics,
    /// ExternalSecret metrics.
    pub external_secrets: ExternalSecretMetrics,
    /// Application metrics.
    pub applications: ApplicationMetrics,
    /// Metrics every controller reports the same way.
    pub controllers: ControllerMetrics,
    /// Git cache metrics.
    pub git: GitMetrics,
    /// `/api/webhook` requests by provider and outcome.
    pub webhook_requests: Family<crate::gitops::webhook::RequestLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mooring");
        let sealed_secrets = SealedSecretMetrics::default();
        let s = &sealed_secrets;
        registry.register(
            "sealedsecret_unseals",
            "SealedSecrets unsealed into Secrets",
            s.unseals.clone(),
        );
        registry.register(
            "sealedsecret_errors",
            "SealedSecret reconcile errors by reason",
            s.errors.clone(),
        );
        registry.register(
            "sealedsecret_rsa_operations",
            "RSA private-key operations spent unsealing",
            s.rsa_operations.clone(),
        );
        registry.register(
            "sealedsecret_condition",
            "SealedSecrets by Synced status",
            s.conditions.clone(),
        );
        registry.register("sealing_keys", "Sealing keys loaded", s.keys.clone());
        registry.register(
            "sealing_newest_key_age_seconds",
            "Age of the newest sealing key",
            s.newest_key_age_seconds.clone(),
        );
        let external_secrets = ExternalSecretMetrics::default();
        let e = &external_secrets;
        registry.register(
            "externalsecret_syncs",
            "ExternalSecret syncs by outcome",
            e.syncs.clone(),
        );
        registry.register(
            "externalsecret_errors",
            "ExternalSecret sync errors by reason",
            e.errors.clone(),
        );
        registry.register(
            "externalsecret_provider_calls",
            "Provider calls by store, call and outcome",
            e.provider_calls.clone(),
        );
        registry.register(
            "externalsecret_condition",
            "ExternalSecrets by Ready status",
            e.conditions.clone(),
        );
        registry.register(
            "externalsecret_reconcile_seconds",
            "Time spent reconciling ExternalSecrets",
            e.reconcile_seconds.clone(),
        );
        let applications = ApplicationMetrics::default();
        let a = &applications;
        registry.register(
            "application_syncs",
            "Application syncs by resulting sync status",
            a.syncs.clone(),
        );
        registry.register(
            "application_errors",
            "Application reconcile errors by reason",
            a.errors.clone(),
        );
        registry.register(
            "application_objects_applied",
            "Objects written by server-side apply",
            a.objects_applied.clone(),
        );
        registry.register(
            "application_objects_pruned",
            "Objects deleted by prune",
            a.objects_pruned.clone(),
        );
        registry.register(
            "application_source_seconds",
            "Time to fetch and render an Application's source",
            a.source_seconds.clone(),
        );
        let controllers = ControllerMetrics::default();
        let c = &controllers;
        registry.register(
            "controller_reconciles",
            "Reconciles by controller and result",
            c.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Failed reconciles by controller and reason",
            c.errors.clone(),
        );
        registry.register(
            "controller_queue_depth",
            "Objects due for a reconcile that wait for a free slot",
            c.queue_depth.clone(),
        );
        registry.register(
            "controller_reconciles_in_flight",
            "Reconciles running now",
            c.in_flight.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Reconcile duration",
            c.duration.clone(),
        );
        let git = GitMetrics::default();
        registry.register(
            "git_operations",
            "Git resolves by operation (check, fetch) and outcome",
            git.operations.clone(),
        );
        registry.register(
            "git_fetch_duration_seconds",
            "Duration of Git resolves that downloaded a pack",
            git.fetch_seconds.clone(),
        );
        registry.register(
            "git_remote_check_duration_seconds",
            "Duration of Git resolves that only listed the remote refs",
            git.check_seconds.clone(),
        );
        let webhook_requests = Family::default();
        registry.register(
            "webhook_requests",
            "Webhook requests by provider and outcome",
            webhook_requests.clone(),
        );
        Metrics {
            registry,
            sealed_secrets,
            external_secrets,
            applications,
            controllers,
            git,
            webhook_requests,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
