//! The SecretStore and ClusterSecretStore controller: a store is `Ready` only after a real
//! authenticated round trip to its provider (ESO's `Validate`), through the same provider cache
//! the ExternalSecret controller uses, so validating costs no extra login.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use mooring_crds::conditions::{Condition, ConditionStatus, stamp};
use mooring_crds::secret_store::{
    ClusterSecretStore, SecretStore, SecretStoreSpec, SecretStoreStatus, reasons, unknown_fields,
};
use mooring_provider::ProviderError;

use crate::controllers::reconciles::Reconciles;
use crate::errors::error_chain;
use crate::external_secrets::providers::{
    Connection, ProviderCache, ProviderSettings, StoreError, StoreId, StoreKind,
    count_provider_call, is_handled_here, is_referent, resolve, store_refresh_interval,
};

/// What the controller needs.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Connected providers, shared with the ExternalSecret controller.
    pub providers: Arc<ProviderCache>,
    /// Agent-wide provider settings.
    pub settings: ProviderSettings,
    /// Provider call counters (shared with the ExternalSecret controller).
    pub metrics: crate::metrics::ExternalSecretMetrics,
    /// A label selector: only ClusterSecretStores matching it are validated (and, in an agent
    /// limited to one namespace, none without it).
    pub cluster_store_selector: Option<String>,
    /// Validations running, results by reason (controller `secretstore`).
    pub reconciles: Reconciles,
}

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "secretstore";

/// Validations at once: each is one short round trip to a store.
pub const CONCURRENCY: usize = 16;

/// Counts a validation: a `Ready` condition that is `False` is an error with its reason.
fn record(ctx: &Context, ready: &Condition) {
    ctx.reconciles.record(match ready.status {
        ConditionStatus::False => Err(ready.reason.as_str()),
        _ => Ok(()),
    });
}

/// Why a store's status could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status patch failed.
    #[error("failed to update the status of {store}")]
    Status {
        /// The store.
        store: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Runs the controllers until `shutdown`. With `namespace`, only SecretStores of that namespace
/// are validated, and ClusterSecretStores only when a selector picks them (else they are left to
/// an agent that watches every namespace).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(shutdown);
    let stores: Api<SecretStore> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let namespaced = Controller::new(stores, watcher::Config::default())
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_namespaced, error_policy, Arc::clone(&ctx))
        .for_each(|_| std::future::ready(()));
    // A validation is one short request: on shutdown, stop at once rather than wait for kube's
    // graceful shutdown, which also waits for the first list of every watch (never, while the
    // API server is unreachable or the CRDs are not installed).
    let stop = shutdown.clone();
    if namespace.is_some() && ctx.cluster_store_selector.is_none() {
        tokio::select! {
            () = namespaced => {},
            () = stop => {},
        }
        return;
    }
    let mut selected = watcher::Config::default();
    if let Some(selector) = &ctx.cluster_store_selector {
        selected = selected.labels(selector);
    }
    let cluster = Controller::new(Api::<ClusterSecretStore>::all(ctx.client.clone()), selected)
        .graceful_shutdown_on(shutdown)
        .run(reconcile_cluster, error_policy, ctx)
        .for_each(|_| std::future::ready(()));
    tokio::select! {
        _ = futures::future::join(namespaced, cluster) => {},
        () = stop => {},
    }
}

fn error_policy<K>(_: Arc<K>, _: &Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_secs(30))
}

async fn reconcile_namespaced(store: Arc<SecretStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = store.namespace().unwrap_or_default();
    let id = StoreId {
        kind: StoreKind::SecretStore,
        namespace: Some(namespace.clone()),
        name: store.name_any(),
    };
    if !is_handled_here(&store.spec) {
        // Another controller class (ESO side by side): its status is not ours to write.
        return Ok(Action::await_change());
    }
    let slot = ctx.reconciles.admit().await;
    let ready = validate(&ctx, &id, &store.spec, Some(&namespace)).await;
    record(&ctx, &ready);
    drop(slot);
    let api: Api<SecretStore> = Api::namespaced(ctx.client.clone(), &namespace);
    let status = StatusUpdate {
        id: &id,
        current: store.status.clone().unwrap_or_default(),
        generation: store.metadata.generation,
    };
    status
        .write_and_requeue(&api, ready, store_refresh_interval(&store.spec))
        .await
}

async fn reconcile_cluster(
    store: Arc<ClusterSecretStore>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let id = StoreId {
        kind: StoreKind::ClusterSecretStore,
        namespace: None,
        name: store.name_any(),
    };
    let spec = store.spec.as_store_spec();
    if !is_handled_here(&spec) {
        return Ok(Action::await_change());
    }
    let slot = ctx.reconciles.admit().await;
    let ready = if is_referent(&spec) {
        // Credentials resolve in each consuming namespace: nothing to validate here (ESO's
        // ValidationUnknown); each ExternalSecret reports its own outcome.
        ready_condition(
            ConditionStatus::True,
            reasons::VALIDATION_UNKNOWN,
            "credentials are resolved in each consuming namespace; validated on use",
        )
    } else {
        validate(&ctx, &id, &spec, None).await
    };
    record(&ctx, &ready);
    drop(slot);
    let api: Api<ClusterSecretStore> = Api::all(ctx.client.clone());
    let status = StatusUpdate {
        id: &id,
        current: store.status.clone().unwrap_or_default(),
        generation: store.metadata.generation,
    };
    status
        .write_and_requeue(&api, ready, store_refresh_interval(&spec))
        .await
}

/// The first retry after a failed validation.
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// When to validate again. A valid store: after its refresh interval. A failing one: after as
/// long as it has been failing (at least [`FIRST_RETRY`], at most the interval), so retries
/// double — 5 s, 5 s, 10 s, 20 s … — a store that was just misconfigured is seen fixed quickly,
/// and one that stays down is not hammered. The failure's start is the `Ready=False`
/// transition time in the status, so the backoff survives a restart of the agent.
fn next_validation(
    current: &SecretStoreStatus,
    ready: &Condition,
    interval: Duration,
    now: jiff::Timestamp,
) -> Duration {
    if ready.status == ConditionStatus::True {
        return interval;
    }
    let failing_since = current
        .conditions
        .iter()
        .find(|c| c.type_ == reasons::READY && c.status == ConditionStatus::False)
        .and_then(|c| c.last_transition_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let failing_for = failing_since
        .and_then(|since| Duration::try_from(now.duration_since(since)).ok())
        .unwrap_or_default();
    failing_for.max(FIRST_RETRY).min(interval.max(FIRST_RETRY))
}

/// A store's `Ready` condition.
fn ready_condition(status: ConditionStatus, reason: &str, message: impl Into<String>) -> Condition {
    Condition::new(reasons::READY, status, reason, message)
}

/// Why a store failed its round trip.
#[derive(Debug, thiserror::Error)]
enum ValidationError {
    /// The store could not be connected (credentials, login).
    #[error(transparent)]
    Connect(StoreError),
    /// The provider refused the authenticated request, or could not be reached.
    #[error("failed to validate {store}")]
    Validate {
        /// The store.
        store: String,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
}

impl ValidationError {
    /// The provider's answer, when there was one.
    fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            ValidationError::Connect(error) => error.provider_error(),
            ValidationError::Validate { source, .. } => Some(source),
        }
    }
}

/// The `Ready` condition of a store: its fields are all implemented, its credentials resolve,
/// and an authenticated request succeeds.
async fn validate(
    ctx: &Context,
    id: &StoreId,
    spec: &SecretStoreSpec,
    namespace: Option<&str>,
) -> Condition {
    let unsupported = unknown_fields(spec, "spec");
    if !unsupported.is_empty() {
        return ready_condition(
            ConditionStatus::False,
            reasons::INVALID_PROVIDER_CONFIG,
            format!("mooring does not implement: {}", unsupported.join(", ")),
        );
    }
    let connection = match resolve(&ctx.client, id, spec, namespace, &ctx.settings).await {
        Ok(connection) => connection,
        Err(error) => {
            return ready_condition(
                ConditionStatus::False,
                reasons::INVALID_PROVIDER_CONFIG,
                error_chain(&error),
            );
        }
    };
    match round_trip(ctx, id, connection).await {
        Ok(()) => ready_condition(ConditionStatus::True, reasons::VALID, "store validated"),
        Err(error) => {
            if matches!(
                error.provider_error(),
                Some(ProviderError::PermissionDenied { .. })
            ) {
                // A refused token: log in again next time rather than reuse it.
                ctx.providers.forget(id, None);
            }
            ready_condition(
                ConditionStatus::False,
                reasons::VALIDATION_FAILED,
                error_chain(&error),
            )
        }
    }
}

/// Connects (through the cache, so a login is shared with the ExternalSecret controller) and
/// makes one authenticated request, counting both calls.
async fn round_trip(
    ctx: &Context,
    id: &StoreId,
    connection: Connection,
) -> Result<(), ValidationError> {
    let count = |call: &str, outcome: &str| count_provider_call(&ctx.metrics, id, call, outcome);
    let handle = ctx
        .providers
        .get(&ctx.client, id, None, connection)
        .await
        .map_err(|error| {
            let outcome = error
                .provider_error()
                .map_or("StoreError", ProviderError::reason);
            count("login", outcome);
            ValidationError::Connect(error)
        })?;
    if handle.fresh {
        count("login", "ok");
    }
    let result = handle.provider.validate().await;
    count(
        "validate",
        result.as_ref().err().map_or("ok", ProviderError::reason),
    );
    result.map_err(|source| ValidationError::Validate {
        store: id.to_string(),
        source,
    })
}

/// The status a store has, and where to write a new one.
struct StatusUpdate<'a> {
    /// The store.
    id: &'a StoreId,
    /// Its status as read.
    current: SecretStoreStatus,
    /// Its `metadata.generation`.
    generation: Option<i64>,
}

impl StatusUpdate<'_> {
    /// Writes `ready` (when the status changed) and says when to validate again.
    async fn write_and_requeue<K>(
        self,
        api: &Api<K>,
        ready: Condition,
        interval: Duration,
    ) -> Result<Action, Error>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let now = jiff::Timestamp::now();
        let again = next_validation(&self.current, &ready, interval, now);
        let mut conditions = vec![ready];
        stamp(
            &mut conditions,
            &self.current.conditions,
            self.generation,
            &now.to_string(),
        );
        let new = SecretStoreStatus {
            conditions,
            capabilities: Some("ReadOnly".into()),
        };
        if new != self.current {
            crate::controllers::merge_status(api, &self.id.name, &new)
                .await
                .map_err(|source| Error::Status {
                    store: self.id.to_string(),
                    source,
                })?;
        }
        Ok(Action::requeue(again))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_failing_since(time: &str) -> SecretStoreStatus {
        let mut failed = ready_condition(ConditionStatus::False, reasons::VALIDATION_FAILED, "x");
        failed.last_transition_time = Some(time.into());
        SecretStoreStatus {
            conditions: vec![failed],
            capabilities: None,
        }
    }

    #[test]
    fn validation_errors_print_each_cause_once() {
        let refused = ValidationError::Validate {
            store: "SecretStore app/vault".into(),
            source: ProviderError::PermissionDenied {
                key: String::new(),
                detail: "vault answered 403".into(),
            },
        };
        assert_eq!(
            error_chain(&refused),
            "failed to validate SecretStore app/vault: permission denied reading \"\": vault answered 403"
        );
        let unreachable = ValidationError::Connect(StoreError::Login {
            store: "SecretStore app/vault".into(),
            source: ProviderError::Unavailable {
                detail: "connection refused".into(),
                source: None,
            },
        });
        assert_eq!(
            error_chain(&unreachable),
            "failed to log in to SecretStore app/vault: store unavailable: connection refused"
        );
        assert_eq!(
            unreachable.provider_error().map(ProviderError::reason),
            Some("Unavailable")
        );
    }

    #[test]
    fn failed_validations_back_off_and_valid_stores_wait_their_interval() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let interval = Duration::from_secs(300);
        let failed = ready_condition(ConditionStatus::False, reasons::VALIDATION_FAILED, "x");
        let valid = ready_condition(ConditionStatus::True, reasons::VALID, "ok");
        let fresh = SecretStoreStatus::default();
        assert_eq!(next_validation(&fresh, &valid, interval, now), interval);
        // First failure: retried soon.
        assert_eq!(next_validation(&fresh, &failed, interval, now), FIRST_RETRY);
        // Failing for 40 s: wait 40 s more (the delay doubles with each retry).
        let since_40s = status_failing_since("2026-01-01T00:09:20Z");
        assert_eq!(
            next_validation(&since_40s, &failed, interval, now),
            Duration::from_secs(40)
        );
        // Failing for an hour: never longer than the refresh interval.
        let since_1h = status_failing_since("2025-12-31T23:10:00Z");
        assert_eq!(next_validation(&since_1h, &failed, interval, now), interval);
        // Recovered: back to the interval.
        assert_eq!(next_validation(&since_1h, &valid, interval, now), interval);
    }
}
