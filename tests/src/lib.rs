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
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
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
        let token = self.service_account_token(name).await?;
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

    /// Waits (at most 90 s) until Secret `name` holds `value` under `key`, and returns it.
    pub async fn wait_for_secret(
        &self,
        name: &str,
        key: &str,
        value: &[u8],
    ) -> anyhow::Result<Secret> {
        let secrets: Api<Secret> = self.api();
        wait_for(
            &format!("Secret {name} with {key}"),
            Duration::from_secs(90),
            || {
                let secrets = secrets.clone();
                async move {
                    let secret = secrets.get_opt(name).await.ok()??;
                    let found = secret.data.as_ref()?.get(key)?.0.as_slice() == value;
                    found.then_some(secret)
                }
            },
        )
        .await
    }

    /// Waits (at most 60 s) until SealedSecret `name` has a `Synced` condition with `status`
    /// for its current generation; returns the condition's (reason, message).
    pub async fn wait_for_synced(
        &self,
        name: &str,
        status: &str,
    ) -> anyhow::Result<(String, String)> {
        let api: Api<mooring_crds::sealed_secret::SealedSecret> = self.api();
        wait_for(
            &format!("SealedSecret {name} Synced={status}"),
            Duration::from_secs(60),
            || {
                let api = api.clone();
                async move {
                    let sealed = api.get(name).await.ok()?;
                    let current = sealed.status?;
                    let condition = current
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Synced")?;
                    (condition.status == status
                        && current.observed_generation == sealed.metadata.generation)
                        .then(|| {
                            (
                                condition.reason.unwrap_or_default(),
                                condition.message.unwrap_or_default(),
                            )
                        })
                }
            },
        )
        .await
    }

    /// Creates the Opaque Secret `name` holding `values` in this namespace.
    pub async fn create_secret(
        &self,
        name: &str,
        values: &[(&str, &str)],
    ) -> anyhow::Result<Secret> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            string_data: Some(
                values
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("failed to create Secret {name}"))
    }

    /// A bound token (TokenRequest, one hour) for the existing ServiceAccount `name`.
    pub async fn service_account_token(&self, name: &str) -> anyhow::Result<String> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = self
            .api::<ServiceAccount>()
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("failed to request a token for ServiceAccount {name}"))?;
        issued
            .status
            .and_then(|status| status.token)
            .context("TokenRequest returned no token")
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
        _ => anyhow::bail!("parsed the wrong subcommand"),
    }
}

/// An agent running in-process in the background for one test namespace; stopped when dropped.
pub struct RunningAgent {
    /// Its main HTTP address.
    pub addr: SocketAddr,
    /// Its metrics address.
    pub metrics: SocketAddr,
    /// Forces a key renewal, as SIGUSR1 does.
    pub renew: std::sync::Arc<tokio::sync::Notify>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), mooring_agent::Error>>>,
}

impl RunningAgent {
    /// Starts an agent for `namespace` (see [`agent`]) on loopback and waits until it is ready.
    pub async fn start(env: &RealEnv, namespace: &str) -> anyhow::Result<RunningAgent> {
        Self::start_with(agent(env, namespace)?).await
    }

    /// Starts an agent with `args` (usually [`agent`]'s, adjusted) and waits until it is ready.
    pub async fn start_with(args: mooring_agent::cli::RunArgs) -> anyhow::Result<RunningAgent> {
        Self::launch(mooring_agent::Agent::bind(&args).await?).await
    }

    /// The same, serving HTTP on `listener` (for example one opened in a [`TestHost`]).
    pub async fn start_on(
        env: &RealEnv,
        namespace: &str,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<RunningAgent> {
        let args = agent(env, namespace)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        Self::launch(mooring_agent::Agent::with_listener(&args, listener).await?).await
    }

    async fn launch(agent: mooring_agent::Agent) -> anyhow::Result<RunningAgent> {
        let addr = agent.local_addr()?;
        let metrics = agent.metrics_addr()?;
        let renew = agent.renew_handle();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        let running = RunningAgent {
            addr,
            metrics,
            renew,
            stop: Some(stop),
            task: Some(task),
        };
        let http = reqwest::Client::new();
        wait_for(
            "the agent to be ready (key generated)",
            Duration::from_secs(120),
            || {
                let request = http.get(format!("http://{addr}/readyz")).send();
                async move { request.await.ok().filter(|r| r.status() == 200) }
            },
        )
        .await?;
        Ok(running)
    }

    /// The PEM certificate the agent serves at `/v1/cert.pem`.
    pub async fn certificate(&self) -> anyhow::Result<String> {
        fetch_certificate(&self.addr.to_string()).await
    }

    /// The sum of every sample of metric `name` (all label sets).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        scrape(&self.metrics.to_string(), name).await
    }

    /// Stops the agent and waits (at most 15 s) until it has stopped cleanly.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await???;
        }
        Ok(())
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The sum of every sample of metric `name` (all label sets) served at `metrics` (`host:port`).
async fn scrape(metrics: &str, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The PEM certificate an agent at `addr` (`host:port`) serves at `/v1/cert.pem`.
async fn fetch_certificate(addr: &str) -> anyhow::Result<String> {
    let response = reqwest::get(format!("http://{addr}/v1/cert.pem")).await?;
    anyhow::ensure!(
        response.status() == 200,
        "GET /v1/cert.pem answered {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// Runs `git args` in `dir` (no system or global configuration, never prompting); returns its
/// trimmed standard output.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .context("failed to run git")?;
    anyhow::ensure!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// A bare repository of a test's own under `GIT_REPO_ROOT` (served by both git servers), and a
/// work tree that pushes to it through the file system. The bare repository is deleted when
/// dropped.
pub struct GitRepo {
    /// The bare repository's directory name (unique per test and process).
    pub name: String,
    bare: PathBuf,
    work: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository with branch `main`, named after `prefix`.
    pub fn create(env: &RealEnv, prefix: &str) -> anyhow::Result<GitRepo> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut random = [0u8; 4];
        aws_lc_rs::rand::fill(&mut random).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let name = format!(
            "{prefix}-{}-{}-{suffix}.git",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        let bare = Path::new(env.var("GIT_REPO_ROOT")?).join(&name);
        let work = tempfile::tempdir()?;
        git(work.path(), &["init", "-q", "-b", "main"])?;
        git(work.path(), &["config", "user.name", "mooring-e2e"])?;
        git(
            work.path(),
            &["config", "user.email", "e2e@mooring.invalid"],
        )?;
        let bare_text = bare.to_str().context("the repository path is not UTF-8")?;
        git(
            work.path(),
            &["init", "-q", "--bare", "-b", "main", bare_text],
        )?;
        git(work.path(), &["remote", "add", "origin", bare_text])?;
        Ok(GitRepo { name, bare, work })
    }

    /// Its URL on the smart-HTTP server.
    pub fn http_url(&self, env: &RealEnv) -> anyhow::Result<String> {
        Ok(format!("{}/{}", env.var("GIT_HTTP_URL")?, self.name))
    }

    /// Its URL on the ssh server.
    pub fn ssh_url(&self, env: &RealEnv) -> anyhow::Result<String> {
        Ok(format!(
            "{}{}",
            env.var("GIT_SSH_URL")?,
            self.bare.display()
        ))
    }

    /// Its `file://` URL.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// The work tree.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Writes `text` to `path` in the work tree (not committed yet).
    pub fn write(&self, path: &str, text: &str) -> anyhow::Result<()> {
        let file = self.work.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(std::fs::write(file, text)?)
    }

    /// Deletes `path` from the work tree (not committed yet).
    pub fn remove(&self, path: &str) -> anyhow::Result<()> {
        Ok(std::fs::remove_file(self.work.path().join(path))?)
    }

    /// Commits everything in the work tree and pushes; returns the commit SHA.
    pub fn commit(&self, message: &str) -> anyhow::Result<String> {
        git(self.work.path(), &["add", "-A"])?;
        git(self.work.path(), &["commit", "-q", "-m", message])?;
        git(self.work.path(), &["push", "-q", "origin", "main"])?;
        git(self.work.path(), &["rev-parse", "HEAD"])
    }

    /// Writes `files`, then commits and pushes them.
    pub fn commit_files(&self, files: &[(&str, &str)], message: &str) -> anyhow::Result<String> {
        for (path, text) in files {
            self.write(path, text)?;
        }
        self.commit(message)
    }
}

impl Drop for GitRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.bare);
    }
}

/// A free TCP port on loopback (the kernel picks it; it stays free long enough to be reused).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `mooring run` as a process of its own (the built binary), on free loopback ports, its
/// standard error captured; killed when dropped.
pub struct AgentProcess {
    child: tokio::process::Child,
    /// Its main HTTP address, `127.0.0.1:port`.
    pub addr: String,
    /// Its metrics address, `127.0.0.1:port`.
    pub metrics: String,
}

impl AgentProcess {
    /// Starts `mooring run --kubeconfig <kubeconfig> --namespace <namespace> --watch-namespace
    /// <namespace> --key-renew-period 0 <extra>` and waits (at most 120 s) until `/readyz`.
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        extra: &[&str],
    ) -> anyhow::Result<AgentProcess> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let child = tokio::process::Command::new(binary("mooring")?)
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--http-addr", &addr, "--metrics-addr", &metrics])
            .args(["--namespace", namespace, "--watch-namespace", namespace])
            // RSA-4096 key generation is slow in debug builds; one key is enough.
            .args(["--key-renew-period", "0"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start mooring run")?;
        let process = AgentProcess {
            child,
            addr,
            metrics,
        };
        let ready = format!("http://{}/readyz", process.addr);
        let waited = wait_for("the agent's /readyz", Duration::from_secs(120), || {
            let ready = ready.clone();
            async move {
                let response = reqwest::get(&ready).await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
        if let Err(error) = waited {
            let log = process.stop().await.unwrap_or_default();
            bail!("{error:#}; the agent's log:\n{log}");
        }
        Ok(process)
    }

    /// The PEM certificate it serves at `/v1/cert.pem`.
    pub async fn certificate(&self) -> anyhow::Result<String> {
        fetch_certificate(&self.addr).await
    }

    /// The sum of every sample of metric `name` (all label sets).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        scrape(&self.metrics, name).await
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it at once (SIGKILL), as a node failure would; returns its log.
    pub async fn kill(mut self) -> anyhow::Result<String> {
        self.child.start_kill()?;
        self.collect().await
    }

    /// Stops it with SIGTERM, as Kubernetes does, and waits (at most 30 s); returns its log.
    pub async fn stop(mut self) -> anyhow::Result<String> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        self.collect().await
    }

    async fn collect(&mut self) -> anyhow::Result<String> {
        use tokio::io::AsyncReadExt;
        let mut log = String::new();
        let mut stderr = self.child.stderr.take();
        tokio::time::timeout(Duration::from_secs(30), async {
            if let Some(pipe) = stderr.as_mut() {
                pipe.read_to_string(&mut log).await?;
            }
            self.child.wait().await?;
            anyhow::Ok(())
        })
        .await
        .context("the agent did not stop within 30 s")??;
        Ok(log)
    }
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

/// A test host: a network namespace of this test's own, joined to the host by a veth pair with
/// private addresses. The API server refuses Service endpoints on loopback, so a server the API
/// server must reach through its service proxy listens here. Deleted when dropped.
pub struct TestHost {
    name: String,
    guest: Ipv4Addr,
}

impl TestHost {
    /// Creates the namespace and the veth pair; needs root (CAP_NET_ADMIN) and iproute2.
    pub fn create() -> anyhow::Result<TestHost> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // A /30 per host inside 10.213.0.0/16, unique per process and call.
        let slot = (std::process::id()
            .wrapping_mul(64)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)))
            % 16384;
        let name = format!("mr{slot:04x}");
        let base = 0x0ad5_0000 + slot * 4; // 10.213.0.0 + 4 * slot
        let (host, guest) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let (outside, inside) = (format!("{name}h"), format!("{name}n"));
        let created = TestHost {
            name: name.clone(),
            guest,
        };
        ip(&["netns", "add", &name])?;
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ])?;
        ip(&["link", "set", &inside, "netns", &name])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &outside])?;
        ip(&["link", "set", &outside, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{guest}/30"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &name, "link", "set", &inside, "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(created)
    }

    /// The test host's address.
    pub fn address(&self) -> Ipv4Addr {
        self.guest
    }

    /// A TCP listener on the test host's address, opened inside its namespace.
    pub fn listen(&self, port: u16) -> anyhow::Result<std::net::TcpListener> {
        let path = format!("/run/netns/{}", self.name);
        let address = self.guest;
        // setns applies to the calling thread only: a short-lived thread enters the namespace,
        // binds, and ends; the socket stays in the namespace it was created in.
        std::thread::spawn(move || -> anyhow::Result<std::net::TcpListener> {
            let namespace =
                std::fs::File::open(&path).with_context(|| format!("failed to open {path}"))?;
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("failed to enter the test host's network namespace")?;
            let listener = std::net::TcpListener::bind((address, port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        if ip(&["netns", "del", &self.name]).is_err() {
            eprintln!("warning: failed to delete network namespace {}", self.name);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("failed to run ip")?;
    anyhow::ensure!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// A binary of this workspace (`kubeseal`, `mooring`), from the target directory the tests run
/// from. `./dev test` builds them first.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (./dev test does)",
        path.display()
    );
    Ok(path)
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
