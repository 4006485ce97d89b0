//! One module per controller; each has a `run` that drives it until shutdown.

pub mod application;
pub mod external_secret;
pub mod reconciles;
pub mod refresh_gate;
pub mod sealed_secret;
pub mod secret_store;

/// Drives `controller` until it ends, or, once `shutdown` has completed, until no reconcile is
/// running (`in_flight` is 0). kube's graceful shutdown also waits for the first list of every
/// watch, which never comes while the API server is unreachable: without this a stop would wait
/// for the agent's drain timeout.
pub(crate) async fn run_until_drained(
    controller: impl std::future::Future<Output = ()>,
    shutdown: impl std::future::Future<Output = ()>,
    mut in_flight: tokio::sync::watch::Receiver<usize>,
) {
    let drained = async move {
        shutdown.await;
        let _ = in_flight.wait_for(|running| *running == 0).await;
    };
    tokio::select! {
        () = controller => {},
        () = drained => {},
    }
}
