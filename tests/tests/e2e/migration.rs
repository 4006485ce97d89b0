//! Moving from bitnami sealed-secrets to mooring, as the README tells users to: the upstream
//! controller (v0.36.6, built from its Go module) generates its key and unseals a SealedSecret
//! sealed by upstream `kubeseal`; then its key Secret is copied to mooring's namespace, the
//! upstream controller stops, and mooring takes over the same objects without touching them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use tokio::io::AsyncWriteExt;

const KEY_SELECTOR: &str = "sealedsecrets.bitnami.com/sealed-secrets-key=active";

/// The upstream controller, run as in a pod: in a private mount namespace where
/// `/var/run/secrets/kubernetes.io/serviceaccount` holds a ServiceAccount token (cluster-admin,
/// for the test) and the cluster CA, watching only its own namespace.
struct UpstreamController {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl UpstreamController {
    async fn start(env: &RealEnv, ns: &TestNamespace) -> UpstreamController {
        let token = admin_service_account_token(ns).await;
        let dir = tempfile::tempdir().unwrap();
        let account = dir.path().join("run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&account).unwrap();
        std::fs::write(account.join("token"), token).unwrap();
        std::fs::write(account.join("namespace"), ns.name()).unwrap();
        let ca = Path::new(env.var("REALENV_DIR").unwrap()).join("pki/ca.crt");
        std::fs::copy(ca, account.join("ca.crt")).unwrap();
        let server = env.admin_config().await.unwrap().cluster_url;
        let port = server.port_u16().unwrap().to_string();
        let controller = env.var("UPSTREAM_SEALED_SECRETS_CONTROLLER").unwrap();
        // /var/run is /run on Debian: binding our directory over /run inside a private mount
        // namespace gives the controller its in-cluster files without touching the host's.
        let script = format!(
            "mount --bind {run} /run && exec {controller} --all-namespaces=false \
             --key-renew-period=0 --listen-addr=127.0.0.1:0 --listen-metrics-addr=127.0.0.1:0",
            run = dir.path().join("run").display(),
        );
        let child = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", port)
            .env("POD_NAMESPACE", ns.name())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        UpstreamController { child, _dir: dir }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// A token for a ServiceAccount bound to cluster-admin (what the upstream chart's RBAC would
/// grant, and more; this test is about keys and data, not RBAC).
async fn admin_service_account_token(ns: &TestNamespace) -> String {
    ns.service_account_client("sealed-secrets-controller")
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{}-upstream", ns.name())),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "sealed-secrets-controller".into(),
            namespace: Some(ns.name().into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(ns.client())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    ns.service_account_token("sealed-secrets-controller")
        .await
        .unwrap()
}

/// Seals a Secret with upstream kubeseal against `cert_pem`, offline.
async fn upstream_seal(
    env: &RealEnv,
    cert_pem: &[u8],
    ns: &str,
    name: &str,
    value: &str,
) -> SealedSecret {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    let input = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\nstringData:\n  password: {value}\n"
    );
    let mut child = tokio::process::Command::new(env.var("UPSTREAM_KUBESEAL").unwrap())
        .args(["--cert", cert.to_str().unwrap(), "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn keys_of_the_upstream_controller_move_to_mooring_and_it_takes_over() {
    let env = RealEnv::load().unwrap();
    mooring_agent::install::apply_crds(&env.admin_client().await.unwrap(), Duration::from_secs(60))
        .await
        .unwrap();
    let apps = TestNamespace::create(&env, "migrate-apps").await.unwrap();
    let mooring_ns = TestNamespace::create(&env, "migrate-mooring")
        .await
        .unwrap();

    // 1. Upstream generates its key and unseals what upstream kubeseal sealed.
    let upstream = UpstreamController::start(&env, &apps).await;
    let key_secrets: Api<Secret> = apps.api();
    let upstream_key = wait_for("upstream's key Secret", Duration::from_secs(120), || {
        let key_secrets = key_secrets.clone();
        async move {
            let keys = key_secrets
                .list(&ListParams::default().labels(KEY_SELECTOR))
                .await
                .ok()?;
            keys.items.into_iter().next()
        }
    })
    .await
    .unwrap();
    let cert = upstream_key.data.as_ref().unwrap()["tls.crt"].0.clone();
    let before = upstream_seal(&env, &cert, apps.name(), "db", "sealed-for-bitnami").await;
    apps.api::<SealedSecret>()
        .create(&PostParams::default(), &before)
        .await
        .unwrap();
    apps.wait_for_secret("db", "password", b"sealed-for-bitnami")
        .await
        .unwrap();
    upstream.stop().await;

    // 2. The README's migration: copy the key Secrets to mooring's namespace.
    let mut copied = upstream_key.clone();
    copied.metadata = ObjectMeta {
        name: upstream_key.metadata.name.clone(),
        labels: upstream_key.metadata.labels.clone(),
        ..Default::default()
    };
    mooring_ns
        .api::<Secret>()
        .create(&PostParams::default(), &copied)
        .await
        .unwrap();

    // 3. mooring takes over: the existing Secret (owned by the SealedSecret) is accepted, a
    //    deleted one is restored, and new upstream-sealed objects unseal.
    let mut args = mooring_e2e::agent(&env, mooring_ns.name()).unwrap();
    args.watch_namespace = Some(apps.name().into());
    let agent = RunningAgent::start_with(args).await.unwrap();
    assert_eq!(
        agent.certificate().await.unwrap().as_bytes(),
        cert.as_slice(),
        "mooring serves the imported key's certificate (no new key was generated)"
    );
    let sealed_api: Api<SealedSecret> = apps.api();
    wait_for(
        "mooring's Synced=True on the upstream object",
        Duration::from_secs(60),
        || {
            let sealed_api = sealed_api.clone();
            async move {
                let status = sealed_api.get("db").await.ok()?.status?;
                let synced = status.conditions.iter().find(|c| c.type_ == "Synced")?;
                (synced.status == "True" && synced.reason.as_deref() == Some("Unsealed"))
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    apps.api::<Secret>()
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    apps.wait_for_secret("db", "password", b"sealed-for-bitnami")
        .await
        .unwrap();
    let after = upstream_seal(&env, &cert, apps.name(), "api", "sealed-after-the-move").await;
    apps.api::<SealedSecret>()
        .create(&PostParams::default(), &after)
        .await
        .unwrap();
    apps.wait_for_secret("api", "password", b"sealed-after-the-move")
        .await
        .unwrap();
    agent.stop().await.unwrap();

    let bindings: Api<ClusterRoleBinding> = Api::all(apps.client());
    bindings
        .delete(
            &format!("{}-upstream", apps.name()),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
}
