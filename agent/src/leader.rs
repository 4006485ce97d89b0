//! Leader election with a `coordination.k8s.io/v1` Lease, for more than one replica.
//!
//! Every replica serves HTTP (the kubeseal endpoints need only the sealing keys, which every
//! replica watches); only the holder of the Lease runs controllers and generates keys. The
//! protocol is client-go's: a holder renews the Lease every `renew_every`; a candidate takes it
//! over when the record has not changed for `duration` as measured on the candidate's own clock
//! (no clock agreement between nodes is assumed). Every write carries the resourceVersion it
//! read, so two candidates can never both win. A holder that cannot renew for `duration` stops
//! leading (the agent then exits and its pod restarts as a candidate); a holder that stops
//! gracefully releases the Lease so the next replica takes over within one retry period.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

/// Where the Lease lives and how long a term lasts.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The agent's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a term lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews, and candidates look.
    pub retry: Duration,
}

impl LeaseSettings {
    /// client-go's defaults: 15 s terms, a look every 2 s.
    pub fn new(namespace: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            namespace: namespace.to_owned(),
            name: "mooring".to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// The identity of this replica: `$POD_NAME` in a cluster, else the host name and process id.
pub fn default_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "mooring".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

/// What one look at the Lease decided.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The Lease is ours (acquired or renewed).
    Holding,
    /// Another replica holds a live term.
    Following,
}

/// Runs the election until `stop` resolves, publishing on `leading` whether this replica holds
/// the Lease. Returns when stopped (after releasing a held Lease) or when a held term was lost
/// (then `leading` is false and the caller must stop its controllers).
pub async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    stop: impl std::future::Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observed: Option<(String, Instant)> = None;
    let mut last_renewed: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        match look(&api, &settings, &mut observed).await {
            Ok(Step::Holding) => {
                if !*leading.borrow() {
                    tracing::info!(lease = %settings.name, identity = %settings.identity, "leading");
                    let _ = leading.send(true);
                }
                last_renewed = Some(Instant::now());
            }
            Ok(Step::Following) => {
                if *leading.borrow() {
                    tracing::warn!(lease = %settings.name, "another replica took the lease");
                    let _ = leading.send(false);
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, lease = %settings.name, "failed to read or write the lease");
                if *leading.borrow()
                    && last_renewed.is_none_or(|t| t.elapsed() >= settings.duration)
                {
                    tracing::warn!(lease = %settings.name, "could not renew the lease in time");
                    let _ = leading.send(false);
                    return;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.retry) => {}
            () = &mut stop => {
                if *leading.borrow() {
                    release(&api, &settings).await;
                    let _ = leading.send(false);
                }
                return;
            }
        }
    }
}

/// One look: create, renew or take over the Lease if we may.
async fn look(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<(String, Instant)>,
) -> Result<Step, kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(seconds(settings.duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Step::Holding),
            // Another replica created it first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Step::Following),
            Err(error) => Err(error),
        };
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let term = spec.lease_duration_seconds.map_or(settings.duration, |s| {
        Duration::from_secs(s.max(0).unsigned_abs().into())
    });
    // When did this record last change, on our clock?
    let changed_at = match observed {
        Some((seen, at)) if *seen == version => *at,
        _ => {
            *observed = Some((version.clone(), Instant::now()));
            Instant::now()
        }
    };
    let ours = holder == settings.identity;
    let free = holder.is_empty() || changed_at.elapsed() >= term;
    if !ours && !free {
        return Ok(Step::Following);
    }
    if !ours {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(seconds(settings.duration));
    spec.renew_time = Some(now);
    // The resourceVersion read above makes this a compare-and-swap.
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(written) => {
            *observed = written
                .metadata
                .resource_version
                .map(|v| (v, Instant::now()));
            Ok(Step::Holding)
        }
        Err(kube::Error::Api(status)) if status.code == 409 && !ours => Ok(Step::Following),
        Err(error) => Err(error),
    }
}

/// Gives the Lease up so that the next replica need not wait for the term to run out.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let result = async {
        let Some(mut lease) = api.get_opt(&settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        api.replace(&settings.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
    .await;
    match result {
        Ok(()) => tracing::info!(lease = %settings.name, "released the lease"),
        Err(error) => tracing::warn!(%error, lease = %settings.name, "failed to release the lease"),
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}
