//! Live objects listed ahead of a step: one LIST per kind and namespace instead of one GET per
//! object keeps a no-op resync of a large set well under a second.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::api::{ApiResource, ListParams, TypeMeta};

use super::Engine;
use super::discovery::Served;
use super::prepare::Desired;
use super::sync_object::slim;

/// From how many objects of one kind in one namespace a step LISTs them instead of GETting each.
const LIST_THRESHOLD: usize = 4;
/// Objects per LIST page when prefetching: bounds what one response holds in memory.
const LIST_PAGE: u32 = 100;

/// Live objects listed ahead of a step: (resource, namespace) → name → object as compact JSON
/// (a fraction of the size of a [`serde_json::Value`], and every object of the step waits
/// here). Each object is taken out, and parsed, when its desired counterpart is compared.
pub(super) type Prefetched = Mutex<HashMap<(String, Option<String>), HashMap<String, String>>>;

/// `group/version/plural`: one key per listable resource.
pub(super) fn resource_id(resource: &ApiResource) -> String {
    format!(
        "{}/{}/{}",
        resource.group, resource.version, resource.plural
    )
}

/// The objects of one step that share a resource and a namespace: (resource, namespaced,
/// names).
type Group<'a> = (ApiResource, bool, BTreeSet<&'a str>);

impl Engine {
    /// Lists, once per kind and namespace, the live objects of a step where it has at least
    /// [`LIST_THRESHOLD`] objects of that kind there.
    ///
    /// Memory stays bounded by the step, not by the namespace: the LIST is read in pages of
    /// [`LIST_PAGE`], each page converted and dropped before the next, and only the objects the
    /// step wants are kept, without mooring's own `managedFields` entry (see [`slim`]).
    pub(super) async fn prefetch(&self, step: &[Desired]) -> Prefetched {
        let mut prefetched = HashMap::new();
        for ((id, namespace), (resource, namespaced, wanted)) in groups(step) {
            if wanted.len() < LIST_THRESHOLD {
                continue;
            }
            let served = Served {
                resource,
                namespaced,
            };
            if let Some(objects) = self.list(&served, namespace.as_deref(), &wanted).await {
                prefetched.insert((id, namespace), objects);
            }
        }
        Mutex::new(prefetched)
    }

    /// The `wanted` objects of one resource in one namespace, page by page; `None` when a page
    /// failed (RBAC may allow get but not list, a continue token may expire): the step then
    /// falls back to one GET per object.
    async fn list(
        &self,
        served: &Served,
        namespace: Option<&str>,
        wanted: &BTreeSet<&str>,
    ) -> Option<HashMap<String, String>> {
        let resource = &served.resource;
        let api = self.api(served, namespace);
        let mut objects = HashMap::new();
        let mut params = ListParams::default().limit(LIST_PAGE);
        loop {
            let page = api.list(&params).await.ok()?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            for mut object in page.items {
                let Some(name) = object.metadata.name.take() else {
                    continue;
                };
                if !wanted.contains(name.as_str()) {
                    continue;
                }
                object.metadata.name = Some(name.clone());
                // List items carry no apiVersion/kind; the comparisons expect them.
                if object.types.is_none() {
                    object.types = Some(TypeMeta {
                        api_version: resource.api_version.clone(),
                        kind: resource.kind.clone(),
                    });
                }
                slim(&mut object);
                objects.insert(name, serde_json::to_string(&object).unwrap_or_default());
            }
            match next {
                Some(token) => params = params.continue_token(&token),
                None => return Some(objects),
            }
        }
    }
}

/// The step's served objects grouped by resource and namespace.
fn groups(step: &[Desired]) -> HashMap<(String, Option<String>), Group<'_>> {
    let mut groups: HashMap<(String, Option<String>), Group<'_>> = HashMap::new();
    for item in step {
        if let Some(served) = &item.served {
            let entry = groups
                .entry((resource_id(&served.resource), item.key.namespace.clone()))
                .or_insert((served.resource.clone(), served.namespaced, BTreeSet::new()));
            entry.2.insert(&item.key.name);
        }
    }
    groups
}
