//! What both measurements need: sizes from the environment, the agent as a process of its own,
//! waiting for the Secrets, and the agent's memory.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use mooring_e2e::{RealEnv, TestNamespace, wait_for};

/// The number in environment variable `name`, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts the built `mooring run` for `ns` with its metrics on `metrics_addr` and `extra`
/// arguments; its output is dropped (a full pipe would stall it), it is killed when dropped.
pub fn start_agent(
    env: &RealEnv,
    ns: &TestNamespace,
    metrics_addr: &str,
    extra: &[&str],
) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(mooring_e2e::binary("mooring")?)
        .args(["run", "--kubeconfig", env.var("KUBECONFIG")?])
        .args(["--http-addr", "127.0.0.1:0", "--metrics-addr", metrics_addr])
        .args(["--namespace", ns.name(), "--watch-namespace", ns.name()])
        .args(["--key-renew-period", "0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("failed to start mooring run")
}

/// Waits (at most 15 minutes) until `count` Secrets of the namespace are ExternalSecret targets.
pub async fn wait_for_every_secret(ns: &TestNamespace, count: usize) -> anyhow::Result<()> {
    let secrets: Api<Secret> = ns.api();
    wait_for("every Secret", Duration::from_secs(900), || {
        let secrets = secrets.clone();
        async move {
            let n = secrets
                .list(&ListParams::default().labels("reconcile.external-secrets.io/managed=true"))
                .await
                .ok()?
                .items
                .len();
            (n >= count).then_some(())
        }
    })
    .await
}

/// Field `field` (`VmRSS:`, `VmHWM:`) of process `pid`'s status, in KiB (0 if unreadable).
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
