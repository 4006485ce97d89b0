//! Who may deploy what, under the shipped RBAC (the agent runs with a bound token of the
//! `mooring` ServiceAccount of deploy/base): an AppProject keeps an Application inside its
//! destinations and kinds, Applications outside the agent's namespace wait for a project that
//! lists their namespace, and an impersonated Application can do what its ServiceAccount can.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams};
use mooring_crds::app_project::AppProject;
use mooring_crds::application::Application;
use mooring_crds::secret_store::ClusterSecretStore;
use mooring_e2e::gitops::agent_with_git;
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, token_kubeconfig};
use serde_json::json;

use crate::rbac::install_rbac;

/// A loopback TCP server that counts the connections made to it (a secret sink).
async fn sink() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://{addr}"), connections)
}

/// The agent in namespace `ns` as the shipped `mooring` ServiceAccount, syncing from Git;
/// `watch_all`: Applications of every namespace are its business (`--watch-namespace` unset).
async fn agent(env: &RealEnv, ns: &TestNamespace, dir: &Path, watch_all: bool) -> RunningAgent {
    install_rbac(ns, |_, _| {}).await;
    let token = ns.service_account_token("mooring").await.unwrap();
    let kubeconfig = token_kubeconfig(env, &token, dir).unwrap();
    let mut args = agent_with_git(env, ns.name(), &dir.join("git-cache")).unwrap();
    args.cluster.kubeconfig = Some(kubeconfig);
    if watch_all {
        args.watch_namespace = None;
        args.controllers = vec![mooring_agent::cli::ControllerKind::Gitops];
    }
    RunningAgent::start_with(args).await.unwrap()
}

fn application(name: &str, project: &str, url: &str, path: &str, destination: &str) -> Application {
    serde_json::from_value(json!({
        "apiVersion": "mooring.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": project,
            "source": {"repoURL": url, "targetRevision": "main", "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": destination},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    }))
    .unwrap()
}

async fn apply<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("mooring-e2e").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap();
}

fn project(name: &str, spec: serde_json::Value) -> AppProject {
    serde_json::from_value(json!({
        "apiVersion": "mooring.dev/v1alpha1", "kind": "AppProject",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// Waits for a condition of Application `name` whose reason is `reason`; returns its message.
async fn condition(ns: &TestNamespace, name: &str, reason: &str) -> String {
    let found = |app: &Application| {
        app.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.reason == reason)
            .map(|c| c.message.clone())
    };
    let app = ns
        .wait_for_application(
            &format!("Application {name} condition {reason}"),
            name,
            Duration::from_secs(90),
            |app| found(app).is_some(),
        )
        .await
        .unwrap();
    found(&app).unwrap()
}

#[tokio::test]
async fn a_project_keeps_an_application_in_its_namespace_and_away_from_cluster_stores() {
    let env = RealEnv::load().unwrap();
    let admin = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "tenant-a").await.unwrap();
    let victim = TestNamespace::create(&env, "tenant-b").await.unwrap();
    victim
        .create_secret("vault-token", &[("token", "b-team-vault-token")])
        .await
        .unwrap();
    let (sink_url, connections) = sink().await;
    let store_name = format!("exfiltrate-{}", ns.name());

    let repo = GitRepo::create(&env, "tenant-a").unwrap();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: info\n",
    )
    .unwrap();
    repo.write(
        "app/deployment.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: intruder\n  namespace: {}\n\
             spec:\n  selector:\n    matchLabels: {{app: intruder}}\n  template:\n    metadata:\n      \
             labels: {{app: intruder}}\n    spec:\n      containers:\n        - name: c\n          \
             image: registry.invalid/intruder:1\n",
            victim.name()
        ),
    )
    .unwrap();
    repo.write(
        "app/store.yaml",
        &format!(
            "apiVersion: external-secrets.io/v1\nkind: ClusterSecretStore\nmetadata:\n  name: {store_name}\n\
             spec:\n  provider:\n    vault:\n      server: {sink_url}\n      path: secret\n      \
             auth:\n        tokenSecretRef: {{name: vault-token, key: token, namespace: {}}}\n",
            victim.name()
        ),
    )
    .unwrap();
    let (url, _) = repo
        .serve_over_http(
            &env,
            "a tenant's app reaching into another namespace and the cluster",
            &[&ns],
        )
        .await
        .unwrap();

    apply(
        &ns.api::<AppProject>(),
        &project(
            "team-a",
            json!({
                "sourceRepos": ["*"],
                "destinations": [{"server": "https://kubernetes.default.svc", "namespace": ns.name()}],
            }),
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&env, &ns, dir.path(), false).await;
    apply(
        &ns.api::<Application>(),
        &application("team-a-app", "team-a", &url, "app", ns.name()),
    )
    .await;

    let message = condition(&ns, "team-a-app", "ProjectViolation").await;
    assert!(
        message.contains("intruder") && message.contains(victim.name()),
        "the condition names the Deployment and its namespace: {message}"
    );
    assert!(
        message.contains(&store_name),
        "the condition names the ClusterSecretStore: {message}"
    );
    assert!(
        !message.contains("b-team-vault-token"),
        "no secret in the condition: {message}"
    );
    assert!(
        victim
            .api::<Deployment>()
            .get_opt("intruder")
            .await
            .unwrap()
            .is_none(),
        "nothing is written into the other namespace"
    );
    assert!(
        Api::<ClusterSecretStore>::all(admin.clone())
            .get_opt(&store_name)
            .await
            .unwrap()
            .is_none(),
        "the ClusterSecretStore is not created"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the sink was contacted"
    );
}

#[tokio::test]
async fn an_application_outside_the_agents_namespace_waits_for_a_project() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "tenancy-agent").await.unwrap();
    let outside = TestNamespace::create(&env, "tenancy-outside")
        .await
        .unwrap();
    let repo = GitRepo::create(&env, "tenancy-outside").unwrap();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: admitted\ndata:\n  level: info\n",
    )
    .unwrap();
    repo.write(
        "control/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: control\ndata:\n  level: info\n",
    )
    .unwrap();
    // Credentials are read from the agent's namespace only.
    let (url, head) = repo
        .serve_over_http(&env, "two apps", &[&ns])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&env, &ns, dir.path(), true).await;
    // The Application outside first, then one in the agent's namespace: once that one is
    // synced, the agent has seen both.
    apply(
        &outside.api::<Application>(),
        &application("outside", "team-outside", &url, "app", outside.name()),
    )
    .await;
    apply(
        &ns.api::<Application>(),
        &application("control", "default", &url, "control", ns.name()),
    )
    .await;
    ns.wait_for_synced_at("control", &head).await.unwrap();
    let ignored = outside.api::<Application>().get("outside").await.unwrap();
    assert!(
        ignored.status.is_none(),
        "an Application no project admits gets no status: {:?}",
        ignored.status
    );
    assert!(
        outside
            .api::<ConfigMap>()
            .get_opt("admitted")
            .await
            .unwrap()
            .is_none()
    );

    // A project in the agent's namespace that lists the namespace admits it.
    apply(
        &ns.api::<AppProject>(),
        &project(
            "team-outside",
            json!({
                "sourceRepos": ["*"],
                "sourceNamespaces": [outside.name()],
                "destinations": [{"server": "*", "namespace": outside.name()}],
            }),
        ),
    )
    .await;
    outside.wait_for_synced_at("outside", &head).await.unwrap();
    assert!(
        outside
            .api::<ConfigMap>()
            .get_opt("admitted")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn an_impersonated_application_can_do_only_what_its_service_account_can() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "impersonate").await.unwrap();
    // `deployer` may manage ConfigMaps of this namespace, nothing else.
    apply(
        &ns.api::<ServiceAccount>(),
        &serde_json::from_value(json!({"metadata": {"name": "deployer"}})).unwrap(),
    )
    .await;
    apply(
        &ns.api::<Role>(),
        &serde_json::from_value(json!({
            "metadata": {"name": "configmaps-only"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
        }))
        .unwrap(),
    )
    .await;
    apply(
        &ns.api::<RoleBinding>(),
        &serde_json::from_value(json!({
            "metadata": {"name": "deployer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps-only"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns.name()}],
        }))
        .unwrap(),
    )
    .await;

    let repo = GitRepo::create(&env, "impersonate").unwrap();
    repo.write(
        "allowed/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: allowed\ndata:\n  level: info\n",
    )
    .unwrap();
    // The agent's own role may create Services; its ServiceAccount may not.
    repo.write(
        "denied/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: denied\nspec:\n  ports: [{port: 80}]\n",
    )
    .unwrap();
    let (url, head) = repo
        .serve_over_http(&env, "what deployer may and may not do", &[&ns])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&env, &ns, dir.path(), false).await;
    for (name, path) in [("allowed", "allowed"), ("denied", "denied")] {
        let mut app = application(name, "default", &url, path, ns.name());
        app.spec.service_account_name = Some("deployer".into());
        apply(&ns.api::<Application>(), &app).await;
    }

    ns.wait_for_synced_at("allowed", &head).await.unwrap();
    let managed = ns.api::<ConfigMap>().get("allowed").await.unwrap();
    assert!(managed.metadata.managed_fields.is_some());

    let message = condition(&ns, "denied", "SyncFailed").await;
    assert!(
        message.contains("system:serviceaccount:") && message.contains(":deployer\" cannot"),
        "the condition names the ServiceAccount the sync ran as: {message}"
    );
    assert!(
        !message.contains("Status {"),
        "the API server's answer is printed once, as kubectl prints it: {message}"
    );
    assert!(
        ns.api::<Service>()
            .get_opt("denied")
            .await
            .unwrap()
            .is_none(),
        "the Service is not created with the agent's own rights"
    );
}

#[tokio::test]
async fn a_project_with_orphaned_resources_warn_names_what_no_application_tracks() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "orphans").await.unwrap();
    // Made by hand, tracked by nothing.
    for name in ["stray", "ignored-by-project"] {
        let stray: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name}, "data": {"a": "b"}}))
                .unwrap();
        apply(&ns.api::<ConfigMap>(), &stray).await;
    }
    let repo = GitRepo::create(&env, "orphans").unwrap();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: managed\ndata:\n  level: info\n",
    )
    .unwrap();
    let (url, head) = repo
        .serve_over_http(&env, "one ConfigMap", &[&ns])
        .await
        .unwrap();
    apply(
        &ns.api::<AppProject>(),
        &project(
            "watched",
            json!({
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": ns.name()}],
                "orphanedResources": {"warn": true, "ignore": [{"kind": "ConfigMap", "name": "ignored-*"}]},
            }),
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&env, &ns, dir.path(), false).await;
    apply(
        &ns.api::<Application>(),
        &application("watched", "watched", &url, "app", ns.name()),
    )
    .await;
    ns.wait_for_synced_at("watched", &head).await.unwrap();
    let message = condition(&ns, "watched", "OrphanedResourceWarning").await;
    assert!(message.contains("ConfigMap/stray"), "{message}");
    assert!(
        message.contains("1 orphaned"),
        "only the stray one: {message}"
    );
    for not_orphans in ["managed", "kube-root-ca.crt", "ignored-by-project"] {
        assert!(!message.contains(not_orphans), "{message}");
    }
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("stray")
            .await
            .unwrap()
            .is_some(),
        "a warning deletes nothing"
    );
}

#[tokio::test]
async fn create_namespace_needs_a_project_that_allows_namespaces() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "create-ns").await.unwrap();
    let wanted = format!("{}-new", ns.name());
    let repo = GitRepo::create(&env, "create-ns").unwrap();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: info\n",
    )
    .unwrap();
    let (url, _) = repo
        .serve_over_http(&env, "a ConfigMap", &[&ns])
        .await
        .unwrap();
    // The destination is allowed, Namespaces (cluster-scoped) are not whitelisted.
    apply(
        &ns.api::<AppProject>(),
        &project(
            "no-namespaces",
            json!({
                "sourceRepos": ["*"],
                "destinations": [{"server": "*", "namespace": wanted}],
            }),
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&env, &ns, dir.path(), false).await;
    let mut app = application("creates", "no-namespaces", &url, "app", &wanted);
    let mut spec = serde_json::to_value(&app.spec).unwrap();
    spec["syncPolicy"]["syncOptions"] = json!(["CreateNamespace=true"]);
    app.spec = serde_json::from_value(spec).unwrap();
    apply(&ns.api::<Application>(), &app).await;

    let message = condition(&ns, "creates", "ProjectViolation").await;
    assert!(
        message.contains("Namespace") && message.contains(&wanted),
        "{message}"
    );
    let admin = env.admin_client().await.unwrap();
    assert!(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(admin)
            .get_opt(&wanted)
            .await
            .unwrap()
            .is_none(),
        "the namespace is not created"
    );
}

#[tokio::test]
async fn with_argocd_api_argo_cds_own_app_project_is_enforced() {
    let env = RealEnv::load().unwrap();
    let admin = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    mooring_agent::install::apply_argocd_crds(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "argo-project").await.unwrap();
    let other = TestNamespace::create(&env, "argo-project-other")
        .await
        .unwrap();
    let repo = GitRepo::create(&env, "argo-project").unwrap();
    repo.write(
        "app/configmap.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: elsewhere\n  namespace: {}\ndata:\n  a: b\n",
            other.name()
        ),
    )
    .unwrap();
    let (url, _) = repo
        .serve_over_http(&env, "a ConfigMap for another namespace", &[&ns])
        .await
        .unwrap();
    // Argo CD's own AppProject, as a repository written for Argo CD holds it.
    let argo_project: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {"name": "argo-team", "namespace": ns.name()},
        "spec": {
            "sourceRepos": ["*"],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": ns.name()}],
        },
    }))
    .unwrap();
    let resource = mooring_crds::app_project::argocd_api_resource();
    Api::<kube::api::DynamicObject>::namespaced_with(admin.clone(), ns.name(), &resource)
        .patch(
            "argo-team",
            &PatchParams::apply("mooring-e2e").force(),
            &Patch::Apply(&argo_project),
        )
        .await
        .unwrap();

    install_rbac(&ns, |_, _| {}).await;
    let token = ns.service_account_token("mooring").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = agent_with_git(&env, ns.name(), &dir.path().join("git-cache")).unwrap();
    args.cluster.kubeconfig = Some(token_kubeconfig(&env, &token, dir.path()).unwrap());
    args.argocd_api = true;
    let _agent = RunningAgent::start_with(args).await.unwrap();
    apply(
        &ns.api::<Application>(),
        &application("argo-app", "argo-team", &url, "app", ns.name()),
    )
    .await;
    let message = condition(&ns, "argo-app", "ProjectViolation").await;
    assert!(
        message.contains("elsewhere") && message.contains(other.name()),
        "Argo CD's AppProject refuses the other namespace: {message}"
    );
    assert!(
        other
            .api::<ConfigMap>()
            .get_opt("elsewhere")
            .await
            .unwrap()
            .is_none()
    );
}
