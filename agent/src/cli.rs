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
    /// The cluster side of `./dev demo`: seed a local Git repository (with a SealedSecret and an
    /// ExternalSecret), apply its root Application, wait until synced and print the status.
    Demo(DemoArgs),
    /// Print the install manifests (namespace, CRDs, RBAC, Deployment, Service) for one overlay,
    /// or apply them with `--apply`.
    Install(InstallArgs),
    /// Internal: run a renderer confined to its checkout (how the agent starts kustomize).
    #[command(hide = true)]
    RenderExec(RenderExecArgs),
}

/// Flags of the internal `mooring render-exec`.
#[derive(Clone, Debug, Args)]
pub struct RenderExecArgs {
    /// A path the renderer may read (repeatable).
    #[arg(long)]
    pub read: Vec<PathBuf>,
    /// A path the renderer may write (repeatable).
    #[arg(long)]
    pub write: Vec<PathBuf>,
    /// Fail when the kernel cannot confine the renderer.
    #[arg(long)]
    pub required: bool,
    /// The renderer and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Flags of `mooring install`.
#[derive(Clone, Debug, Args)]
pub struct InstallArgs {
    /// Which variant: `base` (one replica), `ha` (two replicas, leader election), `no-gitops`
    /// (only the secret controllers), `split` (the secret controllers and the sync engine under
    /// different ServiceAccounts).
    #[arg(long, value_enum, default_value_t = crate::install::Overlay::Base)]
    pub overlay: crate::install::Overlay,
    /// The agent image the Deployment runs.
    #[arg(long, default_value = crate::install::DEFAULT_IMAGE)]
    pub image: String,
    /// Apply the manifests by server-side apply (field manager `mooring`) and wait until the
    /// CRDs are established, instead of printing them.
    #[arg(long)]
    pub apply: bool,
    /// Also Argo CD's own AppProject CRD (`appprojects.argoproj.io`, unless the cluster has
    /// one: Argo CD installs it) and `--argocd-api` on the agent, so projects written for Argo
    /// CD apply unchanged.
    #[arg(long)]
    pub argocd_api: bool,
    /// How to reach the cluster (with `--apply`).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Flags of `mooring demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only install the CRDs and the agent's namespace (before the agent starts).
    #[arg(long)]
    pub crds_only: bool,
    /// Only print the status table.
    #[arg(long, conflicts_with = "crds_only")]
    pub status: bool,
    /// The agent's namespace (created with `--crds-only`).
    #[arg(long, default_value = "mooring-system")]
    pub agent_namespace: String,
    /// Namespace of the demo's Applications, workloads and secrets.
    #[arg(long, default_value = "demo")]
    pub namespace: String,
    /// Directory of the demo; its Git repository is `repo/` inside.
    #[arg(long, default_value = "target/demo")]
    pub dir: PathBuf,
    /// Base URL of the running agent's HTTP port (`/readyz`, `/v1/cert.pem`, `/v1/verify`).
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    pub agent_url: String,
    /// The `kubeseal` that seals the demo's SealedSecret.
    #[arg(long, default_value = "kubeseal")]
    pub kubeseal: PathBuf,
    /// OpenBao's address.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// OpenBao's token (the dev root token); never printed.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    pub vault_token: Option<String>,
    /// How long to wait until everything is synced, in seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout_seconds: u64,
}

/// The controllers `mooring run` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ControllerKind {
    /// Applications: Git sync.
    Gitops,
    /// SealedSecrets, their sealing keys and the kubeseal endpoints.
    SealedSecrets,
    /// ExternalSecrets, SecretStores and ClusterSecretStores.
    ExternalSecrets,
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
    /// Only watch SealedSecrets, Applications and ExternalSecrets in this namespace (default:
    /// all namespaces).
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
    /// A PEM file of the CA certificates every Azure store trusts instead of the system's roots
    /// (private clouds, tests).
    #[arg(long, env = "MOORING_AZURE_CA_FILE")]
    pub azure_ca_file: Option<std::path::PathBuf>,
    /// The IMDS endpoint Azure managed identities get tokens from (default
    /// `http://169.254.169.254`).
    #[arg(long, env = "MOORING_AZURE_IMDS_ENDPOINT")]
    pub azure_imds_endpoint: Option<String>,
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
    /// Which controllers run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "gitops,sealed-secrets,external-secrets",
        env = "MOORING_CONTROLLERS"
    )]
    pub controllers: Vec<ControllerKind>,
    /// Elect one leader among replicas with the Lease `mooring` in the agent's namespace: every
    /// replica serves HTTP, only the leader runs controllers and generates keys.
    #[arg(long, env = "MOORING_LEADER_ELECT")]
    pub leader_elect: bool,
    /// This replica's identity in the election (default: the pod name, else host name and pid).
    #[arg(long, env = "MOORING_LEADER_IDENTITY")]
    pub leader_identity: Option<String>,
    /// How long a leader's term lasts without renewal (Go duration).
    #[arg(long, default_value = "15s", value_parser = go_duration, env = "MOORING_LEADER_LEASE_DURATION")]
    pub leader_lease_duration: Duration,
    /// Only sync Applications whose labels match this selector (for example
    /// `mooring.dev/shard=a`): several agents then share one cluster's Applications, each
    /// with its own selector.
    #[arg(long, env = "MOORING_APPLICATION_SELECTOR")]
    pub application_selector: Option<String>,
    /// The largest `/api/webhook` body accepted, in bytes (413 beyond it).
    #[arg(long, default_value_t = 1024 * 1024, env = "MOORING_WEBHOOK_MAX_PAYLOAD_BYTES")]
    pub webhook_max_payload_bytes: usize,
    /// Webhook pushes of one (repository, ref) within this window cause one refresh (Go
    /// duration).
    #[arg(long, default_value = "250ms", value_parser = go_duration, env = "MOORING_WEBHOOK_COALESCE_WINDOW")]
    pub webhook_coalesce_window: Duration,
    /// `/api/webhook` requests per second per peer address.
    #[arg(long, default_value_t = 10.0, env = "MOORING_WEBHOOK_RATE_LIMIT")]
    pub webhook_rate_limit: f64,
    /// Burst size of that limit.
    #[arg(long, default_value_t = 50, env = "MOORING_WEBHOOK_RATE_LIMIT_BURST")]
    pub webhook_rate_limit_burst: u32,
    /// Only validate ClusterSecretStores whose labels match this selector. An agent limited to
    /// one namespace (`--watch-namespace`) validates ClusterSecretStores only when this is set,
    /// so agents of different namespaces never write one store's status.
    #[arg(long, env = "MOORING_CLUSTER_SECRET_STORE_SELECTOR")]
    pub cluster_secret_store_selector: Option<String>,
    /// How often an Application is fetched and compared without a trigger, unless its
    /// `spec.pollInterval` says otherwise (Go duration; a random jitter of up to 10% is added).
    #[arg(long, default_value = "3m", value_parser = go_duration, env = "MOORING_DEFAULT_POLL_INTERVAL")]
    pub default_poll_interval: Duration,
    /// The shortest `spec.pollInterval` honoured: an Application asking for less polls this
    /// often, so one tenant cannot hammer a Git host (webhooks make syncs immediate instead).
    #[arg(long, default_value = "10s", value_parser = go_duration, env = "MOORING_MIN_POLL_INTERVAL")]
    pub min_poll_interval: Duration,
    /// The largest fraction of an Application's inventory one sync may prune; more is refused
    /// with a `PrunePending` condition (0 to 1).
    #[arg(long, default_value_t = 0.5, value_parser = fraction, env = "MOORING_MAX_PRUNE_FRACTION")]
    pub max_prune_fraction: f64,
    /// Directory of the Git cache: one shallow checkout per repository URL and revision
    /// (default: `mooring-git` in the system's temporary directory).
    #[arg(long, env = "MOORING_GIT_CACHE_DIR")]
    pub git_cache_dir: Option<PathBuf>,
    /// How long one ref check, fetch and checkout of a repository may take (Go duration).
    #[arg(long, default_value = "90s", value_parser = go_duration, env = "MOORING_GIT_TIMEOUT")]
    pub git_timeout: Duration,
    /// Accept `file://` repository URLs and local paths (the local demo, tests). Off: an
    /// Application could otherwise read any repository on the agent's file system.
    #[arg(long, env = "MOORING_GIT_ALLOW_FILE_URLS")]
    pub git_allow_file_urls: bool,
    /// The kustomize binary that renders Kustomize sources (a pinned release).
    #[arg(long, default_value = "kustomize", env = "MOORING_KUSTOMIZE_PATH")]
    pub kustomize_path: PathBuf,
    /// How long one `kustomize build` may take (Go duration).
    #[arg(long, default_value = "90s", value_parser = go_duration, env = "MOORING_KUSTOMIZE_TIMEOUT")]
    pub kustomize_timeout: Duration,
    /// How many `kustomize build`s run at once.
    #[arg(long, default_value_t = 4, env = "MOORING_KUSTOMIZE_CONCURRENCY")]
    pub kustomize_concurrency: usize,
    /// Let kustomizations fetch remote bases (off: a render reads only its commit).
    #[arg(long, env = "MOORING_KUSTOMIZE_ALLOW_REMOTE_BASES")]
    pub kustomize_allow_remote_bases: bool,
    /// Confine renderers (kustomize) with Landlock to their checkout, out of reach of the agent's
    /// ServiceAccount token: `best-effort` (where the kernel supports it), `required`, `off`.
    #[arg(long, value_enum, default_value_t = crate::gitops::render::SandboxMode::BestEffort, env = "MOORING_RENDER_SANDBOX")]
    pub render_sandbox: crate::gitops::render::SandboxMode,
    /// The `mooring` binary that confines renderers (default: this one). For agents embedded in
    /// another program, such as tests.
    #[arg(long, hide = true)]
    pub render_sandbox_exe: Option<PathBuf>,
    /// Also read Argo CD's own AppProjects (`argoproj.io/v1alpha1`, in the agent's namespace)
    /// where no mooring.dev AppProject of that name exists.
    #[arg(long, env = "MOORING_ARGOCD_API")]
    pub argocd_api: bool,
}

impl RunArgs {
    /// Whether `controller` is enabled.
    pub fn runs(&self, controller: ControllerKind) -> bool {
        self.controllers.contains(&controller)
    }

    /// The agent's Git cache, from the flags.
    pub fn git_cache(&self) -> crate::gitops::git::GitCache {
        let dir = self
            .git_cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("mooring-git"));
        crate::gitops::git::GitCache::new(
            dir,
            crate::gitops::git::GitLimits {
                timeout: self.git_timeout,
                allow_file_urls: self.git_allow_file_urls,
                ..Default::default()
            },
        )
    }

    /// The kustomize runner shared by all renders, from the flags.
    pub fn kustomize(&self) -> crate::gitops::render::Kustomize {
        crate::gitops::render::Kustomize::new(
            self.kustomize_path.clone(),
            self.kustomize_timeout,
            self.kustomize_concurrency,
        )
        .with_remote_bases(self.kustomize_allow_remote_bases)
        .with_sandbox(self.render_sandbox())
    }

    /// The render sandbox from the flags; says in the log when renders will not be confined.
    fn render_sandbox(&self) -> Option<crate::gitops::render::Sandbox> {
        use crate::gitops::render::{Sandbox, SandboxMode};
        let exe = match self
            .render_sandbox_exe
            .clone()
            .map_or_else(std::env::current_exe, Ok)
        {
            Ok(exe) => exe,
            // Required: fail closed. Every render then fails to start the (absent) confiner,
            // naming it, instead of running unconfined.
            Err(error) if self.render_sandbox == SandboxMode::Required => {
                tracing::error!(%error, "cannot find the agent's own binary: every render will fail (--render-sandbox required)");
                PathBuf::from("/nonexistent/mooring-render-exec")
            }
            Err(error) => {
                tracing::warn!(%error, "cannot find the agent's own binary; renders are not confined");
                return None;
            }
        };
        let sandbox = Sandbox::new(self.render_sandbox, exe)?;
        if !sandbox.is_enforced() {
            match self.render_sandbox {
                SandboxMode::Required => tracing::error!(
                    "this kernel does not enforce Landlock: every render will fail (--render-sandbox required)"
                ),
                _ => tracing::warn!(
                    "this kernel does not enforce Landlock: renderers run unconfined (--render-sandbox best-effort)"
                ),
            }
        }
        Some(sandbox)
    }
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a number from 0 to 1, got {text:?}")),
    }
}

fn go_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|e| e.to_string())
}

fn rfc1123z(text: &str) -> Result<SystemTime, String> {
    jiff::fmt::rfc2822::parse(text)
        .map(|zoned| SystemTime::from(zoned.timestamp()))
        .map_err(|e| format!("expected RFC 1123Z such as `Mon, 02 Jan 2006 15:04:05 -0700`: {e}"))
}
