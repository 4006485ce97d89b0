//! `mooring install`: the manifests it embeds are exactly `deploy/` rendered by the pinned
//! kustomize, and `--apply` installs them into the real API server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use mooring_e2e::{RealEnv, binary, wait_for};

const OVERLAYS: [(&str, &str); 4] = [
    ("base", "deploy/base"),
    ("ha", "deploy/overlays/ha"),
    ("no-gitops", "deploy/overlays/no-gitops"),
    ("split", "deploy/overlays/split"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The committed rendering without its header comment.
fn committed(overlay: &str) -> String {
    let text =
        std::fs::read_to_string(repo().join(format!("deploy/rendered/{overlay}.yaml"))).unwrap();
    text.split_once('\n').unwrap().1.to_owned()
}

async fn mooring_install(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(binary("mooring").unwrap())
        .arg("install")
        .args(args)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_embedded_manifests_are_deploy_rendered_by_kustomize() {
    let env = RealEnv::load().unwrap();
    let kustomize = env.var("KUSTOMIZE").unwrap();
    for (overlay, dir) in OVERLAYS {
        let built = tokio::process::Command::new(kustomize)
            .arg("build")
            .arg(repo().join(dir))
            .output()
            .await
            .unwrap();
        assert!(
            built.status.success(),
            "kustomize build {dir}: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        assert!(
            String::from_utf8(built.stdout).unwrap() == committed(overlay),
            "deploy/rendered/{overlay}.yaml is stale: run ./dev deploy"
        );
        let printed = mooring_install(&["--overlay", overlay]).await;
        assert!(printed.status.success());
        let file = repo().join(format!("deploy/rendered/{overlay}.yaml"));
        assert!(
            printed.stdout == std::fs::read(&file).unwrap(),
            "mooring install --overlay {overlay} does not print {}",
            file.display()
        );
    }
    let custom = mooring_install(&["--overlay", "base", "--image", "example/mooring:test"]).await;
    let text = String::from_utf8(custom.stdout).unwrap();
    assert!(text.contains("image: example/mooring:test"));
    assert!(!text.contains("image: mooring:0.1.0"));
}

#[tokio::test]
async fn install_apply_creates_everything_and_rbac_aggregates() {
    let env = RealEnv::load().unwrap();
    let installed = mooring_install(&[
        "--overlay",
        "base",
        "--apply",
        "--kubeconfig",
        env.var("KUBECONFIG").unwrap(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.status.success(),
        "mooring install --apply failed: {}",
        String::from_utf8_lossy(&installed.stderr)
    );
    for object in [
        "CustomResourceDefinition/sealedsecrets.bitnami.com",
        "ClusterRole/mooring-secrets",
        "Deployment/mooring",
        "Service/mooring",
    ] {
        assert!(
            stdout.contains(&format!("{object} applied")),
            "{object} missing in:\n{stdout}"
        );
    }
    let client = env.admin_client().await.unwrap();
    let deployment = Api::<Deployment>::namespaced(client.clone(), "mooring-system")
        .get("mooring")
        .await
        .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context.unwrap().run_as_non_root,
        Some(true),
        "the pod must run as non-root"
    );
    // The API server's aggregation controller fills mooring-gitops from the labelled roles.
    let roles: Api<ClusterRole> = Api::all(client);
    wait_for(
        "ClusterRole mooring-gitops aggregated",
        Duration::from_secs(60),
        || {
            let roles = roles.clone();
            async move {
                let role = roles.get("mooring-gitops").await.ok()?;
                let rules = role.rules?;
                rules
                    .iter()
                    .any(|r| r.resources.iter().flatten().any(|x| x == "deployments"))
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
}
