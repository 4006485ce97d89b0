//! Two agents with leader election on the real API server: both serve the kubeseal endpoints,
//! only the leader writes; when the leader dies the other takes over within the lease duration,
//! and a leader stopped with SIGTERM hands over at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::{AgentProcess, RealEnv, TestNamespace, wait_for};
use mooring_sealing::SealingCertificate;

/// Lease term in these tests: short, so that a takeover after a crash is quick to observe.
const LEASE_SECONDS: u64 = 4;

async fn start(env: &RealEnv, ns: &TestNamespace, identity: &str) -> AgentProcess {
    let lease = format!("{LEASE_SECONDS}s");
    AgentProcess::start(
        Path::new(env.var("KUBECONFIG").unwrap()),
        ns.name(),
        &[
            "--leader-elect",
            "--leader-identity",
            identity,
            "--leader-lease-duration",
            &lease,
        ],
    )
    .await
    .unwrap()
}

async fn holder(ns: &TestNamespace) -> Option<String> {
    let lease = ns.api::<Lease>().get_opt("mooring").await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn wait_for_holder(ns: &TestNamespace, accept: impl Fn(&str) -> bool) -> String {
    wait_for("a lease holder", Duration::from_secs(60), || async {
        holder(ns).await.filter(|h| accept(h))
    })
    .await
    .unwrap()
}

async fn create_sealed(ns: &TestNamespace, cert: &str, name: &str, value: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.name().into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".into(), value.into())])),
        ..Default::default()
    };
    let cert = SealingCertificate::from_pem(cert.as_bytes()).unwrap();
    let sealed =
        mooring_sealing::secret::seal_secret(&secret, cert.public_key(), None, false).unwrap();
    ns.api::<SealedSecret>()
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();
}

const UNSEALS: &str = "mooring_sealedsecret_unseals_total";

/// Starts two agents and returns (leader, follower) once one holds the Lease.
async fn pair(env: &RealEnv, ns: &TestNamespace) -> (AgentProcess, AgentProcess) {
    // The first starts alone so that it generates the one sealing key; the second finds it.
    let a = start(env, ns, "replica-a").await;
    wait_for_holder(ns, |h| h == "replica-a").await;
    let b = start(env, ns, "replica-b").await;
    (a, b)
}

#[tokio::test]
async fn the_follower_serves_the_certificate_and_takes_over_when_the_leader_dies() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "ha-kill").await.unwrap();
    let (leader, follower) = pair(&env, &ns).await;

    // Every replica serves the same certificate.
    let cert = leader.certificate().await.unwrap();
    assert_eq!(follower.certificate().await.unwrap(), cert);

    // Only the leader unseals.
    create_sealed(&ns, &cert, "first", "ha-first").await;
    ns.wait_for_secret("first", "password", b"ha-first")
        .await
        .unwrap();
    assert!(leader.metric(UNSEALS).await.unwrap() >= 1.0);
    assert_eq!(
        follower.metric(UNSEALS).await.unwrap(),
        0.0,
        "the follower wrote while another replica led"
    );

    // The leader dies without releasing the Lease: the follower waits for the term to run
    // out, then leads and unseals what arrived meanwhile.
    let killed = Instant::now();
    leader.kill().await.unwrap();
    create_sealed(&ns, &cert, "second", "ha-second").await;
    wait_for_holder(&ns, |h| h == "replica-b").await;
    let took_over = killed.elapsed();
    ns.wait_for_secret("second", "password", b"ha-second")
        .await
        .unwrap();
    assert!(
        took_over >= Duration::from_secs(LEASE_SECONDS - 1),
        "took over after {took_over:?}, before the dead leader's term ran out"
    );
    // Within the term plus a few retry periods (2 s at most each) and API latency.
    assert!(
        took_over <= Duration::from_secs(LEASE_SECONDS * 3),
        "took over only after {took_over:?}"
    );
    follower.stop().await.unwrap();
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "ha-term").await.unwrap();
    let (leader, follower) = pair(&env, &ns).await;
    let cert = follower.certificate().await.unwrap();

    let stopped = Instant::now();
    let log = leader.stop().await.unwrap();
    assert!(log.contains("released the lease"), "leader log:\n{log}");
    wait_for_holder(&ns, |h| h == "replica-b").await;
    let took_over = stopped.elapsed();
    // A released Lease is taken at the follower's next look, well before a term would end.
    assert!(
        took_over < Duration::from_secs(LEASE_SECONDS),
        "hand-over took {took_over:?}"
    );
    create_sealed(&ns, &cert, "after", "ha-after").await;
    ns.wait_for_secret("after", "password", b"ha-after")
        .await
        .unwrap();
    follower.stop().await.unwrap();
}
