//! The controller metrics every controller reports the same way (README, "Operate: metrics, logs,
//! events"), read from a running agent's `/metrics` after real work against the real API server:
//! reconciles by result, errors by reason, the queue drained back to zero, reconcile durations.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::{RealEnv, RunningAgent, TestNamespace, wait_for};
use mooring_sealing::SealingCertificate;

const BURST: usize = 40;

fn secret(name: &str, namespace: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("token".to_string(), value.to_string())])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn sealed_metric(name: &str, labels: &str) -> String {
    format!("mooring_controller_{name}{{controller=\"sealedsecret\"{labels}}}")
}

#[tokio::test]
async fn reconciles_errors_queue_depth_and_durations_per_controller() {
    let env = RealEnv::load().unwrap();
    env.install_crds().await.unwrap();
    let ns = TestNamespace::create(&env, "metrics").await.unwrap();
    let agent = RunningAgent::start(&env, ns.name()).await.unwrap();
    let cert = agent.certificate().await.unwrap();
    let cert = SealingCertificate::from_pem(cert.as_bytes()).unwrap();

    // A burst larger than the controller's reconcile slots, plus one that must fail: its Secret
    // exists and is not mooring's.
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &secret("taken", ns.name(), "not-ours"),
        )
        .await
        .unwrap();
    let names: Vec<String> = (0..BURST)
        .map(|i| format!("burst-{i}"))
        .chain(["taken".to_string()])
        .collect();
    let creates = names.iter().map(|name| {
        let sealed = mooring_sealing::secret::seal_secret(
            &secret(name, ns.name(), &format!("value-{name}")),
            cert.public_key(),
            None,
            false,
        )
        .unwrap();
        let api = ns.api::<SealedSecret>();
        async move { api.create(&PostParams::default(), &sealed).await.unwrap() }
    });
    futures::future::join_all(creates).await;
    for name in names.iter().take(BURST) {
        ns.wait_for_secret(name, "token", format!("value-{name}").as_bytes())
            .await
            .unwrap();
    }

    let errors = sealed_metric("reconcile_errors_total", ",reason=\"Unmanaged\"");
    wait_for(
        "the Unmanaged error counted",
        Duration::from_secs(30),
        || {
            let agent = &agent;
            let errors = &errors;
            async move { (agent.metric(errors).await.ok()? >= 1.0).then_some(()) }
        },
    )
    .await
    .unwrap();
    let successes = agent
        .metric(&sealed_metric("reconciles_total", ",result=\"success\""))
        .await
        .unwrap();
    assert!(
        successes >= BURST as f64,
        "{successes} successful reconciles for {BURST} objects"
    );
    let failed = agent
        .metric(&sealed_metric("reconciles_total", ",result=\"error\""))
        .await
        .unwrap();
    assert!(failed >= 1.0, "the failing object counted as an error");
    let durations = agent
        .metric("mooring_controller_reconcile_duration_seconds_count{controller=\"sealedsecret\"}")
        .await
        .unwrap();
    assert!(
        durations >= successes + failed - 1.0,
        "{durations} durations"
    );

    // Once the burst is done, nothing waits and nothing runs.
    let settled = wait_for("the queue drained", Duration::from_secs(30), || {
        let agent = &agent;
        async move {
            let depth = agent.metric(&sealed_metric("queue_depth", "")).await.ok()?;
            let running = agent
                .metric(&sealed_metric("reconciles_in_flight", ""))
                .await
                .ok()?;
            (depth == 0.0 && running == 0.0).then_some(())
        }
    })
    .await;
    settled.unwrap();

    // Every controller of the agent is present from the start, idle or not.
    let text = reqwest::get(format!("http://{}/metrics", agent.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for controller in [
        "sealedsecret",
        "application",
        "externalsecret",
        "secretstore",
    ] {
        assert!(
            text.contains(&format!(
                "mooring_controller_queue_depth{{controller=\"{controller}\"}}"
            )),
            "no queue depth for {controller}"
        );
    }
    agent.stop().await.unwrap();
}
