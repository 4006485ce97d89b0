//! How an Application is synced this time and when it is looked at again.
//!
//! Without `automated`, an Application is compared only. With `automated` and without
//! `selfHeal`, each new revision is applied once and drift is reported as OutOfSync, as in Argo
//! CD. With `selfHeal`, drift is reverted, but a heal right after another one waits (a
//! controller fighting mooring over a field is slowed down, not fought in a tight loop). Failed
//! syncs retry with Argo CD's `syncPolicy.retry.backoff`, not the agent's shared backoff, so
//! migrated Applications keep their timing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use mooring_crds::application::{Application, ApplicationStatus};

use crate::controllers::lock;
use crate::gitops::apply::object::AppId;
use crate::gitops::apply::prune::PruneSettings;
use crate::gitops::apply::{Hooks, Mode, SyncReport, SyncRequest};

/// How soon an Application with deferred custom resources looks for their CRDs again.
const DEFERRED_RECHECK: Duration = Duration::from_secs(15);
/// How soon an Application waiting for a sync wave to become healthy is looked at again.
const WAVE_RECHECK: Duration = Duration::from_secs(5);
/// The first self-heal waits this long after the previous one; each next one three times as
/// long, up to [`HEAL_BACKOFF_CAP`] (Argo CD's `--self-heal-backoff-*` defaults). A quiet period
/// as long as the cap starts over.
const HEAL_BACKOFF_FIRST: Duration = Duration::from_secs(2);
const HEAL_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Application uid → self-heals in a row and when the last one happened.
pub(super) type Heals = Mutex<HashMap<String, (u32, tokio::time::Instant)>>;

/// How this reconcile syncs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    /// Apply, or only compare.
    pub mode: Mode,
    /// Git has a revision not applied yet (`status.history` does not end with it).
    pub new_revision: bool,
    /// A heal is due but the last one was too recent: this reconcile only compares, and the
    /// next one comes after this wait.
    pub heal_wait: Option<Duration>,
}

impl Plan {
    /// Whether this sync reverted drift on an unchanged revision (a self-heal, for the backoff).
    pub fn healed(&self, report: &SyncReport) -> bool {
        self.mode == Mode::Apply && !self.new_revision && !report.drift.is_empty()
    }
}

/// Apply or compare for `revision`, given what was applied before and the recent heals.
pub(super) fn plan(
    app: &Application,
    previous: &ApplicationStatus,
    revision: &str,
    heals: &Heals,
) -> Plan {
    let automated = app
        .spec
        .sync_policy
        .as_ref()
        .and_then(|p| p.automated.as_ref());
    let self_heal = automated.and_then(|a| a.self_heal).unwrap_or(false);
    let last_synced = previous.history.last().map(|h| h.revision.as_str());
    // Without selfHeal, automated sync applies each revision once (Argo CD's semantics).
    let new_revision = last_synced != Some(revision);
    let mut mode = match automated {
        Some(_) if self_heal || new_revision => Mode::Apply,
        _ => Mode::Compare,
    };
    // Self-heal only (Git unchanged) right after another heal: compare now, heal later.
    let heal_wait = if mode == Mode::Apply && !new_revision {
        heal_backoff(
            heals,
            &app.uid().unwrap_or_default(),
            tokio::time::Instant::now(),
        )
    } else {
        None
    };
    if heal_wait.is_some() {
        mode = Mode::Compare;
    }
    Plan {
        mode,
        new_revision,
        heal_wait,
    }
}

/// The engine's request for `objects`: the previous inventory, the sync options and Argo CD's
/// prune settings (pruning only with `automated.prune`).
pub(super) fn request(
    app: &Application,
    id: &AppId,
    previous: &ApplicationStatus,
    objects: Vec<DynamicObject>,
    mode: Mode,
    max_prune_fraction: f64,
    hooks: Hooks,
) -> SyncRequest {
    let policy = app.spec.sync_policy.clone().unwrap_or_default();
    let automated = policy.automated.as_ref();
    SyncRequest {
        app: id.clone(),
        objects,
        destination_namespace: app.spec.destination.namespace.clone(),
        sync_options: policy.sync_options.clone(),
        inventory: previous.resources.clone(),
        prune: PruneSettings {
            enabled: automated.and_then(|a| a.prune).unwrap_or(false),
            allow_empty: automated.and_then(|a| a.allow_empty).unwrap_or(false),
            max_fraction: max_prune_fraction,
        },
        mode,
        hooks,
    }
}

/// When to look at a synced Application again: after a postponed heal, soon while a wave or a
/// CRD is awaited, else at the poll interval.
pub(super) fn next_look(report: &SyncReport, plan: &Plan, poll: Duration) -> Action {
    if let Some(wait) = plan.heal_wait.filter(|_| !report.drift.is_empty()) {
        return Action::requeue(wait);
    }
    if report.waiting.is_some() {
        // The next wave starts once this one is healthy: look again soon.
        return Action::requeue(WAVE_RECHECK.min(poll));
    }
    if !report.deferred.is_empty() {
        // A CRD from elsewhere (another Application, an operator) may arrive any moment.
        return Action::requeue(DEFERRED_RECHECK.min(poll));
    }
    Action::requeue(poll)
}

/// How long to wait before healing again, when the last heal was too recent.
pub(super) fn heal_backoff(
    heals: &Heals,
    uid: &str,
    now: tokio::time::Instant,
) -> Option<Duration> {
    let heals = lock(heals);
    let (count, last) = heals.get(uid)?;
    let since = now.saturating_duration_since(*last);
    if since >= HEAL_BACKOFF_CAP {
        return None;
    }
    let exponent = count.saturating_sub(1).min(10);
    let delay = HEAL_BACKOFF_FIRST
        .saturating_mul(3u32.saturating_pow(exponent))
        .min(HEAL_BACKOFF_CAP);
    delay.checked_sub(since).filter(|d| !d.is_zero())
}

/// Counts a heal of `uid` at `now`; a heal after a quiet period as long as the cap counts as
/// the first again.
pub(super) fn record_heal(heals: &Heals, uid: &str, now: tokio::time::Instant) {
    let mut heals = lock(heals);
    let entry = heals.entry(uid.to_string()).or_insert((0, now));
    if now.saturating_duration_since(entry.1) >= HEAL_BACKOFF_CAP {
        entry.0 = 0;
    }
    entry.0 = entry.0.saturating_add(1);
    entry.1 = now;
}

/// `syncPolicy.retry.backoff` (default 5s × 2, at most 3m, as Argo CD), per attempt.
pub(super) fn retry_delay(app: &Application, attempts: u32, retryable: bool) -> Duration {
    let backoff = app
        .spec
        .sync_policy
        .as_ref()
        .and_then(|p| p.retry.as_ref())
        .and_then(|r| r.backoff.clone())
        .unwrap_or_default();
    let first = backoff
        .duration
        .as_deref()
        .and_then(|d| crate::duration::parse(d).ok())
        .unwrap_or(Duration::from_secs(5));
    let cap = backoff
        .max_duration
        .as_deref()
        .and_then(|d| crate::duration::parse(d).ok())
        .unwrap_or(Duration::from_secs(180));
    let factor = u32::try_from(backoff.factor.unwrap_or(2).clamp(1, 10)).unwrap_or(2);
    let mut delay = first;
    for _ in 1..attempts.min(20) {
        delay = delay.saturating_mul(factor);
        if delay >= cap {
            break;
        }
    }
    let delay = delay.min(cap);
    if retryable {
        delay
    } else {
        delay.max(Duration::from_secs(60))
    }
}

/// How often Applications look at their repositories without a trigger.
#[derive(Clone, Copy, Debug)]
pub struct Polling {
    /// Without `spec.pollInterval` (`--default-poll-interval`).
    pub default: Duration,
    /// The shortest `spec.pollInterval` honoured; shorter ones poll this often
    /// (`--min-poll-interval`), so one Application cannot hammer a Git host.
    pub min: Duration,
}

impl Default for Polling {
    fn default() -> Polling {
        Polling {
            default: Duration::from_secs(180),
            min: Duration::from_secs(10),
        }
    }
}

/// The poll interval of `app`, with jitter.
pub(super) fn poll(app: &Application, polling: Polling) -> Duration {
    with_jitter(poll_interval(app, polling))
}

/// `spec.pollInterval` (at least `polling.min`), else `polling.default`; without jitter.
pub(super) fn poll_interval(app: &Application, polling: Polling) -> Duration {
    app.spec
        .poll_interval
        .as_deref()
        .and_then(|text| crate::duration::parse(text).ok())
        .filter(|d| !d.is_zero())
        .map(|d| d.max(polling.min))
        .unwrap_or(polling.default)
}

/// `interval` plus a random 0–10%, so Applications started together (an agent restart, an
/// app-of-apps) do not poll their repositories in lockstep.
fn with_jitter(interval: Duration) -> Duration {
    interval.mul_f64(1.0 + rand::random_range(0.0..0.1))
}

#[cfg(test)]
mod tests {
    use mooring_crds::application::ApplicationSpec;

    use super::*;

    fn app(spec: ApplicationSpec) -> Application {
        Application::new("web", spec)
    }

    #[test]
    fn a_poll_interval_is_at_least_the_minimum() {
        let polling = Polling {
            default: Duration::from_secs(180),
            min: Duration::from_secs(10),
        };
        let with = |interval: Option<&str>| {
            poll_interval(
                &app(ApplicationSpec {
                    poll_interval: interval.map(str::to_string),
                    ..Default::default()
                }),
                polling,
            )
        };
        assert_eq!(with(None), Duration::from_secs(180));
        assert_eq!(with(Some("1m")), Duration::from_secs(60));
        assert_eq!(with(Some("1s")), Duration::from_secs(10));
        assert_eq!(
            with(Some("0s")),
            Duration::from_secs(180),
            "zero: the default"
        );
    }

    #[test]
    fn polls_are_spread_by_up_to_a_tenth() {
        let base = Duration::from_secs(180);
        let delays: Vec<Duration> = (0..200).map(|_| with_jitter(base)).collect();
        assert!(delays.iter().all(|d| *d >= base && *d < base.mul_f64(1.1)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 100,
            "the delays are not spread: {distinct:?}"
        );
    }

    #[test]
    fn self_heal_backs_off_when_it_keeps_reverting() {
        let heals = Mutex::default();
        let start = tokio::time::Instant::now();
        assert_eq!(
            heal_backoff(&heals, "u", start),
            None,
            "the first heal is immediate"
        );
        record_heal(&heals, "u", start);
        let after = |s| start + Duration::from_secs(s);
        assert_eq!(
            heal_backoff(&heals, "u", after(0)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            heal_backoff(&heals, "u", after(1)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(heal_backoff(&heals, "u", after(2)), None);
        record_heal(&heals, "u", after(2));
        assert_eq!(
            heal_backoff(&heals, "u", after(2)),
            Some(Duration::from_secs(6))
        );
        record_heal(&heals, "u", after(8));
        assert_eq!(
            heal_backoff(&heals, "u", after(8)),
            Some(Duration::from_secs(18))
        );
        // Quiet for the cap: start over.
        assert_eq!(heal_backoff(&heals, "u", after(8 + 300)), None);
        record_heal(&heals, "u", after(8 + 300));
        assert_eq!(
            heal_backoff(&heals, "u", after(8 + 300)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(heal_backoff(&heals, "other", after(8 + 300)), None);
    }

    #[test]
    fn retry_backs_off_to_the_cap() {
        let plain = app(ApplicationSpec::default());
        assert_eq!(retry_delay(&plain, 1, true), Duration::from_secs(5));
        assert_eq!(retry_delay(&plain, 2, true), Duration::from_secs(10));
        assert_eq!(retry_delay(&plain, 30, true), Duration::from_secs(180));
        assert_eq!(retry_delay(&plain, 1, false), Duration::from_secs(60));
    }
}
