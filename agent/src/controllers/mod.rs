//! Plumbing every controller shares: the stop signal, bounded reconciles, draining on shutdown.
//! The controllers themselves live with their job (`gitops`, `sealed_secrets`,
//! `external_secrets`); each has a `run` that drives it until shutdown.

pub mod reconciles;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::metrics::StatusLabels;

/// A controller (or another long-running task of a job), ready to be driven.
pub type Job = BoxFuture<'static, ()>;

/// The agent's stop signal: cloned into every task, set once.
#[derive(Clone, Debug)]
pub struct Stop {
    sender: std::sync::Arc<watch::Sender<bool>>,
}

impl Stop {
    /// A signal not yet given.
    pub fn new() -> Stop {
        Stop {
            sender: std::sync::Arc::new(watch::channel(false).0),
        }
    }

    /// Gives the signal: every [`Stop::signal`] completes.
    pub fn stop(&self) {
        self.sender.send_replace(true);
    }

    /// Completes once [`Stop::stop`] was called.
    pub fn signal(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut stopped = self.sender.subscribe();
        async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }
    }

    /// Runs `task` until it ends or the signal is given.
    pub fn until(&self, task: impl Future<Output = ()> + Send + 'static) -> Job {
        let signal = self.signal();
        Box::pin(async move {
            tokio::select! {
                () = task => {},
                () = signal => {},
            }
        })
    }
}

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

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

/// [`run_until_drained`] with a periodic task beside the controller (a gauge recount,
/// housekeeping of caches), which ends with it.
pub(crate) async fn run_with_until_drained(
    controller: impl std::future::Future<Output = ()>,
    beside: impl std::future::Future<Output = ()>,
    shutdown: impl std::future::Future<Output = ()>,
    in_flight: tokio::sync::watch::Receiver<usize>,
) {
    let both = async move {
        tokio::select! {
            () = controller => {},
            () = beside => {},
        }
    };
    run_until_drained(both, shutdown, in_flight).await;
}

/// Writes `status` into the status subresource of `name` by a JSON merge patch (the way the
/// ExternalSecret, SealedSecret and store controllers write theirs).
pub(crate) async fn merge_status<K>(
    api: &kube::Api<K>,
    name: &str,
    status: &impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}

/// Locks `mutex`, also after a thread panicked while holding it: the maps the controllers keep
/// are caches and counters that stay valid after any partial update, and a controller must not
/// stop serving because one reconcile panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Consecutive failed reconciles per object (by UID), for the backoff of its next attempt.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `uid`; returns how many in a row that makes (1 for the first).
    pub fn record(&self, uid: &str) -> u32 {
        let mut failures = lock(&self.0);
        let count = failures.entry(uid.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// `uid` succeeded: its next failure counts from 1 again.
    pub fn clear(&self, uid: &str) {
        lock(&self.0).remove(uid);
    }

    /// Forgets every object not in `live` (deleted objects).
    pub fn retain(&self, live: &HashSet<String>) {
        lock(&self.0).retain(|uid, _| live.contains(uid));
    }
}

/// Exponential backoff after `attempts` failures in a row: 1 s, 2 s, 4 s … capped at 5 minutes,
/// or at 10 minutes when the error is not retryable (bad input: a spec change wakes the object
/// at once anyway).
pub fn backoff(attempts: u32, retryable: bool) -> Duration {
    let cap: u64 = if retryable { 300 } else { 600 };
    let seconds = 1u64
        .checked_shl(attempts.saturating_sub(1).min(16))
        .unwrap_or(cap);
    Duration::from_secs(seconds.min(cap))
}

/// How often the condition gauges are recounted from the watch cache.
pub const RECOUNT_EVERY: Duration = Duration::from_secs(10);

/// Sets a `{status}` gauge family to the number of objects per condition status (`statuses`,
/// one per object in the watch cache). `True`, `False` and `Unknown` are always present, so a
/// status no object has any more drops to 0 instead of keeping its last count.
pub fn set_condition_counts<'a>(
    family: &Family<StatusLabels, Gauge>,
    statuses: impl IntoIterator<Item = &'a str>,
) {
    let mut counts: std::collections::BTreeMap<&str, i64> =
        [("True", 0), ("False", 0), ("Unknown", 0)].into();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    for (status, count) in counts {
        family
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .set(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_per_object_and_start_over_after_a_success() {
        let failures = Failures::default();
        assert_eq!(failures.record("a"), 1);
        assert_eq!(failures.record("a"), 2);
        assert_eq!(failures.record("b"), 1);
        failures.clear("a");
        assert_eq!(failures.record("a"), 1);
        failures.retain(&HashSet::from(["a".to_string()]));
        assert_eq!(failures.record("b"), 1, "b was forgotten");
    }

    #[test]
    fn condition_counts_reset_statuses_no_object_has() {
        let family = Family::<StatusLabels, Gauge>::default();
        let count = |status: &str| {
            family
                .get_or_create(&StatusLabels {
                    status: status.into(),
                })
                .get()
        };
        set_condition_counts(&family, ["True", "True", "False"]);
        assert_eq!((count("True"), count("False"), count("Unknown")), (2, 1, 0));
        set_condition_counts(&family, ["Unknown"]);
        assert_eq!((count("True"), count("False"), count("Unknown")), (0, 0, 1));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let seconds: Vec<u64> = (1..=10).map(|n| backoff(n, true).as_secs()).collect();
        assert_eq!(seconds, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(40, false).as_secs(), 600);
    }
}
