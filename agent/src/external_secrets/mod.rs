//! ExternalSecrets: the ExternalSecret controller, the SecretStore/ClusterSecretStore
//! controller, and the providers they read through (the one place that knows each provider).

pub mod external_secret;
pub mod providers;
pub mod secret_store;

use std::sync::Arc;

use crate::Wiring;
use crate::controllers::Job;
use crate::controllers::reconciles::Reconciles;

/// The store controller and the ExternalSecret controller. They share one provider cache, so
/// validating a store and reading from it share one login.
pub(crate) fn start(wiring: &Wiring<'_>) -> Vec<Job> {
    let args = wiring.args;
    let metrics = wiring.metrics;
    let provider_cache = Arc::new(providers::ProviderCache::default());
    let provider_settings = providers::ProviderSettings {
        aws_endpoint_url: args.aws_endpoint_url.clone(),
        azure_ca_bundle: args.azure_ca_file.as_ref().map(|path| {
            std::fs::read(path).map_err(|error| {
                format!("failed to read --azure-ca-file {}: {error}", path.display())
            })
        }),
        azure_imds_endpoint: args.azure_imds_endpoint.clone(),
    };
    let stores = Arc::new(secret_store::Context {
        client: wiring.client.clone(),
        providers: Arc::clone(&provider_cache),
        settings: provider_settings.clone(),
        metrics: metrics.external_secrets.clone(),
        cluster_store_selector: args.cluster_secret_store_selector.clone(),
        reconciles: Reconciles::new(
            secret_store::CONTROLLER,
            secret_store::CONCURRENCY,
            &metrics.controllers,
        ),
    });
    let external_secrets = Arc::new(
        external_secret::Context::new(
            wiring.client.clone(),
            provider_cache,
            provider_settings,
            Arc::new(providers::shared_reads::SharedReads::new(
                args.provider_read_window,
                args.provider_qps,
                args.provider_burst,
            )),
            metrics.external_secrets.clone(),
            wiring.events.clone(),
        )
        .with_controller_metrics(&metrics.controllers),
    );
    vec![
        Box::pin(secret_store::run(
            stores,
            args.watch_namespace.clone(),
            wiring.stop.signal(),
        )),
        Box::pin(external_secret::run(
            external_secrets,
            args.watch_namespace.clone(),
            wiring.stop.signal(),
        )),
    ]
}
