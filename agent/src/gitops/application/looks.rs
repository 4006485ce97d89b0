//! When a reconcile asks the repository for its revision, and when it reuses the commit the
//! last look found.
//!
//! The remote is asked when the poll interval has passed, or when something a user or a
//! webhook changes has changed since the last look: the spec (its generation), an annotation
//! (`mooring.dev/refresh`, Argo CD's `argocd.argoproj.io/refresh`), a label, the deletion. Drift
//! (a managed object edited) and the controller's own status writes reuse the commit: they are
//! reasons to apply again, not to look for new commits.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::predicates;
use mooring_crds::application::Application;
use tokio::time::Instant;

use crate::controllers::lock;

/// More Applications than this remembered: those not looked at for [`FORGET_AFTER`] are dropped
/// (deleted ones, mostly).
const FORGET_ABOVE: usize = 4096;
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The properties of an Application whose change is a reason to look at it again: everything
/// but its status (and its finalizers, which Argo CD's tools and this agent set).
pub(super) fn wakes_on(app: &Application) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    app.metadata.generation.hash(&mut hasher);
    predicates::annotations(app).hash(&mut hasher);
    predicates::labels(app).hash(&mut hasher);
    app.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// The last look at the repository of each Application, by uid.
#[derive(Default)]
pub(super) struct Looks(Mutex<HashMap<String, Look>>);

struct Look {
    wakes_on: Option<u64>,
    at: Instant,
    revision: String,
}

impl Looks {
    /// The commit the last look found, if it is younger than `poll_interval` and nothing that
    /// asks for a new look changed since.
    pub(super) fn reusable(&self, app: &Application, poll_interval: Duration) -> Option<String> {
        let looks = lock(&self.0);
        let look = looks.get(&app.uid()?)?;
        (look.wakes_on == wakes_on(app) && look.at.elapsed() < poll_interval)
            .then(|| look.revision.clone())
    }

    /// When the next look at the remote is due: `poll` from now, or sooner if the last look
    /// (reused since) was made earlier. Drift every few seconds must not put off the poll.
    pub(super) fn due_in(&self, app: &Application, poll: Duration) -> Duration {
        let Some(uid) = app.uid() else { return poll };
        match lock(&self.0).get(&uid) {
            Some(look) => poll
                .saturating_sub(look.at.elapsed())
                .max(Duration::from_secs(1)),
            None => poll,
        }
    }

    /// Remembers that a look started at `at` found `revision`.
    pub(super) fn record(&self, app: &Application, revision: &str, at: Instant) {
        let Some(uid) = app.uid() else { return };
        let mut looks = lock(&self.0);
        if looks.len() > FORGET_ABOVE {
            looks.retain(|_, look| look.at.elapsed() < FORGET_AFTER);
        }
        looks.insert(
            uid,
            Look {
                wakes_on: wakes_on(app),
                at,
                revision: revision.to_string(),
            },
        );
    }

    /// Forgets the last look: the next reconcile asks the remote (after a failure, a deletion).
    pub(super) fn forget(&self, app: &Application) {
        if let Some(uid) = app.uid() {
            lock(&self.0).remove(&uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn app(generation: i64, refresh: Option<&str>) -> Application {
        let mut app = Application::new("web", Default::default());
        app.metadata.uid = Some("uid-1".into());
        app.metadata.generation = Some(generation);
        app.metadata.annotations = refresh
            .map(|value| BTreeMap::from([("mooring.dev/refresh".to_string(), value.to_string())]));
        app
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_is_reused_until_the_poll_interval_or_a_change() {
        let looks = Looks::default();
        let poll = Duration::from_secs(180);
        assert_eq!(looks.reusable(&app(1, None), poll), None, "never looked");
        looks.record(&app(1, None), "abc", Instant::now());
        assert_eq!(looks.reusable(&app(1, None), poll).as_deref(), Some("abc"));
        tokio::time::advance(Duration::from_secs(60)).await;
        // Reused a minute later (drift): the next look stays due at the poll interval.
        assert_eq!(looks.reusable(&app(1, None), poll).as_deref(), Some("abc"));
        assert_eq!(looks.due_in(&app(1, None), poll), Duration::from_secs(120));
        // A status write changes neither the generation nor the annotations.
        let mut with_status = app(1, None);
        with_status.status = Some(Default::default());
        assert_eq!(looks.reusable(&with_status, poll).as_deref(), Some("abc"));
        assert_eq!(looks.reusable(&app(2, None), poll), None, "spec changed");
        assert_eq!(looks.reusable(&app(1, Some("now")), poll), None, "refresh");
        tokio::time::advance(poll).await;
        assert_eq!(
            looks.reusable(&app(1, None), poll),
            None,
            "poll interval passed"
        );
        looks.record(&app(1, None), "def", Instant::now());
        looks.forget(&app(1, None));
        assert_eq!(looks.reusable(&app(1, None), poll), None, "forgotten");
    }
}
