//! The running peers: their addresses and credentials, read from `env.sh`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

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

    /// Installs (or updates) mooring's CRDs as cluster admin and waits until they are
    /// established.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        mooring_agent::install::apply_crds(&client, Duration::from_secs(60)).await?;
        Ok(())
    }

    /// A client of the realenv's OpenBao (plain HTTP) with its root token.
    pub fn openbao(&self) -> anyhow::Result<vaultrs::client::VaultClient> {
        let settings = vaultrs::client::VaultClientSettingsBuilder::default()
            .address(self.var("VAULT_ADDR")?)
            .token(self.var("VAULT_TOKEN")?)
            .build()?;
        Ok(vaultrs::client::VaultClient::new(settings)?)
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

/// A kubeconfig file in `dir` for the cluster of `env` that authenticates with `token` only.
pub fn token_kubeconfig(env: &RealEnv, token: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut config = Kubeconfig::read_from(env.var("KUBECONFIG")?)?;
    for named in &mut config.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        });
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config)?)?;
    Ok(path)
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
}
