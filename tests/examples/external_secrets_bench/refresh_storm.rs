//! How long a new ExternalSecret takes to become Ready while N others of the same store refresh
//! faster than the store's request budget allows (a refresh storm): first syncs and spec changes
//! go ahead of periodic refreshes. `BENCH_STORM_EXTERNAL_SECRETS` (default 1000) ExternalSecrets
//! each refresh every 10 s against `--provider-qps BENCH_STORM_QPS` (default 50), so the store is
//! asked for twice what its budget allows. Fails unless the new ones become Ready and the
//! periodic refreshes keep going (no starvation).

use std::time::{Duration, Instant};

use kube::Api;
use mooring_crds::external_secret::ExternalSecret;
use mooring_e2e::external_secrets::openbao_token_provider;
use mooring_e2e::{RealEnv, TestNamespace, scrape, wait_for};

use crate::support::{env_number, start_agent, wait_for_every_secret};

/// The provider calls of every SecretStore, as the agent counts them.
const READS: &str = "mooring_externalsecret_provider_calls_total{store=\"SecretStore";

/// Runs the measurement and prints its `STORM` line.
pub async fn run() -> anyhow::Result<()> {
    let count = env_number("BENCH_STORM_EXTERNAL_SECRETS", 1000);
    let qps = env_number("BENCH_STORM_QPS", 50);
    let env = RealEnv::load()?;
    env.install_crds().await?;
    let ns = TestNamespace::create(&env, "es-storm").await?;
    let prefix = format!("mooring-bench/{}", ns.name());
    token_store_with_a_key_each(&env, &ns, &prefix, count + 10).await?;

    let metrics_addr = format!("127.0.0.1:{}", mooring_e2e::free_port()?);
    let qps_text = qps.to_string();
    let extra = [
        "--controllers",
        "external-secrets",
        "--provider-qps",
        &qps_text,
        "--provider-burst",
        "10",
    ];
    let mut agent = start_agent(&env, &ns, &metrics_addr, &extra)?;

    let started = Instant::now();
    // Created in batches of 50, so the API server is not the bottleneck being measured.
    let all: Vec<usize> = (0..count).collect();
    for batch in all.chunks(50) {
        let creates = batch.iter().map(|i| {
            let (name, spec) = (format!("es-{i}"), reading(&format!("{prefix}/k{i}")));
            let ns = &ns;
            async move { ns.create_external_secret(&name, spec).await }
        });
        futures::future::try_join_all(creates).await?;
    }
    wait_for_every_secret(&ns, count).await?;
    let synced = started.elapsed();

    // Let the storm build: every ExternalSecret wants a read every 10 s, the budget allows
    // `qps` per second. A fixed window is what is measured, so this waits on the clock.
    let storm_start = scrape(&metrics_addr, READS).await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let times = newcomers_time_to_ready(&ns, &prefix, count).await?;
    let storm_reads = scrape(&metrics_addr, READS).await? - storm_start;
    let storm_seconds = 30.0 + times.iter().map(Duration::as_secs_f64).sum::<f64>() + 15.0;
    let _ = agent.start_kill();
    let _ = agent.wait().await;

    let mut sorted = times.clone();
    sorted.sort();
    println!(
        "STORM external secrets={count} refreshInterval=10s provider-qps={qps}: all synced after {synced:?}; \
         time to Ready of 5 new ExternalSecrets during the storm: {times:?} (median {:?}, max {:?}); \
         provider calls during the storm: {storm_reads} in ~{storm_seconds:.0} s ({:.1}/s)",
        sorted[2],
        sorted[4],
        storm_reads / storm_seconds
    );
    anyhow::ensure!(
        storm_reads / storm_seconds > qps as f64 / 2.0,
        "periodic refreshes keep going at the budget's pace"
    );
    Ok(())
}

/// Writes `keys` OpenBao keys `<prefix>/k<i>`, one per ExternalSecret, so nothing is coalesced
/// and every refresh is a read; creates Secret `bao-token` and SecretStore `store` reading them.
async fn token_store_with_a_key_each(
    env: &RealEnv,
    ns: &TestNamespace,
    prefix: &str,
    keys: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let (addr, token) = (env.var("VAULT_ADDR")?, env.var("VAULT_TOKEN")?);
    let writes = (0..keys).map(|i| {
        let request = http
            .post(format!("{addr}/v1/secret/data/{prefix}/k{i}"))
            .header("X-Vault-Token", token)
            .json(&serde_json::json!({"data": {"password": format!("p{i}")}}));
        async move { request.send().await?.error_for_status() }
    });
    futures::future::try_join_all(writes).await?;

    ns.create_openbao_token(env).await?;
    ns.create_secret_store("store", openbao_token_provider(addr))
        .await?;
    Ok(())
}

/// Creates five new ExternalSecrets during the storm, one after the other, and returns how long
/// each took to become Ready (at most 5 minutes each).
async fn newcomers_time_to_ready(
    ns: &TestNamespace,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let api: Api<ExternalSecret> = ns.api();
    let mut times = Vec::new();
    for n in 0..5 {
        let name = format!("newcomer-{n}");
        let spec = reading(&format!("{prefix}/k{}", count + n));
        let created = Instant::now();
        ns.create_external_secret(&name, spec).await?;
        let ready = wait_for(&format!("{name} Ready"), Duration::from_secs(300), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let es = api.get(&name).await.ok()?;
                is_ready(&es).then(|| created.elapsed())
            }
        })
        .await?;
        times.push(ready);
        // The newcomers arrive spread over the storm, not as one burst.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(times)
}

/// The spec of an ExternalSecret reading `key`'s `password`, refreshing every 10 s from `store`.
fn reading(key: &str) -> serde_json::Value {
    serde_json::json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "10s",
                       "data": [{"secretKey": "password",
                                 "remoteRef": {"key": key, "property": "password"}}]})
}

fn is_ready(es: &ExternalSecret) -> bool {
    es.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "SecretSynced")
    })
}
