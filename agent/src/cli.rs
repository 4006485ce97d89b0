//! Command-line interface. Flags are also read from `MOORING_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

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
    Run(Box<RunArgs>),
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
    /// Address of the HTTP server: `/healthz`, `/readyz`, `/v1/cert.pem`, `/v1/verify`, `/v1/rotate`.
    #[arg(long, default_value = "0.0.0.0:8080", env = "MOORING_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Address of the metrics server (`/metrics`).
    #[arg(long, default_value = "0.0.0.0:8081", env = "MOORING_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// The agent's own namespace, where its sealing keys live.
    #[arg(long, default_value = "mooring-system", env = "POD_NAMESPACE")]
    pub namespace: String,
    /// Only watch SealedSecrets in this namespace (default: all namespaces).
    #[arg(long, env = "MOORING_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// How often a new sealing key is added (Go duration; 0 disables), as upstream.
    #[arg(long, default_value = "720h", value_parser = go_duration, env = "SEALED_SECRETS_KEY_RENEW_PERIOD")]
    pub key_renew_period: Duration,
    /// Validity of generated sealing certificates (Go duration), as upstream.
    #[arg(long, default_value = "87600h", value_parser = go_duration, env = "SEALED_SECRETS_KEY_TTL")]
    pub key_ttl: Duration,
    /// Common name of generated sealing certificates, as upstream's `--my-cn`.
    #[arg(long, default_value = "", env = "SEALED_SECRETS_MY_CN")]
    pub my_cn: String,
    /// At start-up, add a key if the newest is older than this time (RFC 1123Z, `date -R`).
    #[arg(long, value_parser = rfc1123z, env = "SEALED_SECRETS_KEY_CUTOFF_TIME")]
    pub key_cutoff_time: Option<SystemTime>,
    /// Requests per second per client on `/v1/verify` and `/v1/rotate`.
    #[arg(long, default_value_t = 10.0, env = "SEALED_SECRETS_RATE_LIMIT")]
    pub rate_limit: f64,
    /// Burst size of that limit.
    #[arg(long, default_value_t = 20, env = "SEALED_SECRETS_RATE_LIMIT_BURST")]
    pub rate_limit_burst: u32,
    /// How often each SealedSecret is checked again even without a change (Go duration).
    #[arg(long, default_value = "5m", value_parser = go_duration, env = "MOORING_RESYNC_PERIOD")]
    pub resync_period: Duration,
    /// An endpoint for every AWS store (VPC endpoints, tests against moto or LocalStack).
    #[arg(long, env = "MOORING_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// How long one provider read is shared by every ExternalSecret asking for the same
    /// (store, key, version); never longer than an ExternalSecret's own refreshInterval.
    #[arg(long, default_value = "10s", value_parser = go_duration, env = "MOORING_PROVIDER_READ_WINDOW")]
    pub provider_read_window: Duration,
    /// Provider reads per second per store (0: no limit).
    #[arg(long, default_value_t = 10.0, env = "MOORING_PROVIDER_QPS")]
    pub provider_qps: f64,
    /// Burst size of that limit.
    #[arg(long, default_value_t = 20, env = "MOORING_PROVIDER_BURST")]
    pub provider_burst: u32,
}

fn go_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|e| e.to_string())
}

fn rfc1123z(text: &str) -> Result<SystemTime, String> {
    jiff::fmt::rfc2822::parse(text)
        .map(|zoned| SystemTime::from(zoned.timestamp()))
        .map_err(|e| format!("expected RFC 1123Z such as `Mon, 02 Jan 2006 15:04:05 -0700`: {e}"))
}
