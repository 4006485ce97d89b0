//! The agent in-process: started on loopback for one test namespace, stopped when dropped.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{RealEnv, wait_for};

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
        mooring_agent::cli::Command::Run(mut args) => {
            // Renderers are confined by the `mooring` binary's `render-exec`, not by this test
            // executable (which is what the agent would find as its own binary).
            args.render_sandbox_exe = Some(crate::process::binary("mooring")?);
            Ok(*args)
        }
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

    /// The same, serving HTTP on `listener` (for example one opened in a [`TestHost`](crate::TestHost)).
    pub async fn start_on(
        env: &RealEnv,
        namespace: &str,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<RunningAgent> {
        Self::start_with_on(agent(env, namespace)?, listener).await
    }

    /// An agent with `args`, serving HTTP on `listener`.
    pub async fn start_with_on(
        args: mooring_agent::cli::RunArgs,
        listener: std::net::TcpListener,
    ) -> anyhow::Result<RunningAgent> {
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
pub async fn scrape(metrics: &str, name: &str) -> anyhow::Result<f64> {
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
pub(crate) async fn fetch_certificate(addr: &str) -> anyhow::Result<String> {
    let response = reqwest::get(format!("http://{addr}/v1/cert.pem")).await?;
    anyhow::ensure!(
        response.status() == 200,
        "GET /v1/cert.pem answered {}",
        response.status()
    );
    Ok(response.text().await?)
}
