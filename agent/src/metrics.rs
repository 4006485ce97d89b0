//! Prometheus metrics, prefix `mooring_`, low cardinality: labels are reasons and states, never
//! object names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// Every metric of the agent, and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// SealedSecret metrics.
    pub sealed_secrets: SealedSecretMetrics,
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
        Metrics {
            registry,
            sealed_secrets,
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
