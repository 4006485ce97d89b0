//! The RBAC of `deploy/base`, proven on the real API server: the agent runs as the `mooring`
//! ServiceAccount with exactly those rules (a bound token from TokenRequest) and does its work;
//! without a verb it needs it reports a clear condition and keeps running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::{AgentProcess, GitRepo, RealEnv, TestNamespace, token_kubeconfig};
use mooring_sealing::SealingCertificate;
use serde_json::Value;

/// The namespace the manifests install into; tests swap in their own.
const INSTALL_NAMESPACE: &str = "mooring-system";

fn deploy_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

/// Every YAML document of the RBAC files of `deploy/base`, and its ServiceAccount.
fn rbac_documents() -> Vec<Value> {
    [
        "serviceaccount.yaml",
        "rbac-secrets.yaml",
        "rbac-gitops.yaml",
    ]
    .iter()
    .flat_map(|file| {
        let text = std::fs::read_to_string(deploy_base().join(file)).unwrap();
        serde_saphyr::from_multiple::<Value>(&text).unwrap()
    })
    .filter(|doc| !doc.is_null())
    .collect()
}

/// Every rule of every Role and ClusterRole under `deploy/`, with where it came from.
fn all_rules() -> Vec<(String, PolicyRule)> {
    let mut files = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    let mut rules = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "Role" && kind != "ClusterRole" {
                continue;
            }
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            for rule in doc["rules"].as_array().cloned().unwrap_or_default() {
                let rule: PolicyRule = serde_json::from_value(rule).unwrap();
                rules.push((format!("{} {kind}/{name}", file.display()), rule));
            }
        }
    }
    rules
}

#[test]
fn no_rule_grants_a_wildcard() {
    let rules = all_rules();
    assert!(
        rules.len() >= 10,
        "found only {} rules under deploy/: is the path right?",
        rules.len()
    );
    for (origin, rule) in rules {
        let lists = [
            ("verbs", Some(&rule.verbs)),
            ("resources", rule.resources.as_ref()),
            ("apiGroups", rule.api_groups.as_ref()),
            ("nonResourceURLs", rule.non_resource_urls.as_ref()),
        ];
        for (field, values) in lists {
            for value in values.into_iter().flatten() {
                assert!(
                    !value.contains('*'),
                    "{origin} grants {field} {value:?}: name what mooring uses instead"
                );
            }
        }
    }
}

/// A copy of deploy/base's ServiceAccount and RBAC for one test namespace: namespaced objects
/// move into it, cluster-scoped ones get the namespace as a name suffix and the Namespace as
/// their owner (so the garbage collector removes them with it). `adjust` edits the rules first.
pub(crate) async fn install_rbac(ns: &TestNamespace, adjust: impl Fn(&str, &mut Vec<PolicyRule>)) {
    install_rbac_documents(ns, rbac_documents(), &[(INSTALL_NAMESPACE, ns)], adjust).await;
}

/// The same for any install's documents: each install namespace of `namespaces` is replaced by
/// its test namespace; cluster-scoped objects are named and owned after `owner`.
pub(crate) async fn install_rbac_documents(
    owner_ns: &TestNamespace,
    documents: Vec<Value>,
    namespaces: &[(&str, &TestNamespace)],
    adjust: impl Fn(&str, &mut Vec<PolicyRule>),
) {
    let admin = owner_ns.client();
    let owner = {
        let namespace = Api::<Namespace>::all(admin.clone())
            .get(owner_ns.name())
            .await
            .unwrap();
        OwnerReference {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: owner_ns.name().into(),
            uid: namespace.metadata.uid.unwrap(),
            ..Default::default()
        }
    };
    let suffixed = |name: &str| format!("{name}-{}", owner_ns.name());
    let params = PatchParams::apply("mooring-e2e").force();
    for doc in documents {
        // The namespaces an install names: its objects' own and its bindings' subjects'.
        let mut doc = doc;
        let moved = |value: &mut Value| {
            if let Some((_, test)) = namespaces.iter().find(|(install, _)| value == *install) {
                *value = Value::String(test.name().to_string());
            }
        };
        moved(&mut doc["metadata"]["namespace"]);
        if let Some(subjects) = doc["subjects"].as_array_mut() {
            for subject in subjects {
                moved(&mut subject["namespace"]);
            }
        }
        let text = serde_json::to_string(&doc).unwrap();
        let namespace = || doc["metadata"]["namespace"].as_str().unwrap().to_string();
        match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                let account: ServiceAccount = serde_json::from_str(&text).unwrap();
                let name = account.metadata.name.clone().unwrap();
                Api::<ServiceAccount>::namespaced(admin.clone(), &namespace())
                    .patch(&name, &params, &Patch::Apply(&account))
                    .await
                    .unwrap();
            }
            "ClusterRole" => {
                let mut role: ClusterRole = serde_json::from_str(&text).unwrap();
                let name = suffixed(role.metadata.name.as_deref().unwrap());
                if let Some(rules) = role.rules.as_mut() {
                    adjust(&name, rules);
                }
                // Aggregation would mix in other tests' copies: give each copy its own label.
                relabel_aggregation(&mut role, owner_ns.name());
                role.metadata.name = Some(name.clone());
                role.metadata.owner_references = Some(vec![owner.clone()]);
                Api::<ClusterRole>::all(admin.clone())
                    .patch(&name, &params, &Patch::Apply(&role))
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                let mut binding: ClusterRoleBinding = serde_json::from_str(&text).unwrap();
                let name = suffixed(binding.metadata.name.as_deref().unwrap());
                binding.metadata.name = Some(name.clone());
                binding.metadata.owner_references = Some(vec![owner.clone()]);
                binding.role_ref.name = suffixed(&binding.role_ref.name);
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .patch(&name, &params, &Patch::Apply(&binding))
                    .await
                    .unwrap();
            }
            "Role" => {
                let mut role: Role = serde_json::from_str(&text).unwrap();
                let name = role.metadata.name.clone().unwrap();
                if let Some(rules) = role.rules.as_mut() {
                    adjust(&name, rules);
                }
                Api::<Role>::namespaced(admin.clone(), &namespace())
                    .patch(&name, &params, &Patch::Apply(&role))
                    .await
                    .unwrap();
            }
            "RoleBinding" => {
                let binding: RoleBinding = serde_json::from_str(&text).unwrap();
                let name = binding.metadata.name.clone().unwrap();
                Api::<RoleBinding>::namespaced(admin.clone(), &namespace())
                    .patch(&name, &params, &Patch::Apply(&binding))
                    .await
                    .unwrap();
            }
            other => panic!("unexpected kind {other} in the install's RBAC"),
        }
    }
}

/// Points a copy's aggregation label and selector at a label of its own.
fn relabel_aggregation(role: &mut ClusterRole, suffix: &str) {
    const LABEL: &str = "mooring.dev/aggregate-to-gitops";
    let own = format!("{LABEL}-{suffix}");
    if let Some(labels) = role.metadata.labels.as_mut()
        && let Some(value) = labels.remove(LABEL)
    {
        labels.insert(own.clone(), value);
    }
    if let Some(rule) = role.aggregation_rule.as_mut() {
        for selector in rule.cluster_role_selectors.iter_mut().flatten() {
            if let Some(labels) = selector.match_labels.as_mut()
                && let Some(value) = labels.remove(LABEL)
            {
                labels.insert(own.clone(), value);
            }
        }
    }
}

/// `mooring run` as the test namespace's `mooring` ServiceAccount (a bound token only).
async fn start_agent(env: &RealEnv, ns: &TestNamespace, dir: &Path) -> AgentProcess {
    let token = ns.service_account_token("mooring").await.unwrap();
    let kubeconfig = token_kubeconfig(env, &token, dir).unwrap();
    AgentProcess::start(&kubeconfig, ns.name(), &[])
        .await
        .unwrap()
}

fn sealed_secret(cert_pem: &str, namespace: &str, name: &str, value: &str) -> SealedSecret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".into(), value.into())])),
        ..Default::default()
    };
    let cert = SealingCertificate::from_pem(cert_pem.as_bytes()).unwrap();
    mooring_sealing::secret::seal_secret(&secret, cert.public_key(), None, false).unwrap()
}

#[tokio::test]
async fn the_agent_unseals_with_exactly_the_deployed_rbac() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "rbac-ok").await.unwrap();
    install_rbac(&ns, |_, _| {}).await;

    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&env, &ns, dir.path()).await;
    let cert = agent.certificate().await.unwrap();
    let sealed = sealed_secret(&cert, ns.name(), "db", "s3cr3t-rbac-ok");
    ns.api::<SealedSecret>()
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"s3cr3t-rbac-ok")
        .await
        .unwrap();
    let (reason, _) = ns.wait_for_synced("db", "True").await.unwrap();
    assert_eq!(reason, "Unsealed");
    let logs = agent.stop().await.unwrap();
    assert!(
        !logs.contains("s3cr3t-rbac-ok"),
        "the agent's log holds the secret value"
    );
}

#[tokio::test]
async fn a_missing_verb_gives_a_condition_not_a_crash() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "rbac-deny").await.unwrap();
    // The deployed RBAC without `update` on Secrets: the agent can still create its key and new
    // Secrets, but cannot change a Secret it generated.
    install_rbac(&ns, |name, rules| {
        if name.starts_with("mooring-secrets") {
            for rule in rules.iter_mut() {
                if rule.resources.as_ref().is_some_and(|r| r == &["secrets"]) {
                    rule.verbs.retain(|verb| verb != "update");
                }
            }
        }
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(&env, &ns, dir.path()).await;
    let cert = agent.certificate().await.unwrap();
    let api = ns.api::<SealedSecret>();
    let params = PatchParams::apply("mooring-e2e").force();
    let first = sealed_secret(&cert, ns.name(), "db", "s3cr3t-rbac-first");
    api.patch("db", &params, &Patch::Apply(&first))
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"s3cr3t-rbac-first")
        .await
        .unwrap();

    // A new value needs an update of the Secret, which is not granted.
    let second = sealed_secret(&cert, ns.name(), "db", "s3cr3t-rbac-second");
    api.patch("db", &params, &Patch::Apply(&second))
        .await
        .unwrap();
    let (reason, message) = ns.wait_for_synced("db", "False").await.unwrap();
    assert_eq!(reason, "Forbidden", "message: {message}");
    assert!(
        message.contains("update") && message.contains("Secret"),
        "the message names the verb and the kind: {message}"
    );
    // Nothing lost: the Secret keeps its last good value, and the agent keeps running.
    let secret = ns.api::<Secret>().get("db").await.unwrap();
    assert_eq!(
        secret.data.unwrap()["password"].0,
        b"s3cr3t-rbac-first".to_vec()
    );
    assert!(agent.is_running(), "the agent exited on a denied request");
    let ready = reqwest::get(format!("http://{}/healthz", agent.addr))
        .await
        .unwrap();
    assert!(ready.status().is_success());
    let logs = agent.stop().await.unwrap();
    for value in ["s3cr3t-rbac-first", "s3cr3t-rbac-second"] {
        assert!(
            !logs.contains(value),
            "the agent's log holds a secret value"
        );
    }
}

/// A one-commit repository with a ConfigMap and a Deployment scaled to zero.
fn manifests_repository(env: &RealEnv) -> GitRepo {
    let repo = GitRepo::create(env, "rbac").unwrap();
    repo.commit_files(
        &[(
            "app.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  mode: rbac\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 0\n  \
             selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    \
             spec:\n      containers:\n        - name: app\n          image: registry.invalid/app:1\n",
        )],
        "app",
    )
    .unwrap();
    repo
}

#[tokio::test]
async fn all_controllers_work_with_exactly_the_deployed_rbac_and_leak_no_secret() {
    let env = RealEnv::load().unwrap();
    let admin = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&admin, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "rbac-all").await.unwrap();
    install_rbac(&ns, |_, _| {}).await;

    // OpenBao holds the value; the store's token sits in a Secret of the namespace.
    let value = "s3cr3t-rbac-external";
    let path = format!("mooring-e2e/{}/db", ns.name());
    let vault = env.openbao().unwrap();
    vaultrs::kv2::set(
        &vault,
        "secret",
        &path,
        &BTreeMap::from([("password", value)]),
    )
    .await
    .unwrap();
    ns.create_secret("bao-token", &[("token", env.var("VAULT_TOKEN").unwrap())])
        .await
        .unwrap();
    let params = PatchParams::apply("mooring-e2e").force();
    let store: mooring_crds::secret_store::SecretStore =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "vault"},
            "spec": {"provider": {"vault": {
                "server": env.var("VAULT_ADDR").unwrap(), "path": "secret", "version": "v2",
                "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token"}}}}},
        }))
        .unwrap();
    ns.api::<mooring_crds::secret_store::SecretStore>()
        .patch("vault", &params, &Patch::Apply(&store))
        .await
        .unwrap();
    let external: mooring_crds::external_secret::ExternalSecret =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "db"},
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
                "target": {"name": "db-credentials"},
                "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}],
            },
        }))
        .unwrap();
    ns.api::<mooring_crds::external_secret::ExternalSecret>()
        .patch("db", &params, &Patch::Apply(&external))
        .await
        .unwrap();

    // An Application of this namespace syncing a local repository.
    let dir = tempfile::tempdir().unwrap();
    let repo = manifests_repository(&env);
    let url = repo.file_url();
    let app: mooring_crds::application::Application = serde_json::from_value(serde_json::json!({
        "apiVersion": "mooring.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": "app"},
        "spec": {
            "source": {"repoURL": url, "targetRevision": "main", "path": "."},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ns.name()},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    }))
    .unwrap();
    ns.api::<mooring_crds::application::Application>()
        .patch("app", &params, &Patch::Apply(&app))
        .await
        .unwrap();

    // The agent with every controller, as the ServiceAccount of deploy/base.
    let token = ns.service_account_token("mooring").await.unwrap();
    let kubeconfig = token_kubeconfig(&env, &token, dir.path()).unwrap();
    let cache = dir.path().join("git-cache");
    let agent = AgentProcess::start(
        &kubeconfig,
        ns.name(),
        &[
            "--kustomize-path",
            env.var("KUSTOMIZE").unwrap(),
            "--git-allow-file-urls",
            "--git-cache-dir",
            cache.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();

    ns.wait_for_secret("db-credentials", "password", value.as_bytes())
        .await
        .unwrap();
    // And a SealedSecret, sealed against the agent's own certificate.
    let sealed_value = "s3cr3t-rbac-sealed";
    let cert = agent.certificate().await.unwrap();
    ns.api::<SealedSecret>()
        .create(
            &PostParams::default(),
            &sealed_secret(&cert, ns.name(), "api", sealed_value),
        )
        .await
        .unwrap();
    ns.wait_for_secret("api", "password", sealed_value.as_bytes())
        .await
        .unwrap();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = ns.api();
    mooring_e2e::wait_for(
        "the Application's Deployment",
        std::time::Duration::from_secs(90),
        || {
            let deployments = deployments.clone();
            async move { deployments.get_opt("app").await.ok()? }
        },
    )
    .await
    .unwrap();
    let apps: Api<mooring_crds::application::Application> = ns.api();
    mooring_e2e::wait_for(
        "the Application Synced",
        std::time::Duration::from_secs(90),
        || {
            let apps = apps.clone();
            async move {
                let app = apps.get("app").await.ok()?;
                let sync = app.status?.sync?;
                (sync.status == mooring_crds::application::SyncState::Synced).then_some(())
            }
        },
    )
    .await
    .unwrap();
    // Nothing the run produced outside the Secrets holds a secret value: not the agent's log,
    // not an event, not a status of any object it manages.
    let mut produced = Vec::new();
    let events: Api<k8s_openapi::api::core::v1::Event> = ns.api();
    for event in events.list(&Default::default()).await.unwrap() {
        produced.push(serde_json::to_string(&event).unwrap());
    }
    let statuses = [
        serde_json::to_string(
            &ns.api::<SealedSecret>()
                .list(&Default::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(
            &ns.api::<mooring_crds::external_secret::ExternalSecret>()
                .list(&Default::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(
            &ns.api::<mooring_crds::secret_store::SecretStore>()
                .list(&Default::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(&apps.list(&Default::default()).await.unwrap()).unwrap(),
    ];
    produced.extend(statuses);
    let logs = agent.stop().await.unwrap();
    produced.push(logs.clone());
    assert!(produced.len() > 5, "nothing to look at: {produced:?}");
    for secret_value in [value, sealed_value] {
        for text in &produced {
            assert!(
                !text.contains(secret_value),
                "a secret value leaked into a log, event or status"
            );
        }
    }
    assert!(
        !logs.contains("forbidden"),
        "a request was denied under the deployed RBAC:\n{logs}"
    );
}
