//! The demo's cluster side (`mooring demo`, what `./dev demo` runs after starting the agent) in a
//! test namespace: seed repository with a SealedSecret sealed by the real `kubeseal` and an
//! ExternalSecret reading the real OpenBao, root Application, everything synced and Healthy (the
//! staging Deployment's pod really runs, on a kwok Node); then a commit to the staging overlay
//! is followed, and a second run reuses the repository.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use mooring_agent::demo::{Demo, EXTERNAL_NAME, SEALED_NAME};
use mooring_crds::application::HealthState;
use mooring_e2e::gitops::agent_with_git;
use mooring_e2e::workloads::wait_for_ready_nodes;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};

/// Waits until the staging Deployment has `replicas` available pods, then until both demo
/// Applications report Healthy.
async fn wait_healthy(ns: &TestNamespace, replicas: i32, timeout: Duration) {
    let deployments = ns.api::<Deployment>();
    let what = format!("the staging Deployment with {replicas} available replicas");
    wait_for(&what, timeout, || {
        let deployments = deployments.clone();
        async move {
            let deployment = deployments.get("platform-api").await.ok()?;
            let wanted = deployment.spec?.replicas == Some(replicas);
            let available = deployment.status?.available_replicas == Some(replicas);
            (wanted && available).then_some(())
        }
    })
    .await
    .unwrap();
    for name in ["platform-api", "root"] {
        ns.wait_for_health(name, HealthState::Healthy, timeout)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_demo_syncs_the_seed_layout_with_both_secret_kinds_and_follows_a_commit() {
    let env = RealEnv::load().unwrap();
    let client = env.admin_client().await.unwrap();
    wait_for_ready_nodes(&env, Duration::from_secs(60))
        .await
        .unwrap();
    mooring_agent::install::apply_crds(&client, Duration::from_secs(60))
        .await
        .unwrap();
    // As `./dev demo` runs it: the agent in a namespace of its own, the demo's Applications in
    // another, admitted by the AppProject `default` that `mooring demo` applies.
    let ns = TestNamespace::create(&env, "demo").await.unwrap();
    let agent_ns = TestNamespace::create(&env, "demo-agent").await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut args = agent_with_git(&env, agent_ns.name(), cache.path()).unwrap();
    args.watch_namespace = Some(ns.name().to_owned());
    args.git_allow_file_urls = true;
    let agent = RunningAgent::start_with(args).await.unwrap();
    mooring_agent::demo::admit_namespace(&client, agent_ns.name(), ns.name())
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let demo = Demo {
        client: client.clone(),
        namespace: ns.name().to_owned(),
        dir: dir.path().to_path_buf(),
        agent_url: format!("http://{}", agent.addr),
        kubeseal: mooring_e2e::binary("kubeseal").unwrap(),
        vault_addr: env.var("VAULT_ADDR").unwrap().to_owned(),
        vault_token: env.var("VAULT_TOKEN").unwrap().to_owned(),
        vault_path: format!("mooring-e2e/{}/db", ns.name()),
    };
    let timeout = Duration::from_secs(120);
    demo.wait_for_agent(timeout).await.unwrap();
    demo.prepare_cluster().await.unwrap();
    let head = demo.prepare_repo().await.unwrap();
    for file in [
        "bootstrap/root-app.yaml",
        "argocd-apps/platform-api.yaml",
        "apps/platform-api/base/sealedsecret.yaml",
        "apps/platform-api/base/externalsecret.yaml",
        "apps/platform-api/base/secretstore.yaml",
        "apps/platform-api/overlays/production/kustomization.yaml",
    ] {
        let tracked = demo.git(&["ls-files", file]).unwrap();
        assert_eq!(tracked.trim(), file, "{file} is committed");
    }
    let sealed =
        std::fs::read_to_string(demo.repo().join("apps/platform-api/base/sealedsecret.yaml"))
            .unwrap();
    assert!(sealed.contains("kind: SealedSecret"), "{sealed}");

    demo.bootstrap().await.unwrap();
    demo.wait_synced(&head, timeout).await.unwrap();
    // Staging runs one replica: the Applications are Healthy once its pod is Ready.
    wait_healthy(&ns, 1, timeout).await;
    let status = demo.status().await.unwrap();
    let table = status.to_string();
    for app in &status.applications {
        assert_eq!(app.sync, "Synced", "{table}");
        assert_eq!(app.revision.as_deref(), Some(head.as_str()), "{table}");
        assert_eq!(app.health, "Healthy", "{table}");
    }
    let row = |name: &str| {
        status
            .secrets
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} in {table}"))
            .clone()
    };
    assert_eq!(row(SEALED_NAME).from, format!("SealedSecret/{SEALED_NAME}"));
    assert_eq!(row(SEALED_NAME).keys, ["API_KEY"]);
    assert_eq!(
        row(EXTERNAL_NAME).from,
        format!("ExternalSecret/{EXTERNAL_NAME}")
    );
    assert_eq!(row(EXTERNAL_NAME).keys, ["password", "username"]);
    // The table names keys, never values.
    let secrets = ns.api::<Secret>();
    for name in [SEALED_NAME, EXTERNAL_NAME] {
        let secret = secrets.get(name).await.unwrap();
        // The random values (a username such as "platform-api" may well appear as a name).
        for (key, value) in secret.data.unwrap() {
            if key == "username" {
                continue;
            }
            let text = String::from_utf8_lossy(&value.0).into_owned();
            assert!(!table.contains(&text), "{name}'s value in the table");
            assert!(!sealed.contains(&text), "{name}'s value in the repository");
        }
    }
    assert!(table.contains(&head[..7]), "{table}");

    // What the demo tells the user to do: edit the staging overlay and commit.
    let replicas = "apps/platform-api/overlays/staging/replicas.yaml";
    let text = std::fs::read_to_string(demo.repo().join(replicas)).unwrap();
    assert!(text.contains("replicas: 1"), "{text}");
    demo.write(replicas, &text.replace("replicas: 1", "replicas: 2"))
        .unwrap();
    let second = demo.commit("staging: two replicas").unwrap();
    assert_ne!(second, head);
    demo.wait_synced(&second, timeout).await.unwrap();
    wait_healthy(&ns, 2, timeout).await;

    // A second run reuses the repository: the user's commit stays, the SealedSecret still
    // decrypts, so nothing is resealed or committed.
    demo.prepare_cluster().await.unwrap();
    let again = demo.prepare_repo().await.unwrap();
    assert_eq!(again, second);
    demo.bootstrap().await.unwrap();
    demo.wait_synced(&again, timeout).await.unwrap();

    agent.stop().await.unwrap();
    // The value this test wrote into the shared OpenBao.
    let removed = reqwest::Client::new()
        .delete(format!(
            "{}/v1/secret/metadata/{}",
            demo.vault_addr, demo.vault_path
        ))
        .header("X-Vault-Token", &demo.vault_token)
        .send()
        .await
        .unwrap();
    assert!(removed.status().is_success(), "{}", removed.status());
}
