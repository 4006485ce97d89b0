//! GitOps: the Application controller and its engine — fetch (`git`), render (`render`),
//! apply, prune and self-heal (`apply`).

pub mod application;
pub mod apply;
pub mod git;
pub mod project;
pub mod render;
pub mod source;
pub mod webhook;

use std::sync::Arc;

use crate::Wiring;
use crate::controllers::Job;

/// The Application controller, with the Git cache and renderers the flags configure; and that
/// cache, for the webhook to fetch pushed refs into.
pub(crate) fn start(wiring: &Wiring<'_>) -> (Job, Arc<source::GitSource>) {
    let args = wiring.args;
    let limits = render::RenderLimits {
        kustomize: args.kustomize(),
        ..Default::default()
    };
    let source = Arc::new(source::GitSource::new(
        wiring.client.clone(),
        args.namespace.clone(),
        Arc::new(args.git_cache().with_metrics(wiring.metrics.git.clone())),
        limits,
    ));
    let context = Arc::new(
        application::Context::new(
            wiring.client.clone(),
            Arc::clone(&source) as Arc<dyn application::Source>,
            wiring.events.clone(),
            args.max_prune_fraction,
            args.default_poll_interval,
        )
        .with_min_poll_interval(args.min_poll_interval)
        .with_tenancy(args.namespace.clone(), args.cluster.kubeconfig.clone())
        .with_argocd_api(args.argocd_api)
        .with_selector(args.application_selector.clone())
        .with_metrics(wiring.metrics.applications.clone())
        .with_controller_metrics(&wiring.metrics.controllers),
    );
    let job = Box::pin(application::run(
        context,
        args.watch_namespace.clone(),
        wiring.stop.signal(),
    ));
    (job, source)
}

/// The `/api/webhook` route and its tasks (secret watch, refresh worker).
pub(crate) fn webhook_start(
    wiring: &Wiring<'_>,
    prefetcher: webhook::Prefetcher,
) -> (axum::Router, impl Future<Output = ()> + Send + 'static) {
    let args = wiring.args;
    webhook::start(
        wiring.client.clone(),
        args.namespace.clone(),
        webhook::Scope {
            namespace: args.watch_namespace.clone(),
            selector: args.application_selector.clone(),
        },
        webhook::WebhookSettings {
            max_payload_bytes: args.webhook_max_payload_bytes,
            coalesce_window: args.webhook_coalesce_window,
            rate_limit: args.webhook_rate_limit,
            rate_limit_burst: args.webhook_rate_limit_burst,
        },
        wiring.metrics.webhook_requests.clone(),
        Some(prefetcher),
    )
}
