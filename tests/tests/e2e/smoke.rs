//! Smoke tests: each peer of `tests/realenv/up` is real and reachable the way mooring will use it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::application::{
    Application, ApplicationDestination, ApplicationSource, ApplicationSpec,
};
use mooring_e2e::{RealEnv, TestNamespace, wait_for};
use mooring_provider::{RemoteRef, SecretProvider};

#[tokio::test]
async fn api_server_is_the_pinned_release_and_serves_the_application_crd() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let client = env.admin_client().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.git_version, env.var("KUBERNETES_VERSION")?);

    let installed = mooring_agent::install::apply_crds(&client, Duration::from_secs(60)).await?;
    assert!(installed.contains(&"applications.mooring.dev".to_string()));

    let ns = TestNamespace::create(&env, "smoke-crd").await?;
    let apps: Api<Application> = ns.api();
    let app = Application::new(
        "platform-api",
        ApplicationSpec {
            source: ApplicationSource {
                repo_url: env.var("GIT_HTTP_URL")?.to_string() + "/seed.git",
                target_revision: Some("main".into()),
                path: Some(".".into()),
                ..Default::default()
            },
            destination: ApplicationDestination {
                server: Some("https://kubernetes.default.svc".into()),
                namespace: Some(ns.name().into()),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let params = PatchParams::apply(mooring_agent::cluster::FIELD_MANAGER);
    apps.patch("platform-api", &params, &Patch::Apply(&app))
        .await?;

    let stored = apps.get("platform-api").await?;
    assert_eq!(
        stored.spec, app.spec,
        "the API server stored the spec as applied"
    );
    let managers: Vec<_> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|entry| (entry.manager, entry.operation))
        .collect();
    assert!(
        managers.contains(&(Some("mooring".into()), Some("Apply".into()))),
        "server-side apply recorded field manager mooring: {managers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_refuses_a_service_account_until_a_role_grants_it() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let ns = TestNamespace::create(&env, "smoke-rbac").await?;
    let as_account = ns.service_account_client("reader").await?;
    let secrets: Api<Secret> = Api::namespaced(as_account, ns.name());

    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden without a Role, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta {
            name: Some("list-secrets".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader-lists-secrets".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "list-secrets".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.name().into()),
            ..Default::default()
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;

    // RBAC changes reach the authorizer through an informer: wait for it, bounded.
    wait_for(
        "the RoleBinding to take effect",
        Duration::from_secs(30),
        || {
            let secrets = secrets.clone();
            async move { secrets.list(&ListParams::default()).await.ok() }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn openbao_kv_v2_write_then_read_through_the_vault_provider() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let address = env.var("VAULT_ADDR")?;
    let token = env.var("VAULT_TOKEN")?;
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(address)
        .token(token)
        .build()?;
    let writer = vaultrs::client::VaultClient::new(settings)?;
    let path = format!("smoke/{}", std::process::id());
    let data = BTreeMap::from([("username", "app"), ("password", "from-openbao")]);
    vaultrs::kv2::set(&writer, "secret", &path, &data).await?;

    let config = mooring_provider_vault::VaultConfig {
        server: address.into(),
        mount: "secret".into(),
        version: mooring_provider_vault::KvVersion::V2,
        namespace: None,
    };
    let provider = mooring_provider_vault::VaultProvider::with_token(config.clone(), token)?;
    provider.validate().await?;
    let password = provider
        .get(&RemoteRef::key(&path).with_property("password"))
        .await?;
    assert_eq!(password.expose(), b"from-openbao");
    let fields = provider.get_map(&RemoteRef::key(&path)).await?;
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["password", "username"]);

    let missing = provider
        .get(&RemoteRef::key("smoke/does-not-exist"))
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "NotFound");
    let bad_token = mooring_provider_vault::VaultProvider::with_token(config, "not-a-token")?;
    assert_eq!(
        bad_token.validate().await.unwrap_err().reason(),
        "Forbidden"
    );
    Ok(())
}

#[tokio::test]
async fn moto_secrets_manager_write_then_read_through_the_aws_provider() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let config = mooring_provider_aws::AwsConfig {
        region: env.var("AWS_REGION")?.into(),
        endpoint_url: Some(env.var("AWS_ENDPOINT_URL")?.into()),
        credentials: Some(mooring_provider_aws::StaticCredentials {
            access_key_id: env.var("AWS_ACCESS_KEY_ID")?.into(),
            secret_access_key: env.var("AWS_SECRET_ACCESS_KEY")?.into(),
            session_token: None,
        }),
        ..Default::default()
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()))
        .endpoint_url(env.var("AWS_ENDPOINT_URL")?)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            env.var("AWS_ACCESS_KEY_ID")?,
            env.var("AWS_SECRET_ACCESS_KEY")?,
            None,
            None,
            "smoke",
        ))
        .load()
        .await;
    let name = format!("smoke/db-{}", std::process::id());
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&name)
        .secret_string(r#"{"username":"app","password":"from-moto"}"#)
        .send()
        .await
        .context("failed to create the secret in moto")?;

    let provider = mooring_provider_aws::AwsSecretsManagerProvider::new(config).await;
    provider.validate().await?;
    let password = provider
        .get(&RemoteRef::key(&name).with_property("password"))
        .await?;
    assert_eq!(password.expose(), b"from-moto");
    let current = RemoteRef {
        version: Some("AWSCURRENT".into()),
        ..RemoteRef::key(&name)
    };
    assert!(provider.get(&current).await?.expose().starts_with(b"{"));
    let missing = provider
        .get(&RemoteRef::key("smoke/does-not-exist"))
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "NotFound");
    Ok(())
}

fn git(args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Output {
    Command::new("git")
        .args(args)
        .envs(extra_env.iter().copied())
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git runs")
}

#[test]
fn git_http_server_requires_and_accepts_basic_auth() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let url = format!("{}/seed.git", env.var("GIT_HTTP_URL")?);
    let dir = tempfile::tempdir()?;

    let anonymous = git(
        &[
            "clone",
            "-q",
            &url,
            &dir.path().join("anon").to_string_lossy(),
        ],
        &[],
    );
    assert!(
        !anonymous.status.success(),
        "a clone without credentials must be refused"
    );

    let authed_url = url.replacen(
        "http://",
        &format!(
            "http://{}:{}@",
            env.var("GIT_HTTP_USER")?,
            env.var("GIT_HTTP_PASSWORD")?
        ),
        1,
    );
    let target = dir.path().join("authed");
    let cloned = git(
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &authed_url,
            &target.to_string_lossy(),
        ],
        &[],
    );
    assert!(
        cloned.status.success(),
        "{}",
        String::from_utf8_lossy(&cloned.stderr)
    );
    assert!(std::fs::read_to_string(target.join("configmap.yaml"))?.contains("kind: ConfigMap"));
    Ok(())
}

#[test]
fn git_ssh_server_accepts_the_key_and_checks_the_host_key() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let url = format!(
        "{}{}/seed.git",
        env.var("GIT_SSH_URL")?,
        env.var("GIT_REPO_ROOT")?
    );
    let key = env.var("GIT_SSH_KEY")?;
    let dir = tempfile::tempdir()?;
    let ssh = |known_hosts: &str| {
        format!(
            "ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
             -o UserKnownHostsFile={known_hosts}"
        )
    };

    let target = dir.path().join("ok");
    let trusted = ssh(env.var("GIT_SSH_KNOWN_HOSTS")?);
    let cloned = git(
        &["clone", "-q", &url, &target.to_string_lossy()],
        &[("GIT_SSH_COMMAND", &trusted)],
    );
    assert!(
        cloned.status.success(),
        "{}",
        String::from_utf8_lossy(&cloned.stderr)
    );
    assert!(target.join("configmap.yaml").exists());

    let empty_known_hosts = dir.path().join("known_hosts");
    std::fs::write(&empty_known_hosts, "")?;
    let untrusted = ssh(&empty_known_hosts.to_string_lossy());
    let refused = git(
        &[
            "clone",
            "-q",
            &url,
            &dir.path().join("refused").to_string_lossy(),
        ],
        &[("GIT_SSH_COMMAND", &untrusted)],
    );
    assert!(
        !refused.status.success(),
        "an unknown host key must be refused"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Host key verification failed"));
    Ok(())
}

#[tokio::test]
async fn agent_becomes_ready_when_the_api_server_answers_and_stops_on_request() -> anyhow::Result<()>
{
    let env = RealEnv::load()?;
    let ns = TestNamespace::create(&env, "smoke-agent").await?;
    let agent = mooring_e2e::agent(&env, ns.name())?;
    let agent = mooring_agent::Agent::bind(&agent).await?;
    let addr = agent.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent.run(async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let healthz = http.get(format!("http://{addr}/healthz")).send().await?;
    assert_eq!(healthz.status(), 200);
    wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        let request = http.get(format!("http://{addr}/readyz")).send();
        async move { request.await.ok().filter(|r| r.status() == 200) }
    })
    .await?;

    stop.send(()).ok();
    tokio::time::timeout(Duration::from_secs(15), running).await???;
    assert!(
        http.get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_err(),
        "port closed after stop"
    );
    Ok(())
}
