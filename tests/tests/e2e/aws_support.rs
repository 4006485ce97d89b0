//! Shared by the tests that talk to moto: an admin client for it, and a loopback door in front
//! of it that keeps what clients send, so tests count STS and Secrets Manager calls on the wire
//! and see which credentials signed them.

use mooring_e2e::{Door, RealEnv, TestNamespace};

/// A Secrets Manager client for moto with the realenv's static keys (test set-up only).
pub async fn moto(env: &RealEnv) -> aws_sdk_secretsmanager::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            env.var("AWS_REGION").unwrap().to_string(),
        ))
        .endpoint_url(env.var("AWS_ENDPOINT_URL").unwrap())
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            env.var("AWS_ACCESS_KEY_ID").unwrap(),
            env.var("AWS_SECRET_ACCESS_KEY").unwrap(),
            None,
            None,
            "e2e-admin",
        ))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&sdk)
}

/// Creates Secret `aws-keys` with the realenv's static keys (`access-key`, `secret-access-key`),
/// which [`static_keys_auth`] reads.
pub async fn create_static_keys(env: &RealEnv, ns: &TestNamespace) {
    ns.create_secret(
        "aws-keys",
        &[
            ("access-key", env.var("AWS_ACCESS_KEY_ID").unwrap()),
            (
                "secret-access-key",
                env.var("AWS_SECRET_ACCESS_KEY").unwrap(),
            ),
        ],
    )
    .await
    .unwrap();
}

/// The `auth` of an AWS store that signs with the keys of [`create_static_keys`].
pub fn static_keys_auth() -> serde_json::Value {
    serde_json::json!({"secretRef": {
        "accessKeyIDSecretRef": {"name": "aws-keys", "key": "access-key"},
        "secretAccessKeySecretRef": {"name": "aws-keys", "key": "secret-access-key"},
    }})
}

/// Creates (or overwrites) a secret in moto with `tags`.
pub async fn put(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
    tags: &[(&str, &str)],
) {
    let mut request = client.create_secret().name(name).secret_string(value);
    for (k, v) in tags {
        request = request.tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build(),
        );
    }
    if request.send().await.is_err() {
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
}

/// Deletes `names` from moto (moto is shared by every test; names are unique, so a test that
/// fails before this leaves only its own leftovers).
pub async fn delete(client: &aws_sdk_secretsmanager::Client, names: &[String]) {
    for name in names {
        let _ = client
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await;
    }
}

/// A door in front of the moto of `env`.
pub async fn moto_door(env: &RealEnv) -> Door {
    let target = env
        .var("AWS_ENDPOINT_URL")
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    Door::open(&target).await.unwrap()
}

/// The claims of a JWT (no signature check: the test only reads what the agent sent).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
