//! Moving from the External Secrets Operator to mooring, as the README tells users to: an
//! ExternalSecret and the Secret ESO made from it are in the cluster (ESO's field manager, its
//! controller ownerReference, its managed label and data-hash annotation). ESO stops, mooring
//! starts with the same manifests: it adopts the Secret in place (same uid, no delete and
//! re-create, so no consumer ever sees it missing) and keeps it in step with the store; a
//! SecretStore another controller class owns (`spec.controller`) is left to that controller.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::secret_store::SecretStore;
use mooring_e2e::external_secrets::openbao_token_provider;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};

/// The spec of ExternalSecret `name` as ESO users write it: key `password` from `key`'s
/// `password`, into a Secret of the same name that it owns.
fn external_secret(name: &str, store: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "refreshInterval": "1h",
        "secretStoreRef": {"name": store, "kind": "SecretStore"},
        "target": {"name": name, "creationPolicy": "Owner"},
        "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
    })
}

/// The Secret as ESO writes it for `es`: controller ownerReference, managed label, data hash,
/// written by ESO's field manager.
async fn eso_secret(ns: &TestNamespace, es: &ExternalSecret, value: &str) -> Secret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(es.name_any()),
            labels: Some(BTreeMap::from([(
                "reconcile.external-secrets.io/managed".to_string(),
                "true".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "reconcile.external-secrets.io/data-hash".to_string(),
                "0123456789abcdef0123456789abcdef".to_string(),
            )])),
            owner_references: Some(vec![es.controller_owner_ref(&()).unwrap()]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some("external-secrets".into()),
        ..Default::default()
    };
    ns.api::<Secret>().create(&params, &secret).await.unwrap()
}

#[tokio::test]
async fn secrets_made_by_eso_are_adopted_in_place() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "from-eso").await.unwrap();
    let key = format!("mooring-e2e/{}/db", ns.name());
    let data = BTreeMap::from([("password".to_string(), "rotated-since-eso".to_string())]);
    vaultrs::kv2::set(&env.openbao().unwrap(), "secret", &key, &data)
        .await
        .unwrap();

    ns.create_openbao_token(&env).await.unwrap();
    let mut provider = openbao_token_provider(env.var("VAULT_ADDR").unwrap());
    provider["vault"]["version"] = "v2".into();
    ns.create_secret_store("openbao", provider.clone())
        .await
        .unwrap();
    let still_eso: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "SecretStore",
        "metadata": {"name": "still-eso"},
        "spec": {"controller": "eso-canary", "provider": provider},
    }))
    .unwrap();
    ns.api::<SecretStore>()
        .create(&PostParams::default(), &still_eso)
        .await
        .unwrap();

    // What ESO left: the ExternalSecrets, and the Secret it made from the first (an old value).
    let es = ns
        .create_external_secret("db", external_secret("db", "openbao", &key))
        .await
        .unwrap();
    let before = eso_secret(&ns, &es, "from-eso").await;
    ns.create_external_secret("other", external_secret("other", "still-eso", &key))
        .await
        .unwrap();

    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let after = ns
        .wait_for_secret("db", "password", b"rotated-since-eso")
        .await
        .unwrap();
    assert_eq!(after.uid(), before.uid(), "the Secret was re-created");
    assert!(
        after
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == es.uid().as_ref()),
        "owner: {:?}",
        after.owner_references()
    );
    let secrets = ns.api::<ExternalSecret>();
    ns.wait_for_external_secret("db Ready", "db", "Ready", |c| c.reason == "SecretSynced")
        .await
        .unwrap();

    // The store of another controller class is not mooring's: no Secret, no status written,
    // once both ExternalSecrets were looked at.
    wait_for("both ExternalSecrets reconciled", Duration::from_secs(60), || {
        let agent = &agent;
        async move {
            let done = agent
                .metric("mooring_controller_reconciles_total{controller=\"externalsecret\",result=\"success\"}")
                .await
                .ok()?;
            (done >= 2.0).then_some(())
        }
    })
    .await
    .unwrap();
    let other = secrets.get("other").await.unwrap();
    assert!(other.status.is_none(), "status written: {:?}", other.status);
    assert!(
        ns.api::<Secret>().get_opt("other").await.unwrap().is_none(),
        "a Secret was made from another controller's store"
    );
    agent.stop().await.unwrap();
}
