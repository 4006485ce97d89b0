//! GitOps end to end: the agent (Application controller, Git cache, kustomize) against the real
//! API server and the real git servers, with the repository layout of the README's Quickstart:
//! `bootstrap/root-app.yaml` → `argocd-apps/` (app of apps) → `apps/platform-api/{base,overlays}`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use mooring_crds::application::Application;
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, wait_for};

/// The seed's layout, for destination namespace `ns` and repository `url`.
fn seed(repo: &GitRepo, ns: &str, url: &str) {
    let application = |name: &str, path: &str| {
        ApplicationManifest::new(name, ns, url, path)
            .create_namespace()
            .yaml()
    };
    repo.write(
        "bootstrap/root-app.yaml",
        &application("root", "argocd-apps"),
    )
    .unwrap();
    repo.write(
        "argocd-apps/platform-api.yaml",
        &application("platform-api", "apps/platform-api/overlays/staging"),
    )
    .unwrap();
    repo.write(
        "apps/platform-api/base/kustomization.yaml",
        "resources:\n  - deployment.yaml\n  - service.yaml\n  - configmap.yaml\n",
    )
    .unwrap();
    repo.write(
        "apps/platform-api/base/deployment.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: platform-api
spec:
  replicas: 1
  selector:
    matchLabels: {app: platform-api}
  template:
    metadata:
      labels: {app: platform-api}
    spec:
      containers:
        - name: api
          image: registry.invalid/platform-api:1.0.0
          ports: [{containerPort: 8080}]
",
    )
    .unwrap();
    repo.write(
        "apps/platform-api/base/service.yaml",
        "apiVersion: v1
kind: Service
metadata:
  name: platform-api
spec:
  selector: {app: platform-api}
  ports: [{port: 80, targetPort: 8080}]
",
    )
    .unwrap();
    repo.write(
        "apps/platform-api/base/configmap.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: platform-api-config
data:
  LOG_LEVEL: info
",
    )
    .unwrap();
    repo.write(
        "apps/platform-api/overlays/staging/kustomization.yaml",
        "resources:\n  - ../../base\npatches:\n  - path: replicas.yaml\n",
    )
    .unwrap();
    set_replicas(repo, 0);
}

fn set_replicas(repo: &GitRepo, replicas: u32) {
    repo.write(
        "apps/platform-api/overlays/staging/replicas.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: platform-api\nspec:\n  replicas: {replicas}\n"
        ),
    ).unwrap();
}

/// A repository credential Secret as Argo CD's (`argocd.argoproj.io/secret-type: repository`).
async fn credentials(ns: &TestNamespace, name: &str, data: BTreeMap<String, String>) {
    ns.repository_credentials(name, data).await.unwrap();
}

async fn http_credentials(env: &RealEnv, ns: &TestNamespace, url: &str, password: &str) {
    ns.http_credentials(env, url, password).await.unwrap();
}

async fn ssh_credentials(env: &RealEnv, ns: &TestNamespace, url: &str, known_hosts: &str) {
    let key = std::fs::read_to_string(env.var("GIT_SSH_KEY").unwrap()).unwrap();
    credentials(
        ns,
        "repo-ssh",
        BTreeMap::from([
            ("type".into(), "git".into()),
            ("url".into(), url.into()),
            ("sshPrivateKey".into(), key),
            ("known_hosts".into(), known_hosts.into()),
        ]),
    )
    .await;
}

/// An in-process agent running only the Application controller for `ns`, polling every 2 s.
async fn agent(env: &RealEnv, ns: &TestNamespace, cache: &Path) -> RunningAgent {
    let args = gitops_agent_args(env, ns.name(), cache).unwrap();
    RunningAgent::start_with(args).await.unwrap()
}

/// Applies an Application manifest from the repository, as a user bootstraps with kubectl.
async fn bootstrap(ns: &TestNamespace, repo: &GitRepo, file: &str) {
    let text = std::fs::read_to_string(repo.work_dir().join(file)).unwrap();
    let app: Application = serde_saphyr::from_str(&text).unwrap();
    ns.apply_application(&app).await.unwrap();
}

/// Waits until Application `name` reports `revision` Synced and returns it.
async fn synced_at(ns: &TestNamespace, name: &str, revision: &str) -> Application {
    ns.wait_for_synced_at(name, revision).await.unwrap()
}

/// Waits until Application `name` has condition `type_` with `reason`; returns its message.
async fn condition(ns: &TestNamespace, name: &str, type_: &str, reason: &str) -> String {
    ns.wait_for_app_condition(name, type_, reason)
        .await
        .unwrap()
        .1
}

async fn replicas(ns: &TestNamespace) -> Option<i32> {
    let deployment = ns
        .api::<Deployment>()
        .get_opt("platform-api")
        .await
        .ok()??;
    deployment.spec?.replicas
}

#[tokio::test]
async fn the_seed_layout_syncs_over_http_and_follows_commits() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "gitops-http").await.unwrap();
    let repo = GitRepo::create(&env, ns.name()).unwrap();
    let url = repo.http_url(&env).unwrap();
    seed(&repo, ns.name(), &url);
    let first = repo.commit("platform-api: staging").unwrap();
    http_credentials(&env, &ns, &url, env.var("GIT_HTTP_PASSWORD").unwrap()).await;
    let cache = tempfile::tempdir().unwrap();
    let agent = agent(&env, &ns, cache.path()).await;
    bootstrap(&ns, &repo, "bootstrap/root-app.yaml").await;

    // App of apps: the root creates platform-api, which syncs the staging overlay.
    synced_at(&ns, "root", &first).await;
    let child = synced_at(&ns, "platform-api", &first).await;
    assert_eq!(replicas(&ns).await, Some(0));
    let resources = child.status.unwrap().resources;
    for kind in ["Deployment", "Service", "ConfigMap"] {
        assert!(
            resources.iter().any(|r| r.kind == kind),
            "{kind} missing from the inventory: {resources:?}"
        );
    }
    let deployment = ns.api::<Deployment>().get("platform-api").await.unwrap();
    assert_eq!(
        deployment.annotations().get("mooring.dev/tracking-id"),
        Some(&format!(
            "{0}/platform-api:apps/Deployment:{0}/platform-api",
            ns.name()
        ))
    );

    // A commit that changes the replica count.
    set_replicas(&repo, 2);
    let second = repo.commit("platform-api: two replicas").unwrap();
    synced_at(&ns, "platform-api", &second).await;
    assert_eq!(replicas(&ns).await, Some(2));

    // A commit that deletes a file: the object is pruned.
    repo.remove("apps/platform-api/base/configmap.yaml")
        .unwrap();
    repo.write(
        "apps/platform-api/base/kustomization.yaml",
        "resources:\n  - deployment.yaml\n  - service.yaml\n",
    )
    .unwrap();
    let third = repo.commit("platform-api: no config map").unwrap();
    synced_at(&ns, "platform-api", &third).await;
    ns.wait_until_gone::<ConfigMap>(
        "the ConfigMap pruned",
        "platform-api-config",
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let applied = agent
        .metric("mooring_application_objects_applied_total")
        .await
        .unwrap();
    assert!(applied >= 4.0, "objects applied: {applied}");
    let pruned = agent
        .metric("mooring_application_objects_pruned_total")
        .await
        .unwrap();
    assert_eq!(pruned, 1.0, "objects pruned");
    // Two commits after the first: at least three packs fetched, each timed.
    let fetches = agent
        .metric("mooring_git_operations_total{operation=\"fetch\",outcome=\"ok\"}")
        .await
        .unwrap();
    assert!(fetches >= 3.0, "fetches counted: {fetches}");
    let timed = agent
        .metric("mooring_git_fetch_duration_seconds_count")
        .await
        .unwrap();
    assert!(
        timed >= fetches,
        "{timed} fetch durations for {fetches} fetches"
    );

    // A manual edit (`kubectl scale`) is reverted, and an event names who made it.
    ns.api::<Deployment>()
        .patch(
            "platform-api",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "platform-api"},
                "spec": {"replicas": 5}
            })),
        )
        .await
        .unwrap();
    wait_for(
        "the manual edit reverted",
        Duration::from_secs(60),
        || async { (replicas(&ns).await == Some(2)).then_some(()) },
    )
    .await
    .unwrap();
    let drift = ns
        .wait_for_event("a drift event", Duration::from_secs(30), |e| {
            e.message
                .as_deref()
                .is_some_and(|m| m.contains("kubectl-edit"))
        })
        .await
        .unwrap();
    let note = drift.message.unwrap_or_default();
    assert!(note.contains("platform-api"), "{note}");

    // Broken YAML: a condition names the file; nothing is pruned or changed.
    repo.write(
        "apps/platform-api/base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: platform-api\n spec: [\n",
    )
    .unwrap();
    repo.commit("platform-api: broken service").unwrap();
    let message = condition(&ns, "platform-api", "Synced", "KustomizeFailed").await;
    assert!(message.contains("service.yaml"), "{message}");
    assert_eq!(replicas(&ns).await, Some(2));

    // An empty render prunes nothing (allowEmpty is off).
    repo.write(
        "apps/platform-api/base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: platform-api\nspec:\n  selector: {app: platform-api}\n  ports: [{port: 80}]\n",
    ).unwrap();
    repo.write(
        "apps/platform-api/overlays/staging/kustomization.yaml",
        "resources: []\n",
    )
    .unwrap();
    repo.remove("apps/platform-api/overlays/staging/replicas.yaml")
        .unwrap();
    repo.commit("platform-api: empty").unwrap();
    condition(&ns, "platform-api", "PrunePending", "EmptyRender").await;
    assert_eq!(replicas(&ns).await, Some(2), "the empty render pruned");

    agent.stop().await.unwrap();
}

#[tokio::test]
async fn ssh_with_a_known_host_syncs_and_a_wrong_host_key_is_named() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "gitops-ssh").await.unwrap();
    let repo = GitRepo::create(&env, ns.name()).unwrap();
    let url = repo.ssh_url(&env).unwrap();
    seed(&repo, ns.name(), &url);
    let first = repo.commit("platform-api: staging").unwrap();
    let known_hosts = std::fs::read_to_string(env.var("GIT_SSH_KNOWN_HOSTS").unwrap()).unwrap();
    ssh_credentials(&env, &ns, &url, &known_hosts).await;
    let cache = tempfile::tempdir().unwrap();
    let agent = agent(&env, &ns, cache.path()).await;
    bootstrap(&ns, &repo, "bootstrap/root-app.yaml").await;
    synced_at(&ns, "platform-api", &first).await;
    assert_eq!(replicas(&ns).await, Some(0));

    // Another host key for the same address: the agent refuses and says why.
    let (host, _) = known_hosts.split_once(' ').unwrap();
    let keys = tempfile::tempdir().unwrap();
    let other_key = keys.path().join("other");
    let generated = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(generated.success());
    let public = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let forged = format!(
        "{host} {} {}\n",
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    let mut secret = ns.api::<Secret>().get("repo-ssh").await.unwrap();
    // The server's key changed (or a machine in the middle answers): same URL and client key,
    // another host key.
    secret.data.as_mut().unwrap().insert(
        "known_hosts".into(),
        k8s_openapi::ByteString(forged.into_bytes()),
    );
    ns.api::<Secret>()
        .replace("repo-ssh", &PostParams::default(), &secret)
        .await
        .unwrap();
    // Both Applications refuse the server once they have read the new Secret (a sync already
    // running keeps the credentials it read before the change).
    let message = condition(&ns, "root", "Synced", "HostKeyMismatch").await;
    assert!(message.contains(&repo.name), "{message}");
    condition(&ns, "platform-api", "Synced", "HostKeyMismatch").await;

    // A commit pushed now is never applied: each poll fails on the host key.
    let refusals = r#"mooring_application_errors_total{reason="HostKeyMismatch"}"#;
    let before = agent.metric(refusals).await.unwrap();
    set_replicas(&repo, 3);
    let third = repo.commit("platform-api: three replicas").unwrap();
    // Refused fetches back off for a minute: ask for a look now, as `argocd app get --refresh`.
    for name in ["root", "platform-api"] {
        ns.request_refresh(name, &third).await.unwrap();
    }
    wait_for("two more refusals", Duration::from_secs(60), || async {
        (agent.metric(refusals).await.ok()? >= before + 2.0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        replicas(&ns).await,
        Some(0),
        "a commit was applied through a server with another host key"
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_named_with_the_url() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "gitops-auth").await.unwrap();
    let repo = GitRepo::create(&env, ns.name()).unwrap();
    let url = repo.http_url(&env).unwrap();
    seed(&repo, ns.name(), &url);
    repo.commit("platform-api: staging").unwrap();
    http_credentials(&env, &ns, &url, "not-the-password").await;
    let cache = tempfile::tempdir().unwrap();
    let agent = agent(&env, &ns, cache.path()).await;
    bootstrap(&ns, &repo, "bootstrap/root-app.yaml").await;
    let message = condition(&ns, "root", "Synced", "AuthenticationFailed").await;
    assert!(message.contains(&url), "{message}");
    assert!(
        !message.contains("not-the-password"),
        "the condition holds the password"
    );
    let errors = agent
        .metric("mooring_application_errors_total{reason=\"AuthenticationFailed\"}")
        .await
        .unwrap();
    assert!(errors >= 1.0, "errors counted: {errors}");
    let refused = agent
        .metric(
            "mooring_git_operations_total{operation=\"check\",outcome=\"AuthenticationFailed\"}",
        )
        .await
        .unwrap();
    assert!(refused >= 1.0, "refused ref checks counted: {refused}");
    agent.stop().await.unwrap();
}

/// An Application of `url`'s `path`, labelled for `shard`, syncing into `ns`.
async fn sharded_application(ns: &TestNamespace, name: &str, shard: &str, url: &str, path: &str) {
    let app: Application = serde_json::from_value(serde_json::json!({
        "apiVersion": "mooring.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "labels": {"mooring.dev/shard": shard}},
        "spec": {
            "source": {"repoURL": url, "targetRevision": "main", "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ns.name()},
            "syncPolicy": {"automated": {"prune": true}},
        },
    }))
    .unwrap();
    ns.api::<Application>()
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
}

#[tokio::test]
async fn agents_with_label_selectors_share_the_applications() {
    let env = RealEnv::load().unwrap();
    // The Applications exist before any agent runs (and installs the CRDs).
    let admin = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "gitops-shard").await.unwrap();
    let repo = GitRepo::create(&env, ns.name()).unwrap();
    for shard in ["a", "b"] {
        repo.write(
            &format!("{shard}/configmap.yaml"),
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shard-{shard}\n"),
        )
        .unwrap();
    }
    let commit = repo.commit("two shards").unwrap();
    let url = format!("file://{}/{}", env.var("GIT_REPO_ROOT").unwrap(), repo.name);
    sharded_application(&ns, "app-a", "a", &url, "a").await;
    sharded_application(&ns, "app-b", "b", &url, "b").await;

    let start = |shard: &str, cache: &Path| {
        let mut args = gitops_agent_args(&env, ns.name(), cache).unwrap();
        args.git_allow_file_urls = true;
        args.application_selector = Some(format!("mooring.dev/shard={shard}"));
        RunningAgent::start_with(args)
    };
    let cache_a = tempfile::tempdir().unwrap();
    let agent_a = start("a", cache_a.path()).await.unwrap();
    synced_at(&ns, "app-a", &commit).await;
    // Agent a polled and synced its Application several times over; b's is not its own.
    let b = ns.api::<Application>().get("app-b").await.unwrap();
    assert!(b.status.is_none(), "agent a touched app-b: {:?}", b.status);
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("shard-b")
            .await
            .unwrap()
            .is_none(),
        "agent a applied app-b's objects"
    );

    let cache_b = tempfile::tempdir().unwrap();
    let agent_b = start("b", cache_b.path()).await.unwrap();
    synced_at(&ns, "app-b", &commit).await;
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("shard-b")
            .await
            .unwrap()
            .is_some()
    );
    agent_a.stop().await.unwrap();
    agent_b.stop().await.unwrap();
}
