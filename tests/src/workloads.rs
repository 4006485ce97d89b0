//! Workloads that really run: the realenv's kwok Nodes (tests/realenv/kwok/stages.yaml) play the
//! kubelet, so a Deployment's pods become Running and Ready, a Job's pods Succeeded, and pods
//! annotated [`FAIL_ANNOTATION`] fail with exit code 1.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::{RealEnv, wait_for};

/// A pod (template) annotation: `"true"` makes its containers exit 1 about a second after they
/// start (the pod Failed with restartPolicy Never, so a Job of such pods fails; CrashLoopBackOff
/// otherwise).
pub const FAIL_ANNOTATION: &str = "mooring.dev/kwok-fail";

/// A pod (template) annotation: how long the pod stays Pending in ContainerCreating before it
/// runs and is Ready, as a Go duration (`"3s"`; about a second without it).
pub const READY_DELAY_ANNOTATION: &str = "mooring.dev/kwok-ready-delay";

/// Waits (at most `timeout`) until every Node `tests/realenv/up` registered (`KWOK_NODES` of
/// env.sh) reports Ready, and returns their names.
pub async fn wait_for_ready_nodes(env: &RealEnv, timeout: Duration) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = env
        .var("KWOK_NODES")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!names.is_empty(), "env.sh names no kwok Nodes");
    let nodes: Api<Node> = Api::all(env.admin_client().await?);
    let what = format!("Nodes {} Ready", names.join(", "));
    wait_for(&what, timeout, || async {
        for name in &names {
            let node = nodes.get_opt(name).await.ok()??;
            is_ready(&node).then_some(())?;
        }
        Some(())
    })
    .await?;
    Ok(names)
}

/// Whether `node` has condition Ready=True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}
