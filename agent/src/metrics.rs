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
        Metrics {
            registry,
            sealed_secrets,
            external_secrets,
            applications,
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
