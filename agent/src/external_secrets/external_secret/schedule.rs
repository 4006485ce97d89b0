//! When an ExternalSecret reads its provider: whether a read is due now, how urgent it is, and
//! when to look again. Refreshes are spread over the interval by a per-object phase.

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use mooring_crds::external_secret::ExternalSecret;

use super::Outcome;
use super::policy::{Policies, Refresh, policies};
use super::refresh_gate::Urgency;

/// ESO's `syncedResourceVersion`: the generation and a digest of labels and annotations (so a
/// `force-sync` annotation counts as a change).
pub(super) fn synced_resource_version(es: &ExternalSecret) -> String {
    let meta = serde_json::json!([es.labels(), es.annotations()]);
    let bytes = serde_json::to_vec(&meta).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    let hex: String = digest.as_ref()[..14]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{hex}", es.metadata.generation.unwrap_or_default())
}

/// Where in each refresh interval an ExternalSecret refreshes: a phase in [0, interval) from the
/// store and the keys it reads. ExternalSecrets reading the same keys of the same store refresh
/// together, so their reads are shared; different keys spread over the interval, so nothing
/// refreshes in lockstep after a restart or a bulk create (ESO's #4231).
pub(super) fn refresh_phase(es: &ExternalSecret, interval: Duration) -> Duration {
    let mut identity: Vec<String> = Vec::new();
    if let Some(store) = &es.spec.secret_store_ref {
        let kind = store.kind.clone().unwrap_or_else(|| "SecretStore".into());
        if kind != "ClusterSecretStore" {
            identity.push(es.namespace().unwrap_or_default());
        }
        identity.push(kind);
        identity.push(store.name.clone());
    }
    let mut keys: Vec<String> = es
        .spec
        .data
        .iter()
        .flatten()
        .map(|d| &d.remote_ref)
        .chain(
            es.spec
                .data_from
                .iter()
                .flatten()
                .filter_map(|f| f.extract.as_ref()),
        )
        .map(|r| format!("{}@{}", r.key, r.version.as_deref().unwrap_or_default()))
        .collect();
    // Finds by their query, so ExternalSecrets with one query refresh (and read) together.
    keys.extend(
        es.spec
            .data_from
            .iter()
            .flatten()
            .filter_map(|f| f.find.as_ref())
            .map(|find| serde_json::to_string(find).unwrap_or_default()),
    );
    keys.sort();
    keys.dedup();
    identity.extend(keys);
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.join("\n").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    let fraction = u64::from_be_bytes(first) as f64 / u64::MAX as f64;
    interval.mul_f64(fraction.min(0.999_999))
}

/// The next refresh after one at `last`: the first time, at least half an interval later, whose
/// wall-clock position in the interval is `phase`. The first period is between half and one and
/// a half intervals; every later one is exactly the interval.
pub(super) fn scheduled_refresh(
    last: jiff::Timestamp,
    interval: Duration,
    phase: Duration,
) -> jiff::Timestamp {
    let interval_ns = i128::try_from(interval.as_nanos())
        .unwrap_or(i128::MAX)
        .max(1);
    let phase_ns = i128::try_from(phase.as_nanos()).unwrap_or(0);
    let earliest = last.as_nanosecond() + interval_ns / 2;
    let mut slot = (earliest - phase_ns).div_euclid(interval_ns) * interval_ns + phase_ns;
    if slot < earliest {
        slot += interval_ns;
    }
    jiff::Timestamp::from_nanosecond(slot).unwrap_or(last)
}

/// When to look again after a successful sync.
pub(super) fn next_refresh(es: &ExternalSecret, outcome: Outcome) -> Action {
    let Ok(policies) = policies(&es.spec) else {
        return Action::await_change();
    };
    if policies.refresh != Refresh::Periodic || policies.interval.is_zero() {
        return Action::await_change();
    }
    if outcome == Outcome::Missing {
        return Action::requeue(policies.interval);
    }
    let now = jiff::Timestamp::now();
    let last = if outcome.fetched() {
        now
    } else {
        last_refresh(es).unwrap_or(now)
    };
    let due = scheduled_refresh(
        last,
        policies.interval,
        refresh_phase(es, policies.interval),
    );
    let wait = Duration::try_from(due.duration_since(now)).unwrap_or_default();
    // A few milliseconds late rather than early: an early wake-up would find nothing due.
    Action::requeue(wait + Duration::from_millis(5))
}

/// `status.refreshTime`, when there is one.
fn last_refresh(es: &ExternalSecret) -> Option<jiff::Timestamp> {
    es.status.as_ref()?.refresh_time.as_deref()?.parse().ok()
}

/// Whether a refresh is due, per ESO's refresh policies
/// (<https://external-secrets.io/latest/api/externalsecret/>): `CreatedOnce` on the first sync
/// only, `OnChange` also when the spec changed, `Periodic` also once the interval has passed.
/// When none is due, drift is repaired from the values last read (a read happens only when they
/// are not in memory, after a restart).
pub(super) fn refresh_due(es: &ExternalSecret, policies: &Policies, synced_version: &str) -> bool {
    let status = es.status.clone().unwrap_or_default();
    let never_synced = status.refresh_time.is_none();
    let spec_changed = status.synced_resource_version.as_deref() != Some(synced_version);
    match policies.refresh {
        Refresh::CreatedOnce => never_synced,
        Refresh::OnChange => never_synced || spec_changed,
        Refresh::Periodic => {
            never_synced
                || spec_changed
                || (!policies.interval.is_zero()
                    && last_refresh(es).is_none_or(|last| {
                        let phase = refresh_phase(es, policies.interval);
                        jiff::Timestamp::now() >= scheduled_refresh(last, policies.interval, phase)
                    }))
        }
    }
}

/// Whether someone waits for this read: a first sync, or a spec (or label/annotation) change
/// since the last one. Everything else is a periodic refresh, which yields to these.
pub(super) fn urgency(es: &ExternalSecret, synced_version: &str) -> Urgency {
    let status = es.status.as_ref();
    let never_synced = status.is_none_or(|s| s.refresh_time.is_none());
    let changed = status.and_then(|s| s.synced_resource_version.as_deref()) != Some(synced_version);
    if never_synced || changed {
        Urgency::FirstSyncOrChange
    } else {
        Urgency::Periodic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external_secrets::external_secret::test_support::es;
    use mooring_crds::external_secret::ExternalSecretStatus;

    #[test]
    fn created_once_is_final_and_spec_changes_refresh() {
        let mut object = es(serde_json::json!({"refreshPolicy": "CreatedOnce"}));
        let version = synced_resource_version(&object);
        let p = policies(&object.spec).unwrap();
        assert!(refresh_due(&object, &p, &version), "never synced");
        object.status = Some(ExternalSecretStatus {
            refresh_time: Some(jiff::Timestamp::now().to_string()),
            synced_resource_version: Some("0-old".into()),
            ..Default::default()
        });
        assert!(
            !refresh_due(&object, &p, &version),
            "CreatedOnce never refreshes again"
        );
        let mut periodic = object.clone();
        periodic.spec.refresh_policy = None;
        let p = policies(&periodic.spec).unwrap();
        assert!(refresh_due(&periodic, &p, &version), "spec changed");
        periodic.status.as_mut().unwrap().synced_resource_version = Some(version.clone());
        assert!(!refresh_due(&periodic, &p, &version), "fresh and unchanged");
        let mut on_change = periodic.clone();
        on_change.spec.refresh_policy = Some("OnChange".into());
        on_change.status.as_mut().unwrap().refresh_time = Some("2020-01-01T00:00:00Z".into());
        let p = policies(&on_change.spec).unwrap();
        assert!(
            !refresh_due(&on_change, &p, &version),
            "OnChange ignores time"
        );
        assert!(
            refresh_due(&on_change, &p, "2-other"),
            "OnChange follows the spec"
        );
        let mut stale = periodic.clone();
        stale.status.as_mut().unwrap().refresh_time = Some("2020-01-01T00:00:00Z".into());
        let p = policies(&stale.spec).unwrap();
        assert!(
            refresh_due(&stale, &p, &version),
            "Periodic after the interval"
        );
    }

    #[test]
    fn first_syncs_and_spec_changes_are_urgent_and_refreshes_periodic() {
        let mut object = es(serde_json::json!({"refreshInterval": "1m"}));
        let version = synced_resource_version(&object);
        assert_eq!(urgency(&object, &version), Urgency::FirstSyncOrChange);
        object.status = Some(ExternalSecretStatus {
            refresh_time: Some("2020-01-01T00:00:00Z".into()),
            synced_resource_version: Some(version.clone()),
            ..Default::default()
        });
        assert_eq!(
            urgency(&object, &version),
            Urgency::Periodic,
            "due on schedule"
        );
        object.metadata.generation = Some(2);
        let changed = synced_resource_version(&object);
        assert_eq!(urgency(&object, &changed), Urgency::FirstSyncOrChange);
    }

    #[test]
    fn refreshes_share_a_phase_per_store_and_keys_and_keep_the_interval() {
        let minute = Duration::from_secs(60);
        let spec = |key: &str| {
            serde_json::json!({"secretStoreRef": {"name": "vault"},
                "data": [{"secretKey": "p", "remoteRef": {"key": key}}]})
        };
        let (mut a, b, other) = (es(spec("db")), es(spec("db")), es(spec("cache")));
        a.metadata.uid = Some("another-uid".into());
        assert_eq!(refresh_phase(&a, minute), refresh_phase(&b, minute));
        assert_ne!(refresh_phase(&a, minute), refresh_phase(&other, minute));
        let last: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let phase = refresh_phase(&a, minute);
        let first = scheduled_refresh(last, minute, phase);
        let after = Duration::try_from(first.duration_since(last)).unwrap();
        assert!(after >= minute / 2 && after < minute * 3 / 2, "{after:?}");
        let second = scheduled_refresh(first, minute, phase);
        assert_eq!(
            Duration::try_from(second.duration_since(first)).unwrap(),
            minute
        );
    }

    #[test]
    fn finds_with_one_query_share_a_refresh_phase() {
        let external = |regexp: &str| {
            let spec = serde_json::from_value(serde_json::json!({
                "secretStoreRef": {"name": "vault"},
                "dataFrom": [{"find": {"path": "app", "name": {"regexp": regexp}}}],
            }))
            .unwrap();
            let mut es = mooring_crds::external_secret::ExternalSecret::new("x", spec);
            es.metadata.namespace = Some("app".into());
            es
        };
        let hour = std::time::Duration::from_secs(3600);
        let phase = |es| refresh_phase(&es, hour);
        assert_eq!(phase(external("^app/a")), phase(external("^app/a")));
        assert_ne!(phase(external("^app/a")), phase(external("^app/b")));
    }
}
