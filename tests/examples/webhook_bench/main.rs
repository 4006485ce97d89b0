//! The webhook measurement that `tests/bench/webhook` runs against the real peers of
//! `tests/realenv/up`: how long a commit takes to reach the cluster with a GitHub push webhook,
//! and without one, on polling at the shortest interval the agent honours. Not a test: it prints
//! one line of numbers and fails only when a push never arrives.
//!
//! Per push (BENCH_PUSHES, 50, each mode): once the previous one is synced, a commit to the
//! realenv's git server changes one ConfigMap; the time runs until a watch on that ConfigMap sees
//! the new value. Webhook mode: from the signed `push` request (the Application polls hourly, so
//! only the webhook can have caused the sync). Polling mode: from the commit (the Application's
//! `spec.pollInterval` is the agent's `--min-poll-interval`; each commit waits a random part of
//! that interval after the previous sync, so it lands anywhere in the poll cycle).

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{ObjectMeta, PostParams, WatchEvent, WatchParams};
use mooring_crds::application::Application;
use mooring_e2e::gitops::gitops_agent_args;
use mooring_e2e::webhook::{github_payload, github_push_headers};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace};
use serde_json::json;

const SECRET: &str = "bench-webhook-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let pushes = std::env::var("BENCH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50usize);
    let env = RealEnv::load()?;
    let ns = TestNamespace::create(&env, "bench-webhook").await?;
    let repo = GitRepo::create(&env, ns.name())?;
    for app in ["hooked", "polled"] {
        repo.write(&format!("apps/{app}/configmap.yaml"), &configmap(app, 0))?;
    }
    let (url, first) = repo.serve_over_http(&env, "two apps", &[&ns]).await?;
    write_webhook_secret(&ns).await?;
    let cache = tempfile::tempdir()?;
    let mut args = gitops_agent_args(&env, ns.name(), cache.path())?;
    args.default_poll_interval = Duration::from_secs(3600);
    let min_poll = args.min_poll_interval;
    let agent = RunningAgent::start_with(args).await?;
    create_application(&ns, "hooked", &url, "1h").await?;
    let polled_interval = format!("{}s", min_poll.as_secs().max(1));
    create_application(&ns, "polled", &url, &polled_interval).await?;
    for app in ["hooked", "polled"] {
        ns.wait_for_synced_at(app, &first).await?;
    }

    let http = reqwest::Client::new();
    let mut webhook = Vec::with_capacity(pushes);
    let mut last = first;
    for i in 1..=pushes {
        ns.wait_for_synced_at("hooked", &last).await?;
        let changes = Changes::watch(&ns, "hooked").await?;
        last = repo.commit_files(
            &[("apps/hooked/configmap.yaml", &configmap("hooked", i))],
            &format!("hooked {i}"),
        )?;
        let body = github_payload(
            &url,
            "refs/heads/main",
            &last,
            &["apps/hooked/configmap.yaml"],
        );
        let started = Instant::now();
        let mut request = http
            .post(format!("http://{}/api/webhook", agent.addr))
            .header("content-type", "application/json");
        for (name, value) in github_push_headers(SECRET, &body) {
            request = request.header(name, value);
        }
        let status = request.body(body).send().await?.status();
        anyhow::ensure!(status.as_u16() == 202, "the webhook answered {status}");
        changes.until_value(i, Duration::from_secs(30)).await?;
        webhook.push(started.elapsed());
    }

    // The polled Application followed the webhook phase's commits too (they move its branch).
    let mut polling = Vec::with_capacity(pushes);
    let bound = min_poll * 3;
    let mut spread = Spread::seeded();
    for i in 1..=pushes {
        ns.wait_for_synced_at("polled", &last).await?;
        // A commit lands at a random moment of the poll cycle, as real ones do (right after
        // a sync it would always wait the whole interval).
        tokio::time::sleep(min_poll.mul_f64(spread.next_fraction())).await;
        let changes = Changes::watch(&ns, "polled").await?;
        let started = Instant::now();
        last = repo.commit_files(
            &[("apps/polled/configmap.yaml", &configmap("polled", i))],
            &format!("polled {i}"),
        )?;
        changes.until_value(i, bound).await?;
        polling.push(started.elapsed());
    }
    agent.stop().await?;

    let (w50, w95) = (percentile(&mut webhook, 50), percentile(&mut webhook, 95));
    let (p50, p95) = (percentile(&mut polling, 50), percentile(&mut polling, 95));
    println!(
        "WEBHOOK pushes={pushes} p50={} ms p95={} ms; POLLING interval={polled_interval} p50={} ms p95={} ms; webhook/polling p50={:.3} p95={:.3}",
        w50.as_millis(),
        w95.as_millis(),
        p50.as_millis(),
        p95.as_millis(),
        w50.as_secs_f64() / p50.as_secs_f64(),
        w95.as_secs_f64() / p95.as_secs_f64(),
    );
    Ok(())
}

fn configmap(name: &str, value: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

/// Fractions in [0, 1) for the commit delays (xorshift; the seed is the clock, so runs differ).
struct Spread(u64);

impl Spread {
    fn seeded() -> Spread {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Spread(u64::from(nanos) | 1)
    }

    fn next_fraction(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The `p`th percentile (nearest rank) of `samples`.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    let rank = (samples.len() * p).div_ceil(100).max(1);
    samples[rank - 1]
}

async fn write_webhook_secret(ns: &TestNamespace) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("mooring-webhook".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "webhook.github.secret".to_string(),
                ByteString(SECRET.into()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

async fn create_application(
    ns: &TestNamespace,
    app: &str,
    url: &str,
    poll: &str,
) -> anyhow::Result<()> {
    let application: Application = serde_json::from_value(json!({
        "apiVersion": "mooring.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": app},
        "spec": {
            "project": "default",
            "pollInterval": poll,
            "source": {"repoURL": url, "targetRevision": "main", "path": format!("apps/{app}")},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ns.name()},
            "syncPolicy": {"automated": {"prune": true}},
        },
    }))?;
    ns.api::<Application>()
        .create(&PostParams::default(), &application)
        .await?;
    Ok(())
}

/// A watch on one ConfigMap, opened before the change it waits for.
struct Changes {
    api: Api<ConfigMap>,
    name: String,
    version: String,
}

impl Changes {
    async fn watch(ns: &TestNamespace, name: &str) -> anyhow::Result<Changes> {
        let api = ns.api::<ConfigMap>();
        let current = api.get(name).await?;
        let version = current
            .metadata
            .resource_version
            .context("a ConfigMap without a resourceVersion")?;
        Ok(Changes {
            api,
            name: name.to_string(),
            version,
        })
    }

    /// Waits (at most `bound`) for the event that sets `data.value` to `value`.
    async fn until_value(self, value: usize, bound: Duration) -> anyhow::Result<()> {
        let wanted = value.to_string();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(bound.as_secs().clamp(1, 290) as u32);
        let events = self.api.watch(&params, &self.version).await?.boxed();
        let mut matching = events.try_filter_map(|event| {
            let found = match event {
                WatchEvent::Modified(cm) | WatchEvent::Added(cm) => cm
                    .data
                    .and_then(|data| data.get("value").cloned())
                    .filter(|v| *v == wanted)
                    .map(|_| ()),
                _ => None,
            };
            std::future::ready(Ok(found))
        });
        match tokio::time::timeout(bound, matching.next()).await {
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(error))) => Err(error.into()),
            Ok(None) | Err(_) => anyhow::bail!(
                "ConfigMap {} did not get value {value} within {bound:?}",
                self.name
            ),
        }
    }
}
