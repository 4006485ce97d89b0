//! The `split` install, proven under its own RBAC on the real API server: the secret
//! controllers and the sync engine run as two ServiceAccounts in two namespaces. An Application
//! of the sync engine's namespace deploys a ConfigMap and a SealedSecret into a third namespace,
//! the secret controllers unseal it there, and neither identity can do the other's job: the sync
//! engine's cannot read any Secret outside its own namespace (the sealing keys included), the
//! secret controllers' cannot create a Deployment.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, token_kubeconfig};
use mooring_sealing::SealingCertificate;
use serde_json::Value;

use crate::rbac::install_rbac_documents;

/// The ServiceAccounts and RBAC of `deploy/rendered/split.yaml`.
fn split_rbac() -> Vec<Value> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rendered/split.yaml"),
    )
    .unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|doc| {
            matches!(
                doc["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect()
}

/// A client as ServiceAccount `name` of `ns` (a bound token), and its kubeconfig file.
async fn client_as(
    env: &RealEnv,
    ns: &TestNamespace,
    name: &str,
    dir: &Path,
) -> (kube::Client, std::path::PathBuf) {
    let token = ns.service_account_token(name).await.unwrap();
    let path = token_kubeconfig(env, &token, dir).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    (kube::Client::try_from(config).unwrap(), path)
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[tokio::test]
async fn the_split_install_keeps_the_sync_engine_away_from_secrets() {
    let env = RealEnv::load().unwrap();
    let admin = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    let secrets_ns = TestNamespace::create(&env, "split-secrets").await.unwrap();
    let gitops_ns = TestNamespace::create(&env, "split-gitops").await.unwrap();
    let apps = TestNamespace::create(&env, "split-apps").await.unwrap();
    install_rbac_documents(
        &secrets_ns,
        split_rbac(),
        &[
            ("mooring-system", &secrets_ns),
            ("mooring-gitops", &gitops_ns),
        ],
        |_, _| {},
    )
    .await;
    let secrets_dir = tempfile::tempdir().unwrap();
    let gitops_dir = tempfile::tempdir().unwrap();
    let (secrets_client, secrets_kubeconfig) =
        client_as(&env, &secrets_ns, "mooring", secrets_dir.path()).await;
    let (gitops_client, gitops_kubeconfig) =
        client_as(&env, &gitops_ns, "mooring-gitops", gitops_dir.path()).await;

    // The secret controllers: keys in their namespace, SealedSecrets of the apps' namespace.
    let mut args = mooring_e2e::agent(&env, secrets_ns.name()).unwrap();
    args.cluster.kubeconfig = Some(secrets_kubeconfig);
    args.watch_namespace = Some(apps.name().to_string());
    args.controllers = vec![
        mooring_agent::cli::ControllerKind::SealedSecrets,
        mooring_agent::cli::ControllerKind::ExternalSecrets,
    ];
    let secrets_agent = RunningAgent::start_with(args).await.unwrap();
    let cert = reqwest::get(format!("http://{}/v1/cert.pem", secrets_agent.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Git: a ConfigMap and a SealedSecret for the apps' namespace.
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            namespace: Some(apps.name().into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".into(), "split-s3cr3t".into())])),
        ..Default::default()
    };
    let certificate = SealingCertificate::from_pem(cert.as_bytes()).unwrap();
    let sealed =
        mooring_sealing::secret::seal_secret(&secret, certificate.public_key(), None, false)
            .unwrap();
    let repo = GitRepo::create(&env, "split").unwrap();
    repo.write(
        "app/sealed.yaml",
        &serde_saphyr::to_string(&sealed).unwrap(),
    )
    .unwrap();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: info\n",
    )
    .unwrap();
    let (url, head) = repo
        .serve_over_http(&env, "an app with a sealed secret", &[&gitops_ns])
        .await
        .unwrap();

    // The sync engine, in its own namespace, as its own ServiceAccount.
    let cache = gitops_dir.path().join("git-cache");
    let mut args = gitops_agent_args(&env, gitops_ns.name(), &cache).unwrap();
    args.cluster.kubeconfig = Some(gitops_kubeconfig);
    let _gitops_agent = RunningAgent::start_with(args).await.unwrap();
    let app = ApplicationManifest::new("app", apps.name(), &url, "app")
        .application()
        .unwrap();
    let mut app = app;
    app.metadata.namespace = Some(gitops_ns.name().to_string());
    gitops_ns.apply_application(&app).await.unwrap();

    gitops_ns.wait_for_synced_at("app", &head).await.unwrap();
    assert!(
        apps.api::<ConfigMap>()
            .get_opt("settings")
            .await
            .unwrap()
            .is_some()
    );
    apps.wait_for_secret("db", "password", b"split-s3cr3t")
        .await
        .unwrap();

    // Neither identity can do the other's job.
    assert!(
        forbidden(
            Api::<Secret>::namespaced(gitops_client.clone(), secrets_ns.name())
                .list(&ListParams::default())
                .await
        ),
        "the sync engine cannot list the sealing keys' namespace"
    );
    assert!(
        forbidden(
            Api::<Secret>::namespaced(gitops_client.clone(), apps.name())
                .get("db")
                .await
        ),
        "the sync engine cannot read the Secret it had unsealed"
    );
    assert!(
        forbidden(
            Api::<Secret>::namespaced(gitops_client.clone(), gitops_ns.name())
                .get("repo-http")
                .await
        ),
        "even its own namespace's Secrets are listed by label, not read by name"
    );
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "intruder"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}},
                         "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]}},
        },
    }))
    .unwrap();
    assert!(
        forbidden(
            Api::<Deployment>::namespaced(secrets_client, apps.name())
                .create(&PostParams::default(), &deployment)
                .await
        ),
        "the secret controllers cannot deploy workloads"
    );
}
