//! Drift watches: one metadata-only watch per kind mooring manages (only kinds that appear in an
//! inventory, never every kind in the cluster as Argo CD's cache does). A change or deletion of
//! an object carrying a tracking id sends the owning Application, so the controller reconciles
//! it within seconds: reverted with selfHeal, reported OutOfSync without.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use super::object::{AppId, TRACKING_ID_ANNOTATION, parse_tracking_id};
use crate::cluster::FIELD_MANAGER;
use crate::controllers::lock;

/// Objects per page of a drift watch's initial LIST (kube's default is 500).
const WATCH_PAGE: u32 = 100;

/// The Application named by an object's tracking id.
fn owner(object: &PartialObjectMeta<DynamicObject>) -> Option<AppId> {
    object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRACKING_ID_ANNOTATION))
        .and_then(|id| parse_tracking_id(id))
        .map(|(app, _)| app)
}

/// Whether mooring's apply was the last write to the object: its managedFields entry is strictly
/// newer than every other entry, including status writes (mooring's own status of a child
/// Application is news for the parent's health). Times have a resolution of one second, so a
/// change by someone else in the same second as mooring's apply still counts as theirs.
fn written_by_mooring_last(metadata: &ObjectMeta) -> bool {
    let entries = metadata.managed_fields.as_deref().unwrap_or_default();
    let newest = |ours: bool| {
        entries
            .iter()
            .filter(|entry| is_apply_by_mooring(entry) == ours)
            .filter_map(|entry| entry.time.as_ref().map(|time| time.0))
            .max()
    };
    match (newest(true), newest(false)) {
        (Some(ours), Some(others)) => others < ours,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// mooring's server-side apply of the object itself (not of a subresource such as its status).
fn is_apply_by_mooring(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER)
        && entry.subresource.as_deref().unwrap_or_default().is_empty()
}

/// The running watches; dropping this stops them.
pub struct Watches {
    client: kube::Client,
    running: Mutex<HashMap<GroupVersionKind, tokio::task::JoinHandle<()>>>,
    wakes: Arc<Wakes>,
}

/// The least time between two wake-ups of one Application by its drift watches. Controllers
/// finishing a rollout (a Deployment's revision annotation and status) change every object of
/// a large sync over many seconds, and each change would otherwise chain another full no-op
/// sync after the one running; an edit to revert still wakes it within this interval.
const WAKE_INTERVAL: Duration = Duration::from_secs(3);

/// How many Applications [`Wakes`] remembers before it forgets those not woken lately.
const FORGET_ABOVE: usize = 256;

/// Wake-ups sent to the Application controller, at most one per Application per
/// [`WAKE_INTERVAL`]: the first at once, the rest of a burst as one more at the interval's end.
struct Wakes {
    sender: mpsc::UnboundedSender<AppId>,
    /// Application → when it was last woken, and whether a wake-up is already scheduled.
    state: Mutex<HashMap<AppId, (tokio::time::Instant, bool)>>,
}

impl Wakes {
    /// Wakes `app` now, or once the interval since its last wake-up has passed. False once the
    /// controller is gone.
    fn wake(self: &Arc<Self>, app: AppId) -> bool {
        let now = tokio::time::Instant::now();
        let mut state = lock(&self.state);
        // Forget Applications not woken for a while (deleted ones, mostly); only once the map
        // has grown, so a burst of events does not scan every Application each time.
        if state.len() > FORGET_ABOVE {
            state.retain(|_, (last, scheduled)| *scheduled || now < *last + WAKE_INTERVAL * 20);
        }
        match state.get_mut(&app) {
            Some((_, true)) => true,
            Some((last, scheduled)) if now < *last + WAKE_INTERVAL => {
                *scheduled = true;
                let at = *last + WAKE_INTERVAL;
                let wakes = Arc::clone(self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    lock(&wakes.state).insert(app.clone(), (tokio::time::Instant::now(), false));
                    let _ = wakes.sender.send(app);
                });
                true
            }
            _ => {
                state.insert(app.clone(), (now, false));
                self.sender.send(app).is_ok()
            }
        }
    }
}

impl Watches {
    /// No watches yet; the receiver yields the Application of every changed managed object.
    pub fn new(client: kube::Client) -> (Watches, mpsc::UnboundedReceiver<AppId>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let watches = Watches {
            client,
            running: Mutex::default(),
            wakes: Arc::new(Wakes {
                sender,
                state: Mutex::default(),
            }),
        };
        (watches, receiver)
    }

    /// Starts a watch of `resource` in all namespaces unless one runs already.
    pub fn ensure(&self, resource: &ApiResource) {
        let gvk = GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind);
        let mut running = lock(&self.running);
        if running.get(&gvk).is_some_and(|task| !task.is_finished()) {
            return;
        }
        // Metadata only (the API server sends PartialObjectMetadata, not whole objects): the
        // tracking id is all a drift watch needs, and memory must not grow with the size of the
        // watched objects. The initial LIST comes in pages of WATCH_PAGE: every watch of a sync
        // starts at once, and a page of metadata still carries each object's managedFields.
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), resource);
        let wakes = Arc::clone(&self.wakes);
        let kind = resource.kind.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(
                // Backoff: a watch refused (RBAC) or broken must not spin.
                watcher::watcher(api, watcher::Config::default().page_size(WATCH_PAGE))
                    .default_backoff()
            );
            // Applications owning objects of the initial list: sent once the list is complete,
            // one trigger each rather than one per object (a list of 1000 objects would
            // otherwise chain a re-sync after every sync for as long as its pages arrive).
            let mut listed = std::collections::BTreeSet::new();
            while let Some(event) = events.next().await {
                let changed = match event {
                    Ok(Event::Init) => {
                        listed.clear();
                        continue;
                    }
                    // The initial list counts too: an edit made while the watch was starting
                    // arrives only as part of it (the reconcile it causes is a cheap no-op).
                    Ok(Event::InitApply(object)) => {
                        listed.extend(owner(&object));
                        continue;
                    }
                    Ok(Event::InitDone) => std::mem::take(&mut listed),
                    // mooring's own writes are not drift: the sync that made them knows.
                    Ok(Event::Apply(object)) if !written_by_mooring_last(&object.metadata) => {
                        owner(&object).into_iter().collect()
                    }
                    Ok(Event::Apply(_)) => continue,
                    Ok(Event::Delete(object)) => owner(&object).into_iter().collect(),
                    Err(error) => {
                        // The watcher retries by itself, with backoff.
                        tracing::debug!(%error, %kind, "drift watch interrupted");
                        continue;
                    }
                };
                for app in changed {
                    if !wakes.wake(app) {
                        return;
                    }
                }
            }
        });
        running.insert(gvk, task);
    }

    /// How many kinds are watched.
    pub fn len(&self) -> usize {
        lock(&self.running).len()
    }

    /// Whether no kind is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self
            .running
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn object(entries: &[(&str, i64)]) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(
                entries
                    .iter()
                    .map(|(manager, second)| ManagedFieldsEntry {
                        manager: Some((*manager).to_string()),
                        time: Some(Time(jiff::Timestamp::from_second(*second).unwrap())),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_wakes_an_application_twice() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let wakes = Arc::new(Wakes {
            sender,
            state: Mutex::default(),
        });
        let app = AppId {
            namespace: "apps".into(),
            name: "platform-api".into(),
        };
        let other = AppId {
            namespace: "apps".into(),
            name: "other".into(),
        };
        for _ in 0..50 {
            assert!(wakes.wake(app.clone()));
        }
        assert!(wakes.wake(other.clone()));
        // The first change of each at once, the rest of the burst once, at the interval's end.
        assert_eq!(receiver.recv().await, Some(app.clone()));
        assert_eq!(receiver.recv().await, Some(other));
        assert!(receiver.try_recv().is_err());
        tokio::time::sleep(WAKE_INTERVAL).await;
        assert_eq!(receiver.recv().await, Some(app.clone()));
        assert!(receiver.try_recv().is_err());
        // Quiet for longer than the interval: the next change wakes it at once.
        tokio::time::sleep(WAKE_INTERVAL * 2).await;
        assert!(wakes.wake(app.clone()));
        assert_eq!(receiver.try_recv().ok(), Some(app));
    }

    #[test]
    fn only_a_write_by_mooring_after_everyone_else_is_its_own() {
        assert!(written_by_mooring_last(&object(&[("mooring", 10)])));
        assert!(written_by_mooring_last(&object(&[
            ("kubectl-client-side-apply", 5),
            ("mooring", 10),
        ])));
        // Someone else after mooring, or in the same second: drift to look at.
        assert!(!written_by_mooring_last(&object(&[
            ("mooring", 10),
            ("kubectl-edit", 11),
        ])));
        assert!(!written_by_mooring_last(&object(&[
            ("mooring", 10),
            ("kube-controller-manager", 10),
        ])));
        assert!(!written_by_mooring_last(&object(&[("kubectl-edit", 3)])));
        // mooring's own status write after its apply (a child Application's health).
        let mut child = object(&[("mooring", 10), ("mooring", 11)]);
        if let Some(entries) = child.managed_fields.as_mut() {
            entries[1].subresource = Some("status".into());
        }
        assert!(!written_by_mooring_last(&child));
        assert!(!written_by_mooring_last(&object(&[])));
    }
}
