//! Moving from Argo CD to mooring, as the README tells users to: objects Argo CD applied (its
//! field manager, its tracking annotation and label, kubectl's last-applied annotation) are in
//! the cluster; the same Application manifest with only `apiVersion` changed is created for
//! mooring. mooring takes the objects over in place (same uid, its tracking id added), and an
//! object Argo CD tracked that is not in Git is left alone, even with `prune: true`: mooring never
//! prunes what it did not apply itself.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::PostParams;
use mooring_crds::application::Application;
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, wait_for};

const ARGO_MANAGER: &str = "argocd-controller";

/// A ConfigMap as Argo CD leaves it: created by its manager with client-side apply, carrying
/// its tracking annotation, its instance label and kubectl's last-applied configuration.
fn argo_config_map(ns: &str, name: &str, value: &str) -> ConfigMap {
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"LOG_LEVEL": value},
    });
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/instance": "platform-api"},
            "annotations": {
                "argocd.argoproj.io/tracking-id": format!("platform-api:/ConfigMap:{ns}/{name}"),
                "kubectl.kubernetes.io/last-applied-configuration": manifest.to_string(),
            },
        },
        "data": {"LOG_LEVEL": value},
    }))
    .unwrap()
}

#[tokio::test]
async fn argo_cd_objects_are_taken_over_in_place_and_never_pruned_unseen() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "from-argo").await.unwrap();

    // What Argo CD applied: one object still in Git (with an older value), one no longer in Git.
    let configs = ns.api::<ConfigMap>();
    let create = PostParams {
        field_manager: Some(ARGO_MANAGER.into()),
        ..Default::default()
    };
    let kept = configs
        .create(
            &create,
            &argo_config_map(ns.name(), "platform-api-config", "debug"),
        )
        .await
        .unwrap();
    let left = configs
        .create(
            &create,
            &argo_config_map(ns.name(), "platform-api-legacy", "info"),
        )
        .await
        .unwrap();

    let repo = GitRepo::create(&env, "from-argo").unwrap();
    let url = repo.file_url();
    let commit = repo
        .commit_files(
            &[(
                "apps/platform-api/configmap.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: platform-api-config\ndata:\n  LOG_LEVEL: info\n",
            )],
            "platform-api",
        )
        .unwrap();
    // The Argo CD manifest, `apiVersion` changed and nothing else.
    let app = ApplicationManifest::new("platform-api", ns.name(), &url, "apps/platform-api")
        .application()
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let mut args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
    args.git_allow_file_urls = true;
    let agent = RunningAgent::start_with(args).await.unwrap();
    ns.apply_application(&app).await.unwrap();
    ns.wait_for_synced_at("platform-api", &commit)
        .await
        .unwrap();

    // Taken over in place: same object, Git's value, mooring's tracking id beside Argo's.
    let now = configs.get("platform-api-config").await.unwrap();
    assert_eq!(now.uid(), kept.uid(), "re-created instead of taken over");
    assert_eq!(
        now.data
            .as_ref()
            .unwrap()
            .get("LOG_LEVEL")
            .map(String::as_str),
        Some("info")
    );
    assert_eq!(
        now.annotations().get("mooring.dev/tracking-id"),
        Some(&format!(
            "{ns}/platform-api:/ConfigMap:{ns}/platform-api-config",
            ns = ns.name()
        ))
    );
    let managers: Vec<String> = now
        .managed_fields()
        .iter()
        .filter_map(|entry| entry.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "mooring"),
        "managers: {managers:?}"
    );

    // Argo CD's other object is not in Git and not in mooring's inventory: left alone, also
    // by the syncs after the first.
    wait_for("two more syncs", Duration::from_secs(60), || {
        let agent = &agent;
        async move {
            let syncs = agent.metric("mooring_application_syncs_total").await.ok()?;
            (syncs >= 3.0).then_some(())
        }
    })
    .await
    .unwrap();
    let after_more_syncs = ns.api::<Application>().get("platform-api").await.unwrap();
    let inventory: Vec<String> = after_more_syncs
        .status
        .unwrap()
        .resources
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(inventory, vec!["platform-api-config".to_string()]);
    let still = configs.get_opt("platform-api-legacy").await.unwrap();
    assert_eq!(
        still.map(|c| c.uid()),
        Some(left.uid()),
        "an object mooring never applied was pruned"
    );
    agent.stop().await.unwrap();
}
