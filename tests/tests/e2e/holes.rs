//! Holes closed, each proven against the real peers: ServiceAccount-token Secrets are never
//! made from a SealedSecret or an ExternalSecret, nor applied from Git.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::sealed_secret::SealedSecret;
use mooring_crds::secret_store::SecretStore;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use mooring_sealing::SealingCertificate;

/// The Secret type the API server fills with a token for the ServiceAccount it names.
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// The annotations that make the token controller mint a token for ServiceAccount `default`.
fn token_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "kubernetes.io/service-account.name".to_string(),
        "default".to_string(),
    )])
}

/// Waits (at most 60 s) for an Event on `name` with `reason`; returns its note.
async fn wait_for_event(ns: &TestNamespace, name: &str, reason: &str) -> String {
    let events: Api<Event> = ns.api();
    wait_for(
        &format!("an Event {reason} on {name}"),
        Duration::from_secs(60),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items
                    .into_iter()
                    .find(|e| {
                        e.involved_object.name.as_deref() == Some(name)
                            && e.reason.as_deref() == Some(reason)
                    })
                    .map(|e| e.message.unwrap_or_default())
            }
        },
    )
    .await
    .unwrap()
}

/// A SealedSecret whose template type is `kubernetes.io/service-account-token` (sealed for the
/// agent's own key, so it would open) ends with `SecretTypeForbidden` naming the field, and no
/// Secret is written. Without the check the Secret is created and the API server mints a token
/// for ServiceAccount `default` into it.
#[tokio::test]
async fn a_sealed_secret_never_makes_a_service_account_token_secret() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "holes-ss-token").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let cert = SealingCertificate::from_pem(agent.certificate().await.unwrap().as_bytes()).unwrap();
    let plain = Secret {
        metadata: ObjectMeta {
            name: Some("minted".into()),
            namespace: Some(ns.name().into()),
            annotations: Some(token_annotations()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("note".into(), "x".into())])),
        type_: Some(SERVICE_ACCOUNT_TOKEN.into()),
        ..Default::default()
    };
    let sealed =
        mooring_sealing::secret::seal_secret(&plain, cert.public_key(), None, false).unwrap();
    assert_eq!(
        sealed.spec.template.as_ref().unwrap().type_.as_deref(),
        Some(SERVICE_ACCOUNT_TOKEN),
        "the type travels in the template, as kubeseal writes it"
    );
    ns.api::<SealedSecret>()
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();

    let (reason, message) = ns.wait_for_synced("minted", "False").await.unwrap();
    assert_eq!(reason, "SecretTypeForbidden");
    assert!(
        message.starts_with(&format!(
            "spec.template.type \"{SERVICE_ACCOUNT_TOKEN}\" is refused"
        )),
        "{message}"
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("minted")
            .await
            .unwrap()
            .is_none(),
        "no Secret is written"
    );
    agent.stop().await.unwrap();
}

/// An ExternalSecret whose `target.template.type` is `kubernetes.io/service-account-token` is
/// refused before OpenBao is read: Ready False (ESO's `SecretSyncedError`) with a message naming
/// the field, the error metric labelled `SecretTypeForbidden`, and no Secret.
#[tokio::test]
async fn an_external_secret_never_makes_a_service_account_token_secret() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "holes-es-token").await.unwrap();
    let path = format!("mooring-e2e/{}/token", ns.name());
    let value = BTreeMap::from([("note", "x")]);
    vaultrs::kv2::set(&env.openbao().unwrap(), "secret", &path, &value)
        .await
        .unwrap();
    let token = Secret {
        metadata: ObjectMeta {
            name: Some("bao-token".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "token".into(),
            ByteString(env.var("VAULT_TOKEN").unwrap().as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "SecretStore",
        "metadata": {"name": "store"},
        "spec": {"provider": {"vault": {
            "server": env.var("VAULT_ADDR").unwrap(),
            "path": "secret",
            "version": "v2",
            "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token"}},
        }}},
    }))
    .unwrap();
    ns.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();
    let es: ExternalSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": "minted"},
        "spec": {
            "secretStoreRef": {"name": "store", "kind": "SecretStore"},
            "target": {"template": {
                "type": SERVICE_ACCOUNT_TOKEN,
                "metadata": {"annotations": token_annotations()},
            }},
            "dataFrom": [{"extract": {"key": path}}],
        },
    }))
    .unwrap();
    ns.api::<ExternalSecret>()
        .create(&PostParams::default(), &es)
        .await
        .unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();

    let api: Api<ExternalSecret> = ns.api();
    let ready = wait_for("Ready=False", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let conditions = api.get("minted").await.ok()?.status?.conditions;
            let ready = conditions.into_iter().find(|c| c.type_ == "Ready")?;
            (serde_json::to_value(ready.status).ok()? == "False").then_some(ready)
        }
    })
    .await
    .unwrap();
    // Ready and the Event keep ESO's words for a failed sync; the refusal's own word is the
    // metric's label.
    assert_eq!(ready.reason, "SecretSyncedError");
    assert!(
        ready.message.starts_with(&format!(
            "spec.target.template.type \"{SERVICE_ACCOUNT_TOKEN}\" is refused"
        )),
        "{}",
        ready.message
    );
    let note = wait_for_event(&ns, "minted", "UpdateFailed").await;
    assert!(note.contains("spec.target.template.type"), "{note}");
    assert!(
        agent
            .metric("mooring_externalsecret_errors_total{reason=\"SecretTypeForbidden\"")
            .await
            .unwrap()
            >= 1.0
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("minted")
            .await
            .unwrap()
            .is_none(),
        "no Secret is written"
    );
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn an_application_never_applies_a_service_account_token_secret() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "holes-gitops-token")
        .await
        .unwrap();
    let repo = mooring_e2e::GitRepo::create(&env, "holes-gitops-token").unwrap();
    repo.write(
        "app/token.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: minted\n  annotations:\n    \
             kubernetes.io/service-account.name: default\ntype: {SERVICE_ACCOUNT_TOKEN}\n"
        ),
    )
    .unwrap();
    let (url, _) = repo
        .serve_over_http(&env, "a token Secret in Git", &[&ns])
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let args = mooring_e2e::gitops::gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
    let _agent = RunningAgent::start_with(args).await.unwrap();
    let app = mooring_e2e::gitops::ApplicationManifest::new("tokens", ns.name(), &url, "app")
        .application()
        .unwrap();
    ns.apply_application(&app).await.unwrap();
    let refused = ns
        .wait_for_application(
            "Application tokens refused",
            "tokens",
            Duration::from_secs(90),
            |app| {
                app.status.as_ref().is_some_and(|status| {
                    status
                        .conditions
                        .iter()
                        .any(|c| c.message.contains("kubernetes.io/service-account-token"))
                })
            },
        )
        .await
        .unwrap();
    let message = refused.status.unwrap().conditions[0].message.clone();
    assert!(
        message.contains("Secret") && message.contains("minted"),
        "{message}"
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("minted")
            .await
            .unwrap()
            .is_none(),
        "no token Secret was created"
    );
}
