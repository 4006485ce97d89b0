//! The Kubernetes client, from a kubeconfig file or the environment.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The field manager of everything mooring applies (server-side apply).
pub const FIELD_MANAGER: &str = "mooring";

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or parsed.
    #[error("failed to read kubeconfig {path}")]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// The reason.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig did not yield a usable configuration.
    #[error("failed to load the cluster configuration")]
    Load(#[source] kube::config::KubeconfigError),
    /// Neither in-cluster nor local configuration was found.
    #[error("failed to find a cluster configuration (in-cluster, $KUBECONFIG or ~/.kube/config)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("failed to build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// The kube configuration: from `kubeconfig` when given, else inferred (in-cluster first).
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, Error> {
    match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| Error::ReadKubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(Error::Load)
        }
        None => kube::Config::infer().await.map_err(Error::Infer),
    }
}

/// A client for the cluster; no request is made yet.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    kube::Client::try_from(config(kubeconfig).await?).map_err(Error::Client)
}
