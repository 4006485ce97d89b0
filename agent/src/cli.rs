//! Command-line interface. Flags are also read from `MOORING_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A secrets-aware GitOps agent: Git sync, SealedSecrets and ExternalSecrets in one process.
#[derive(Debug, Parser)]
#[command(name = "mooring", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MOORING_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: connect to the cluster and serve the health endpoints.
    Run(RunArgs),
    /// Install the CRDs into a cluster and show what is there (used by the README demo).
    Demo(ClusterArgs),
}

/// How to reach the cluster.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// Path to a kubeconfig; without it, the in-cluster config (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "MOORING_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// Flags of `mooring run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address of the HTTP server (`/healthz`, `/readyz`; later the certificate endpoints).
    #[arg(long, default_value = "0.0.0.0:8080", env = "MOORING_HTTP_ADDR")]
    pub http_addr: SocketAddr,
}
