//! Many ExternalSecrets over fewer OpenBao keys, with AppRole auth (`BENCH_EXTERNAL_SECRETS`,
//! default 1000, over `BENCH_KEYS`, default 100; refreshInterval 1m). The requests that reach
//! OpenBao are counted at its door: the store points at a forwarder that counts request lines on
//! the wire (OpenBao refuses audit devices through its API, and its metrics are shared with every
//! other client). Counted during the first sync and during one refresh cycle; the agent runs as
//! its binary so its RSS can be read. Fails unless one login serves the whole run.

use std::time::{Duration, Instant};

use anyhow::Context;
use mooring_e2e::{Door, RealEnv, TestNamespace};
use reqwest::Method;
use serde_json::json;

use crate::support::{env_number, rss_kib, start_agent, wait_for_every_secret};

/// Runs the measurement and prints its `BENCH` line.
pub async fn run() -> anyhow::Result<()> {
    let count = env_number("BENCH_EXTERNAL_SECRETS", 1000);
    let keys = env_number("BENCH_KEYS", 100);
    let env = RealEnv::load()?;
    env.install_crds().await?;
    let ns = TestNamespace::create(&env, "es-bench").await?;
    let approle = format!("approle-{}", ns.name());
    let prefix = format!("secret/data/mooring-bench/{}/", ns.name());
    let door = approle_store_behind_a_door(&env, &ns, &approle, &prefix, keys).await?;

    let mut agent = start_agent(&env, &ns, "127.0.0.1:0", &["--provider-qps", "0"])?;
    let pid = agent.id().context("the agent has no pid")?;
    let started = Instant::now();
    for i in 0..count {
        let key = format!("mooring-bench/{}/k{}", ns.name(), i % keys);
        let spec = json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1m",
                          "data": [{"secretKey": "password",
                                    "remoteRef": {"key": key, "property": "password"}}]});
        ns.create_external_secret(&format!("es-{i}"), spec).await?;
    }
    let created = started.elapsed();
    wait_for_every_secret(&ns, count).await?;
    let synced = started.elapsed();
    let (reads, logins) = (
        format!("GET /v1/{prefix}"),
        format!("POST /v1/auth/{approle}/login "),
    );
    let (first_reads, first_logins) = (door.count(&reads), door.count(&logins));

    // One refresh cycle: 1 min plus the spread (a tenth of the interval). A fixed window is
    // what is measured here, so this waits on the clock.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let (cycle_reads, cycle_logins) = (
        door.count(&reads) - first_reads,
        door.count(&logins) - first_logins,
    );
    let rss = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");

    let _ = agent.start_kill();
    let _ = agent.wait().await;
    env.openbao_api(Method::DELETE, &format!("sys/auth/{approle}"), None)
        .await?;

    println!(
        "BENCH external secrets={count} keys={keys}: created in {created:?}, all synced after {synced:?}; \
         first sync: {first_reads} reads, {first_logins} logins; one refresh cycle (70 s): \
         {cycle_reads} reads, {cycle_logins} logins; agent RSS {rss} KiB (peak {peak} KiB)"
    );
    anyhow::ensure!(
        first_logins <= 1 && cycle_logins == 0,
        "one login per token lifetime"
    );
    Ok(())
}

/// Writes `keys` keys under `prefix`, a policy reading them and AppRole `approle` with it;
/// creates Secret `approle` (its secret id) and SecretStore `store` that reaches OpenBao through
/// a door that keeps what the agent sends, which is returned.
async fn approle_store_behind_a_door(
    env: &RealEnv,
    ns: &TestNamespace,
    approle: &str,
    prefix: &str,
    keys: usize,
) -> anyhow::Result<Door> {
    let policy_name = format!("bench-{}", ns.name());
    for k in 0..keys {
        let value = json!({"data": {"password": format!("value-{k}")}});
        env.openbao_api(Method::POST, &format!("{prefix}k{k}"), Some(value))
            .await?;
    }
    let policy = format!("path \"{prefix}*\" {{ capabilities = [\"read\"] }}");
    let path = format!("sys/policies/acl/{policy_name}");
    env.openbao_api(Method::PUT, &path, Some(json!({"policy": policy})))
        .await?;
    let path = format!("sys/auth/{approle}");
    env.openbao_api(Method::POST, &path, Some(json!({"type": "approle"})))
        .await?;
    let role = json!({"token_policies": [policy_name], "token_ttl": "1h"});
    let (role_id, secret_id) = env.openbao_approle(approle, "bench", role).await?;
    ns.create_secret("approle", &[("secret-id", &secret_id)])
        .await?;
    let door = Door::open(env.var("VAULT_ADDR")?.trim_start_matches("http://")).await?;
    let provider = json!({"vault": {"server": door.url, "path": "secret",
        "auth": {"appRole": {"path": approle, "roleId": role_id,
                             "secretRef": {"name": "approle", "key": "secret-id"}}}}});
    ns.create_secret_store("store", provider).await?;
    Ok(door)
}
