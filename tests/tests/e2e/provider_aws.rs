//! The AWS Secrets Manager provider against the realenv's moto: `find` (exact filtering on top
//! of AWS's prefix/OR filters, values through `BatchGetSecretValue`, the result bound), web
//! identity and assumed-role credentials fetched once and reused. Calls are counted on the wire
//! by a loopback door in front of moto; every test uses its own secret names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mooring_e2e::{Door, RealEnv};
use mooring_provider::{FindQuery, RemoteRef, SecretProvider};
use mooring_provider_aws::{
    AssumeRole, AwsConfig, AwsSecretsManagerProvider, StaticCredentials, WebIdentity,
    WebIdentityTokenSource,
};
use zeroize::Zeroizing;

use crate::aws_support::{delete, moto, moto_door, put};

/// A name no other test (or run) uses.
fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("mooring-e2e/{what}-{}-{nanos}", std::process::id())
}

fn static_keys(env: &RealEnv) -> StaticCredentials {
    StaticCredentials {
        access_key_id: env.var("AWS_ACCESS_KEY_ID").unwrap().into(),
        secret_access_key: env.var("AWS_SECRET_ACCESS_KEY").unwrap().into(),
        session_token: None,
    }
}

fn config(env: &RealEnv, door: &Door) -> AwsConfig {
    AwsConfig {
        region: env.var("AWS_REGION").unwrap().into(),
        endpoint_url: Some(door.url.clone()),
        ..Default::default()
    }
}

#[tokio::test]
async fn find_filters_exactly_and_reads_values_in_batches_of_twenty() {
    let env = RealEnv::load().unwrap();
    let admin = moto(&env).await;
    let root = unique("find");
    let mut created = Vec::new();
    // 22 secrets that match: under the path, named db-*, tagged env=prod.
    let mut expected = BTreeMap::new();
    for i in 0..22 {
        let name = format!("{root}/app/db-{i:02}");
        let value = format!("{{\"password\":\"p-{i}\"}}");
        put(&admin, &name, &value, &[("env", "prod"), ("team", "a")]).await;
        created.push(name.clone());
        expected.insert(name, value);
    }
    // Decoys: AWS's filters would let each of them through.
    let decoys = [
        // The key and the value on different tags (AWS ORs tag-key and tag-value filters).
        (
            format!("{root}/app/db-mixed"),
            vec![("env", "dev"), ("stage", "prod")],
        ),
        // A tag value that only starts with the wanted one (AWS matches prefixes).
        (format!("{root}/app/db-prefix"), vec![("env", "production")]),
        // The right tags, a name the regexp refuses.
        (format!("{root}/app/cache-00"), vec![("env", "prod")]),
        // The right name and tags, outside the path.
        (format!("{root}/application/db-99"), vec![("env", "prod")]),
    ];
    for (name, tags) in &decoys {
        put(&admin, name, "decoy", tags).await;
        created.push(name.clone());
    }

    let door = moto_door(&env).await;
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        credentials: Some(static_keys(&env)),
        ..config(&env, &door)
    })
    .await;
    let query = FindQuery::new(
        Some(format!("{root}/app/")),
        Some("/db-[0-9]+$"),
        BTreeMap::from([("env".to_string(), "prod".to_string())]),
    )
    .unwrap();
    let found = provider.find(&query).await.unwrap();
    let found: BTreeMap<String, String> = found
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.expose().to_vec()).unwrap()))
        .collect();
    assert_eq!(found, expected);
    // One listing page, two batches (20 + 2), no per-secret reads.
    assert_eq!(door.count("secretsmanager.ListSecrets"), 1);
    assert_eq!(door.count("secretsmanager.BatchGetSecretValue"), 2);
    assert_eq!(door.count("secretsmanager.GetSecretValue"), 0);

    // Tags only (no path, no name): the decoy with split tags still stays out.
    let tagged = FindQuery::new(
        None,
        None,
        BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("team".to_string(), "a".to_string()),
        ]),
    )
    .unwrap();
    let found = provider.find(&tagged).await.unwrap();
    let ours: Vec<&String> = found.keys().filter(|k| k.starts_with(&root)).collect();
    assert_eq!(ours, expected.keys().collect::<Vec<_>>());
    delete(&admin, &created).await;
}

#[tokio::test]
async fn a_find_selecting_more_than_the_bound_is_refused_with_a_clear_error() {
    let env = RealEnv::load().unwrap();
    let admin = moto(&env).await;
    let root = unique("bound");
    let mut created = Vec::new();
    for i in 0..4 {
        let name = format!("{root}/k-{i}");
        put(&admin, &name, "v", &[]).await;
        created.push(name);
    }
    let door = moto_door(&env).await;
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        credentials: Some(static_keys(&env)),
        ..config(&env, &door)
    })
    .await
    .with_max_find_results(3);
    let query = FindQuery::new(Some(format!("{root}/")), Some("k-"), BTreeMap::new()).unwrap();
    let error = provider.find(&query).await.unwrap_err();
    assert_eq!(error.reason(), "InvalidConfig");
    let text = error.to_string();
    assert!(text.contains("more than 3 secrets"), "{text}");
    assert!(text.contains("find.path"), "{text}");
    // Refused before any value was read.
    assert_eq!(door.count("secretsmanager.BatchGetSecretValue"), 0);
    // Within the bound, the same store answers.
    let narrower =
        FindQuery::new(Some(format!("{root}/")), Some("k-[01]$"), BTreeMap::new()).unwrap();
    assert_eq!(provider.find(&narrower).await.unwrap().len(), 2);
    delete(&admin, &created).await;
}

/// A token source that hands out a fixed (fake) token and counts requests.
struct FixedTokens {
    token: String,
    requests: AtomicUsize,
}

#[async_trait::async_trait]
impl WebIdentityTokenSource for FixedTokens {
    async fn token(&self) -> Result<Zeroizing<String>, mooring_provider::ProviderError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok(Zeroizing::new(self.token.clone()))
    }
}

#[tokio::test]
async fn web_identity_credentials_are_fetched_once_and_sign_every_read() {
    let env = RealEnv::load().unwrap();
    let admin = moto(&env).await;
    let name = unique("jwt");
    put(&admin, &name, r#"{"password":"via-web-identity"}"#, &[]).await;
    let door = moto_door(&env).await;
    let tokens = Arc::new(FixedTokens {
        token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln".into(),
        requests: AtomicUsize::new(0),
    });
    let role_arn = format!("arn:aws:iam::123456789012:role/{}", name.replace('/', "-"));
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        web_identity: Some(WebIdentity {
            role_arn: role_arn.clone(),
            session_name: "mooring-test".into(),
            session_duration: None,
            tokens: tokens.clone(),
        }),
        ..config(&env, &door)
    })
    .await;
    provider.validate().await.unwrap();
    let reference = RemoteRef::key(&name).with_property("password");
    for _ in 0..10 {
        assert_eq!(
            provider.get(&reference).await.unwrap().expose(),
            b"via-web-identity"
        );
    }
    assert_eq!(door.count("Action=AssumeRoleWithWebIdentity"), 1);
    assert_eq!(tokens.requests.load(Ordering::SeqCst), 1);
    assert_eq!(door.form_values("RoleArn"), [role_arn]);
    // Every Secrets Manager call (1 validate + 10 reads) is signed with STS's temporary key,
    // none with the realenv's static one.
    assert_eq!(door.count("/secretsmanager/aws4_request"), 11);
    assert_eq!(door.count("Credential=ASIA"), 11);
    assert_eq!(door.count("Credential=testing/"), 0);
    delete(&admin, &[name]).await;
}

#[tokio::test]
async fn an_assumed_role_over_static_keys_is_assumed_once_with_its_external_id() {
    let env = RealEnv::load().unwrap();
    let admin = moto(&env).await;
    let name = unique("role");
    put(&admin, &name, "role-value", &[]).await;
    let door = moto_door(&env).await;
    let role_arn = format!("arn:aws:iam::123456789012:role/{}", name.replace('/', "-"));
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        credentials: Some(static_keys(&env)),
        assume_role: Some(AssumeRole {
            role_arn: role_arn.clone(),
            external_id: Some("tenant-a".into()),
            session_name: "mooring-test".into(),
            session_duration: None,
        }),
        ..config(&env, &door)
    })
    .await;
    let reference = RemoteRef::key(&name);
    for _ in 0..5 {
        assert_eq!(
            provider.get(&reference).await.unwrap().expose(),
            b"role-value"
        );
    }
    assert_eq!(door.count("Action=AssumeRole&"), 1);
    assert_eq!(door.form_values("RoleArn"), [role_arn]);
    assert_eq!(door.form_values("ExternalId"), ["tenant-a"]);
    // The static keys sign only the AssumeRole call; the reads use the role's session.
    assert_eq!(door.count("Credential=testing/"), 1);
    assert_eq!(door.count("/secretsmanager/aws4_request"), 5);
    assert_eq!(door.count("Credential=ASIA"), 5);
    delete(&admin, &[name]).await;
}

#[tokio::test]
async fn an_unreachable_sts_is_reported_naming_the_field_and_role_but_not_the_token() {
    let env = RealEnv::load().unwrap();
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let secret_token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.dG9rZW4tYnl0ZXM";
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        region: env.var("AWS_REGION").unwrap().into(),
        endpoint_url: Some(format!("http://{closed}")),
        web_identity: Some(WebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/unreachable".into(),
            session_name: "mooring-test".into(),
            session_duration: None,
            tokens: Arc::new(FixedTokens {
                token: secret_token.into(),
                requests: AtomicUsize::new(0),
            }),
        }),
        ..Default::default()
    })
    .await;
    let error = provider.get(&RemoteRef::key("anything")).await.unwrap_err();
    assert_eq!(error.reason(), "Unavailable");
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        text.push_str(&format!(": {s} {s:?}"));
        source = s.source();
    }
    assert!(text.contains("spec.provider.aws.auth.jwt"), "{text}");
    assert!(text.contains("AssumeRoleWithWebIdentity"), "{text}");
    assert!(text.contains("role/unreachable"), "{text}");
    assert!(!text.contains("dG9rZW4tYnl0ZXM"), "{text}");
}

#[tokio::test]
async fn short_lived_credentials_are_refreshed_before_they_expire() {
    let env = RealEnv::load().unwrap();
    let admin = moto(&env).await;
    let name = unique("refresh");
    put(&admin, &name, "refresh-value", &[]).await;
    let door = moto_door(&env).await;
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        credentials: Some(static_keys(&env)),
        assume_role: Some(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/short-lived".into(),
            external_id: None,
            session_name: "mooring-test".into(),
            // moto honours any duration; two thirds of 6 s is the refresh point.
            session_duration: Some(std::time::Duration::from_secs(6)),
        }),
        ..config(&env, &door)
    })
    .await;
    let reference = RemoteRef::key(&name);
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(
            provider.get(&reference).await.unwrap().expose(),
            b"refresh-value"
        );
    }
    if started.elapsed() < std::time::Duration::from_secs(3) {
        // Well within the session: one AssumeRole for all reads.
        assert_eq!(door.count("Action=AssumeRole&"), 1);
    }
    // Reading on, the session is renewed (after about 4 s, before its 6 s are up).
    let renewed = mooring_e2e::wait_for(
        "a second AssumeRole",
        std::time::Duration::from_secs(30),
        || {
            let (provider, reference, door) = (&provider, &reference, &door);
            async move {
                provider.get(reference).await.unwrap();
                (door.count("Action=AssumeRole&") >= 2).then(std::time::Instant::now)
            }
        },
    )
    .await
    .unwrap();
    let age = renewed - started;
    assert!(age < std::time::Duration::from_secs(6), "{age:?}");
    assert_eq!(door.form_values("DurationSeconds"), ["6", "6"]);
    delete(&admin, &[name]).await;
}

#[tokio::test]
async fn a_role_assumed_on_top_of_web_identity_is_signed_by_the_web_identity_session() {
    let env = RealEnv::load().unwrap();
    let admin = moto(&env).await;
    let name = unique("chain");
    put(&admin, &name, "chained-value", &[]).await;
    let door = moto_door(&env).await;
    let tokens = Arc::new(FixedTokens {
        token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaGFpbiJ9.c2ln".into(),
        requests: AtomicUsize::new(0),
    });
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        web_identity: Some(WebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/irsa".into(),
            session_name: "mooring-test".into(),
            session_duration: None,
            tokens: tokens.clone(),
        }),
        assume_role: Some(AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/target".into(),
            external_id: None,
            session_name: "mooring-test".into(),
            session_duration: None,
        }),
        ..config(&env, &door)
    })
    .await;
    for _ in 0..4 {
        assert_eq!(
            provider.get(&RemoteRef::key(&name)).await.unwrap().expose(),
            b"chained-value"
        );
    }
    assert_eq!(door.count("Action=AssumeRoleWithWebIdentity"), 1);
    assert_eq!(door.count("Action=AssumeRole&"), 1);
    assert_eq!(
        door.form_values("RoleArn"),
        [
            "arn:aws:iam::123456789012:role/irsa",
            "arn:aws:iam::123456789012:role/target"
        ]
    );
    // AssumeRole (1) and the reads (4) are all signed with temporary keys; the web-identity
    // exchange itself is unsigned.
    assert_eq!(door.count("Credential=ASIA"), 5);
    assert_eq!(door.count("Credential=testing/"), 0);
    assert_eq!(tokens.requests.load(Ordering::SeqCst), 1);
    delete(&admin, &[name]).await;
}
