//! The SecretStore and ClusterSecretStore controller: a store is `Ready` only after a real
//! authenticated round trip to its provider (ESO's `Validate`), through the same provider cache
//! the ExternalSecret controller uses, so validating costs no extra login.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use mooring_crds::conditions::{Condition, ConditionStatus};
use mooring_crds::external_secret::reasons::READY;
use mooring_crds::secret_store::{
    ClusterSecretStore, SecretStore, SecretStoreSpec, SecretStoreStatus, reasons, unknown_fields,
};
use mooring_provider::ProviderError;

use crate::controllers::reconciles::Reconciles;
use crate::external_secrets::providers::{
    ProviderCache, ProviderSettings, StoreError, StoreId, StoreKind,
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
    if !crate::external_secrets::providers::is_handled_here(&store.spec) {
        // Another controller class (ESO side by side): its status is not ours to write.
        return Ok(Action::await_change());
    }
    let slot = ctx.reconciles.admit().await;
    let ready = validate(&ctx, &id, &store.spec, Some(&namespace)).await;
    record(&ctx, &ready);
    drop(slot);
    let api: Api<SecretStore> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = store.status.clone().unwrap_or_default();
    let again = next_validation(
        &current,
        &ready,
        crate::external_secrets::providers::store_refresh_interval(&store.spec),
        jiff::Timestamp::now(),
    );
    write_status(
        &api,
        &id,
        &store.name_any(),
        &current,
        ready,
        store.metadata.generation,
    )
    .await?;
    Ok(Action::requeue(again))
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
    if !crate::external_secrets::providers::is_handled_here(&spec) {
        return Ok(Action::await_change());
    }
    let slot = ctx.reconciles.admit().await;
    let ready = if crate::external_secrets::providers::is_referent(&spec) {
        // Credentials resolve in each consuming namespace: nothing to validate here (ESO's
        // ValidationUnknown); each ExternalSecret reports its own outcome.
        condition(
            ConditionStatus::True,
            "ValidationUnknown",
            "credentials are resolved in each consuming namespace; validated on use".into(),
        )
    } else {
        validate(&ctx, &id, &spec, None).await
    };
    record(&ctx, &ready);
    drop(slot);
    let api: Api<ClusterSecretStore> = Api::all(ctx.client.clone());
    let current = store.status.clone().unwrap_or_default();
    let again = next_validation(
        &current,
        &ready,
        crate::external_secrets::providers::store_refresh_interval(&spec),
        jiff::Timestamp::now(),
    );
    write_status(
        &api,
        &id,
        &store.name_any(),
        &current,
        ready,
        store.metadata.generation,
    )
    .await?;
    Ok(Action::requeue(again))
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
        .find(|c| c.type_ == READY && c.status == ConditionStatus::False)
        .and_then(|c| c.last_transition_time.as_deref())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let failing_for = failing_since
        .and_then(|since| Duration::try_from(now.duration_since(since)).ok())
        .unwrap_or_default();
    failing_for.max(FIRST_RETRY).min(interval.max(FIRST_RETRY))
}

fn condition(status: ConditionStatus, reason: &str, message: String) -> Condition {
    Condition {
        type_: READY.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time: None,
        observed_generation: None,
    }
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

/// Resolves the store's credentials, connects (through the cache), and makes one authenticated
/// request.
async fn validate(
    ctx: &Context,
    id: &StoreId,
    spec: &SecretStoreSpec,
    namespace: Option<&str>,
) -> Condition {
    let unsupported = unknown_fields(spec, "spec");
    if !unsupported.is_empty() {
        return condition(
            ConditionStatus::False,
            reasons::INVALID_PROVIDER_CONFIG,
            format!("mooring does not implement: {}", unsupported.join(", ")),
        );
    }
    let connection = match crate::external_secrets::providers::resolve(
        &ctx.client,
        id,
        spec,
        namespace,
        &ctx.settings,
    )
    .await
    {
        Ok(connection) => connection,
        Err(error) => {
            return condition(
                ConditionStatus::False,
                reasons::INVALID_PROVIDER_CONFIG,
                crate::errors::error_chain(&error),
            );
        }
    };
    let count = |call: &str, outcome: &str| {
        crate::external_secrets::providers::count_provider_call(&ctx.metrics, id, call, outcome)
    };
    let outcome_of =
        |error: &ProviderError| crate::external_secrets::providers::fetched_reason(error);
    let validated = match ctx.providers.get(&ctx.client, id, None, connection).await {
        Ok(handle) => {
            if handle.fresh {
                count("login", "ok");
            }
            let result = handle.provider.validate().await;
            count("validate", result.as_ref().err().map_or("ok", outcome_of));
            result.map_err(|source| ValidationError::Validate {
                store: id.to_string(),
                source,
            })
        }
        Err(error) => {
            count(
                "login",
                error.provider_error().map_or("StoreError", outcome_of),
            );
            Err(ValidationError::Connect(error))
        }
    };
    match validated {
        Ok(()) => condition(
            ConditionStatus::True,
            reasons::VALID,
            "store validated".into(),
        ),
        Err(error) => {
            if matches!(
                error.provider_error(),
                Some(ProviderError::PermissionDenied { .. })
            ) {
                ctx.providers.forget(id, None);
            }
            condition(
                ConditionStatus::False,
                reasons::VALIDATION_FAILED,
                crate::errors::error_chain(&error),
            )
        }
    }
}

/// Patches the status when the condition changed.
async fn write_status<K>(
    api: &Api<K>,
    id: &StoreId,
    name: &str,
    current: &SecretStoreStatus,
    mut ready: Condition,
    generation: Option<i64>,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    ready.observed_generation = generation;
    let previous = current.conditions.iter().find(|c| c.type_ == READY);
    ready.last_transition_time = match previous {
        Some(p) if p.status == ready.status => p.last_transition_time.clone(),
        _ => Some(jiff::Timestamp::now().to_string()),
    };
    let new = SecretStoreStatus {
        conditions: vec![ready],
        capabilities: Some("ReadOnly".into()),
    };
    if &new == current {
        return Ok(());
    }
    let patch = serde_json::json!({ "status": new });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Status {
            store: id.to_string(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_failing_since(time: &str) -> SecretStoreStatus {
        let mut failed = condition(ConditionStatus::False, "ValidationFailed", "x".into());
        failed.last_transition_time = Some(time.into());
        SecretStoreStatus {
            conditions: vec![failed],
            capabilities: None,
        }
    }

    #[test]
    fn failed_validations_back_off_and_valid_stores_wait_their_interval() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let interval = Duration::from_secs(300);
        let failed = condition(ConditionStatus::False, "ValidationFailed", "x".into());
        let valid = condition(ConditionStatus::True, "Valid", "ok".into());
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
