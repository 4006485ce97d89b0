//! The sync engine against the real API server: ordered server-side apply, no-op resyncs that
//! write nothing, guarded prune, deferred custom resources, and self-heal through the
//! Application controller.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use mooring_agent::gitops::application::{self, Desired, Source, SourceError};
use mooring_agent::gitops::apply::object::{AppId, ObjectKey, TRACKING_ID_ANNOTATION};
use mooring_agent::gitops::apply::prune::PruneSettings;
use mooring_agent::gitops::apply::{Engine, Mode, SyncReport, SyncRequest};
use mooring_crds::application::{Application, HealthState, SyncState};
use mooring_e2e::gitops::{ApplicationManifest, is_synced};
use mooring_e2e::{RealEnv, TestNamespace, wait_for};
use serde_json::{Value, json};

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// A CRD of a group unique to this test namespace, so concurrent tests never share it.
fn crd(group: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]
        }
    }))
}

fn widget(group: &str, namespace: &str) -> DynamicObject {
    object(json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "gadget", "namespace": namespace},
        "spec": {"size": 3}
    }))
}

fn config_map(name: &str, namespace: &str, value: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"greeting": value}
    }))
}

fn deployment(namespace: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1",
                    "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"}}}]}}
        }
    }))
}

fn service(namespace: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
}

fn namespace_object(name: &str) -> DynamicObject {
    object(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
}

/// A sync of `objects` for `app` into `namespace` after `inventory`, prune on (the default
/// guards).
pub(crate) fn request(
    app: &AppId,
    namespace: &str,
    objects: Vec<DynamicObject>,
    inventory: &SyncReport,
) -> SyncRequest {
    SyncRequest {
        app: app.clone(),
        objects,
        destination_namespace: Some(namespace.into()),
        sync_options: Vec::new(),
        inventory: inventory.resources.clone(),
        prune: PruneSettings {
            enabled: true,
            ..Default::default()
        },
        mode: Mode::Apply,
        hooks: mooring_agent::gitops::apply::Hooks::Ignore,
    }
}

fn key(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey {
        group: group.into(),
        kind: kind.into(),
        namespace: namespace.map(str::to_string),
        name: name.into(),
    }
}

/// The resourceVersion of every object of the set, to prove a resync wrote nothing.
async fn resource_versions(
    client: &kube::Client,
    ns: &str,
    extra_ns: &str,
    group: &str,
) -> BTreeMap<String, String> {
    let widgets =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", "Widget"), "widgets");
    let widget_api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &widgets);
    BTreeMap::from([
        (
            "namespace".into(),
            version_of(Api::<Namespace>::all(client.clone()), extra_ns).await,
        ),
        (
            "configmap".into(),
            version_of(Api::<ConfigMap>::namespaced(client.clone(), ns), "settings").await,
        ),
        (
            "deployment".into(),
            version_of(Api::<Deployment>::namespaced(client.clone(), ns), "web").await,
        ),
        (
            "service".into(),
            version_of(Api::<Service>::namespaced(client.clone(), ns), "web").await,
        ),
        (
            "crd".into(),
            version_of(
                Api::<CustomResourceDefinition>::all(client.clone()),
                &format!("widgets.{group}"),
            )
            .await,
        ),
        (
            "widget".into(),
            widget_api
                .get("gadget")
                .await
                .unwrap()
                .metadata
                .resource_version
                .unwrap(),
        ),
    ])
}

/// The resourceVersion of object `name` of `api`.
async fn version_of<K>(api: Api<K>, name: &str) -> String
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap()
        .meta()
        .resource_version
        .clone()
        .unwrap()
}

/// Deletes what a test created outside its namespace.
async fn cleanup(client: &kube::Client, crd_name: &str, extra_namespace: Option<&str>) {
    let _ = Api::<CustomResourceDefinition>::all(client.clone())
        .delete(crd_name, &DeleteParams::default())
        .await;
    if let Some(name) = extra_namespace {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
}

#[tokio::test]
async fn apply_resync_prune_and_guards() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply").await.unwrap();
    let client = ns.client();
    let group = format!("{}.e2e.mooring.dev", ns.name());
    let extra_ns = format!("{}-extra", ns.name());
    let app = AppId {
        namespace: ns.name().into(),
        name: "platform-api".into(),
    };
    let engine = Engine::new(client.clone());
    let full = || {
        vec![
            // Deliberately out of order: the engine sorts.
            widget(&group, ns.name()),
            service(ns.name()),
            deployment(ns.name()),
            config_map("settings", ns.name(), "hello"),
            config_map("extra", ns.name(), "x"),
            crd(&group),
            namespace_object(&extra_ns),
        ]
    };

    // First sync: everything is written, CR after its CRD, each with the tracking id.
    let first = engine
        .sync(&request(&app, ns.name(), full(), &SyncReport::default()))
        .await
        .unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert!(first.deferred.is_empty(), "{:?}", first.deferred);
    assert_eq!(first.written.len(), 7, "{:?}", first.written);
    assert_eq!(first.sync, SyncState::Synced);
    assert_eq!(first.resources.len(), 7);
    let deployment_live = ns.api::<Deployment>().get("web").await.unwrap();
    assert_eq!(
        deployment_live
            .metadata
            .annotations
            .unwrap()
            .get(TRACKING_ID_ANNOTATION)
            .map(String::as_str),
        Some(
            format!(
                "{}/platform-api:apps/Deployment:{}/web",
                ns.name(),
                ns.name()
            )
            .as_str()
        )
    );
    let crd_health = first
        .resources
        .iter()
        .find(|r| r.kind == "CustomResourceDefinition")
        .and_then(|r| r.health.clone())
        .unwrap();
    assert_eq!(crd_health.status, HealthState::Healthy);

    // Second sync of the same set: nothing written, no resourceVersion changed. The
    // controller-manager writes the Deployment's status and revision annotation after it is
    // created: let it settle first so only mooring could change a resourceVersion.
    wait_for(
        "the Deployment to be rolled out",
        Duration::from_secs(30),
        || async {
            let live = ns.api::<Deployment>().get("web").await.ok()?;
            let revised = live
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("deployment.kubernetes.io/revision"));
            let status = live.status?;
            let available = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Available");
            (revised && available && status.observed_generation == live.metadata.generation)
                .then_some(())
        },
    )
    .await
    .unwrap();
    let before = resource_versions(&client, ns.name(), &extra_ns, &group).await;
    let started = std::time::Instant::now();
    let second = engine
        .sync(&request(&app, ns.name(), full(), &first))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        second.written.is_empty(),
        "a no-op sync wrote {:?}",
        second.written
    );
    assert_eq!(second.sync, SyncState::Synced);
    assert_eq!(
        resource_versions(&client, ns.name(), &extra_ns, &group).await,
        before
    );
    eprintln!("no-op resync of 7 objects: {took:?}");

    // A fresh engine (agent restart, empty caches) also writes nothing.
    let restarted = Engine::new(client.clone());
    let third = restarted
        .sync(&request(&app, ns.name(), full(), &second))
        .await
        .unwrap();
    assert!(
        third.written.is_empty(),
        "after a restart a no-op sync wrote {:?}",
        third.written
    );
    assert_eq!(
        resource_versions(&client, ns.name(), &extra_ns, &group).await,
        before
    );

    // A changed object is written, and only that one.
    let mut changed = full();
    changed[3] = config_map("settings", ns.name(), "bonjour");
    let fourth = engine
        .sync(&request(&app, ns.name(), changed.clone(), &third))
        .await
        .unwrap();
    assert_eq!(
        fourth.written,
        vec![key("", "ConfigMap", Some(ns.name()), "settings")]
    );

    // An object removed from the set is pruned.
    let without_extra: Vec<_> = changed
        .iter()
        .filter(|o| o.metadata.name.as_deref() != Some("extra"))
        .cloned()
        .collect();
    let fifth = engine
        .sync(&request(&app, ns.name(), without_extra.clone(), &fourth))
        .await
        .unwrap();
    assert_eq!(
        fifth.pruned,
        vec![key("", "ConfigMap", Some(ns.name()), "extra")]
    );
    ns.wait_until_gone::<ConfigMap>(
        "ConfigMap extra to be deleted",
        "extra",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(fifth.resources.len(), 6);

    // Removing more than half of the inventory at once is refused; nothing is deleted.
    let only_service = vec![service(ns.name())];
    let refused = engine
        .sync(&request(&app, ns.name(), only_service, &fifth))
        .await
        .unwrap();
    assert!(refused.pruned.is_empty(), "{:?}", refused.pruned);
    let (reason, message) = refused.prune_refused.clone().unwrap();
    assert_eq!(reason, "PruneLimitExceeded");
    assert!(message.contains("refusing to prune 5 of 6"), "{message}");
    assert_eq!(refused.sync, SyncState::OutOfSync);
    assert_eq!(
        refused
            .resources
            .iter()
            .filter(|r| r.requires_pruning == Some(true))
            .count(),
        5
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("settings")
            .await
            .unwrap()
            .is_some()
    );

    // An empty render prunes nothing.
    let empty = engine
        .sync(&request(&app, ns.name(), Vec::new(), &refused))
        .await
        .unwrap();
    assert!(empty.pruned.is_empty());
    assert_eq!(
        empty.prune_refused.as_ref().map(|r| r.0),
        Some("EmptyRender")
    );
    assert_eq!(empty.resources.len(), 6, "the inventory is kept");
    assert!(
        ns.api::<Deployment>()
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );

    // An object whose tracking id was taken away is not pruned even though the inventory lists it,
    // and the protected kinds (CRD, Namespace) stay without the opt-in.
    let mut settings = ns.api::<ConfigMap>().get("settings").await.unwrap();
    settings
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(TRACKING_ID_ANNOTATION);
    settings.metadata.managed_fields = None;
    ns.api::<ConfigMap>()
        .replace("settings", &PostParams::default(), &settings)
        .await
        .unwrap();
    let mut loose = request(
        &app,
        ns.name(),
        vec![deployment(ns.name()), service(ns.name())],
        &empty,
    );
    loose.prune.max_fraction = 1.0;
    let pruned = engine.sync(&loose).await.unwrap();
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("settings")
            .await
            .unwrap()
            .is_some(),
        "unowned object was pruned"
    );
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&extra_ns)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<CustomResourceDefinition>::all(client.clone())
            .get_opt(&format!("widgets.{group}"))
            .await
            .unwrap()
            .is_some()
    );
    let kept: Vec<_> = pruned
        .kept
        .iter()
        .map(|(k, why)| (k.kind.clone(), format!("{why:?}")))
        .collect();
    assert!(
        kept.contains(&("ConfigMap".into(), "NotOwned".into())),
        "{kept:?}"
    );
    assert!(
        kept.contains(&("Namespace".into(), "Protected".into())),
        "{kept:?}"
    );
    assert!(
        kept.contains(&("CustomResourceDefinition".into(), "Protected".into())),
        "{kept:?}"
    );
    assert!(
        pruned
            .pruned
            .contains(&key(&group, "Widget", Some(ns.name()), "gadget")),
        "{:?}",
        pruned.pruned
    );

    cleanup(&client, &format!("widgets.{group}"), Some(&extra_ns)).await;
}

#[tokio::test]
async fn custom_resource_is_deferred_until_its_crd_arrives() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-defer").await.unwrap();
    let client = ns.client();
    let group = format!("{}.e2e.mooring.dev", ns.name());
    let app = AppId {
        namespace: ns.name().into(),
        name: "widgets".into(),
    };
    let engine = Engine::new(client.clone());

    let first = engine
        .sync(&request(
            &app,
            ns.name(),
            vec![
                widget(&group, ns.name()),
                config_map("settings", ns.name(), "a"),
            ],
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    assert_eq!(first.deferred.len(), 1);
    let (deferred, reason) = &first.deferred[0];
    assert_eq!(deferred.kind, "Widget");
    assert!(reason.contains(&format!("{group}/v1 Widget")), "{reason}");
    assert!(
        reason.contains("neither in the cluster nor in the set"),
        "{reason}"
    );
    assert_eq!(first.sync, SyncState::OutOfSync);
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("settings")
            .await
            .unwrap()
            .is_some(),
        "the rest must apply"
    );

    // The CRD arrives (here from another source, applied by hand): the next sync applies the CR.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let definition: CustomResourceDefinition =
        serde_json::from_value(serde_json::to_value(crd(&group)).unwrap()).unwrap();
    crds.create(&PostParams::default(), &definition)
        .await
        .unwrap();
    let name = format!("widgets.{group}");
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::wait::conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    // Established comes a moment before the API server's discovery serves the new kind.
    let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
    wait_for(
        "discovery to serve Widget",
        Duration::from_secs(30),
        || async {
            kube::discovery::pinned_kind(&client, &gvk)
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await
    .unwrap();
    let second = engine
        .sync(&request(
            &app,
            ns.name(),
            vec![
                widget(&group, ns.name()),
                config_map("settings", ns.name(), "a"),
            ],
            &first,
        ))
        .await
        .unwrap();
    assert!(second.deferred.is_empty(), "{:?}", second.deferred);
    assert_eq!(
        second.written,
        vec![key(&group, "Widget", Some(ns.name()), "gadget")]
    );
    assert_eq!(second.sync, SyncState::Synced);

    // The CRD goes away again (the engine still has the kind cached): deferred, not failed.
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for(
        "discovery to stop serving Widget",
        Duration::from_secs(60),
        || async {
            let gone = crds.get_opt(&name).await.ok()?.is_none();
            let unserved = kube::discovery::pinned_kind(&client, &gvk).await.is_err();
            (gone && unserved).then_some(())
        },
    )
    .await
    .unwrap();
    let third = engine
        .sync(&request(
            &app,
            ns.name(),
            vec![
                widget(&group, ns.name()),
                config_map("settings", ns.name(), "a"),
            ],
            &second,
        ))
        .await
        .unwrap();
    assert!(third.failures.is_empty(), "{:?}", third.failures);
    assert_eq!(third.deferred.len(), 1, "{:?}", third.deferred);
    // Dropped from Git while its kind is gone: nothing to delete, and no failure either.
    let fourth = engine
        .sync(&request(
            &app,
            ns.name(),
            vec![config_map("settings", ns.name(), "a")],
            &third,
        ))
        .await
        .unwrap();
    assert!(fourth.failures.is_empty(), "{:?}", fourth.failures);
    assert_eq!(fourth.resources.len(), 1, "{:?}", fourth.resources);
    assert_eq!(fourth.sync, SyncState::Synced);

    cleanup(&client, &name, None).await;
}

/// A source that returns whatever the test put in it.
struct FixedSource(Mutex<Desired>);

impl Source for FixedSource {
    fn desired<'a>(&'a self, _app: &'a Application) -> BoxFuture<'a, Result<Desired, SourceError>> {
        let desired = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(desired) })
    }
}

/// Runs the Application controller for `namespace` with `source` until the sender is used or
/// dropped.
async fn start_controller(
    client: kube::Client,
    namespace: &str,
    source: Arc<dyn Source>,
) -> tokio::sync::oneshot::Sender<()> {
    mooring_agent::install::apply_crds(&client, Duration::from_secs(30))
        .await
        .unwrap();
    let ctx = Arc::new(application::Context::new(
        client.clone(),
        source,
        mooring_agent::events::EventSink::new(client),
        0.5,
        Duration::from_secs(180),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(application::run(
        ctx,
        Some(namespace.to_string()),
        async move {
            let _ = stopped.await;
        },
    ));
    stop
}

fn application(namespace: &str, self_heal: bool) -> Application {
    let repo = "https://git.invalid/infra/k8s-manifests.git";
    ApplicationManifest::new("platform-api", namespace, repo, "apps/platform-api")
        .self_heal(self_heal)
        .application()
        .unwrap()
}

async fn wait_for_app(
    ns: &TestNamespace,
    what: &str,
    check: impl Fn(&Application) -> bool,
) -> Application {
    ns.wait_for_application(what, "platform-api", Duration::from_secs(60), check)
        .await
        .unwrap()
}

#[tokio::test]
async fn self_heal_reverts_a_manual_edit_and_names_who_made_it() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-heal").await.unwrap();
    let client = ns.client();
    let source = Arc::new(FixedSource(Mutex::new(Desired {
        revision: "1111111111111111111111111111111111111111".into(),
        objects: vec![
            config_map("settings", ns.name(), "hello"),
            deployment(ns.name()),
        ],
    })));
    let stop = start_controller(client.clone(), ns.name(), source.clone()).await;
    ns.api::<Application>()
        .create(&PostParams::default(), &application(ns.name(), true))
        .await
        .unwrap();
    let app = wait_for_app(&ns, "the Application to sync", is_synced).await;
    let status = app.status.unwrap();
    assert_eq!(status.resources.len(), 2);
    assert_eq!(status.history.len(), 1);
    assert_eq!(
        status.sync.unwrap().revision.as_deref(),
        Some("1111111111111111111111111111111111111111")
    );

    // `kubectl edit`-style change: another field manager rewrites a field mooring manages.
    let edit = json!({"data": {"greeting": "edited by hand"}});
    let started = std::time::Instant::now();
    ns.api::<ConfigMap>()
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(&edit),
        )
        .await
        .unwrap();
    wait_for(
        "the edit to be reverted",
        Duration::from_secs(20),
        || async {
            let live = ns.api::<ConfigMap>().get("settings").await.ok()?;
            (live.data?.get("greeting").map(String::as_str) == Some("hello")).then_some(())
        },
    )
    .await
    .unwrap();
    eprintln!("manual edit reverted after {:?}", started.elapsed());
    let reverted = ns
        .wait_for_event(
            "a DriftReverted event naming kubectl-edit",
            Duration::from_secs(20),
            |e| e.reason.as_deref() == Some("DriftReverted"),
        )
        .await
        .unwrap();
    let note = reverted.message.unwrap_or_default();
    assert!(note.contains("kubectl-edit"), "{note}");
    assert!(note.contains("(data.greeting)"), "{note}");
    assert!(
        note.contains("ConfigMap settings")
            || note.contains(&format!("ConfigMap {}/settings", ns.name())),
        "{note}"
    );

    // A deletion is reverted too.
    ns.api::<ConfigMap>()
        .delete("settings", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the deleted ConfigMap to be recreated",
        Duration::from_secs(20),
        || async {
            ns.api::<ConfigMap>()
                .get_opt("settings")
                .await
                .ok()?
                .map(|_| ())
        },
    )
    .await
    .unwrap();

    // `kubectl scale` goes through the scale subresource; reverted too (after the self-heal
    // backoff, as this is the third heal in a row), and the event names it and the field.
    ns.api::<Deployment>()
        .patch_scale(
            "web",
            &PatchParams {
                field_manager: Some("kubectl-scale".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    wait_for(
        "the scale to be reverted",
        Duration::from_secs(30),
        || async {
            let live = ns.api::<Deployment>().get("web").await.ok()?;
            (live.spec?.replicas == Some(0)).then_some(())
        },
    )
    .await
    .unwrap();
    let scaled = ns
        .wait_for_event(
            "a DriftReverted event naming kubectl-scale",
            Duration::from_secs(20),
            |e| {
                e.reason.as_deref() == Some("DriftReverted")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("kubectl-scale"))
            },
        )
        .await
        .unwrap();
    let note = scaled.message.unwrap_or_default();
    assert!(note.contains("(spec.replicas)"), "{note}");

    // A new revision that drops the Deployment prunes it (2 → 1 is exactly half).
    *source.0.lock().unwrap() = Desired {
        revision: "2222222222222222222222222222222222222222".into(),
        objects: vec![config_map("settings", ns.name(), "hello")],
    };
    ns.request_refresh("platform-api", "1").await.unwrap();
    ns.wait_until_gone::<Deployment>(
        "the Deployment to be pruned",
        "web",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let app = wait_for_app(&ns, "history of two revisions", |app| {
        app.status
            .as_ref()
            .is_some_and(|s| s.history.len() == 2 && s.resources.len() == 1)
    })
    .await;
    assert!(is_synced(&app));
    let _ = stop.send(());
}

#[tokio::test]
async fn without_self_heal_a_manual_edit_is_reported_out_of_sync() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-drift").await.unwrap();
    let client = ns.client();
    let source = Arc::new(FixedSource(Mutex::new(Desired {
        revision: "3333333333333333333333333333333333333333".into(),
        objects: vec![config_map("settings", ns.name(), "hello"), {
            let mut hook = config_map("pre-sync", ns.name(), "h");
            hook.metadata.annotations = Some(BTreeMap::from([(
                "argocd.argoproj.io/hook".into(),
                "PreSync".into(),
            )]));
            hook
        }],
    })));
    let stop = start_controller(client.clone(), ns.name(), source).await;
    ns.api::<Application>()
        .create(&PostParams::default(), &application(ns.name(), false))
        .await
        .unwrap();
    wait_for_app(&ns, "the Application to sync", is_synced).await;

    let edit = json!({"data": {"greeting": "edited by hand"}});
    ns.api::<ConfigMap>()
        .patch(
            "settings",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(&edit),
        )
        .await
        .unwrap();
    let app = wait_for_app(&ns, "the Application to be OutOfSync", |app| {
        app.status
            .as_ref()
            .and_then(|s| s.sync.as_ref())
            .is_some_and(|s| s.status == SyncState::OutOfSync)
    })
    .await;
    let drift = app
        .status
        .clone()
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "DriftDetected")
        .expect("a DriftDetected condition");
    assert!(drift.message.contains("kubectl-edit"), "{}", drift.message);
    // The PreSync hook ran once, for the revision, and is not in the inventory; a drift
    // reconcile does not run it again.
    let status = app.status.clone().unwrap_or_default();
    let operation = status.operation_state.expect("an operation state");
    assert_eq!(
        operation.phase,
        mooring_crds::application::OperationPhase::Succeeded
    );
    assert_eq!(operation.hooks.len(), 1, "{:?}", operation.hooks);
    assert_eq!(operation.hooks[0].name, "pre-sync");
    assert!(status.resources.iter().all(|r| r.name != "pre-sync"));
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "UnsupportedFields")
    );
    let live = ns.api::<ConfigMap>().get("settings").await.unwrap();
    assert_eq!(
        live.data.unwrap().get("greeting").map(String::as_str),
        Some("edited by hand")
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn a_foreign_destination_and_unsupported_fields_get_conditions() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-dest").await.unwrap();
    let client = ns.client();
    let source = Arc::new(FixedSource(Mutex::new(Desired {
        revision: "4444444444444444444444444444444444444444".into(),
        objects: vec![config_map("settings", ns.name(), "hello")],
    })));
    let stop = start_controller(client.clone(), ns.name(), source).await;
    let mut app = application(ns.name(), true);
    app.spec.destination.server = Some("https://prod.example.com:6443".into());
    app.spec.source.helm = Some(json!({"valueFiles": ["values.yaml"]}));
    ns.api::<Application>()
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    let app = wait_for_app(&ns, "an InvalidDestination condition", |app| {
        app.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "InvalidDestination"))
    })
    .await;
    let conditions = app.status.unwrap().conditions;
    let invalid = conditions
        .iter()
        .find(|c| c.type_ == "InvalidDestination")
        .unwrap();
    assert!(
        invalid.message.contains("https://prod.example.com:6443"),
        "{}",
        invalid.message
    );
    let unsupported = conditions
        .iter()
        .find(|c| c.type_ == "UnsupportedFields")
        .unwrap();
    assert!(
        unsupported.message.contains("spec.source.helm"),
        "{}",
        unsupported.message
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("settings")
            .await
            .unwrap()
            .is_none(),
        "nothing may be applied"
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn a_later_sync_wave_waits_until_the_earlier_one_is_healthy() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-wave").await.unwrap();
    let engine = Engine::new(ns.client());
    let app = AppId {
        namespace: ns.name().into(),
        name: "waves".into(),
    };
    // This Job's pod stays in ContainerCreating for an hour on its kwok Node (the realenv's
    // mooring.dev/kwok-ready-delay), so the Job stays Progressing for the whole test.
    let job = object(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": ns.name(),
            "annotations": {"argocd.argoproj.io/sync-wave": "-1"}},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": {"mooring.dev/kwok-ready-delay": "1h"}},
            "spec": {"restartPolicy": "Never",
            "containers": [{"name": "migrate", "image": "registry.invalid/migrate:1"}]}}}
    }));
    let mut after = config_map("after-migration", ns.name(), "x");
    after.metadata.annotations = Some(BTreeMap::from([(
        "mooring.dev/sync-wave".into(),
        "1".into(),
    )]));
    let same_wave = config_map("same-wave", ns.name(), "y");
    let same_wave = {
        let mut o = same_wave;
        o.metadata.annotations = Some(BTreeMap::from([(
            "argocd.argoproj.io/sync-wave".into(),
            "-1".into(),
        )]));
        o
    };

    let report = engine
        .sync(&request(
            &app,
            ns.name(),
            vec![after.clone(), job.clone(), same_wave.clone()],
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    let waiting = report
        .waiting
        .clone()
        .expect("the sync must wait for the Job");
    assert!(
        waiting.contains("Job.batch") && waiting.contains("migrate"),
        "{waiting}"
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("same-wave")
            .await
            .unwrap()
            .is_some(),
        "the Job's own wave applies"
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("after-migration")
            .await
            .unwrap()
            .is_none(),
        "wave 1 must wait"
    );
    assert_eq!(report.sync, SyncState::OutOfSync);

    // Without the Job the later wave proceeds (and the Job, still in the inventory, is pruned).
    let report = engine
        .sync(&request(&app, ns.name(), vec![after, same_wave], &report))
        .await
        .unwrap();
    assert_eq!(report.waiting, None);
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("after-migration")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        report.pruned,
        vec![key("batch", "Job", Some(ns.name()), "migrate")]
    );
}

/// Many objects of one kind in one namespace are read with one LIST: the no-op and drift
/// decisions must be the same as with one GET per object.
#[tokio::test]
async fn many_objects_of_one_kind_resync_without_writes_and_drift_is_still_seen() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-many").await.unwrap();
    let engine = Engine::new(ns.client());
    let app = AppId {
        namespace: ns.name().into(),
        name: "many".into(),
    };
    let objects: Vec<_> = (0..40)
        .map(|i| config_map(&format!("config-{i}"), ns.name(), "v"))
        .collect();
    let first = engine
        .sync(&request(
            &app,
            ns.name(),
            objects.clone(),
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    assert_eq!(first.written.len(), 40);
    let versions = |list: Vec<ConfigMap>| -> BTreeMap<String, String> {
        // Only ours: kube-root-ca.crt appears whenever the controller-manager gets to it.
        list.into_iter()
            .filter(|c| {
                c.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with("config-"))
            })
            .map(|c| {
                (
                    c.metadata.name.unwrap(),
                    c.metadata.resource_version.unwrap(),
                )
            })
            .collect()
    };
    let before = versions(
        ns.api::<ConfigMap>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    );
    let second = Engine::new(ns.client())
        .sync(&request(&app, ns.name(), objects.clone(), &first))
        .await
        .unwrap();
    assert!(second.written.is_empty(), "{:?}", second.written);
    assert_eq!(
        versions(
            ns.api::<ConfigMap>()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
        ),
        before
    );

    let edit = json!({"data": {"greeting": "changed"}});
    ns.api::<ConfigMap>()
        .patch(
            "config-7",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..Default::default()
            },
            &Patch::Merge(&edit),
        )
        .await
        .unwrap();
    let third = engine
        .sync(&request(&app, ns.name(), objects, &second))
        .await
        .unwrap();
    assert_eq!(
        third.written,
        vec![key("", "ConfigMap", Some(ns.name()), "config-7")]
    );
    assert_eq!(third.drift.len(), 1);
    assert_eq!(third.drift[0].managers, vec!["kubectl-edit".to_string()]);
}

#[tokio::test]
async fn prune_false_keeps_an_object_that_left_git() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-keep").await.unwrap();
    let engine = Engine::new(ns.client());
    let app = AppId {
        namespace: ns.name().into(),
        name: "keep".into(),
    };
    let mut keep = config_map("keep", ns.name(), "k");
    keep.metadata.annotations = Some(BTreeMap::from([(
        "argocd.argoproj.io/sync-options".into(),
        "Prune=false".into(),
    )]));
    let set = vec![
        keep,
        config_map("a", ns.name(), "a"),
        config_map("b", ns.name(), "b"),
        config_map("c", ns.name(), "c"),
    ];
    let first = engine
        .sync(&request(
            &app,
            ns.name(),
            set.clone(),
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    let second = engine
        .sync(&request(&app, ns.name(), set[1..].to_vec(), &first))
        .await
        .unwrap();
    assert!(second.pruned.is_empty(), "{:?}", second.pruned);
    assert_eq!(second.kept.len(), 1);
    assert_eq!(second.kept[0].0.name, "keep");
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("keep")
            .await
            .unwrap()
            .is_some()
    );
    let entry = second.resources.iter().find(|r| r.name == "keep").unwrap();
    assert_eq!(entry.requires_pruning, Some(true));
    assert_eq!(second.sync, SyncState::OutOfSync);
}

/// A source per Application name, for app-of-apps.
struct SourcePerApp(BTreeMap<String, Desired>);

impl Source for SourcePerApp {
    fn desired<'a>(&'a self, app: &'a Application) -> BoxFuture<'a, Result<Desired, SourceError>> {
        let found = self
            .0
            .get(&app.metadata.name.clone().unwrap_or_default())
            .cloned();
        Box::pin(async move {
            found.ok_or(SourceError {
                reason: "RenderFailed",
                message: "no such path".into(),
                retryable: false,
            })
        })
    }
}

#[tokio::test]
async fn app_of_apps_creates_and_syncs_children_and_rolls_up_their_health() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-apps").await.unwrap();
    let client = ns.client();
    let mut child = serde_json::to_value(application(ns.name(), true)).unwrap();
    child["metadata"]["name"] = json!("child");
    child["spec"]["source"]["path"] = json!("apps/child");
    let revision = "5555555555555555555555555555555555555555".to_string();
    let source = SourcePerApp(BTreeMap::from([
        (
            "platform-api".to_string(),
            Desired {
                revision: revision.clone(),
                objects: vec![object(child)],
            },
        ),
        (
            "child".to_string(),
            Desired {
                revision,
                objects: vec![config_map("from-child", ns.name(), "hi")],
            },
        ),
    ]));
    let stop = start_controller(client.clone(), ns.name(), Arc::new(source)).await;
    ns.api::<Application>()
        .create(&PostParams::default(), &application(ns.name(), true))
        .await
        .unwrap();

    wait_for("the child's ConfigMap", Duration::from_secs(60), || async {
        ns.api::<ConfigMap>()
            .get_opt("from-child")
            .await
            .ok()?
            .map(|_| ())
    })
    .await
    .unwrap();
    let root = wait_for_app(&ns, "the root to be Healthy and Synced", |app| {
        is_synced(app)
            && app
                .status
                .as_ref()
                .and_then(|s| s.health.as_ref())
                .is_some_and(|h| h.status == HealthState::Healthy)
    })
    .await;
    let root_status = root.status.unwrap();
    let ready = root_status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(format!("{:?}", ready.status), "True", "{ready:?}");
    let resources = root_status.resources;
    assert_eq!(resources.len(), 1);
    assert_eq!(
        (resources[0].kind.as_str(), resources[0].name.as_str()),
        ("Application", "child")
    );
    let child = ns.api::<Application>().get("child").await.unwrap();
    assert_eq!(
        child
            .metadata
            .annotations
            .clone()
            .unwrap()
            .get(TRACKING_ID_ANNOTATION)
            .map(String::as_str),
        Some(
            format!(
                "{}/platform-api:mooring.dev/Application:{}/child",
                ns.name(),
                ns.name()
            )
            .as_str()
        )
    );
    assert!(is_synced(&child));
    let _ = stop.send(());
}

#[tokio::test]
async fn create_namespace_creates_the_destination_namespace() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-createns").await.unwrap();
    let client = ns.client();
    let destination = format!("{}-dest", ns.name());
    let app = AppId {
        namespace: ns.name().into(),
        name: "createns".into(),
    };
    let mut sync = request(
        &app,
        &destination,
        vec![config_map("settings", &destination, "x")],
        &SyncReport::default(),
    );
    let without = Engine::new(client.clone()).sync(&sync).await.unwrap();
    assert_eq!(
        without.failures.len(),
        1,
        "without CreateNamespace the namespace is missing"
    );
    assert!(
        without.failures[0].message.contains("not found"),
        "{:?}",
        without.failures
    );

    sync.sync_options = vec!["CreateNamespace=true".into()];
    let with = Engine::new(client.clone()).sync(&sync).await.unwrap();
    assert!(with.failures.is_empty(), "{:?}", with.failures);
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), &destination);
    assert!(configs.get_opt("settings").await.unwrap().is_some());
    // The created namespace is not part of the inventory: it is never pruned with the app.
    assert!(with.resources.iter().all(|r| r.kind != "Namespace"));
    Api::<Namespace>::all(client)
        .delete(&destination, &DeleteParams::default())
        .await
        .unwrap();
}

/// A source whose answer the test switches between objects and a render error.
struct SwitchSource(Mutex<Option<Desired>>);

impl Source for SwitchSource {
    fn desired<'a>(&'a self, _app: &'a Application) -> BoxFuture<'a, Result<Desired, SourceError>> {
        let answer = self.0.lock().unwrap().clone();
        Box::pin(async move {
            answer.ok_or(SourceError {
                reason: "RenderFailed",
                message: "apps/platform-api/deployment.yaml:3: mapping values are not allowed here"
                    .into(),
                retryable: false,
            })
        })
    }
}

#[tokio::test]
async fn a_failed_render_or_a_suspended_app_prunes_nothing() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-norender").await.unwrap();
    let client = ns.client();
    let source = Arc::new(SwitchSource(Mutex::new(Some(Desired {
        revision: "6666666666666666666666666666666666666666".into(),
        objects: vec![
            config_map("a", ns.name(), "a"),
            config_map("b", ns.name(), "b"),
        ],
    }))));
    let stop = start_controller(
        client.clone(),
        ns.name(),
        Arc::clone(&source) as Arc<dyn Source>,
    )
    .await;
    ns.api::<Application>()
        .create(&PostParams::default(), &application(ns.name(), true))
        .await
        .unwrap();
    wait_for_app(&ns, "the Application to sync", is_synced).await;

    // The render breaks: a condition says where, the inventory and the objects stay.
    *source.0.lock().unwrap() = None;
    ns.request_refresh("platform-api", "1").await.unwrap();
    let app = wait_for_app(&ns, "a RenderFailed condition", |app| {
        app.status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "RenderFailed"))
    })
    .await;
    let status = app.status.unwrap();
    assert_eq!(status.resources.len(), 2, "the inventory is kept");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced")
        .unwrap();
    assert!(
        failed.message.contains("deployment.yaml:3"),
        "{}",
        failed.message
    );
    for name in ["a", "b"] {
        assert!(
            ns.api::<ConfigMap>().get_opt(name).await.unwrap().is_some(),
            "{name} was pruned"
        );
    }

    // Suspended: an empty render with allowEmpty would prune everything, but nothing happens.
    *source.0.lock().unwrap() = Some(Desired {
        revision: "7777777777777777777777777777777777777777".into(),
        objects: Vec::new(),
    });
    ns.api::<Application>().patch(
        "platform-api",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"suspend": true, "syncPolicy": {"automated": {"allowEmpty": true}}}}),
        ),
    )
    .await
    .unwrap();
    wait_for_app(&ns, "health Suspended", |app| {
        app.status
            .as_ref()
            .and_then(|s| s.health.as_ref())
            .is_some_and(|h| h.status == HealthState::Suspended)
    })
    .await;
    for name in ["a", "b"] {
        assert!(
            ns.api::<ConfigMap>().get_opt(name).await.unwrap().is_some(),
            "{name} was pruned while suspended"
        );
    }
    let _ = stop.send(());
}

#[tokio::test]
async fn deleting_an_application_with_argo_resources_finalizer_deletes_its_objects() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-finalizer")
        .await
        .unwrap();
    let client = ns.client();
    let source = Arc::new(FixedSource(Mutex::new(Desired {
        revision: "8888888888888888888888888888888888888888".into(),
        objects: vec![
            config_map("a", ns.name(), "a"),
            config_map("b", ns.name(), "b"),
        ],
    })));
    let stop = start_controller(client.clone(), ns.name(), source).await;
    let mut app = application(ns.name(), true);
    app.metadata.finalizers = Some(vec!["resources-finalizer.argocd.argoproj.io".into()]);
    ns.api::<Application>()
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    wait_for_app(&ns, "the Application to sync", is_synced).await;
    // Not in Git, not ours: must survive the cascade.
    ns.api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bystander"}})).unwrap(),
        )
        .await
        .unwrap();

    ns.api::<Application>()
        .delete("platform-api", &DeleteParams::default())
        .await
        .unwrap();
    ns.wait_until_gone::<Application>(
        "the Application to be gone",
        "platform-api",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    wait_for(
        "its ConfigMaps to be deleted",
        Duration::from_secs(30),
        || async {
            let a = ns.api::<ConfigMap>().get_opt("a").await.ok()?;
            let b = ns.api::<ConfigMap>().get_opt("b").await.ok()?;
            (a.is_none() && b.is_none()).then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("bystander")
            .await
            .unwrap()
            .is_some()
    );
    let _ = stop.send(());
}

#[tokio::test]
async fn an_object_moved_between_applications_is_taken_over_in_place() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "apply-move").await.unwrap();
    let client = ns.client();
    mooring_agent::install::apply_crds(&client, Duration::from_secs(30))
        .await
        .unwrap();
    let engine = Engine::new(client.clone());
    let (a, b) = (
        AppId {
            namespace: ns.name().into(),
            name: "a".into(),
        },
        AppId {
            namespace: ns.name().into(),
            name: "b".into(),
        },
    );
    // Application `a` exists (its controller is not running here; the test writes its status).
    let mut app_a = application(ns.name(), false);
    app_a.metadata.name = Some("a".into());
    ns.api::<Application>()
        .create(&PostParams::default(), &app_a)
        .await
        .unwrap();
    let publish_inventory = |report: SyncReport| {
        let api: Api<Application> = ns.api();
        async move {
            let status = json!({"status": {"resources": report.resources}});
            api.patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    };

    let first = engine
        .sync(&request(
            &a,
            ns.name(),
            vec![
                config_map("moved", ns.name(), "m"),
                config_map("stays", ns.name(), "s"),
            ],
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    publish_inventory(first.clone()).await;
    let moved_uid = ns
        .api::<ConfigMap>()
        .get("moved")
        .await
        .unwrap()
        .metadata
        .uid;

    // `b` cannot take what `a` still wants.
    let conflict = engine
        .sync(&request(
            &b,
            ns.name(),
            vec![config_map("stays", ns.name(), "s")],
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    assert_eq!(conflict.failures.len(), 1, "{:?}", conflict.failures);
    assert!(
        conflict.failures[0]
            .message
            .contains(&format!("already managed by Application {}/a", ns.name()))
    );

    // The commit moves `moved` from a to b; a's prune is off, so a keeps it as requiresPruning.
    let mut keep = request(
        &a,
        ns.name(),
        vec![config_map("stays", ns.name(), "s")],
        &first,
    );
    keep.prune.enabled = false;
    let released = engine.sync(&keep).await.unwrap();
    assert!(
        released
            .resources
            .iter()
            .any(|r| r.name == "moved" && r.requires_pruning == Some(true))
    );
    publish_inventory(released.clone()).await;

    let taken = engine
        .sync(&request(
            &b,
            ns.name(),
            vec![config_map("moved", ns.name(), "m")],
            &SyncReport::default(),
        ))
        .await
        .unwrap();
    assert!(taken.failures.is_empty(), "{:?}", taken.failures);
    let live = ns.api::<ConfigMap>().get("moved").await.unwrap();
    assert_eq!(
        live.metadata.uid, moved_uid,
        "taken over in place, not re-created"
    );
    assert_eq!(
        live.metadata
            .annotations
            .unwrap()
            .get(TRACKING_ID_ANNOTATION)
            .map(String::as_str),
        Some(format!("{}/b:/ConfigMap:{}/moved", ns.name(), ns.name()).as_str())
    );

    // a, now with prune on, no longer owns it: dropped from its inventory, not deleted.
    let after = engine
        .sync(&request(
            &a,
            ns.name(),
            vec![config_map("stays", ns.name(), "s")],
            &released,
        ))
        .await
        .unwrap();
    assert!(after.pruned.is_empty(), "{:?}", after.pruned);
    assert!(
        after.resources.iter().all(|r| r.name != "moved"),
        "{:?}",
        after.resources
    );
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("moved")
            .await
            .unwrap()
            .is_some()
    );
}
