//! Set-up for ExternalSecret tests: stores and ExternalSecrets written as JSON (as users write
//! them), waiting for their conditions, and OpenBao as root.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use mooring_crds::conditions::Condition;
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::secret_store::{ClusterSecretStore, SecretStore};
use serde_json::{Value, json};

use crate::{RealEnv, RunningAgent, TestNamespace, wait_for};

/// The Secret [`TestNamespace::create_openbao_token`] creates and [`openbao_token_provider`]
/// reads (key `token`).
pub const OPENBAO_TOKEN_SECRET: &str = "bao-token";

/// How long a test waits for an ExternalSecret's or a store's condition.
const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);

/// The `spec.provider` of a store reading OpenBao at `server`, KV mount `secret`, with the token
/// in Secret [`OPENBAO_TOKEN_SECRET`].
pub fn openbao_token_provider(server: &str) -> Value {
    json!({"vault": {
        "server": server,
        "path": "secret",
        "auth": {"tokenSecretRef": {"name": OPENBAO_TOKEN_SECRET, "key": "token"}},
    }})
}

/// Arguments for an in-process agent for `namespace` (see [`crate::agent`]) whose AWS clients
/// go to `aws_endpoint` (the realenv's moto, or a door in front of it).
pub fn agent_with_aws_endpoint(
    env: &RealEnv,
    namespace: &str,
    aws_endpoint: &str,
) -> anyhow::Result<mooring_agent::cli::RunArgs> {
    let mut args = crate::agent(env, namespace)?;
    args.aws_endpoint_url = Some(aws_endpoint.into());
    Ok(args)
}

/// Whether `condition` has `status` (`True`, `False`, `Unknown`).
pub fn has_status(condition: &Condition, status: &str) -> bool {
    serde_json::to_value(condition.status).is_ok_and(|text| text == status)
}

impl TestNamespace {
    /// What most ExternalSecret tests start from: Secret [`OPENBAO_TOKEN_SECRET`], SecretStore
    /// `store` with `provider` (usually [`openbao_token_provider`]), then an in-process agent
    /// started with `args`.
    pub async fn start_agent_with_store(
        &self,
        env: &RealEnv,
        provider: Value,
        args: mooring_agent::cli::RunArgs,
    ) -> anyhow::Result<RunningAgent> {
        self.create_openbao_token(env).await?;
        self.create_secret_store("store", provider).await?;
        RunningAgent::start_with(args).await
    }

    /// Creates Secret [`OPENBAO_TOKEN_SECRET`] holding the realenv's OpenBao root token.
    pub async fn create_openbao_token(&self, env: &RealEnv) -> anyhow::Result<Secret> {
        self.create_secret(OPENBAO_TOKEN_SECRET, &[("token", env.var("VAULT_TOKEN")?)])
            .await
    }

    /// Creates SecretStore `name` with `provider` as its `spec.provider`.
    pub async fn create_secret_store(
        &self,
        name: &str,
        provider: Value,
    ) -> anyhow::Result<SecretStore> {
        let store: SecretStore = serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "SecretStore",
            "metadata": {"name": name},
            "spec": {"provider": provider},
        }))?;
        self.api::<SecretStore>()
            .create(&PostParams::default(), &store)
            .await
            .with_context(|| format!("failed to create SecretStore {name}"))
    }

    /// Creates ExternalSecret `name` with `spec`.
    pub async fn create_external_secret(
        &self,
        name: &str,
        spec: Value,
    ) -> anyhow::Result<ExternalSecret> {
        let es: ExternalSecret = serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1",
            "kind": "ExternalSecret",
            "metadata": {"name": name},
            "spec": spec,
        }))?;
        self.api::<ExternalSecret>()
            .create(&PostParams::default(), &es)
            .await
            .with_context(|| format!("failed to create ExternalSecret {name}"))
    }

    /// Waits (at most 60 s) until condition `type_` of ExternalSecret `name` has `status` and
    /// `reason`; returns it.
    pub async fn wait_for_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> anyhow::Result<Condition> {
        let what = format!("ExternalSecret {name} {type_}={status} ({reason})");
        self.wait_for_external_secret(&what, name, type_, |c| {
            has_status(c, status) && c.reason == reason
        })
        .await
    }

    /// Waits (at most 60 s, described as `what`) until condition `type_` of ExternalSecret
    /// `name` is one `accept` takes; returns it.
    pub async fn wait_for_external_secret(
        &self,
        what: &str,
        name: &str,
        type_: &str,
        accept: impl Fn(&Condition) -> bool,
    ) -> anyhow::Result<Condition> {
        let api: Api<ExternalSecret> = self.api();
        wait_for(what, CONDITION_TIMEOUT, || async {
            let es = api.get(name).await.ok()?;
            let condition = es
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == type_)?;
            accept(&condition).then_some(condition)
        })
        .await
    }
}

/// The conditions of both store kinds.
pub trait StoreConditions {
    /// The store's status conditions (none before its first status).
    fn conditions(&self) -> Vec<Condition>;
}

impl StoreConditions for SecretStore {
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

impl StoreConditions for ClusterSecretStore {
    fn conditions(&self) -> Vec<Condition> {
        self.status.clone().unwrap_or_default().conditions
    }
}

/// Waits (at most 60 s) until the `Ready` condition of store `name` is one `accept` takes;
/// returns it.
pub async fn wait_for_store_ready<K>(
    api: &Api<K>,
    name: &str,
    accept: impl Fn(&Condition) -> bool,
) -> anyhow::Result<Condition>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + StoreConditions,
{
    wait_for(
        &format!("store {name} Ready condition"),
        CONDITION_TIMEOUT,
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

impl RealEnv {
    /// A raw call of the realenv's OpenBao API as root (mounts, policies and auth methods are
    /// test set-up, and not all of them are in vaultrs); the JSON answer, `null` when empty.
    pub async fn openbao_api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/v1/{path}", self.var("VAULT_ADDR")?);
        let mut request = reqwest::Client::new()
            .request(method.clone(), &url)
            .header("X-Vault-Token", self.var("VAULT_TOKEN")?);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {text}");
        if text.is_empty() {
            Ok(Value::Null)
        } else {
            Ok(serde_json::from_str(&text)?)
        }
    }

    /// Writes AppRole role `role` with `settings` (policies, TTLs) in the AppRole auth method
    /// mounted at `mount`; returns its role id and a new secret id.
    pub async fn openbao_approle(
        &self,
        mount: &str,
        role: &str,
        settings: Value,
    ) -> anyhow::Result<(String, String)> {
        use reqwest::Method;
        let base = format!("auth/{mount}/role/{role}");
        self.openbao_api(Method::POST, &base, Some(settings))
            .await?;
        let role_id = self
            .openbao_api(Method::GET, &format!("{base}/role-id"), None)
            .await?["data"]["role_id"]
            .as_str()
            .context("OpenBao answered no role_id")?
            .to_string();
        let secret_id = self
            .openbao_api(Method::POST, &format!("{base}/secret-id"), None)
            .await?["data"]["secret_id"]
            .as_str()
            .context("OpenBao answered no secret_id")?
            .to_string();
        Ok((role_id, secret_id))
    }
}
