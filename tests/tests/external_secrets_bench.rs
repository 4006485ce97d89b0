//! Benchmark (issue §6): many ExternalSecrets over fewer OpenBao keys, with AppRole auth.
//! The requests that reach OpenBao are counted at its door: the store points at a forwarder that
//! counts request lines on the wire (OpenBao refuses audit devices through its API, and its
//! metrics are shared with every other test). Counted during the first sync and during one
//! refresh cycle; the agent runs as its binary so its RSS can be read.
//!
//! `MOORING_REALENV=… cargo test -p mooring-e2e --test external_secrets_bench -- --ignored --nocapture`
//! (sizes: `BENCH_EXTERNAL_SECRETS`, default 1000; `BENCH_KEYS`, default 100).

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

async fn bao(
    env: &RealEnv,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let url = format!("{}/v1/{path}", env.var("VAULT_ADDR").unwrap());
    let mut request = reqwest::Client::new()
        .request(method.clone(), &url)
        .header("X-Vault-Token", env.var("VAULT_TOKEN").unwrap());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// A forwarder to OpenBao that counts, on the wire, requests whose request line starts with one
/// of `patterns` (for example `GET /v1/secret/data/<prefix>`).
struct CountingDoor {
    addr: std::net::SocketAddr,
    counts: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CountingDoor {
    async fn open(target: String, patterns: Vec<String>) -> CountingDoor {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: std::sync::Arc<Vec<std::sync::atomic::AtomicUsize>> =
            std::sync::Arc::new(patterns.iter().map(|_| Default::default()).collect());
        let patterns = std::sync::Arc::new(patterns);
        let shared = counts.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, patterns, counts) = (target.clone(), patterns.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let upstream = async move {
                        let mut buffer = vec![0u8; 64 * 1024];
                        // The tail of the previous chunk, so a request line split across reads
                        // is still seen once.
                        let mut carry: Vec<u8> = Vec::new();
                        loop {
                            let n = match in_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let mut window = std::mem::take(&mut carry);
                            let skip = window.len();
                            window.extend_from_slice(&buffer[..n]);
                            for (i, pattern) in patterns.iter().enumerate() {
                                let p = pattern.as_bytes();
                                let found = window
                                    .windows(p.len())
                                    .enumerate()
                                    .filter(|(at, w)| *w == p && at + p.len() > skip)
                                    .count();
                                counts[i].fetch_add(found, std::sync::atomic::Ordering::SeqCst);
                            }
                            let keep = window.len().min(256);
                            carry = window[window.len() - keep..].to_vec();
                            if out_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let downstream = async move {
                        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                    };
                    tokio::join!(upstream, downstream);
                });
            }
        });
        CountingDoor {
            addr,
            counts,
            accept,
        }
    }

    fn count(&self, i: usize) -> usize {
        self.counts[i].load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingDoor {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "benchmark: run explicitly"]
async fn bench_many_external_secrets_over_few_keys() {
    let count: usize = std::env::var("BENCH_EXTERNAL_SECRETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let keys: usize = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let env = RealEnv::load().unwrap();
    let client = env.admin_client().await.unwrap();
    mooring_agent::install::apply_crds(&client, Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "es-bench").await.unwrap();
    let approle = format!("approle-{}", ns.name());
    let prefix = format!("secret/data/mooring-bench/{}/", ns.name());
    let policy_name = format!("bench-{}", ns.name());

    // Keys, policy, AppRole.
    for k in 0..keys {
        bao(
            &env,
            reqwest::Method::POST,
            &format!("{prefix}k{k}"),
            Some(serde_json::json!({"data": {"password": format!("value-{k}")}})),
        )
        .await;
    }
    let policy = format!("path \"{prefix}*\" {{ capabilities = [\"read\"] }}");
    bao(
        &env,
        reqwest::Method::PUT,
        &format!("sys/policies/acl/{policy_name}"),
        Some(serde_json::json!({"policy": policy})),
    )
    .await;
    bao(
        &env,
        reqwest::Method::POST,
        &format!("sys/auth/{approle}"),
        Some(serde_json::json!({"type": "approle"})),
    )
    .await;
    bao(
        &env,
        reqwest::Method::POST,
        &format!("auth/{approle}/role/bench"),
        Some(serde_json::json!({"token_policies": [policy_name.clone()], "token_ttl": "1h"})),
    )
    .await;
    let role_id = bao(
        &env,
        reqwest::Method::GET,
        &format!("auth/{approle}/role/bench/role-id"),
        None,
    )
    .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret_id = bao(
        &env,
        reqwest::Method::POST,
        &format!("auth/{approle}/role/bench/secret-id"),
        None,
    )
    .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_string();
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("approle".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "secret-id".into(),
                    ByteString(secret_id.into_bytes()),
                )])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let login_path = format!("auth/{approle}/login");
    let door = CountingDoor::open(
        env.var("VAULT_ADDR")
            .unwrap()
            .trim_start_matches("http://")
            .to_string(),
        vec![
            format!("GET /v1/{prefix}"),
            format!("POST /v1/{login_path} "),
        ],
    )
    .await;
    let store: SecretStore = serde_json::from_value(serde_json::json!({
        "apiVersion": "external-secrets.io/v1", "kind": "SecretStore", "metadata": {"name": "store"},
        "spec": {"provider": {"vault": {"server": format!("http://{}", door.addr), "path": "secret",
            "auth": {"appRole": {"path": approle, "roleId": role_id,
                                 "secretRef": {"name": "approle", "key": "secret-id"}}}}}}
    }))
    .unwrap();
    ns.api::<SecretStore>()
        .create(&PostParams::default(), &store)
        .await
        .unwrap();

    let mut agent = tokio::process::Command::new(mooring_e2e::binary("mooring").unwrap())
        .args([
            "run",
            "--kubeconfig",
            env.var("KUBECONFIG").unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--namespace",
            ns.name(),
            "--watch-namespace",
            ns.name(),
            "--key-renew-period",
            "0",
            "--provider-qps",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = agent.id().unwrap();

    let started = Instant::now();
    let api: Api<ExternalSecret> = ns.api();
    for i in 0..count {
        let es: ExternalSecret = serde_json::from_value(serde_json::json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": format!("es-{i}")},
            "spec": {"secretStoreRef": {"name": "store"}, "refreshInterval": "1m",
                     "data": [{"secretKey": "password",
                               "remoteRef": {"key": format!("mooring-bench/{}/k{}", ns.name(), i % keys),
                                             "property": "password"}}]}
        }))
        .unwrap();
        api.create(&PostParams::default(), &es).await.unwrap();
    }
    let created = started.elapsed();
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
    let (first_reads, first_logins) = (door.count(0), door.count(1));

    // One refresh cycle: 1 min plus the spread (a tenth of the interval). A fixed window is
    // what is measured here, so this waits on the clock.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let (cycle_reads, cycle_logins) = (door.count(0) - first_reads, door.count(1) - first_logins);
    let rss = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");

    let _ = agent.start_kill();
    let _ = agent.wait().await;
    bao(
        &env,
        reqwest::Method::DELETE,
        &format!("sys/auth/{approle}"),
        None,
    )
    .await;

    println!(
        "BENCH external secrets={count} keys={keys}: created in {created:?}, all synced after {synced:?}; \
         first sync: {first_reads} reads, {first_logins} logins; one refresh cycle (70 s): \
         {cycle_reads} reads, {cycle_logins} logins; agent RSS {rss} KiB (peak {peak} KiB)"
    );
    assert!(
        first_logins <= 1 && cycle_logins == 0,
        "one login per token lifetime"
    );
}
