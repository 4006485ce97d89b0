//! The provider conformance suite (`mooring_provider::conformance`) against the real servers of
//! the realenv. Each provider is one test: build the provider under test, a seed that writes
//! through the store's own API under a path unique to the run, run the suite, clean up.

use std::collections::BTreeMap;
use std::sync::Mutex;

use mooring_e2e::RealEnv;
use mooring_provider::conformance::{self, Report, Seed};
use mooring_provider_vault::{KvVersion, VaultConfig, VaultProvider};

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// The names of the passed and the skipped checks; fails with every failed check. Called after
/// the test cleaned up, so a failure leaves nothing behind.
fn outcome(report: Report) -> (Vec<&'static str>, Vec<&'static str>) {
    let skipped: Vec<&'static str> = report.skipped.iter().map(|(check, _)| *check).collect();
    let passed = report
        .into_result()
        .unwrap_or_else(|failures| panic!("conformance failures:\n{failures}"));
    (passed, skipped)
}

/// Writes into an OpenBao KV mount with the root token, by the HTTP API.
struct OpenBaoSeed {
    env: RealEnv,
    mount: String,
    version: KvVersion,
    scope: String,
    written: Mutex<Vec<String>>,
}

impl OpenBaoSeed {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let url = format!("{}/v1/{path}", self.env.var("VAULT_ADDR").unwrap());
        let mut request = reqwest::Client::new()
            .request(method.clone(), &url)
            .header("X-Vault-Token", self.env.var("VAULT_TOKEN").unwrap());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Removes every key written (KV v2: all versions and metadata).
    async fn clean_up(&self) {
        let keys = std::mem::take(&mut *self.written.lock().unwrap());
        for key in keys {
            let path = match self.version {
                KvVersion::V2 => format!("{}/metadata/{key}", self.mount),
                KvVersion::V1 => format!("{}/{key}", self.mount),
            };
            let _ = self.call(reqwest::Method::DELETE, &path, None).await;
        }
    }
}

#[async_trait::async_trait]
impl Seed for OpenBaoSeed {
    fn scope(&self) -> &str {
        &self.scope
    }

    async fn write(
        &self,
        key: &str,
        document: &serde_json::Value,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        self.written.lock().unwrap().push(key.to_string());
        match self.version {
            KvVersion::V2 => {
                let answer = self
                    .call(
                        reqwest::Method::POST,
                        &format!("{}/data/{key}", self.mount),
                        Some(serde_json::json!({"data": document})),
                    )
                    .await?;
                if !tags.is_empty() {
                    self.call(
                        reqwest::Method::POST,
                        &format!("{}/metadata/{key}", self.mount),
                        Some(serde_json::json!({"custom_metadata": tags})),
                    )
                    .await?;
                }
                Ok(answer["data"]["version"].as_u64().map(|v| v.to_string()))
            }
            KvVersion::V1 => {
                self.call(
                    reqwest::Method::POST,
                    &format!("{}/{key}", self.mount),
                    Some(document.clone()),
                )
                .await?;
                Ok(None)
            }
        }
    }

    fn supports_tags(&self) -> bool {
        self.version == KvVersion::V2
    }
}

fn openbao_provider(env: &RealEnv, mount: &str, version: KvVersion) -> VaultProvider {
    let config = VaultConfig {
        server: env.var("VAULT_ADDR").unwrap().into(),
        mount: mount.into(),
        version,
        namespace: None,
    };
    VaultProvider::with_token(config, env.var("VAULT_TOKEN").unwrap()).unwrap()
}

#[tokio::test]
async fn openbao_kv_v2_passes_the_conformance_suite() {
    let env = RealEnv::load().unwrap();
    let seed = OpenBaoSeed {
        env: env.clone(),
        mount: "secret".into(),
        version: KvVersion::V2,
        scope: format!("mooring-conformance/{}", unique("kv2")),
        written: Mutex::default(),
    };
    let provider = openbao_provider(&env, "secret", KvVersion::V2);
    let report = conformance::run(&provider, &seed).await;
    seed.clean_up().await;
    let (passed, skipped) = outcome(report);
    assert_eq!(passed, conformance::CHECKS);
    assert!(skipped.is_empty(), "KV v2 has versions: {skipped:?}");
}

#[tokio::test]
async fn openbao_kv_v1_passes_the_conformance_suite() {
    let env = RealEnv::load().unwrap();
    let mount = unique("conformance-kv1");
    let seed = OpenBaoSeed {
        env: env.clone(),
        mount: mount.clone(),
        version: KvVersion::V1,
        scope: "run".into(),
        written: Mutex::default(),
    };
    seed.call(
        reqwest::Method::POST,
        &format!("sys/mounts/{mount}"),
        Some(serde_json::json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await
    .unwrap();
    let provider = openbao_provider(&env, &mount, KvVersion::V1);
    let report = conformance::run(&provider, &seed).await;
    let _ = seed
        .call(
            reqwest::Method::DELETE,
            &format!("sys/mounts/{mount}"),
            None,
        )
        .await;
    let (passed, skipped) = outcome(report);
    assert_eq!(skipped, ["pinned_version"], "KV v1 keeps no versions");
    assert_eq!(passed.len(), conformance::CHECKS.len() - 1);
}

/// Writes `{"n": i}` at `key(i)` for every `i` in `0..count`, 16 at a time.
async fn write_many(seed: &OpenBaoSeed, count: usize, key: impl Fn(usize) -> String) {
    use futures::StreamExt;
    let none = BTreeMap::new();
    let results: Vec<Result<Option<String>, String>> = futures::stream::iter(0..count)
        .map(|i| {
            let key = key(i);
            let none = &none;
            async move { seed.write(&key, &serde_json::json!({"n": i}), none).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(results.iter().all(Result::is_ok), "seeding failed");
}

#[tokio::test]
async fn openbao_find_is_bounded_in_results_and_folders() {
    use mooring_provider::{FindLimits, FindQuery, SecretProvider};
    let env = RealEnv::load().unwrap();
    let scope = format!("mooring-conformance/{}", unique("bounds"));
    let seed = OpenBaoSeed {
        env: env.clone(),
        mount: "secret".into(),
        version: KvVersion::V2,
        scope: scope.clone(),
        written: Mutex::default(),
    };
    let limits = FindLimits {
        folders: 4,
        results: 3,
    };
    write_many(&seed, limits.results + 1, |i| format!("{scope}/flat/s{i}")).await;
    // `deep` and its folders are one more than the bound.
    write_many(&seed, limits.folders, |i| format!("{scope}/deep/f{i}/s")).await;
    let provider = openbao_provider(&env, "secret", KvVersion::V2);
    let find = |path: String| {
        let provider = &provider;
        async move {
            let mut query = FindQuery::new(Some(path), Some("."), BTreeMap::new()).unwrap();
            query.limits = limits;
            provider.find(&query).await
        }
    };
    let too_many = find(format!("{scope}/flat")).await;
    let too_deep = find(format!("{scope}/deep")).await;
    let at_the_bounds = find(format!("{scope}/deep/f1")).await;
    seed.clean_up().await;

    let error = too_many.unwrap_err();
    assert_eq!(error.reason(), "InvalidConfig");
    assert!(error.to_string().contains("more than 3 secrets"), "{error}");
    let error = too_deep.unwrap_err();
    assert_eq!(error.reason(), "InvalidConfig");
    assert!(error.to_string().contains("more than 4 folders"), "{error}");
    assert_eq!(at_the_bounds.unwrap().len(), 1);
}

#[tokio::test]
async fn openbao_find_without_a_store_path_takes_the_mount_from_find_path() {
    use mooring_provider::{FindQuery, RemoteRef, SecretProvider};
    let env = RealEnv::load().unwrap();
    let scope = format!("mooring-conformance/{}", unique("nomount"));
    let seed = OpenBaoSeed {
        env: env.clone(),
        mount: "secret".into(),
        version: KvVersion::V2,
        scope: scope.clone(),
        written: Mutex::default(),
    };
    write_many(&seed, 2, |i| format!("{scope}/s{i}")).await;
    let provider = openbao_provider(&env, "", KvVersion::V2);
    let query = FindQuery::new(
        Some(format!("secret/{scope}")),
        Some("/s1$"),
        BTreeMap::new(),
    )
    .unwrap();
    let found = provider.find(&query).await;
    let without_mount = FindQuery::new(None, Some("."), BTreeMap::new()).unwrap();
    let refused = provider.find(&without_mount).await;
    let name = format!("secret/{scope}/s1");
    let read = provider
        .get(&RemoteRef::key(name.clone()).with_property("n"))
        .await;
    seed.clean_up().await;

    let found = found.unwrap();
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        [&name],
        "names carry the mount"
    );
    assert_eq!(
        read.unwrap().expose(),
        b"1",
        "a found name is a key get accepts"
    );
    assert_eq!(refused.unwrap_err().reason(), "InvalidConfig");
}

/// Writes into moto's Secrets Manager with the realenv's static keys.
struct MotoSeed {
    client: aws_sdk_secretsmanager::Client,
    scope: String,
    written: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Seed for MotoSeed {
    fn scope(&self) -> &str {
        &self.scope
    }

    async fn write(
        &self,
        key: &str,
        document: &serde_json::Value,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        let text = document.to_string();
        let exists = self.written.lock().unwrap().contains(&key.to_string());
        let version = if exists {
            self.client
                .put_secret_value()
                .secret_id(key)
                .secret_string(text)
                .send()
                .await
                .map_err(|e| format!("PutSecretValue {key}: {e}"))?
                .version_id
        } else {
            let mut request = self.client.create_secret().name(key).secret_string(text);
            for (k, v) in tags {
                request = request.tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(k)
                        .value(v)
                        .build(),
                );
            }
            self.written.lock().unwrap().push(key.to_string());
            request
                .send()
                .await
                .map_err(|e| format!("CreateSecret {key}: {e}"))?
                .version_id
        };
        // The provider pins AWS versions as `uuid/<VersionId>` (a bare word is a stage).
        Ok(version.map(|id| format!("uuid/{id}")))
    }

    fn supports_tags(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn moto_secrets_manager_passes_the_conformance_suite() {
    use mooring_provider_aws::{AwsConfig, AwsSecretsManagerProvider, StaticCredentials};
    let env = RealEnv::load().unwrap();
    let seed = MotoSeed {
        client: crate::aws_support::moto(&env).await,
        scope: format!("mooring-conformance/{}", unique("aws")),
        written: Mutex::default(),
    };
    let provider = AwsSecretsManagerProvider::new(AwsConfig {
        region: env.var("AWS_REGION").unwrap().into(),
        endpoint_url: Some(env.var("AWS_ENDPOINT_URL").unwrap().into()),
        credentials: Some(StaticCredentials {
            access_key_id: env.var("AWS_ACCESS_KEY_ID").unwrap().into(),
            secret_access_key: env.var("AWS_SECRET_ACCESS_KEY").unwrap().into(),
            session_token: None,
        }),
        ..Default::default()
    })
    .await;
    let report = conformance::run(&provider, &seed).await;
    let written = std::mem::take(&mut *seed.written.lock().unwrap());
    crate::aws_support::delete(&seed.client, &written).await;
    let (passed, skipped) = outcome(report);
    assert_eq!(passed, conformance::CHECKS);
    assert!(
        skipped.is_empty(),
        "Secrets Manager has versions: {skipped:?}"
    );
}
