//! Resource hooks as Argo CD users write them, run by the agent against real Jobs on the
//! realenv's kwok Nodes: a PreSync migration completes before the Deployment is applied, a
//! PostSync smoke test runs after it is healthy, a failing PreSync hook stops the rollout and
//! runs the SyncFail hook, delete policies, waves mixed with hooks, and no hook runs again on a
//! resync of the same revision.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use kube::api::{Patch, PatchParams};
use mooring_agent::gitops::apply::object::AppId;
use mooring_agent::gitops::apply::prune::PruneSettings;
use mooring_agent::gitops::apply::{Engine, Hooks, Mode, SyncReport, SyncRequest};
use mooring_crds::application::{
    Application, HookPhase, HookStatus, HookType, OperationPhase, OperationState,
};
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::workloads::{FAIL_ANNOTATION, wait_for_ready_nodes};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, wait_for};

/// Bound for every wait on Jobs and the operation (kwok's Stages take about a second a step).
const TIMEOUT: Duration = Duration::from_secs(90);

/// A test's world: its namespace, the Git repository serving `app/`, the agent syncing it.
struct World {
    ns: TestNamespace,
    repo: GitRepo,
    _cache: tempfile::TempDir,
    agent: RunningAgent,
    head: String,
}

impl World {
    /// Commits `files` under `app/`, starts an agent for a fresh namespace and applies
    /// Application `app` of `app/` (automated sync with selfHeal), once the kwok Nodes are
    /// Ready.
    async fn start(prefix: &str, files: &[(&str, String)]) -> World {
        let env = RealEnv::load().unwrap();
        wait_for_ready_nodes(&env, TIMEOUT).await.unwrap();
        let ns = TestNamespace::create(&env, prefix).await.unwrap();
        let repo = GitRepo::create(&env, ns.name()).unwrap();
        for (path, text) in files {
            repo.write(&format!("app/{path}"), text).unwrap();
        }
        let (url, head) = repo.serve_over_http(&env, "app", &[&ns]).await.unwrap();
        let cache = tempfile::tempdir().unwrap();
        let args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
        let agent = RunningAgent::start_with(args).await.unwrap();
        let app = ApplicationManifest::new("app", ns.name(), &url, "app")
            .application()
            .unwrap();
        ns.apply_application(&app).await.unwrap();
        World {
            ns,
            repo,
            _cache: cache,
            agent,
            head,
        }
    }

    /// Waits until the operation of `revision` has `phase`, and returns the Application.
    async fn operation(&self, revision: &str, phase: OperationPhase) -> Application {
        let what = format!("operation of {revision} {phase:?}");
        self.ns
            .wait_for_application(&what, "app", TIMEOUT, |app| {
                operation(app).is_some_and(|op| op.revision == revision && op.phase == phase)
            })
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.agent.stop().await.unwrap();
    }
}

fn operation(app: &Application) -> Option<&OperationState> {
    app.status.as_ref()?.operation_state.as_ref()
}

/// The operation's record of hook `name` (or of the hook with generateName `name`) in `phase`.
fn hook<'a>(app: &'a Application, name: &str, hook_type: HookType) -> &'a HookStatus {
    operation(app)
        .and_then(|op| {
            op.hooks.iter().find(|h| {
                h.hook_type == hook_type
                    && (h.name == name || h.generate_name.as_deref() == Some(name))
            })
        })
        .unwrap_or_else(|| panic!("no {hook_type:?} hook {name}: {:?}", app.status))
}

/// A Job of one pod (never restarted, no retry) with `annotations` (hook ones); its container
/// exits 1 when `fails`. `name` ending in `-` is a generateName.
fn job(name: &str, annotations: &[(&str, &str)], fails: bool) -> String {
    let naming = if name.ends_with('-') {
        format!("generateName: {name}")
    } else {
        format!("name: {name}")
    };
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  {naming}
  annotations:
{annotations}spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {{{FAIL_ANNOTATION}: \"{fails}\"}}
    spec:
      restartPolicy: Never
      containers:
        - name: task
          image: registry.invalid/task:1.0.0
"
    )
}

/// A Deployment of one pod in sync wave `wave`.
fn deployment(name: &str, wave: i64) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  annotations: {{argocd.argoproj.io/sync-wave: \"{wave}\"}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1.0.0
"
    )
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
data:
  value: \"{value}\"
"
    )
}

/// When Job `name` completed.
async fn completed_at(ns: &TestNamespace, name: &str) -> Time {
    let job = ns.api::<Job>().get(name).await.unwrap();
    job.status
        .and_then(|s| s.completion_time)
        .unwrap_or_else(|| panic!("Job {name} has not completed"))
}

/// When `object` was created.
fn created<K: kube::Resource>(object: &K) -> Time {
    object
        .meta()
        .creation_timestamp
        .clone()
        .expect("a stored object has a creationTimestamp")
}

fn in_inventory(app: &Application, kind: &str) -> bool {
    app.status
        .as_ref()
        .is_some_and(|s| s.resources.iter().any(|r| r.kind == kind))
}

#[tokio::test]
async fn a_pre_sync_migration_completes_before_the_deployment_and_a_post_sync_test_runs_after() {
    let world = World::start(
        "hooks-phases",
        &[
            (
                "migrate.yaml",
                job("migrate", &[("argocd.argoproj.io/hook", "PreSync")], false),
            ),
            ("web.yaml", deployment("web", 0)),
            (
                "smoke.yaml",
                job("smoke", &[("argocd.argoproj.io/hook", "PostSync")], false),
            ),
        ],
    )
    .await;
    let ns = &world.ns;
    let done = world
        .operation(&world.head, OperationPhase::Succeeded)
        .await;

    // PreSync ran to completion before the Deployment was created.
    let migrated = completed_at(ns, "migrate").await;
    let web_created = created(&ns.api::<Deployment>().get("web").await.unwrap());
    assert!(
        web_created.0 >= migrated.0,
        "the Deployment was created at {web_created:?}, before the migration completed at {migrated:?}"
    );
    // PostSync ran after the Deployment was available.
    let smoke = hook(&done, "smoke", HookType::PostSync);
    assert_eq!(smoke.hook_phase, HookPhase::Succeeded, "{smoke:?}");
    let smoke_job = ns.api::<Job>().get("smoke").await.unwrap();
    let smoke_created = created(&smoke_job);
    let available = ns
        .api::<Deployment>()
        .get("web")
        .await
        .unwrap()
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Available" && c.status == "True")
        .and_then(|c| c.last_transition_time)
        .expect("the Deployment is Available");
    assert!(
        smoke_created.0 >= available.0,
        "the smoke test started at {smoke_created:?}, before the Deployment was available at {available:?}"
    );
    assert_eq!(
        hook(&done, "migrate", HookType::PreSync).hook_phase,
        HookPhase::Succeeded
    );
    // Hooks are not in the inventory (never pruned); the Deployment is.
    assert!(!in_inventory(&done, "Job"), "{:?}", done.status);
    assert!(in_inventory(&done, "Deployment"), "{:?}", done.status);

    // A drift reconcile (selfHeal reverting a scale) and a refresh of the same revision run no
    // hook again.
    let migrate_uid = ns.api::<Job>().get("migrate").await.unwrap().metadata.uid;
    let smoke_uid = smoke_job.metadata.uid;
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    ns.api::<Deployment>()
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    wait_for("selfHeal to revert the scale", TIMEOUT, || async {
        let web = ns.api::<Deployment>().get("web").await.ok()?;
        (web.spec?.replicas == Some(1)).then_some(())
    })
    .await
    .unwrap();
    ns.request_refresh("app", "1").await.unwrap();
    // The refresh is answered by a reconcile that writes nothing new: give it a few polls.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = ns.api::<Job>().get("migrate").await.unwrap().metadata.uid;
    assert_eq!(after, migrate_uid, "the PreSync hook ran again");
    let after = ns.api::<Job>().get("smoke").await.unwrap().metadata.uid;
    assert_eq!(after, smoke_uid, "the PostSync hook ran again");
    let app = ns.api::<Application>().get("app").await.unwrap();
    assert_eq!(
        operation(&app),
        operation(&done),
        "the operation was not run again"
    );
    world.stop().await;
}

#[tokio::test]
async fn a_failing_pre_sync_hook_stops_the_rollout_and_runs_the_sync_fail_hook() {
    let world = World::start(
        "hooks-fail",
        &[
            (
                "migrate.yaml",
                job(
                    "migrate-fails",
                    &[("argocd.argoproj.io/hook", "PreSync")],
                    true,
                ),
            ),
            ("web.yaml", deployment("web", 0)),
            (
                "cleanup.yaml",
                job("cleanup", &[("argocd.argoproj.io/hook", "SyncFail")], false),
            ),
        ],
    )
    .await;
    let ns = &world.ns;
    let failed = world.operation(&world.head, OperationPhase::Failed).await;

    let message = operation(&failed)
        .and_then(|op| op.message.clone())
        .unwrap_or_default();
    assert!(message.contains("migrate-fails"), "{message}");
    assert!(message.contains("PreSync hook failed"), "{message}");
    let synced = failed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Synced")
        .unwrap();
    assert_eq!(synced.reason, "HookFailed", "{synced:?}");
    assert!(synced.message.contains("migrate-fails"), "{synced:?}");
    assert_eq!(
        hook(&failed, "migrate-fails", HookType::PreSync).hook_phase,
        HookPhase::Failed
    );
    // The SyncFail hook ran (to completion) and nothing of the Sync phase was applied.
    assert_eq!(
        hook(&failed, "cleanup", HookType::SyncFail).hook_phase,
        HookPhase::Succeeded
    );
    let cleanup_created = created(&ns.api::<Job>().get("cleanup").await.unwrap());
    let migrate_failed = failed_at(ns, "migrate-fails").await;
    assert!(
        cleanup_created.0 >= migrate_failed.0,
        "the SyncFail hook started at {cleanup_created:?}, before the PreSync hook failed at {migrate_failed:?}"
    );
    assert!(
        ns.api::<Deployment>()
            .get_opt("web")
            .await
            .unwrap()
            .is_none(),
        "the Deployment was applied after the PreSync hook failed"
    );
    assert!(!in_inventory(&failed, "Deployment"), "{:?}", failed.status);
    world.stop().await;
}

/// When Job `name` failed (its Failed condition's transition).
async fn failed_at(ns: &TestNamespace, name: &str) -> Time {
    let job = ns.api::<Job>().get(name).await.unwrap();
    job.status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .and_then(|c| c.last_transition_time)
        .expect("the PreSync Job failed")
}

#[tokio::test]
async fn before_hook_creation_runs_a_hook_again_on_the_next_revision_and_hook_succeeded_deletes_it()
{
    let world = World::start(
        "hooks-policies",
        &[
            (
                "migrate.yaml",
                job("migrate", &[("argocd.argoproj.io/hook", "PreSync")], false),
            ),
            (
                "notify.yaml",
                job(
                    "notify",
                    &[
                        ("argocd.argoproj.io/hook", "PostSync"),
                        ("argocd.argoproj.io/hook-delete-policy", "HookSucceeded"),
                    ],
                    false,
                ),
            ),
            ("settings.yaml", config_map("settings", "1")),
        ],
    )
    .await;
    let ns = &world.ns;
    let first = world
        .operation(&world.head, OperationPhase::Succeeded)
        .await;
    assert_eq!(
        hook(&first, "notify", HookType::PostSync).hook_phase,
        HookPhase::Succeeded
    );
    // HookSucceeded: the Job is deleted once it succeeded (BeforeHookCreation keeps it).
    wait_for("the HookSucceeded Job to be deleted", TIMEOUT, || async {
        ns.api::<Job>()
            .get_opt("notify")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    let first_uid = ns.api::<Job>().get("migrate").await.unwrap().metadata.uid;

    // A new revision: BeforeHookCreation deletes the old migration Job and runs a new one.
    let next = world
        .repo
        .commit_files(&[("app/settings.yaml", &config_map("settings", "2"))], "v2")
        .unwrap();
    world.operation(&next, OperationPhase::Succeeded).await;
    let second_uid = ns.api::<Job>().get("migrate").await.unwrap().metadata.uid;
    assert_ne!(second_uid, first_uid, "the PreSync hook did not run again");
    let settings = ns.api::<ConfigMap>().get("settings").await.unwrap();
    assert_eq!(
        settings
            .data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str),
        Some("2")
    );
    world.stop().await;
}

#[tokio::test]
async fn hooks_take_their_turn_in_the_waves_of_their_phase() {
    let world = World::start(
        "hooks-waves",
        &[
            (
                "first.yaml",
                job(
                    "first",
                    &[
                        ("argocd.argoproj.io/hook", "PreSync"),
                        ("argocd.argoproj.io/sync-wave", "-1"),
                    ],
                    false,
                ),
            ),
            (
                "second.yaml",
                job(
                    "second",
                    &[
                        ("argocd.argoproj.io/hook", "PreSync"),
                        ("helm.sh/hook-weight", "3"),
                    ],
                    false,
                ),
            ),
            ("settings.yaml", config_map("settings", "1")),
            (
                "during.yaml",
                job(
                    "during",
                    &[
                        ("argocd.argoproj.io/hook", "Sync"),
                        ("argocd.argoproj.io/sync-wave", "1"),
                    ],
                    false,
                ),
            ),
            ("late.yaml", deployment("late", 2)),
        ],
    )
    .await;
    let ns = &world.ns;
    let done = world
        .operation(&world.head, OperationPhase::Succeeded)
        .await;
    // PreSync wave -1, then PreSync wave 3 (Helm's hook-weight), then the Sync phase.
    let first_done = completed_at(ns, "first").await;
    let second_created = created(&ns.api::<Job>().get("second").await.unwrap());
    assert!(
        second_created.0 >= first_done.0,
        "{second_created:?} < {first_done:?}"
    );
    let second_done = completed_at(ns, "second").await;
    let settings_created = created(&ns.api::<ConfigMap>().get("settings").await.unwrap());
    assert!(
        settings_created.0 >= second_done.0,
        "{settings_created:?} < {second_done:?}"
    );
    // In the Sync phase the Sync hook of wave 1 runs after wave 0, and wave 2 waits for it.
    let during_created = created(&ns.api::<Job>().get("during").await.unwrap());
    assert!(during_created.0 >= settings_created.0);
    let during_done = completed_at(ns, "during").await;
    let late_created = created(&ns.api::<Deployment>().get("late").await.unwrap());
    assert!(
        late_created.0 >= during_done.0,
        "{late_created:?} < {during_done:?}"
    );
    for (name, hook_type) in [
        ("first", HookType::PreSync),
        ("second", HookType::PreSync),
        ("during", HookType::Sync),
    ] {
        assert_eq!(
            hook(&done, name, hook_type).hook_phase,
            HookPhase::Succeeded
        );
    }
    assert!(!in_inventory(&done, "Job"), "{:?}", done.status);
    world.stop().await;
}

/// The engine's side of a `generateName` hook (the directory renderer refuses objects without a
/// name, so this drives the engine directly): each operation creates a fresh instance, a
/// resumed operation creates none, and BeforeHookCreation deletes the previous instance.
#[tokio::test]
async fn a_generate_name_hook_gets_a_fresh_name_each_operation() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "hooks-generate").await.unwrap();
    let engine = Engine::new(ns.client());
    let app = AppId {
        namespace: ns.name().into(),
        name: "hooks".into(),
    };
    let objects = || -> Vec<DynamicObject> {
        vec![
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {
                    "generateName": "smoke-",
                    "annotations": {"argocd.argoproj.io/hook": "PostSync"},
                },
                "data": {"check": "ok"},
            }))
            .unwrap(),
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"value": "1"},
            }))
            .unwrap(),
        ]
    };
    let request = |started: Vec<HookStatus>, inventory: &SyncReport| SyncRequest {
        app: app.clone(),
        objects: objects(),
        destination_namespace: Some(ns.name().into()),
        sync_options: Vec::new(),
        inventory: inventory.resources.clone(),
        prune: PruneSettings::default(),
        mode: Mode::Apply,
        hooks: Hooks::Run { started },
    };
    let first = engine
        .sync(&request(Vec::new(), &SyncReport::default()))
        .await
        .unwrap();
    assert_eq!(
        first.operation.as_ref().map(|o| o.phase),
        Some(OperationPhase::Succeeded),
        "{first:?}"
    );
    let [created] = first.hooks.as_slice() else {
        panic!("one hook: {:?}", first.hooks);
    };
    assert_eq!(created.generate_name.as_deref(), Some("smoke-"));
    assert!(created.name.starts_with("smoke-") && created.name.len() > "smoke-".len());
    assert_eq!(created.hook_phase, HookPhase::Succeeded);
    assert!(
        first
            .resources
            .iter()
            .all(|r| !r.name.starts_with("smoke-")),
        "a hook entered the inventory: {:?}",
        first.resources
    );
    let config_maps = ns.api::<ConfigMap>();
    assert!(config_maps.get_opt(&created.name).await.unwrap().is_some());

    // Resumed with what the operation recorded: nothing is created again.
    let resumed = engine
        .sync(&request(first.hooks.clone(), &first))
        .await
        .unwrap();
    assert_eq!(resumed.hooks, first.hooks);

    // The next operation: a fresh name, and the previous instance deleted first.
    let second = engine.sync(&request(Vec::new(), &first)).await.unwrap();
    let [again] = second.hooks.as_slice() else {
        panic!("one hook: {:?}", second.hooks);
    };
    assert_ne!(again.name, created.name);
    assert!(config_maps.get_opt(&created.name).await.unwrap().is_none());
    assert!(config_maps.get_opt(&again.name).await.unwrap().is_some());
}

/// A named hook whose object belongs to another Application fails instead of deleting
/// (BeforeHookCreation) or overwriting it.
#[tokio::test]
async fn a_hook_never_replaces_another_applications_object() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "hooks-foreign").await.unwrap();
    let engine = Engine::new(ns.client());
    let other = AppId {
        namespace: ns.name().into(),
        name: "other".into(),
    };
    let config_map = |annotations: serde_json::Value| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "shared", "annotations": annotations},
            "data": {"owner": "whoever syncs it"},
        }))
        .unwrap()
    };
    let request = |app: &AppId, annotations: serde_json::Value, hooks: Hooks| SyncRequest {
        app: app.clone(),
        objects: vec![config_map(annotations)],
        destination_namespace: Some(ns.name().into()),
        sync_options: Vec::new(),
        inventory: Vec::new(),
        prune: PruneSettings::default(),
        mode: Mode::Apply,
        hooks,
    };
    let owned = engine
        .sync(&request(&other, serde_json::json!({}), Hooks::Ignore))
        .await
        .unwrap();
    assert!(owned.failures.is_empty(), "{:?}", owned.failures);
    let before = ns
        .api::<ConfigMap>()
        .get("shared")
        .await
        .unwrap()
        .metadata
        .uid;

    let app = AppId {
        namespace: ns.name().into(),
        name: "hooks".into(),
    };
    let report = engine
        .sync(&request(
            &app,
            serde_json::json!({"argocd.argoproj.io/hook": "PreSync"}),
            Hooks::Run {
                started: Vec::new(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        report.operation.as_ref().map(|o| o.phase),
        Some(OperationPhase::Failed),
        "{report:?}"
    );
    let message = report.hooks[0].message.clone().unwrap_or_default();
    assert!(message.contains("belongs to Application"), "{message}");
    let after = ns
        .api::<ConfigMap>()
        .get("shared")
        .await
        .unwrap()
        .metadata
        .uid;
    assert_eq!(after, before, "the other Application's object was replaced");
}
