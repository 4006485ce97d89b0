//! ExternalSecrets end to end: the agent runs against the real API server and reads from the real
//! OpenBao and moto servers of the realenv; every test has its own namespace and its own paths in
//! the shared servers.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::conditions::Condition;
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::secret_store::SecretStore;
use mooring_e2e::external_secrets::{
    agent_with_aws_endpoint, openbao_token_provider, wait_for_store_ready,
};
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use tokio::io::AsyncReadExt;

use crate::aws_support::{create_static_keys, moto, static_keys_auth};

/// Arguments for an agent watching `namespace`, with the realenv's AWS endpoint.
fn agent_args(env: &RealEnv, namespace: &str) -> mooring_agent::cli::RunArgs {
    agent_with_aws_endpoint(env, namespace, env.var("AWS_ENDPOINT_URL").unwrap()).unwrap()
}

/// Waits until SecretStore `name` is Ready (reason `Valid`).
async fn store_valid(ns: &TestNamespace, name: &str) -> Condition {
    wait_for_store_ready(&ns.api::<SecretStore>(), name, |c| c.reason == "Valid")
        .await
        .unwrap()
}

/// Every Event of the namespace, as text.
async fn events_text(ns: &TestNamespace) -> String {
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    serde_json::to_string(&events.items).unwrap()
}

/// The shared trio for one provider: create → the Secret has the right bytes; the remote value
/// changes → the Secret follows within the refresh interval; the remote key is deleted → the
/// Secret is kept and the status says NotFound. Also: one login for all of it.
async fn create_update_delete(
    ns: &TestNamespace,
    agent: &RunningAgent,
    store_label: &str,
    remote: &dyn RemoteStore,
) {
    ns.create_external_secret(
        "db",
        serde_json::json!({
            "secretStoreRef": {"name": "store", "kind": "SecretStore"},
            "refreshInterval": "2s",
            "target": {
                "name": "db-creds",
                "template": {
                    "mergePolicy": "Merge",
                    "data": {"dsn": "postgres://{{ .username }}:{{ .password }}@db/app"}
                }
            },
            "data": [{"secretKey": "password", "remoteRef": {"key": remote.key(), "property": "password"}}],
            "dataFrom": [{"extract": {"key": remote.key()}}],
        }),
    )
    .await
    .unwrap();
    let secret = ns
        .wait_for_secret("db-creds", "password", b"first-password")
        .await
        .unwrap();
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["username"].0, b"app");
    assert_eq!(data["dsn"].0, b"postgres://app:first-password@db/app");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("ExternalSecret", Some(true))
    );
    let managers: Vec<_> = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| Some((m.manager.clone()?, m.operation.clone()?)))
        .collect();
    assert!(
        managers.contains(&("mooring".into(), "Apply".into())),
        "written by server-side apply as mooring: {managers:?}"
    );
    ns.wait_for_condition("db", "Ready", "True", "SecretSynced")
        .await
        .unwrap();
    store_valid(ns, "store").await;

    // The remote value changes: the Secret follows within the refresh interval (2 s + jitter).
    remote
        .put(r#"{"username":"app","password":"second-password"}"#)
        .await;
    let started = std::time::Instant::now();
    ns.wait_for_secret("db-creds", "password", b"second-password")
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "updated after {:?}",
        started.elapsed()
    );

    // The remote key is deleted: the Secret is kept, the status says NotFound.
    remote.delete().await;
    let fetched = ns
        .wait_for_condition("db", "Fetched", "False", "NotFound")
        .await
        .unwrap();
    assert!(
        fetched.message.contains(remote.key()),
        "{}",
        fetched.message
    );
    ns.wait_for_condition("db", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    let kept = ns.api::<Secret>().get("db-creds").await.unwrap();
    assert_eq!(
        kept.data.as_ref().unwrap()["password"].0,
        b"second-password"
    );

    // Many reconciles, one login (the store validation and every refresh share the client).
    let logins = agent
        .metric(&format!(
            "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/store\",call=\"login\",outcome=\"ok\"}}",
            ns.name()
        ))
        .await
        .unwrap();
    assert_eq!(logins, 1.0, "{store_label}: one login");
    let reads = agent
        .metric(&format!(
            "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/store\",call=\"get\",outcome=\"ok\"}}",
            ns.name()
        ))
        .await
        .unwrap();
    assert!(reads >= 2.0, "{store_label}: {reads} reads");

    // Events only on change: one Created, one Updated (the remote change), one UpdateFailed
    // (the key gone), however many refreshes and retries happened (a repeat would show as a
    // series on the Event).
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let about_db: Vec<&Event> = events
        .iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some("ExternalSecret"))
        .filter(|e| e.involved_object.name.as_deref() == Some("db"))
        .collect();
    for reason in ["Created", "Updated", "UpdateFailed"] {
        let matching: Vec<&&Event> = about_db
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect();
        assert_eq!(matching.len(), 1, "{store_label}: one {reason} event");
        assert!(
            matching[0].series.is_none() && matching[0].count.unwrap_or(1) == 1,
            "{store_label}: {reason} published once: {:?}",
            matching[0]
        );
    }

    // Nothing secret in the status or the events.
    let status =
        serde_json::to_string(&ns.api::<ExternalSecret>().get("db").await.unwrap().status).unwrap();
    let events = events_text(ns).await;
    for value in ["first-password", "second-password"] {
        assert!(!status.contains(value), "status leaks {value}: {status}");
        assert!(!events.contains(value), "events leak {value}");
    }
}

/// A remote secret in one of the real servers.
#[async_trait::async_trait]
trait RemoteStore: Sync {
    fn key(&self) -> &str;
    async fn put(&self, json: &str);
    async fn delete(&self);
}

struct OpenBaoKv2 {
    client: vaultrs::client::VaultClient,
    path: String,
}

#[async_trait::async_trait]
impl RemoteStore for OpenBaoKv2 {
    fn key(&self) -> &str {
        &self.path
    }

    async fn put(&self, json: &str) {
        let data: BTreeMap<String, String> = serde_json::from_str(json).unwrap();
        vaultrs::kv2::set(&self.client, "secret", &self.path, &data)
            .await
            .unwrap();
    }

    async fn delete(&self) {
        vaultrs::kv2::delete_metadata(&self.client, "secret", &self.path)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn openbao_kv2_token_auth_create_update_and_not_found() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-bao").await.unwrap();
    let remote = OpenBaoKv2 {
        client: env.openbao().unwrap(),
        path: format!("mooring-e2e/{}/db", ns.name()),
    };
    remote
        .put(r#"{"username":"app","password":"first-password"}"#)
        .await;
    let mut provider = openbao_token_provider(env.var("VAULT_ADDR").unwrap());
    provider["vault"]["version"] = "v2".into();
    let agent = ns
        .start_agent_with_store(&env, provider, agent_args(&env, ns.name()))
        .await
        .unwrap();
    create_update_delete(&ns, &agent, "openbao", &remote).await;
    agent.stop().await.unwrap();
}

struct MotoSecret {
    client: aws_sdk_secretsmanager::Client,
    name: String,
}

#[async_trait::async_trait]
impl RemoteStore for MotoSecret {
    fn key(&self) -> &str {
        &self.name
    }

    async fn put(&self, json: &str) {
        let updated = self
            .client
            .put_secret_value()
            .secret_id(&self.name)
            .secret_string(json)
            .send()
            .await;
        if updated.is_err() {
            self.client
                .create_secret()
                .name(&self.name)
                .secret_string(json)
                .send()
                .await
                .unwrap();
        }
    }

    async fn delete(&self) {
        self.client
            .delete_secret()
            .secret_id(&self.name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn aws_secrets_manager_static_keys_create_update_and_not_found() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-aws").await.unwrap();
    let remote = MotoSecret {
        client: moto(&env).await,
        name: format!("mooring-e2e/{}/db", ns.name()),
    };
    remote
        .put(r#"{"username":"app","password":"first-password"}"#)
        .await;
    create_static_keys(&env, &ns).await;
    ns.create_secret_store(
        "store",
        serde_json::json!({"aws": {
            "service": "SecretsManager",
            "region": env.var("AWS_REGION").unwrap(),
            "auth": static_keys_auth(),
        }}),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    create_update_delete(&ns, &agent, "aws", &remote).await;
    agent.stop().await.unwrap();
}

/// Secret bytes appear nowhere but in the Secret: not in statuses, events or the agent's logs
/// (at debug level), on success and on failures that involve the values (a template that
/// fails on them, a decoding that fails on them, a missing property).
#[tokio::test]
async fn secret_bytes_never_reach_status_events_or_logs() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-leak").await.unwrap();
    let vault = env.openbao().unwrap();
    let path = format!("mooring-e2e/{}/leak", ns.name());
    const VALUE: &str = "Zq9-leak-canary-7Hx";
    let data = BTreeMap::from([("password", VALUE), ("user", "app")]);
    vaultrs::kv2::set(&vault, "secret", &path, &data)
        .await
        .unwrap();
    ns.create_openbao_token(&env).await.unwrap();
    ns.create_secret_store(
        "store",
        openbao_token_provider(env.var("VAULT_ADDR").unwrap()),
    )
    .await
    .unwrap();

    // The agent binary, as deployed, with debug logs captured.
    let mut child = tokio::process::Command::new(mooring_e2e::binary("mooring").unwrap())
        .args([
            "run",
            "--kubeconfig",
            env.var("KUBECONFIG").unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--namespace",
            ns.name(),
            "--watch-namespace",
            ns.name(),
            "--key-renew-period",
            "0",
        ])
        .env(
            "RUST_LOG",
            "debug,hyper=info,h2=info,tower=info,rustls=info",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read both pipes while the agent runs, so a full pipe never blocks it.
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout_pipe = child.stdout.take().unwrap();
    let stderr_reader = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let stdout_reader = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text).await;
        text
    });

    let ok = serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
        "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]});
    ns.create_external_secret("ok", ok).await.unwrap();
    let template = serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
        "target": {"template": {"data": {"x": "{{ .password | b64dec }}"}}},
        "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]});
    ns.create_external_secret("template", template)
        .await
        .unwrap();
    let decode = serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
        "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password", "decodingStrategy": "Base64"}}]});
    ns.create_external_secret("decode", decode).await.unwrap();
    let property = serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
        "data": [{"secretKey": "p", "remoteRef": {"key": path, "property": "nope"}}]});
    ns.create_external_secret("property", property)
        .await
        .unwrap();

    ns.wait_for_secret("ok", "password", VALUE.as_bytes())
        .await
        .unwrap();
    let template_failed = ns
        .wait_for_condition("template", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    assert!(
        template_failed.message.contains("\"x\""),
        "{}",
        template_failed.message
    );
    ns.wait_for_condition("decode", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    ns.wait_for_condition("property", "Fetched", "False", "NotFound")
        .await
        .unwrap();
    // Let more refreshes and failure retries go by: wait for two more refreshes of "ok".
    let refreshed = |es: ExternalSecret| es.status.and_then(|s| s.refresh_time);
    let first = refreshed(ns.api::<ExternalSecret>().get("ok").await.unwrap());
    for _ in 0..2 {
        let before = refreshed(ns.api::<ExternalSecret>().get("ok").await.unwrap());
        let api: Api<ExternalSecret> = ns.api();
        wait_for("another refresh", Duration::from_secs(30), || {
            let (api, before) = (api.clone(), before.clone());
            async move { (refreshed(api.get("ok").await.ok()?) != before).then_some(()) }
        })
        .await
        .unwrap();
    }
    assert_ne!(
        first,
        refreshed(ns.api::<ExternalSecret>().get("ok").await.unwrap())
    );

    let _ = child.start_kill();
    let _ = child.wait().await;
    let logs = stderr_reader.await.unwrap();
    let stdout = stdout_reader.await.unwrap();
    assert!(
        logs.contains("failed to sync ExternalSecret"),
        "the logs are captured"
    );

    let statuses = serde_json::to_string(
        &ns.api::<ExternalSecret>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|es| es.status.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let events = events_text(&ns).await;
    for (place, text) in [
        ("status", &statuses),
        ("events", &events),
        ("logs", &logs),
        ("stdout", &stdout),
    ] {
        assert!(!text.contains(VALUE), "the value leaked into {place}");
        assert!(
            !text.contains("Zq9-leak"),
            "part of the value leaked into {place}"
        );
    }
}

/// A drifted Secret is repaired from the last read values without a provider call, and an
/// unsupported field is named in a condition instead of being ignored.
#[tokio::test]
async fn drift_is_repaired_without_a_provider_call_and_unsupported_fields_are_named() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-drift").await.unwrap();
    let vault = env.openbao().unwrap();
    let path = format!("mooring-e2e/{}/drift", ns.name());
    let data = serde_json::json!({"password": "drift-password", "db": {"user": "nested-user"}});
    vaultrs::kv2::set(&vault, "secret", &path, &data)
        .await
        .unwrap();
    let agent = ns
        .start_agent_with_store(
            &env,
            openbao_token_provider(env.var("VAULT_ADDR").unwrap()),
            agent_args(&env, ns.name()),
        )
        .await
        .unwrap();
    ns.create_external_secret(
        "drift",
        serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1h",
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("drift", "password", b"drift-password")
        .await
        .unwrap();
    ns.wait_for_condition("drift", "Ready", "True", "SecretSynced")
        .await
        .unwrap();
    let reads_metric = format!(
        "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/store\",call=\"get\"",
        ns.name()
    );
    let reads = agent.metric(&reads_metric).await.unwrap();

    let secrets: Api<Secret> = ns.api();
    let edit = serde_json::json!({"data": {"password": "ZWRpdGVk"}});
    secrets
        .patch("drift", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    ns.wait_for_secret("drift", "password", b"drift-password")
        .await
        .unwrap();
    secrets.delete("drift", &Default::default()).await.unwrap();
    ns.wait_for_secret("drift", "password", b"drift-password")
        .await
        .unwrap();
    assert_eq!(
        agent.metric(&reads_metric).await.unwrap(),
        reads,
        "no provider call for drift"
    );

    // A store without `path` (the mount is the key's first segment, `data/` tolerated, as ESO)
    // and a nested property.
    ns.create_secret_store(
        "nopath",
        serde_json::json!({"vault": {
            "server": env.var("VAULT_ADDR").unwrap(),
            "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token"}},
        }}),
    )
    .await
    .unwrap();
    ns.create_external_secret(
        "nested",
        serde_json::json!({"secretStoreRef": {"name": "nopath"},
            "data": [{"secretKey": "user", "remoteRef": {"key": format!("secret/data/{path}"), "property": "db.user"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("nested", "user", b"nested-user")
        .await
        .unwrap();

    ns.create_external_secret(
        "merge",
        serde_json::json!({"secretStoreRef": {"name": "store"},
            "dataFrom": [{"find": {"name": {"regexp": ".*"}}, "rewrite": [{"merge": {"into": "all"}}]}]}),
    )
    .await
    .unwrap();
    let unsupported = ns
        .wait_for_condition("merge", "UnsupportedFields", "True", "UnsupportedFields")
        .await
        .unwrap();
    assert!(
        unsupported
            .message
            .contains("spec.dataFrom[0].rewrite[0].merge"),
        "{}",
        unsupported.message
    );
    agent.stop().await.unwrap();
}

/// Mounts and auth methods of one test in the shared OpenBao, removed when dropped.
struct BaoMounts {
    env: RealEnv,
    paths: Vec<String>,
}

impl Drop for BaoMounts {
    fn drop(&mut self) {
        let env = self.env.clone();
        let paths = std::mem::take(&mut self.paths);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = reqwest::Client::new();
                for path in paths {
                    let _ = client
                        .delete(format!("{}/v1/{path}", env.var("VAULT_ADDR").unwrap()))
                        .header("X-Vault-Token", env.var("VAULT_TOKEN").unwrap())
                        .send()
                        .await;
                }
            });
        })
        .join();
    }
}

/// A policy reading this test's paths only.
async fn bao_policy(env: &RealEnv, ns: &TestNamespace, kv1: &str) -> String {
    let name = format!("e2e-{}", ns.name());
    let policy = format!(
        "path \"{kv1}/*\" {{ capabilities = [\"read\"] }}\n\
         path \"secret/data/mooring-e2e/{ns}/*\" {{ capabilities = [\"read\"] }}\n",
        ns = ns.name()
    );
    env.openbao_api(
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{name}"),
        Some(serde_json::json!({"policy": policy})),
    )
    .await
    .unwrap();
    name
}

#[tokio::test]
async fn openbao_approle_auth_with_kv_v1() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-approle").await.unwrap();
    let kv1 = format!("kv1-{}", ns.name());
    let approle = format!("approle-{}", ns.name());
    let _mounts = BaoMounts {
        env: env.clone(),
        paths: vec![format!("sys/mounts/{kv1}"), format!("sys/auth/{approle}")],
    };
    env.openbao_api(
        reqwest::Method::POST,
        &format!("sys/mounts/{kv1}"),
        Some(serde_json::json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await
    .unwrap();
    env.openbao_api(
        reqwest::Method::POST,
        &format!("{kv1}/db"),
        Some(serde_json::json!({"username": "app", "password": "approle-password"})),
    )
    .await
    .unwrap();
    let policy = bao_policy(&env, &ns, &kv1).await;
    env.openbao_api(
        reqwest::Method::POST,
        &format!("sys/auth/{approle}"),
        Some(serde_json::json!({"type": "approle"})),
    )
    .await
    .unwrap();
    let (role_id, secret_id) = env
        .openbao_approle(
            &approle,
            "app",
            serde_json::json!({"token_policies": [policy], "token_ttl": "1h"}),
        )
        .await
        .unwrap();
    ns.create_secret("approle", &[("secret-id", &secret_id)])
        .await
        .unwrap();
    ns.create_secret_store(
        "store",
        serde_json::json!({"vault": {
            "server": env.var("VAULT_ADDR").unwrap(),
            "path": kv1,
            "version": "v1",
            "auth": {"appRole": {"path": approle, "roleId": role_id,
                                 "secretRef": {"name": "approle", "key": "secret-id"}}},
        }}),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    let ready = store_valid(&ns, "store").await;
    assert_eq!(ready.message, "store validated");
    ns.create_external_secret(
        "db",
        serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
            "dataFrom": [{"extract": {"key": "db"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("db", "password", b"approle-password")
        .await
        .unwrap();
    // Several refreshes later, still the one login.
    let refreshes = "mooring_externalsecret_syncs_total{outcome=\"refreshed\"}";
    wait_for("three refreshes", Duration::from_secs(30), || {
        let agent = &agent;
        async move { (agent.metric(refreshes).await.ok()? >= 3.0).then_some(()) }
    })
    .await
    .unwrap();
    let logins = agent
        .metric(&format!(
            "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/store\",call=\"login\",outcome=\"ok\"}}",
            ns.name()
        ))
        .await
        .unwrap();
    assert_eq!(
        logins, 1.0,
        "one AppRole login for the store validation and every refresh"
    );

    // A token that expires after 6 s: the agent logs in again before it does (two thirds of
    // the lease), and no read is ever refused.
    let (short_role, short_secret) = env
        .openbao_approle(
            &approle,
            "short",
            serde_json::json!({"token_policies": [format!("e2e-{}", ns.name())],
                "token_ttl": "6s", "token_max_ttl": "6s"}),
        )
        .await
        .unwrap();
    ns.create_secret("short", &[("secret-id", &short_secret)])
        .await
        .unwrap();
    ns.create_secret_store(
        "short",
        serde_json::json!({"vault": {
            "server": env.var("VAULT_ADDR").unwrap(),
            "path": format!("kv1-{}", ns.name()),
            "version": "v1",
            "auth": {"appRole": {"path": format!("approle-{}", ns.name()), "roleId": short_role,
                                 "secretRef": {"name": "short", "key": "secret-id"}}},
        }}),
    )
    .await
    .unwrap();
    ns.create_external_secret(
        "short",
        serde_json::json!({"secretStoreRef": {"name": "short"}, "refreshInterval": "1s",
            "dataFrom": [{"extract": {"key": "db"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("short", "password", b"approle-password")
        .await
        .unwrap();
    let short_calls = |call: &str, outcome: &str| {
        format!(
            "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/short\",call=\"{call}\",outcome=\"{outcome}\"}}",
            ns.name()
        )
    };
    wait_for(
        "a second login before the first token expires",
        Duration::from_secs(30),
        || {
            let (agent, metric) = (&agent, short_calls("login", "ok"));
            async move { (agent.metric(&metric).await.ok()? >= 2.0).then_some(()) }
        },
    )
    .await
    .unwrap();
    // Reads continue past the first token's end (6 s) without a refusal.
    let reads_before = agent.metric(&short_calls("get", "ok")).await.unwrap();
    wait_for("four more reads", Duration::from_secs(30), || {
        let (agent, metric) = (&agent, short_calls("get", "ok"));
        async move { (agent.metric(&metric).await.ok()? >= reads_before + 4.0).then_some(()) }
    })
    .await
    .unwrap();
    assert_eq!(
        agent
            .metric(&short_calls("get", "Forbidden"))
            .await
            .unwrap(),
        0.0
    );

    // A wrong secret id: the store says ValidationFailed (a real round trip, not a config check).
    ns.create_secret(
        "wrong",
        &[("secret-id", "00000000-0000-0000-0000-000000000000")],
    )
    .await
    .unwrap();
    ns.create_secret_store(
        "wrong",
        serde_json::json!({"vault": {
            "server": env.var("VAULT_ADDR").unwrap(),
            "path": format!("kv1-{}", ns.name()),
            "version": "v1",
            "auth": {"appRole": {"path": format!("approle-{}", ns.name()), "roleId": "nope",
                                 "secretRef": {"name": "wrong", "key": "secret-id"}}},
        }}),
    )
    .await
    .unwrap();
    let failed = wait_for_store_ready(&ns.api::<SecretStore>(), "wrong", |c| {
        c.reason == "ValidationFailed"
    })
    .await
    .unwrap();
    assert!(
        failed.message.contains("refused the login"),
        "{}",
        failed.message
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn openbao_kubernetes_auth_with_a_requested_service_account_token() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-k8sauth").await.unwrap();
    let mount = format!("k8s-{}", ns.name());
    let _mounts = BaoMounts {
        env: env.clone(),
        paths: vec![format!("sys/auth/{mount}")],
    };
    // The reviewer: a ServiceAccount allowed to create TokenReviews (system:auth-delegator).
    ns.service_account_client("reviewer").await.unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{}-reviewer", ns.name())),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "system:auth-delegator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reviewer".into(),
            namespace: Some(ns.name().into()),
            ..Default::default()
        }]),
    };
    let bindings: Api<ClusterRoleBinding> = Api::all(ns.client());
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let reviewer_jwt = ns.service_account_token("reviewer").await.unwrap();
    let ca = std::fs::read_to_string(
        std::path::Path::new(env.var("REALENV_DIR").unwrap()).join("pki/ca.crt"),
    )
    .unwrap();
    let host = env.admin_config().await.unwrap().cluster_url.to_string();
    env.openbao_api(
        reqwest::Method::POST,
        &format!("sys/auth/{mount}"),
        Some(serde_json::json!({"type": "kubernetes"})),
    )
    .await
    .unwrap();
    env.openbao_api(reqwest::Method::POST, &format!("auth/{mount}/config"),
        Some(serde_json::json!({"kubernetes_host": host.trim_end_matches('/'), "kubernetes_ca_cert": ca,
            "token_reviewer_jwt": reviewer_jwt, "disable_local_ca_jwt": true}))).await.unwrap();
    let policy = bao_policy(&env, &ns, "none").await;
    env.openbao_api(
        reqwest::Method::POST,
        &format!("auth/{mount}/role/app"),
        Some(serde_json::json!({"bound_service_account_names": ["app"],
            "bound_service_account_namespaces": [ns.name()],
            "token_policies": [policy], "token_ttl": "1h"})),
    )
    .await
    .unwrap();
    // The application's ServiceAccount; the agent requests its token (TokenRequest).
    ns.api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("app".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let path = format!("mooring-e2e/{}/k8s", ns.name());
    let data = BTreeMap::from([("password", "k8s-auth-password")]);
    vaultrs::kv2::set(&env.openbao().unwrap(), "secret", &path, &data)
        .await
        .unwrap();
    ns.create_secret_store(
        "store",
        serde_json::json!({"vault": {
            "server": env.var("VAULT_ADDR").unwrap(),
            "path": "secret",
            "version": "v2",
            "auth": {"kubernetes": {"mountPath": mount, "role": "app",
                                    "serviceAccountRef": {"name": "app"}}},
        }}),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();
    store_valid(&ns, "store").await;
    ns.create_external_secret(
        "db",
        serde_json::json!({"secretStoreRef": {"name": "store"},
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("db", "password", b"k8s-auth-password")
        .await
        .unwrap();
    let _ = bindings
        .delete(&format!("{}-reviewer", ns.name()), &Default::default())
        .await;
    agent.stop().await.unwrap();
}

/// Identical reads from several ExternalSecrets reach the provider once; a ClusterSecretStore's
/// conditions are enforced on every use; creationPolicy Merge/Orphan and deletionPolicy Delete
/// behave as ESO's.
#[tokio::test]
async fn shared_reads_cluster_store_conditions_and_policies() {
    use kube::api::DeleteParams;
    use mooring_crds::secret_store::ClusterSecretStore;
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-css").await.unwrap();
    let vault = env.openbao().unwrap();
    let path = format!("mooring-e2e/{}/shared", ns.name());
    let gone = format!("mooring-e2e/{}/gone", ns.name());
    let data = BTreeMap::from([("password", "shared-password")]);
    vaultrs::kv2::set(&vault, "secret", &path, &data)
        .await
        .unwrap();
    vaultrs::kv2::set(&vault, "secret", &gone, &data)
        .await
        .unwrap();
    ns.create_openbao_token(&env).await.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ns.client());
    let label = |value: Option<&str>| serde_json::json!({"metadata": {"labels": {"e2e.mooring.dev/css-allowed": value}}});
    namespaces
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(&label(Some("yes"))),
        )
        .await
        .unwrap();
    let css_name = format!("e2e-{}", ns.name());
    let css: ClusterSecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ClusterSecretStore",
        "metadata": {"name": css_name},
        "spec": {
            "conditions": [{"namespaceSelector": {"matchLabels": {"e2e.mooring.dev/css-allowed": "yes"}}}],
            "provider": {"vault": {
                "server": env.var("VAULT_ADDR").unwrap(),
                "path": "secret",
                "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token", "namespace": ns.name()}},
            }},
        },
    }))
    .unwrap();
    let stores: Api<ClusterSecretStore> = Api::all(ns.client());
    stores.create(&PostParams::default(), &css).await.unwrap();
    ns.create_secret_store(
        "store",
        openbao_token_provider(env.var("VAULT_ADDR").unwrap()),
    )
    .await
    .unwrap();
    let agent = RunningAgent::start_with(agent_args(&env, ns.name()))
        .await
        .unwrap();

    // Two ExternalSecrets, one remote read.
    for name in ["a", "b"] {
        ns.create_external_secret(
            name,
            serde_json::json!({"secretStoreRef": {"name": css_name, "kind": "ClusterSecretStore"},
                "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
        )
        .await
        .unwrap();
    }
    ns.wait_for_secret("a", "password", b"shared-password")
        .await
        .unwrap();
    ns.wait_for_secret("b", "password", b"shared-password")
        .await
        .unwrap();
    let calls = |call: &str| {
        format!(
            "mooring_externalsecret_provider_calls_total{{store=\"ClusterSecretStore {css_name}\",call=\"{call}\",outcome=\"ok\"}}"
        )
    };
    assert_eq!(
        agent.metric(&calls("get")).await.unwrap(),
        1.0,
        "one provider read"
    );
    assert!(
        agent.metric(&calls("coalesced")).await.unwrap() >= 1.0,
        "the second ExternalSecret reused the first one's read"
    );

    // The namespace loses the label: the next use is denied, the Secret stays.
    namespaces
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(&label(None)),
        )
        .await
        .unwrap();
    let force = serde_json::json!({"metadata": {"annotations": {"force-sync": "1"}}});
    ns.api::<ExternalSecret>()
        .patch("a", &PatchParams::default(), &Patch::Merge(&force))
        .await
        .unwrap();
    let denied = ns
        .wait_for_condition("a", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    assert!(
        denied.message.contains("not allowed from namespace"),
        "{}",
        denied.message
    );
    assert!(
        ns.api::<Secret>().get_opt("a").await.unwrap().is_some(),
        "Secret kept"
    );

    // creationPolicy Merge: keys go into an existing Secret, whose other keys and owner stay.
    ns.create_secret("existing", &[("keep", "theirs")])
        .await
        .unwrap();
    ns.create_external_secret(
        "merge",
        serde_json::json!({"secretStoreRef": {"name": "store"},
            "target": {"name": "existing", "creationPolicy": "Merge"},
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    let merged = ns
        .wait_for_secret("existing", "password", b"shared-password")
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap()["keep"].0, b"theirs");
    assert!(merged.metadata.owner_references.is_none());
    // ... and never creates one.
    ns.create_external_secret(
        "merge-missing",
        serde_json::json!({"secretStoreRef": {"name": "store"},
            "target": {"name": "absent", "creationPolicy": "Merge"},
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_condition("merge-missing", "Ready", "True", "SecretMissing")
        .await
        .unwrap();
    assert!(
        ns.api::<Secret>()
            .get_opt("absent")
            .await
            .unwrap()
            .is_none()
    );

    // creationPolicy Orphan: no owner reference.
    ns.create_external_secret(
        "orphan",
        serde_json::json!({"secretStoreRef": {"name": "store"},
            "target": {"creationPolicy": "Orphan"},
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    let orphan = ns
        .wait_for_secret("orphan", "password", b"shared-password")
        .await
        .unwrap();
    assert!(orphan.metadata.owner_references.is_none());

    // deletionPolicy Delete: the Secret goes when the remote data is gone.
    ns.create_external_secret(
        "gone",
        serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
            "target": {"deletionPolicy": "Delete"},
            "data": [{"secretKey": "password", "remoteRef": {"key": gone, "property": "password"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("gone", "password", b"shared-password")
        .await
        .unwrap();
    vaultrs::kv2::delete_metadata(&vault, "secret", &gone)
        .await
        .unwrap();
    ns.wait_for_condition("gone", "Ready", "False", "SecretDeleted")
        .await
        .unwrap();
    assert!(
        ns.api::<Secret>().get_opt("gone").await.unwrap().is_none(),
        "Secret deleted"
    );

    agent.stop().await.unwrap();
    let _ = stores.delete(&css_name, &DeleteParams::default()).await;
}

/// A TCP forwarder to a real server that a test can take down and bring back.
struct Outage {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Outage {
    async fn forward_to(target: String) -> Outage {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            std::sync::Arc::default();
        let (flag, tasks) = (up.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Outage {
            addr,
            up,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

/// The store's server goes away: the Secret is kept, the status says Unavailable; when the
/// server returns, the ExternalSecret recovers by itself.
#[tokio::test]
async fn server_outage_keeps_the_secret_reports_unavailable_and_recovers() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-outage").await.unwrap();
    let vault = env.openbao().unwrap();
    let path = format!("mooring-e2e/{}/outage", ns.name());
    let data = BTreeMap::from([("password", "outage-password")]);
    vaultrs::kv2::set(&vault, "secret", &path, &data)
        .await
        .unwrap();
    let target = env
        .var("VAULT_ADDR")
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let outage = Outage::forward_to(target).await;
    let agent = ns
        .start_agent_with_store(
            &env,
            openbao_token_provider(&outage.url()),
            agent_args(&env, ns.name()),
        )
        .await
        .unwrap();
    ns.create_external_secret(
        "db",
        serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    ns.wait_for_secret("db", "password", b"outage-password")
        .await
        .unwrap();

    outage.down();
    let fetched = ns
        .wait_for_condition("db", "Fetched", "False", "Unavailable")
        .await
        .unwrap();
    assert!(fetched.message.contains(&path), "{}", fetched.message);
    ns.wait_for_condition("db", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    let kept = ns.api::<Secret>().get("db").await.unwrap();
    assert_eq!(
        kept.data.unwrap()["password"].0,
        b"outage-password",
        "Secret kept as it was"
    );

    outage.up();
    ns.wait_for_condition("db", "Ready", "True", "SecretSynced")
        .await
        .unwrap();
    ns.wait_for_condition("db", "Fetched", "True", "Fetched")
        .await
        .unwrap();
    agent.stop().await.unwrap();
}

/// `target.immutable`: the Secret is created immutable; a later remote change is reported and
/// the Secret is left as it is.
#[tokio::test]
async fn an_immutable_target_is_never_rewritten() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-immutable").await.unwrap();
    let vault = env.openbao().unwrap();
    let path = format!("mooring-e2e/{}/immutable", ns.name());
    vaultrs::kv2::set(
        &vault,
        "secret",
        &path,
        &BTreeMap::from([("password", "v1")]),
    )
    .await
    .unwrap();
    let agent = ns
        .start_agent_with_store(
            &env,
            openbao_token_provider(env.var("VAULT_ADDR").unwrap()),
            agent_args(&env, ns.name()),
        )
        .await
        .unwrap();
    ns.create_external_secret(
        "frozen",
        serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1s",
            "target": {"immutable": true},
            "data": [{"secretKey": "password", "remoteRef": {"key": path, "property": "password"}}]}),
    )
    .await
    .unwrap();
    let secret = ns
        .wait_for_secret("frozen", "password", b"v1")
        .await
        .unwrap();
    assert_eq!(secret.immutable, Some(true));
    vaultrs::kv2::set(
        &vault,
        "secret",
        &path,
        &BTreeMap::from([("password", "v2")]),
    )
    .await
    .unwrap();
    let failed = ns
        .wait_for_condition("frozen", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    assert!(failed.message.contains("immutable"), "{}", failed.message);
    let kept = ns.api::<Secret>().get("frozen").await.unwrap();
    assert_eq!(kept.data.unwrap()["password"].0, b"v1");
    agent.stop().await.unwrap();
}

/// The keys of Secret `name` and their bytes.
async fn secret_data(ns: &TestNamespace, name: &str) -> BTreeMap<String, Vec<u8>> {
    let secret = ns.api::<Secret>().get(name).await.unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

#[tokio::test]
async fn openbao_find_by_name_and_tags_with_rewrite_and_new_matches() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-find").await.unwrap();
    let root = env.openbao().unwrap();
    let base = format!("mooring-e2e/{}", ns.name());
    let put = |path: String, json: serde_json::Value| {
        let root = &root;
        async move {
            vaultrs::kv2::set(root, "secret", &path, &json)
                .await
                .unwrap();
            path
        }
    };
    let mut written = vec![
        put(
            format!("{base}/app/db"),
            serde_json::json!({"user": "u1", "password": "find-password"}),
        )
        .await,
        put(
            format!("{base}/app/cache"),
            serde_json::json!({"token": "find-token"}),
        )
        .await,
        put(format!("{base}/other/x"), serde_json::json!({"v": "no"})).await,
        put(format!("{base}/tagged/one"), serde_json::json!({"t": "1"})).await,
        put(format!("{base}/tagged/two"), serde_json::json!({"t": "2"})).await,
    ];
    for (path, team) in [("tagged/one", ns.name()), ("tagged/two", "someone-else")] {
        env.openbao_api(
            reqwest::Method::POST,
            &format!("secret/metadata/{base}/{path}"),
            Some(serde_json::json!({"custom_metadata": {"team": team}})),
        )
        .await
        .unwrap();
    }
    let mut provider = openbao_token_provider(env.var("VAULT_ADDR").unwrap());
    provider["vault"]["version"] = "v2".into();
    let agent = ns
        .start_agent_with_store(&env, provider, agent_args(&env, ns.name()))
        .await
        .unwrap();

    // By name regexp under a path, keys rewritten in order: a regexp with a group, then a
    // template.
    ns.create_external_secret(
        "found",
        serde_json::json!({
            "secretStoreRef": {"name": "store"},
            "refreshInterval": "2s",
            "dataFrom": [{
                "find": {"path": format!("{base}/app"), "name": {"regexp": "/app/(db|cache|queue)$"}},
                "rewrite": [
                    {"regexp": {"source": "^mooring-e2e/[^/]+/app/(.*)$", "target": "app-$1"}},
                    {"transform": {"template": "{{ .value | upper }}"}},
                ],
            }],
        }),
    )
    .await
    .unwrap();
    // By tags (KV v2 custom metadata); keys named by the default conversion (`/` → `_`). Two
    // ExternalSecrets with one query share one read of it.
    for name in ["tagged", "tagged-again"] {
        ns.create_external_secret(
            name,
            serde_json::json!({
                "secretStoreRef": {"name": "store"},
                "refreshInterval": "1h",
                "dataFrom": [{"find": {"path": base, "tags": {"team": ns.name()}}}],
            }),
        )
        .await
        .unwrap();
    }
    // A rewrite that cannot compile: the error names the field.
    ns.create_external_secret(
        "bad-rewrite",
        serde_json::json!({
            "secretStoreRef": {"name": "store"},
            "dataFrom": [{
                "find": {"path": base, "name": {"regexp": "."}},
                "rewrite": [{"regexp": {"source": "(unclosed", "target": "x"}}],
            }],
        }),
    )
    .await
    .unwrap();

    ns.wait_for_secret(
        "found",
        "APP-DB",
        br#"{"password":"find-password","user":"u1"}"#,
    )
    .await
    .unwrap();
    let found = secret_data(&ns, "found").await;
    assert_eq!(
        found,
        BTreeMap::from([
            (
                "APP-CACHE".to_string(),
                br#"{"token":"find-token"}"#.to_vec()
            ),
            (
                "APP-DB".to_string(),
                br#"{"password":"find-password","user":"u1"}"#.to_vec()
            ),
        ]),
        "exactly the matches, rewritten"
    );
    ns.wait_for_condition("found", "Ready", "True", "SecretSynced")
        .await
        .unwrap();

    let tagged_key = format!("{}_tagged_one", base.replace('/', "_"));
    ns.wait_for_secret("tagged", &tagged_key, br#"{"t":"1"}"#)
        .await
        .unwrap();
    assert_eq!(
        secret_data(&ns, "tagged").await.keys().collect::<Vec<_>>(),
        [&tagged_key],
        "only the secret with the tag"
    );
    ns.wait_for_secret("tagged-again", &tagged_key, br#"{"t":"1"}"#)
        .await
        .unwrap();
    let shared = agent
        .metric(&format!(
            "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/store\",call=\"coalesced\",outcome=\"ok\"}}",
            ns.name()
        ))
        .await
        .unwrap();
    assert!(
        shared >= 1.0,
        "the second tag query was served from the first: {shared}"
    );

    let bad = ns
        .wait_for_condition("bad-rewrite", "Ready", "False", "SecretSyncedError")
        .await
        .unwrap();
    assert!(
        bad.message
            .contains("spec.dataFrom[0].rewrite[0].regexp.source"),
        "{}",
        bad.message
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("bad-rewrite")
            .await
            .unwrap()
            .is_none(),
        "nothing written after a failed rewrite"
    );

    // A new matching remote secret appears in the Secret at the next refresh.
    written.push(put(format!("{base}/app/queue"), serde_json::json!({"q": "1"})).await);
    let started = std::time::Instant::now();
    ns.wait_for_secret("found", "APP-QUEUE", br#"{"q":"1"}"#)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "picked up after {:?}",
        started.elapsed()
    );
    assert_eq!(secret_data(&ns, "found").await.len(), 3);

    let finds = agent
        .metric(&format!(
            "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/store\",call=\"find\",outcome=\"ok\"}}",
            ns.name()
        ))
        .await
        .unwrap();
    assert!(finds >= 3.0, "{finds} finds counted");
    agent.stop().await.unwrap();
    for path in written {
        vaultrs::kv2::delete_metadata(&root, "secret", &path)
            .await
            .unwrap();
    }
}
