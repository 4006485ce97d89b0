//! Drift watches: one metadata-only watch per kind mooring manages (only kinds that appear in an
//! inventory, never every kind in the cluster as Argo CD's cache does). A change or deletion of
//! an object carrying a tracking id sends the owning Application, so the controller reconciles
//! it within seconds: reverted with selfHeal, reported OutOfSync without.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;

use super::object::{AppId, TRACKING_ID_ANNOTATION, parse_tracking_id};

/// Objects per page of a drift watch's initial LIST (kube's default is 500).
const WATCH_PAGE: u32 = 100;

/// The running watches; dropping this stops them.
pub struct Watches {
    client: kube::Client,
    running: Mutex<HashMap<GroupVersionKind, tokio::task::JoinHandle<()>>>,
    sender: mpsc::UnboundedSender<AppId>,
}

impl Watches {
    /// No watches yet; the receiver yields the Application of every changed managed object.
    pub fn new(client: kube::Client) -> (Watches, mpsc::UnboundedReceiver<AppId>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let watches = Watches {
            client,
            running: Mutex::default(),
            sender,
        };
        (watches, receiver)
    }

    /// Starts a watch of `resource` in all namespaces unless one runs already.
    pub fn ensure(&self, resource: &ApiResource) {
        let gvk = GroupVersionKind::gvk(&resource.group, &resource.version, &resource.kind);
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if running.get(&gvk).is_some_and(|task| !task.is_finished()) {
            return;
        }
        // Metadata only (the API server sends PartialObjectMetadata, not whole objects): the
        // tracking id is all a drift watch needs, and memory must not grow with the size of the
        // watched objects. The initial LIST comes in pages of WATCH_PAGE: every watch of a sync
        // starts at once, and a page of metadata still carries each object's managedFields.
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), resource);
        let sender = self.sender.clone();
        let kind = resource.kind.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(
                // Backoff: a watch refused (RBAC) or broken must not spin.
                watcher::watcher(api, watcher::Config::default().page_size(WATCH_PAGE))
                    .default_backoff()
            );
            while let Some(event) = events.next().await {
                let object = match event {
                    // The initial list counts too: an edit made while the watch was starting
                    // arrives only as part of it (the reconcile it causes is a cheap no-op).
                    Ok(Event::Apply(object) | Event::Delete(object) | Event::InitApply(object)) => {
                        object
                    }
                    Ok(_) => continue,
                    Err(error) => {
                        // The watcher retries by itself, with backoff.
                        tracing::debug!(%error, %kind, "drift watch interrupted");
                        continue;
                    }
                };
                let owner = object
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TRACKING_ID_ANNOTATION))
                    .and_then(|id| parse_tracking_id(id));
                if let Some((app, _)) = owner
                    && sender.send(app).is_err()
                {
                    return;
                }
            }
        });
        running.insert(gvk, task);
    }

    /// How many kinds are watched.
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
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
