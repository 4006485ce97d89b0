//! Vault stores against an OpenBao that serves HTTPS only (the realenv's `VAULT_TLS_ADDR`, whose
//! CA is `VAULT_TLS_CACERT`): `caBundle`, `caProvider` from a ConfigMap and from a Secret, a
//! wrong CA, the system roots; and ClusterSecretStores validated by a real round trip.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use mooring_crds::conditions::Condition;
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::secret_store::{ClusterSecretStore, SecretStore};
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use mooring_provider::{ProviderError, SecretProvider};
use mooring_provider_vault::{KvVersion, ServerTrust, VaultConfig, VaultProvider};

/// The PEM of the TLS OpenBao's CA.
fn tls_ca(env: &RealEnv) -> String {
    std::fs::read_to_string(env.var("VAULT_TLS_CACERT").unwrap()).unwrap()
}

/// A CA that did not sign the TLS OpenBao's certificate: the test API server's.
fn other_ca(env: &RealEnv) -> String {
    let dir = env.var("REALENV_DIR").unwrap();
    std::fs::read_to_string(format!("{dir}/pki/ca.crt")).unwrap()
}

/// Writes `data` at `path` of the TLS OpenBao's `secret` KV v2 mount, as root.
async fn write_tls_kv(env: &RealEnv, path: &str, data: &BTreeMap<&str, &str>) {
    let settings = vaultrs::client::VaultClientSettingsBuilder::default()
        .address(env.var("VAULT_TLS_ADDR").unwrap())
        .token(env.var("VAULT_TOKEN").unwrap())
        .ca_certs(vec![env.var("VAULT_TLS_CACERT").unwrap().to_string()])
        .build()
        .unwrap();
    let root = vaultrs::client::VaultClient::new(settings).unwrap();
    vaultrs::kv2::set(&root, "secret", path, data)
        .await
        .unwrap();
}

fn tls_config(env: &RealEnv) -> VaultConfig {
    VaultConfig {
        server: env.var("VAULT_TLS_ADDR").unwrap().into(),
        mount: "secret".into(),
        version: KvVersion::V2,
        namespace: None,
    }
}

/// The provider alone: its CA bundle is trusted, and nothing else — neither another CA nor the
/// system roots (nor `VAULT_CACERT`, which vaultrs would read from the environment).
#[tokio::test]
async fn the_vault_client_trusts_exactly_the_configured_ca() {
    let env = RealEnv::load().unwrap();
    let token = env.var("VAULT_TOKEN").unwrap();
    let path = format!("mooring-e2e/tls-provider-{}", std::process::id());
    write_tls_kv(&env, &path, &BTreeMap::from([("password", "over-tls")])).await;

    let trusted = ServerTrust::from_pem(tls_ca(&env).as_bytes(), "caBundle").unwrap();
    let provider = VaultProvider::with_token_trusting(tls_config(&env), trusted, token).unwrap();
    provider.validate().await.unwrap();
    let value = provider
        .get(&mooring_provider::RemoteRef {
            key: path.clone(),
            property: Some("password".into()),
            version: None,
        })
        .await
        .unwrap();
    assert_eq!(value.expose(), b"over-tls");

    let wrong = ServerTrust::from_pem(other_ca(&env).as_bytes(), "caBundle").unwrap();
    let untrusted = [
        ("another CA", wrong),
        ("the system roots", ServerTrust::SystemRoots),
    ];
    for (what, trust) in untrusted {
        let provider = VaultProvider::with_token_trusting(tls_config(&env), trust, token).unwrap();
        let error = provider.validate().await.unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, ProviderError::Unavailable { .. }) && error.is_retryable(),
            "{what}: {error:?}"
        );
        assert!(
            text.contains("not trusted") && text.contains(env.var("VAULT_TLS_ADDR").unwrap()),
            "{what}: the message names the server and the untrusted certificate: {text}"
        );
    }
    assert!(ServerTrust::from_pem(b"not a certificate", "caBundle").is_err());
}

async fn create_store(ns: &TestNamespace, name: &str, vault: serde_json::Value) {
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "SecretStore",
        "metadata": {"name": name},
        "spec": {"provider": {"vault": vault}},
    }))
    .unwrap();
    ns.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
}

async fn create_external_secret(
    ns: &TestNamespace,
    name: &str,
    store: &str,
    kind: &str,
    key: &str,
) {
    let es: ExternalSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": name},
        "spec": {
            "secretStoreRef": {"name": store, "kind": kind},
            "refreshInterval": "1h",
            "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
        },
    }))
    .unwrap();
    ns.api::<ExternalSecret>()
        .create(&PostParams::default(), &es)
        .await
        .unwrap();
}

/// The `Ready` condition of a store, once `accept` takes it.
async fn store_ready<K>(
    api: &Api<K>,
    name: &str,
    accept: impl Fn(&Condition) -> bool,
) -> anyhow::Result<Condition>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + StoreStatus,
{
    wait_for(
        &format!("store {name} Ready condition"),
        Duration::from_secs(60),
        || async {
            let store = api.get(name).await.ok()?;
            let ready = store
                .conditions()
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            accept(&ready).then_some(ready)
        },
    )
    .await
}

/// Both store kinds' conditions.
trait StoreStatus {
    fn conditions(&self) -> Vec<Condition>;
}

impl StoreStatus for SecretStore {
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

impl StoreStatus for ClusterSecretStore {
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

fn is_valid(c: &Condition) -> bool {
    c.reason == "Valid" && serde_json::to_value(c.status).unwrap() == "True"
}

fn is_failed(c: &Condition) -> bool {
    c.reason == "ValidationFailed" && serde_json::to_value(c.status).unwrap() == "False"
}

/// SecretStores over TLS: the CA from `caBundle`, from a ConfigMap and from a Secret → Ready and
/// the right bytes; a wrong CA → Ready False naming the server and the untrusted certificate,
/// retried with backoff, the agent still running; a SecretStore's caProvider may not name
/// another namespace.
#[tokio::test]
async fn secret_stores_trust_their_ca_bundle_or_ca_provider_and_nothing_else() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-tls").await.unwrap();
    let path = format!("mooring-e2e/{}/db", ns.name());
    write_tls_kv(&env, &path, &BTreeMap::from([("password", "tls-password")])).await;
    let server = env.var("VAULT_TLS_ADDR").unwrap();
    let ca = tls_ca(&env);
    let secret = |name: &str, values: &[(&str, &str)]| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(
            values
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    let secrets = ns.api::<Secret>();
    for object in [
        secret("bao-token", &[("token", env.var("VAULT_TOKEN").unwrap())]),
        secret("bao-ca", &[("ca.crt", &ca)]),
    ] {
        secrets
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("bao-ca".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.pem".to_string(), ca.clone())])),
        ..Default::default()
    };
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    let token = serde_json::json!({"tokenSecretRef": {"name": "bao-token", "key": "token"}});
    let base64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let stores = [
        ("bundle", serde_json::json!({"caBundle": base64(&ca)})),
        (
            "from-configmap",
            serde_json::json!({"caProvider": {"type": "ConfigMap", "name": "bao-ca", "key": "ca.pem"}}),
        ),
        (
            "from-secret",
            serde_json::json!({"caProvider": {"type": "Secret", "name": "bao-ca", "key": "ca.crt"}}),
        ),
        (
            "wrong-ca",
            serde_json::json!({"caBundle": base64(&other_ca(&env))}),
        ),
        (
            "elsewhere",
            serde_json::json!({"caProvider": {"type": "ConfigMap", "name": "bao-ca", "key": "ca.pem", "namespace": "kube-system"}}),
        ),
    ];
    for (name, trust) in &stores {
        let mut vault = serde_json::json!({"server": server, "path": "secret", "auth": token});
        for (field, value) in trust.as_object().unwrap() {
            vault[field] = value.clone();
        }
        create_store(&ns, name, vault).await;
        create_external_secret(&ns, name, name, "SecretStore", &path).await;
    }
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let api = ns.api::<SecretStore>();

    for name in ["bundle", "from-configmap", "from-secret"] {
        store_ready(&api, name, is_valid).await.unwrap();
        ns.wait_for_secret(name, "password", b"tls-password")
            .await
            .unwrap();
    }

    let refused = store_ready(&api, "wrong-ca", is_failed).await.unwrap();
    assert!(
        refused.message.contains(server) && refused.message.contains("not trusted"),
        "the condition names the server and the untrusted certificate: {}",
        refused.message
    );
    assert!(
        secrets.get_opt("wrong-ca").await.unwrap().is_none(),
        "nothing written through an untrusted connection"
    );
    let fetched = wait_for(
        "ExternalSecret wrong-ca Fetched=Unavailable",
        Duration::from_secs(60),
        || async {
            let es = ns.api::<ExternalSecret>().get("wrong-ca").await.ok()?;
            let fetched = es
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Fetched")?;
            (fetched.reason == "Unavailable").then_some(fetched)
        },
    )
    .await
    .unwrap();
    assert!(
        fetched.message.contains("not trusted") && fetched.message.contains(server),
        "the ExternalSecret says why, naming the server: {}",
        fetched.message
    );
    // Retried (5 s, then doubling), not given up on and not crashed. The first two validations
    // are the creation and the status write's own watch event; the third is the backoff's.
    let failed_validations = format!(
        "mooring_externalsecret_provider_calls_total{{store=\"SecretStore {}/wrong-ca\",call=\"validate\",outcome=\"Unavailable\"}}",
        ns.name()
    );
    wait_for(
        "the wrong-CA store is validated again",
        Duration::from_secs(45),
        || async { (agent.metric(&failed_validations).await.ok()? >= 3.0).then_some(()) },
    )
    .await
    .unwrap();

    let elsewhere = store_ready(&api, "elsewhere", |c| c.reason == "InvalidProviderConfig")
        .await
        .unwrap();
    assert!(
        elsewhere
            .message
            .contains("caProvider.namespace may only be set on a ClusterSecretStore"),
        "{}",
        elsewhere.message
    );

    // Fixing the CA heals the store without a restart.
    let fixed = serde_json::json!({"spec": {"provider": {"vault": {"caBundle": base64(&ca)}}}});
    api.patch(
        "wrong-ca",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&fixed),
    )
    .await
    .unwrap();
    store_ready(&api, "wrong-ca", is_valid).await.unwrap();
    agent.stop().await.unwrap();
}

/// ClusterSecretStores, validated by an agent that picks them by label: Ready from a real
/// authenticated round trip (over TLS, CA from a ConfigMap in a named namespace); a bad token →
/// Ready False naming the refusal; `conditions[].namespaces` denies a namespace not listed.
#[tokio::test]
async fn cluster_secret_stores_are_validated_for_real_and_their_namespace_list_enforced() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "css-tls").await.unwrap();
    let path = format!("mooring-e2e/{}/db", ns.name());
    write_tls_kv(&env, &path, &BTreeMap::from([("password", "css-password")])).await;
    let server = env.var("VAULT_TLS_ADDR").unwrap();
    let secrets = ns.api::<Secret>();
    for (name, token) in [
        ("bao-token", env.var("VAULT_TOKEN").unwrap()),
        ("bad-token", "not-a-real-token"),
    ] {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("bao-ca".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.pem".to_string(), tls_ca(&env))])),
        ..Default::default()
    };
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();

    // The label is unique to this test: the agent validates these stores and no other test's.
    let label = format!("e2e.mooring.dev/css-test={}", ns.name());
    let (label_key, label_value) = label.split_once('=').unwrap();
    let stores: Api<ClusterSecretStore> = Api::all(ns.client());
    let css = |suffix: &str, token: &str, allowed: &str| -> ClusterSecretStore {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ClusterSecretStore",
            "metadata": {"name": format!("{}-{suffix}", ns.name()), "labels": {label_key: label_value}},
            "spec": {
                "conditions": [{"namespaces": [allowed]}],
                "provider": {"vault": {
                    "server": server,
                    "path": "secret",
                    "caProvider": {"type": "ConfigMap", "name": "bao-ca", "key": "ca.pem", "namespace": ns.name()},
                    "auth": {"tokenSecretRef": {"name": token, "key": "token", "namespace": ns.name()}},
                }},
            },
        }))
        .unwrap()
    };
    let good = css("good", "bao-token", ns.name());
    let bad = css("bad", "bad-token", ns.name());
    let elsewhere = css("elsewhere", "bao-token", "some-other-namespace");
    // A CA from "the consuming namespace" would let a tenant choose the CA of a shared client.
    let mut unpinned_ca = css("unpinned-ca", "bao-token", ns.name());
    if let Some(ca) = unpinned_ca
        .spec
        .provider
        .vault
        .as_mut()
        .and_then(|v| v.ca_provider.as_mut())
    {
        ca.namespace = None;
    }
    for store in [&good, &bad, &elsewhere, &unpinned_ca] {
        stores.create(&PostParams::default(), store).await.unwrap();
    }
    let names: Vec<String> = [&good, &bad, &elsewhere, &unpinned_ca]
        .iter()
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    create_external_secret(&ns, "good", &names[0], "ClusterSecretStore", &path).await;
    create_external_secret(&ns, "elsewhere", &names[2], "ClusterSecretStore", &path).await;

    let mut args = mooring_e2e::agent(&env, ns.name()).unwrap();
    args.cluster_secret_store_selector = Some(label.clone());
    let agent = RunningAgent::start_with(args).await.unwrap();

    let valid = store_ready(&stores, &names[0], is_valid).await.unwrap();
    assert_eq!(valid.message, "store validated");
    let refused = store_ready(&stores, &names[1], is_failed).await.unwrap();
    assert!(
        refused.message.contains("permission denied") && refused.message.contains(&names[1]),
        "the condition names the store and the refusal: {}",
        refused.message
    );
    assert!(
        !refused.message.contains("not-a-real-token"),
        "no credential in the status"
    );
    ns.wait_for_secret("good", "password", b"css-password")
        .await
        .unwrap();
    let unpinned = store_ready(&stores, &names[3], |c| c.reason == "InvalidProviderConfig")
        .await
        .unwrap();
    assert!(
        unpinned
            .message
            .contains("caProvider.namespace is required on a ClusterSecretStore"),
        "{}",
        unpinned.message
    );
    // The store itself is fine; this namespace is not on its list.
    store_ready(&stores, &names[2], is_valid).await.unwrap();
    let denied = wait_for(
        "ExternalSecret elsewhere denied",
        Duration::from_secs(60),
        || async {
            let es = ns.api::<ExternalSecret>().get("elsewhere").await.ok()?;
            let ready = es
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (ready.reason == "SecretSyncedError").then_some(ready)
        },
    )
    .await
    .unwrap();
    assert!(
        denied.message.contains("not allowed from namespace"),
        "{}",
        denied.message
    );
    assert!(secrets.get_opt("elsewhere").await.unwrap().is_none());

    agent.stop().await.unwrap();
    for name in &names {
        let _ = stores.delete(name, &DeleteParams::default()).await;
    }
}
