//! Support for mooring's end-to-end tests against the real peers started by `tests/realenv/up`.
//!
//! - [`RealEnv::load`] reads `target/realenv/env.sh` (addresses, credentials, CA paths);
//! - [`RealEnv::admin_client`] is a kube client with cluster-admin rights;
//! - [`TestNamespace`] is a namespace per test, deleted when it is dropped;
//! - [`wait_for`] polls a condition with a bound;
//! - [`TestNamespace::service_account_client`] acts as a fresh ServiceAccount (TokenRequest).
//!
//! A missing environment is an error, never a skip: the suite runs against real peers or fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

/// The addresses and credentials of the running peers, from `env.sh`.
#[derive(Clone, Debug)]
pub struct RealEnv {
    vars: BTreeMap<String, String>,
}

impl RealEnv {
    /// Reads `$MOORING_REALENV/env.sh`, or `target/realenv/env.sh` of this checkout.
    pub fn load() -> anyhow::Result<RealEnv> {
        let dir = std::env::var_os("MOORING_REALENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/realenv"));
        let path = dir.join("env.sh");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "failed to read {}: start the real peers first with tests/realenv/up",
                path.display()
            )
        })?;
        Ok(RealEnv {
            vars: parse_env_sh(&text),
        })
    }

    /// One variable of env.sh (for example `VAULT_ADDR`).
    pub fn var(&self, name: &str) -> anyhow::Result<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("env.sh has no {name}"))
    }

    /// The admin kube configuration (client certificate in `system:masters`).
    pub async fn admin_config(&self) -> anyhow::Result<kube::Config> {
        let path = self.var("KUBECONFIG")?;
        let kubeconfig =
            Kubeconfig::read_from(path).context("failed to read the admin kubeconfig")?;
        Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A client acting as cluster admin.
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.admin_config().await?)?)
    }
}

/// Parses the `export NAME='value'` lines that `up` writes.
fn parse_env_sh(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_string(), value.trim_matches('\'').to_string()))
        .collect()
}

/// A namespace of its own for one test; deletion is requested when it is dropped, even when
/// the test panics.
pub struct TestNamespace {
    name: String,
    client: Client,
    config: kube::Config,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`.
    pub async fn create(env: &RealEnv, prefix: &str) -> anyhow::Result<TestNamespace> {
        let config = env.admin_config().await?;
        let client = Client::try_from(config.clone())?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some(BTreeMap::from([("mooring.dev/e2e".into(), "true".into())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .context("failed to create the test namespace")?;
        let name = created
            .metadata
            .name
            .context("created namespace has no name")?;
        Ok(TestNamespace {
            name,
            client,
            config,
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An API for namespaced objects of type `K` in this namespace, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates ServiceAccount `name` in this namespace and returns a client authenticated as it
    /// with a bound token from the TokenRequest API. It has no permissions until a test grants them.
    pub async fn service_account_client(&self, name: &str) -> anyhow::Result<Client> {
        let accounts: Api<ServiceAccount> = self.api();
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        accounts
            .create(&PostParams::default(), &account)
            .await
            .with_context(|| format!("failed to create ServiceAccount {name}"))?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("failed to request a token for ServiceAccount {name}"))?;
        let token = issued
            .status
            .and_then(|status| status.token)
            .context("TokenRequest returned no token")?;
        let mut config = self.config.clone();
        config.auth_info = Kubeconfig::from_yaml(&format!(
            "users:\n- name: sa\n  user:\n    token: {token}\n"
        ))?
        .auth_infos
        .remove(0)
        .auth_info
        .context("token kubeconfig has no user")?;
        Ok(Client::try_from(config)?)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, so the deletion gets a thread and a runtime
        // of its own, and a client of its own (the test's client is tied to the test runtime).
        let config = self.config.clone();
        let name = self.name.clone();
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let client = Client::try_from(config)?;
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!("warning: failed to delete test namespace {}", self.name);
        }
    }
}

/// Arguments for an in-process agent against the test cluster: its keys in `namespace`, only
/// SealedSecrets of `namespace` watched, HTTP and metrics on free loopback ports.
pub fn agent(env: &RealEnv, namespace: &str) -> anyhow::Result<mooring_agent::cli::RunArgs> {
    use clap::Parser;
    let cli = mooring_agent::cli::Cli::try_parse_from([
        "mooring",
        "run",
        "--kubeconfig",
        env.var("KUBECONFIG")?,
        "--http-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--namespace",
        namespace,
        "--watch-namespace",
        namespace,
        // RSA-4096 key generation is slow in debug builds; one key per test namespace is enough.
        "--key-renew-period",
        "0",
    ])?;
    match cli.command {
        mooring_agent::cli::Command::Run(args) => Ok(*args),
        mooring_agent::cli::Command::Demo(_) => anyhow::bail!("parsed the wrong subcommand"),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_sh_lines_are_parsed() {
        let vars = parse_env_sh("# comment\nexport A='x'\nexport B='http://h:1'\nnot an export\n");
        assert_eq!(vars.get("A").map(String::as_str), Some("x"));
        assert_eq!(vars.get("B").map(String::as_str), Some("http://h:1"));
        assert_eq!(vars.len(), 2);
    }

    #[tokio::test]
    async fn wait_for_returns_the_value_or_times_out() {
        let mut calls = 0;
        let value = wait_for("third call", Duration::from_secs(5), || {
            calls += 1;
            let done = calls == 3;
            async move { done.then_some(42) }
        })
        .await
        .unwrap();
        assert_eq!(value, 42);
        let timed_out =
            wait_for("never", Duration::from_millis(250), || async { None::<()> }).await;
        assert!(timed_out.unwrap_err().to_string().contains("timed out"));
    }
}
