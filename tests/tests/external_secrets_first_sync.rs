//! Measurement (issue §4, "first sync and spec changes before periodic refreshes"): how long a
//! new ExternalSecret takes to become Ready while N others of the same store refresh faster than
//! the store's request budget allows (a refresh storm). Prints numbers; asserts only that the
//! new ones do become Ready and that the periodic refreshes keep going (no starvation).
//!
//! `cargo build -p mooring-agent --bin mooring` first, then
//! `MOORING_REALENV=… cargo test -p mooring-e2e --test external_secrets_first_sync -- --ignored --nocapture`
//! (sizes: `BENCH_STORM_EXTERNAL_SECRETS`, default 1000; `BENCH_STORM_QPS`, default 50; every
//! ExternalSecret refreshes every 10 s, so the store is asked for twice what its budget allows).

// Test helpers outside #[test] functions may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use mooring_crds::external_secret::ExternalSecret;
use mooring_crds::secret_store::SecretStore;
use mooring_e2e::{RealEnv, TestNamespace, wait_for};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn external_secret(name: &str, key: &str) -> ExternalSecret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name},
        "spec": {"secretStoreRef": {"name": "store"}, "refreshInterval": "10s",
                 "data": [{"secretKey": "password",
                           "remoteRef": {"key": key, "property": "password"}}]}
    }))
    .unwrap()
}

fn is_ready(es: &ExternalSecret) -> bool {
    es.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "SecretSynced")
    })
}

/// Scrapes the sum of `series` from the agent's metrics endpoint.
async fn metric(addr: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
#[ignore = "a measurement: minutes long, prints numbers"]
async fn a_new_external_secret_is_not_queued_behind_a_refresh_storm() {
    let count = env_number("BENCH_STORM_EXTERNAL_SECRETS", 1000);
    let qps = env_number("BENCH_STORM_QPS", 50);
    let env = RealEnv::load().unwrap();
    let client = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&client, Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "es-storm").await.unwrap();

    // One distinct OpenBao key per ExternalSecret: nothing is coalesced, every refresh is a read.
    let http = reqwest::Client::new();
    let prefix = format!("mooring-bench/{}", ns.name());
    let writes = (0..count + 10).map(|i| {
        let request = http
            .post(format!(
                "{}/v1/secret/data/{prefix}/k{i}",
                env.var("VAULT_ADDR").unwrap()
            ))
            .header("X-Vault-Token", env.var("VAULT_TOKEN").unwrap())
            .json(&serde_json::json!({"data": {"password": format!("p{i}")}}));
        async move { request.send().await.unwrap().error_for_status().unwrap() }
    });
    futures::future::join_all(writes).await;

    let token = Secret {
        metadata: ObjectMeta {
            name: Some("bao-token".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(env.var("VAULT_TOKEN").unwrap().as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
        "metadata": {"name": "store"},
        "spec": {"provider": {"vault": {"server": env.var("VAULT_ADDR").unwrap(), "path": "secret",
            "auth": {"tokenSecretRef": {"name": "bao-token", "key": "token"}}}}}
    }))
    .unwrap();
    ns.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();

    let metrics_port = mooring_e2e::free_port().unwrap();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut agent = tokio::process::Command::new(mooring_e2e::binary("mooring").unwrap())
        .args([
            "run",
            "--kubeconfig",
            env.var("KUBECONFIG").unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            &metrics_addr,
            "--namespace",
            ns.name(),
            "--watch-namespace",
            ns.name(),
            "--key-renew-period",
            "0",
            "--controllers",
            "external-secrets",
            "--provider-qps",
            &qps.to_string(),
            "--provider-burst",
            "10",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let api: Api<ExternalSecret> = ns.api();
    let started = Instant::now();
    let creates = (0..count).map(|i| {
        let api = api.clone();
        let es = external_secret(&format!("es-{i}"), &format!("{prefix}/k{i}"));
        async move { api.create(&PostParams::default(), &es).await.unwrap() }
    });
    // Created in batches of 50, so the API server is not the bottleneck being measured.
    let creates: Vec<_> = creates.collect();
    let mut creates = creates.into_iter();
    loop {
        let batch: Vec<_> = creates.by_ref().take(50).collect();
        if batch.is_empty() {
            break;
        }
        futures::future::join_all(batch).await;
    }
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
    .unwrap();
    let synced = started.elapsed();

    // Let the storm build: every ExternalSecret wants a read every 10 s, the budget allows
    // `qps` per second. A fixed window is what is measured, so this waits on the clock.
    let reads = "mooring_externalsecret_provider_calls_total{store=\"SecretStore";
    let storm_start = metric(&metrics_addr, reads).await;
    tokio::time::sleep(Duration::from_secs(30)).await;

    let mut times = Vec::new();
    for n in 0..5 {
        let name = format!("newcomer-{n}");
        let es = external_secret(&name, &format!("{prefix}/k{}", count + n));
        let created = Instant::now();
        api.create(&PostParams::default(), &es).await.unwrap();
        let ready = wait_for(&format!("{name} Ready"), Duration::from_secs(300), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                let es = api.get(&name).await.ok()?;
                is_ready(&es).then(|| created.elapsed())
            }
        })
        .await
        .unwrap();
        times.push(ready);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let storm_reads = metric(&metrics_addr, reads).await - storm_start;
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
    assert!(
        storm_reads / storm_seconds > qps as f64 / 2.0,
        "periodic refreshes keep going at the budget's pace"
    );
}
