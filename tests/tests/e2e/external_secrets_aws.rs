//! ExternalSecrets from AWS Secrets Manager (the realenv's moto) with web identity (`auth.jwt`)
//! and an assumed role (`role`, `externalID`): the agent runs against the real API server, which
//! issues the ServiceAccount tokens (TokenRequest). STS and Secrets Manager calls are counted on
//! the wire by a loopback door in front of moto, so the tests see that credentials are fetched
//! once and reused across refreshes, and which credentials signed each read.

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ObjectMeta, PostParams};
use mooring_crds::conditions::Condition;
use mooring_crds::secret_store::SecretStore;
use mooring_e2e::external_secrets::{agent_with_aws_endpoint, wait_for_store_ready};
use mooring_e2e::{Door, RealEnv, RunningAgent, TestNamespace, wait_for};

use crate::aws_support::{
    create_static_keys, delete, jwt_claims, moto, moto_door, put, static_keys_auth,
};

async fn service_account(ns: &TestNamespace, name: &str, annotations: &[(&str, &str)]) {
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
}

/// An ExternalSecret's spec refreshing every second: key `password` from `key`'s `password`,
/// through SecretStore `store`.
fn reading(store: &str, key: &str) -> serde_json::Value {
    serde_json::json!({"secretStoreRef": {"name": store}, "refreshInterval": "1s",
             "data": [{"secretKey": "password",
                       "remoteRef": {"key": key, "property": "password"}}]})
}

/// The store's Ready condition once its reason is `reason`.
async fn store_condition(ns: &TestNamespace, name: &str, reason: &str) -> Condition {
    wait_for_store_ready(&ns.api::<SecretStore>(), name, |c| c.reason == reason)
        .await
        .unwrap()
}

fn agent_args(env: &RealEnv, namespace: &str, door: &Door) -> mooring_agent::cli::RunArgs {
    agent_with_aws_endpoint(env, namespace, &door.url).unwrap()
}

/// Waits until the door has seen at least `n` reads of single secrets.
async fn reads_at_least(door: &Door, n: usize) {
    wait_for(
        &format!("{n} GetSecretValue calls"),
        Duration::from_secs(60),
        || async move { (door.count("secretsmanager.GetSecretValue") >= n).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn web_identity_from_a_service_account_token_is_exchanged_once_across_refreshes() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-awsjwt").await.unwrap();
    let admin = moto(&env).await;
    let key = format!("mooring-e2e/{}/jwt", ns.name());
    put(&admin, &key, r#"{"password":"first-jwt"}"#, &[]).await;
    let role_arn = format!("arn:aws:iam::123456789012:role/{}", ns.name());
    service_account(
        &ns,
        "app",
        &[("eks.amazonaws.com/role-arn", role_arn.as_str())],
    )
    .await;
    ns.create_secret_store(
        "store",
        serde_json::json!({"aws": {"service": "SecretsManager", "region": env.var("AWS_REGION").unwrap(),
            "auth": {"jwt": {"serviceAccountRef": {"name": "app", "audiences": ["extra-aud"]}}}}}),
    )
    .await
    .unwrap();
    let door = moto_door(&env).await;
    let agent = RunningAgent::start_with(agent_args(&env, ns.name(), &door))
        .await
        .unwrap();
    store_condition(&ns, "store", "Valid").await;
    ns.create_external_secret("db", reading("store", &key))
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"first-jwt")
        .await
        .unwrap();
    put(&admin, &key, r#"{"password":"second-jwt"}"#, &[]).await;
    ns.wait_for_secret("db", "password", b"second-jwt")
        .await
        .unwrap();
    // Several refreshes later, still the one exchange.
    let seen = door.count("secretsmanager.GetSecretValue");
    reads_at_least(&door, seen + 3).await;
    // Stopped, so the counts below are of one settled conversation.
    agent.stop().await.unwrap();
    assert_eq!(door.count("Action=AssumeRoleWithWebIdentity"), 1);
    // The role ESO would use (the ServiceAccount's annotation), with a real token for that
    // ServiceAccount, for STS's default audience plus the store's.
    assert_eq!(door.form_values("RoleArn"), [role_arn]);
    let tokens = door.form_values("WebIdentityToken");
    assert_eq!(tokens.len(), 1);
    let claims = jwt_claims(&tokens[0]);
    assert_eq!(
        claims["sub"],
        format!("system:serviceaccount:{}:app", ns.name())
    );
    assert_eq!(
        claims["aud"],
        serde_json::json!(["sts.amazonaws.com", "extra-aud"])
    );
    // Every read is signed with the exchanged (temporary) key, none with static keys.
    let reads = door.count("/secretsmanager/aws4_request");
    assert!(reads >= 4, "{reads}");
    assert_eq!(door.count("Credential=ASIA"), reads);
    delete(&admin, &[key]).await;
}

#[tokio::test]
async fn an_assumed_role_with_an_external_id_is_assumed_once_across_refreshes() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-awsrole").await.unwrap();
    let admin = moto(&env).await;
    let key = format!("mooring-e2e/{}/role", ns.name());
    put(&admin, &key, r#"{"password":"role-password"}"#, &[]).await;
    create_static_keys(&env, &ns).await;
    let role_arn = format!("arn:aws:iam::123456789012:role/{}-reader", ns.name());
    let external_id = format!("tenant-{}", ns.name());
    ns.create_secret_store(
        "store",
        serde_json::json!({"aws": {"service": "SecretsManager", "region": env.var("AWS_REGION").unwrap(),
            "role": role_arn, "externalID": external_id,
            "auth": static_keys_auth()}}),
    )
    .await
    .unwrap();
    let door = moto_door(&env).await;
    let agent = RunningAgent::start_with(agent_args(&env, ns.name(), &door))
        .await
        .unwrap();
    store_condition(&ns, "store", "Valid").await;
    ns.create_external_secret("db", reading("store", &key))
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"role-password")
        .await
        .unwrap();
    reads_at_least(&door, 4).await;
    agent.stop().await.unwrap();
    assert_eq!(door.count("Action=AssumeRole&"), 1);
    assert_eq!(door.form_values("RoleArn"), [role_arn]);
    assert_eq!(door.form_values("ExternalId"), [external_id]);
    // The static keys sign the AssumeRole only; reads use the role's session.
    assert_eq!(door.count("Credential=testing/"), 1);
    let reads = door.count("/secretsmanager/aws4_request");
    assert_eq!(door.count("Credential=ASIA"), reads);
    delete(&admin, &[key]).await;
}

#[tokio::test]
async fn web_identity_errors_name_the_store_field_and_service_account() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-awsjwterr").await.unwrap();
    // A ServiceAccount without the role annotation, and a store naming one that does not exist.
    service_account(&ns, "plain", &[]).await;
    let region = env.var("AWS_REGION").unwrap();
    ns.create_secret_store(
        "no-role",
        serde_json::json!({"aws": {"service": "SecretsManager", "region": region,
            "auth": {"jwt": {"serviceAccountRef": {"name": "plain"}}}}}),
    )
    .await
    .unwrap();
    ns.create_secret_store(
        "no-account",
        serde_json::json!({"aws": {"service": "SecretsManager", "region": region,
            "auth": {"jwt": {"serviceAccountRef": {"name": "missing"}}}}}),
    )
    .await
    .unwrap();
    let door = moto_door(&env).await;
    let agent = RunningAgent::start_with(agent_args(&env, ns.name(), &door))
        .await
        .unwrap();
    let no_role = store_condition(&ns, "no-role", "InvalidProviderConfig").await;
    for expected in [
        "no-role",
        "spec.provider.aws.auth.jwt.serviceAccountRef",
        "plain",
        "eks.amazonaws.com/role-arn",
    ] {
        assert!(
            no_role.message.contains(expected),
            "{expected}: {}",
            no_role.message
        );
    }
    let no_account = store_condition(&ns, "no-account", "InvalidProviderConfig").await;
    for expected in [
        "no-account",
        "spec.provider.aws.auth.jwt.serviceAccountRef",
        "missing",
        "does not exist",
    ] {
        assert!(
            no_account.message.contains(expected),
            "{expected}: {}",
            no_account.message
        );
    }
    // Nothing reached STS for either.
    assert_eq!(door.count("AssumeRole"), 0);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_referent_cluster_store_exchanges_the_consuming_namespaces_service_account_once() {
    use mooring_crds::secret_store::ClusterSecretStore;
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-awscss").await.unwrap();
    let admin = moto(&env).await;
    let keys: Vec<String> = ["one", "two"]
        .iter()
        .map(|k| format!("mooring-e2e/{}/{k}", ns.name()))
        .collect();
    for (key, value) in keys.iter().zip(["first-css", "second-css"]) {
        put(&admin, key, &format!("{{\"password\":\"{value}\"}}"), &[]).await;
    }
    let role_arn = format!("arn:aws:iam::123456789012:role/{}-css", ns.name());
    service_account(
        &ns,
        "app",
        &[("eks.amazonaws.com/role-arn", role_arn.as_str())],
    )
    .await;
    // No namespace on the ServiceAccount: resolved in each consuming namespace (referent).
    let css_name = format!("e2e-{}", ns.name());
    let css: ClusterSecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": css_name},
        "spec": {
            "conditions": [{"namespaces": [ns.name()]}],
            "provider": {"aws": {"service": "SecretsManager",
                "region": env.var("AWS_REGION").unwrap(),
                "auth": {"jwt": {"serviceAccountRef": {"name": "app"}}}}},
        },
    }))
    .unwrap();
    let stores: kube::Api<ClusterSecretStore> = kube::Api::all(ns.client());
    stores.create(&PostParams::default(), &css).await.unwrap();
    let door = moto_door(&env).await;
    let agent = RunningAgent::start_with(agent_args(&env, ns.name(), &door))
        .await
        .unwrap();
    for (name, key) in ["a", "b"].iter().zip(&keys) {
        let spec = serde_json::json!({"secretStoreRef": {"name": css_name, "kind": "ClusterSecretStore"},
                 "refreshInterval": "1s",
                 "data": [{"secretKey": "password",
                           "remoteRef": {"key": key, "property": "password"}}]});
        ns.create_external_secret(name, spec).await.unwrap();
    }
    ns.wait_for_secret("a", "password", b"first-css")
        .await
        .unwrap();
    ns.wait_for_secret("b", "password", b"second-css")
        .await
        .unwrap();
    let seen = door.count("secretsmanager.GetSecretValue");
    reads_at_least(&door, seen + 4).await;
    agent.stop().await.unwrap();
    // Both ExternalSecrets, every refresh: one exchange, with the consuming namespace's token.
    assert_eq!(door.count("Action=AssumeRoleWithWebIdentity"), 1);
    let tokens = door.form_values("WebIdentityToken");
    assert_eq!(
        jwt_claims(&tokens[0])["sub"],
        format!("system:serviceaccount:{}:app", ns.name())
    );
    assert_eq!(door.form_values("RoleArn"), [role_arn]);
    let _ = stores.delete(&css_name, &Default::default()).await;
    delete(&admin, &keys).await;
}

/// A copy of deploy/base's `mooring-secrets` ClusterRole (the secret controllers' rules, as
/// shipped), bound to ServiceAccount `agent` of the test namespace; both removed with it.
async fn deployed_secret_controller_rbac(ns: &TestNamespace) {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/rbac-secrets.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let shipped = docs
        .into_iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "mooring-secrets")
        .unwrap();
    let mut role: ClusterRole = serde_json::from_value(shipped).unwrap();
    let admin = ns.client();
    let namespace = kube::Api::<Namespace>::all(admin.clone())
        .get(ns.name())
        .await
        .unwrap();
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        name: ns.name().into(),
        uid: namespace.metadata.uid.unwrap(),
        ..Default::default()
    };
    let name = format!("mooring-secrets-{}", ns.name());
    role.metadata = ObjectMeta {
        name: Some(name.clone()),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    kube::Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "agent".into(),
            namespace: Some(ns.name().into()),
            ..Default::default()
        }]),
    };
    kube::Api::<ClusterRoleBinding>::all(admin)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    service_account(ns, "agent", &[]).await;
}

#[tokio::test]
async fn web_identity_works_with_exactly_the_deployed_secret_controller_rbac() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "es-awsrbac").await.unwrap();
    deployed_secret_controller_rbac(&ns).await;
    let admin = moto(&env).await;
    let key = format!("mooring-e2e/{}/rbac", ns.name());
    put(&admin, &key, r#"{"password":"rbac-jwt"}"#, &[]).await;
    let role_arn = format!("arn:aws:iam::123456789012:role/{}", ns.name());
    service_account(
        &ns,
        "app",
        &[("eks.amazonaws.com/role-arn", role_arn.as_str())],
    )
    .await;
    ns.create_secret_store(
        "store",
        serde_json::json!({"aws": {"service": "SecretsManager", "region": env.var("AWS_REGION").unwrap(),
            "auth": {"jwt": {"serviceAccountRef": {"name": "app"}}}}}),
    )
    .await
    .unwrap();
    let door = moto_door(&env).await;
    // The agent as ServiceAccount `agent`: a bound token, no admin rights.
    let dir = tempfile::tempdir().unwrap();
    let token = ns.service_account_token("agent").await.unwrap();
    let mut args = agent_args(&env, ns.name(), &door);
    args.cluster.kubeconfig =
        Some(mooring_e2e::token_kubeconfig(&env, &token, dir.path()).unwrap());
    args.controllers = vec![
        mooring_agent::cli::ControllerKind::SealedSecrets,
        mooring_agent::cli::ControllerKind::ExternalSecrets,
    ];
    let agent = RunningAgent::start_with(args).await.unwrap();
    store_condition(&ns, "store", "Valid").await;
    ns.create_external_secret("db", reading("store", &key))
        .await
        .unwrap();
    ns.wait_for_secret("db", "password", b"rbac-jwt")
        .await
        .unwrap();
    agent.stop().await.unwrap();
    assert_eq!(door.count("Action=AssumeRoleWithWebIdentity"), 1);
    assert_eq!(door.form_values("RoleArn"), [role_arn]);
    delete(&admin, &[key]).await;
}
