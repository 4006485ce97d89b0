//! Vault stores against an OpenBao that serves HTTPS only (the realenv's `VAULT_TLS_ADDR`, whose
//! CA is `VAULT_TLS_CACERT`): `caBundle`, `caProvider` from a ConfigMap and from a Secret, a
//! wrong CA, the system roots; and ClusterSecretStores validated by a real round trip.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use mooring_crds::conditions::Condition;
use mooring_crds::secret_store::{ClusterSecretStore, SecretStore};
use mooring_e2e::external_secrets::{has_status, openbao_token_provider, wait_for_store_ready};
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

/// An ExternalSecret's spec: key `password` from `key`'s `password`, through store `store` of
/// `kind`.
fn reading(store: &str, kind: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "secretStoreRef": {"name": store, "kind": kind},
        "refreshInterval": "1h",
        "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
    })
}

fn is_valid(c: &Condition) -> bool {
    c.reason == "Valid" && has_status(c, "True")
}

fn is_failed(c: &Condition) -> bool {
    c.reason == "ValidationFailed" && has_status(c, "False")
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
    let secrets = ns.api::<Secret>();
    ns.create_openbao_token(&env).await.unwrap();
    ns.create_secret("bao-ca", &[("ca.crt", &ca)])
        .await
        .unwrap();
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
        let mut provider = openbao_token_provider(server);
        for (field, value) in trust.as_object().unwrap() {
            provider["vault"][field] = value.clone();
        }
        ns.create_secret_store(name, provider).await.unwrap();
        ns.create_external_secret(name, reading(name, "SecretStore", &path))
            .await
            .unwrap();
    }
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let api = ns.api::<SecretStore>();

    for name in ["bundle", "from-configmap", "from-secret"] {
        wait_for_store_ready(&api, name, is_valid).await.unwrap();
        ns.wait_for_secret(name, "password", b"tls-password")
            .await
            .unwrap();
    }

    let refused = wait_for_store_ready(&api, "wrong-ca", is_failed)
        .await
        .unwrap();
    assert!(
        refused.message.contains(server) && refused.message.contains("not trusted"),
        "the condition names the server and the untrusted certificate: {}",
        refused.message
    );
    assert!(
        secrets.get_opt("wrong-ca").await.unwrap().is_none(),
        "nothing written through an untrusted connection"
    );
    let fetched = ns
        .wait_for_external_secret(
            "ExternalSecret wrong-ca Fetched=Unavailable",
            "wrong-ca",
            "Fetched",
            |c| c.reason == "Unavailable",
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

    let elsewhere =
        wait_for_store_ready(&api, "elsewhere", |c| c.reason == "InvalidProviderConfig")
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
    wait_for_store_ready(&api, "wrong-ca", is_valid)
        .await
        .unwrap();
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
    ns.create_openbao_token(&env).await.unwrap();
    ns.create_secret("bad-token", &[("token", "not-a-real-token")])
        .await
        .unwrap();
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
    ns.create_external_secret("good", reading(&names[0], "ClusterSecretStore", &path))
        .await
        .unwrap();
    let elsewhere_spec = reading(&names[2], "ClusterSecretStore", &path);
    ns.create_external_secret("elsewhere", elsewhere_spec)
        .await
        .unwrap();

    let mut args = mooring_e2e::agent(&env, ns.name()).unwrap();
    args.cluster_secret_store_selector = Some(label.clone());
    let agent = RunningAgent::start_with(args).await.unwrap();

    let valid = wait_for_store_ready(&stores, &names[0], is_valid)
        .await
        .unwrap();
    assert_eq!(valid.message, "store validated");
    let refused = wait_for_store_ready(&stores, &names[1], is_failed)
        .await
        .unwrap();
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
    let unpinned =
        wait_for_store_ready(&stores, &names[3], |c| c.reason == "InvalidProviderConfig")
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
    wait_for_store_ready(&stores, &names[2], is_valid)
        .await
        .unwrap();
    let denied = ns
        .wait_for_external_secret(
            "ExternalSecret elsewhere denied",
            "elsewhere",
            "Ready",
            |c| c.reason == "SecretSyncedError",
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
