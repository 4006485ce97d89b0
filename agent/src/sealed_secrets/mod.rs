//! SealedSecrets: the sealing keys (generate, load, watch, renew), the controller that unseals
//! SealedSecrets into Secrets, and kubeseal's HTTP API (`/v1/cert.pem`, `/v1/verify`,
//! `/v1/rotate`).

pub mod api;
pub mod controller;
pub mod keys;

use std::sync::Arc;

use crate::Wiring;
use crate::controllers::Job;
use keys::{KeyRing, KeySettings};

/// The key manager: loads and watches the sealing keys into `keys` on every replica, and
/// generates and renews them while `leading`. `renew_now` adds a key at once (SIGUSR1).
pub(crate) fn start_keys(
    wiring: &Wiring<'_>,
    keys: Arc<KeyRing>,
    renew_now: Arc<tokio::sync::Notify>,
    leading: tokio::sync::watch::Receiver<bool>,
) -> Job {
    let args = wiring.args;
    let settings = KeySettings {
        namespace: args.namespace.clone(),
        common_name: args.my_cn.clone(),
        validity: args.key_ttl,
        renew_period: args.key_renew_period,
        cutoff: args.key_cutoff_time,
    };
    Box::pin(keys::run(
        wiring.client.clone(),
        settings,
        keys,
        wiring.metrics.sealed_secrets.clone(),
        wiring.events.clone(),
        renew_now,
        leading,
    ))
}

/// The SealedSecret controller, unsealing with `keys`.
pub(crate) fn start_controller(wiring: &Wiring<'_>, keys: Arc<KeyRing>) -> Job {
    let context = Arc::new(
        controller::Context::new(
            wiring.client.clone(),
            keys,
            wiring.metrics.sealed_secrets.clone(),
            wiring.events.clone(),
            wiring.args.resync_period,
        )
        .with_controller_metrics(&wiring.metrics.controllers),
    );
    Box::pin(controller::run(
        context,
        wiring.args.watch_namespace.clone(),
        wiring.stop.signal(),
    ))
}
