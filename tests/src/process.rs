//! The agent as a process of its own (the built `mooring` binary), and where the built
//! binaries are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::agent::{fetch_certificate, scrape};
use crate::wait_for;

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

    /// Its process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
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
