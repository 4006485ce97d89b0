//! The sync engine with more objects of one kind than one LIST page holds: the prefetch reads
//! every page, ignores objects of the namespace that are not in the set, and still names the
//! field manager of a manual change made on a later page (only mooring's own `managedFields`
//! entry is dropped from listed objects).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use mooring_agent::gitops::apply::object::{AppId, ObjectKey};
use mooring_agent::gitops::apply::{Engine, SyncReport, SyncRequest};
use mooring_crds::application::SyncState;
use mooring_e2e::{RealEnv, TestNamespace};
use serde_json::json;

/// More than two pages of the engine's prefetch (100 objects a page).
const COUNT: usize = 230;

fn config_map(namespace: &str, index: usize) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{index:04}"), "namespace": namespace,
            "labels": {"set": "paging"}},
        "data": {"index": index.to_string()}
    }))
    .unwrap()
}

fn request(app: &AppId, namespace: &str, inventory: &SyncReport) -> SyncRequest {
    let objects = (0..COUNT).map(|i| config_map(namespace, i)).collect();
    crate::apply::request(app, namespace, objects, inventory)
}

async fn versions(api: &kube::Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&ListParams::default().labels("set=paging"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| {
            (
                cm.metadata.name.unwrap(),
                cm.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_set_larger_than_a_list_page_resyncs_without_writes_and_names_a_later_drift() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "paging").await.unwrap();
    let api = ns.api::<ConfigMap>();
    // Bystanders: ConfigMaps of the namespace that are not in the set (listed, not kept).
    for index in 0..30 {
        let bystander: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("other-{index:02}")}, "data": {"x": "y"}
        }))
        .unwrap();
        api.create(&PostParams::default(), &bystander)
            .await
            .unwrap();
    }
    let app = AppId {
        namespace: ns.name().into(),
        name: "paging".into(),
    };
    let engine = Engine::new(ns.client());

    let first = engine
        .sync_owned(request(&app, ns.name(), &SyncReport::default()))
        .await
        .unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert_eq!(first.written.len(), COUNT);
    assert_eq!(first.sync, SyncState::Synced);
    assert_eq!(first.resources.len(), COUNT);

    // A fresh engine (no cache of verified objects): every object is judged on what the paged
    // LIST returned; none may look missing or changed.
    let before = versions(&api).await;
    assert_eq!(before.len(), COUNT);
    let second = Engine::new(ns.client())
        .sync(&request(&app, ns.name(), &first))
        .await
        .unwrap();
    assert!(second.failures.is_empty(), "{:?}", second.failures);
    assert!(second.written.is_empty(), "{:?}", second.written);
    assert!(second.drift.is_empty(), "{:?}", second.drift);
    assert_eq!(second.sync, SyncState::Synced);
    assert_eq!(second.resources.len(), COUNT);
    assert_eq!(versions(&api).await, before, "a no-op resync wrote nothing");

    // A manual change on the last page: reverted, and its manager named.
    let name = format!("cm-{:04}", COUNT - 1);
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        },
        &Patch::Merge(&json!({"data": {"index": "edited"}})),
    )
    .await
    .unwrap();
    let third = Engine::new(ns.client())
        .sync(&request(&app, ns.name(), &second))
        .await
        .unwrap();
    assert!(third.failures.is_empty(), "{:?}", third.failures);
    let edited = ObjectKey {
        group: String::new(),
        kind: "ConfigMap".into(),
        namespace: Some(ns.name().into()),
        name: name.clone(),
    };
    assert_eq!(third.written, vec![edited.clone()]);
    assert_eq!(third.drift.len(), 1, "{:?}", third.drift);
    assert_eq!(third.drift[0].key, edited);
    assert_eq!(third.drift[0].managers, vec!["kubectl-edit".to_string()]);
    assert_eq!(third.drift[0].fields, vec!["data.index".to_string()]);
    let reverted = api.get(&name).await.unwrap();
    assert_eq!(
        reverted.data.unwrap().get("index").map(String::as_str),
        Some((COUNT - 1).to_string().as_str())
    );
}
