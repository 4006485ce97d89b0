//! The Jsonnet measurement that `tests/bench/jsonnet` runs: one large manifest-generating program
//! (BENCH_JSONNET_APPS applications of a Deployment, a Service and a ConfigMap each, built through
//! a library with object merges, comprehensions, string formatting and std.manifestJsonEx)
//! evaluated by mooring's evaluator (in-process, as the agent renders) and by go-jsonnet's
//! `jsonnet` command (`$GO_JSONNET`, a process per run, as a CLI is used) on the same files. Both
//! outputs must be the same JSON. Two variants of the library: one formatting strings with `%`
//! (std.format, which go-jsonnet implements in Jsonnet), one concatenating them. Prints one line
//! per variant: the medians and their ratio.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mooring_agent::gitops::render::jsonnet::{Evaluation, evaluate};

const LIB: &str = r#"
{
  labels(app, tier):: { 'app.kubernetes.io/name': app, 'app.kubernetes.io/part-of': 'bench', tier: tier },
  deployment(app, i):: {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: app, labels: $.labels(app, 'web') },
    spec: {
      replicas: 1 + i % 3,
      selector: { matchLabels: $.labels(app, 'web') },
      template: {
        metadata: { labels: $.labels(app, 'web') + { revision: std.md5(app) } },
        spec: {
          containers: [
            {
              name: c,
              image: 'registry.invalid/%s/%s:1.%d.0' % [app, c, i % 10],
              env: [{ name: 'VAR_%d' % k, value: std.toString(k * i) } for k in std.range(1, 8)],
              ports: [{ containerPort: 8080 + p } for p in std.range(0, 2)],
              resources: { limits: { cpu: '%dm' % (100 * (1 + i % 4)), memory: '%dMi' % (64 * (1 + i % 8)) } },
            }
            for c in ['api', 'worker']
          ],
        },
      },
    },
  },
  service(app):: {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: app, labels: $.labels(app, 'web') },
    spec: { selector: $.labels(app, 'web'), ports: [{ port: 80 + p, targetPort: 8080 + p } for p in std.range(0, 2)] },
  },
  configMap(app, i):: {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: app + '-config', labels: $.labels(app, 'config') },
    data: {
      'settings.json': std.manifestJsonEx({ app: app, index: i, features: { [f]: (i + std.length(f)) % 2 == 0 for f in ['a', 'bb', 'ccc', 'dddd'] } }, '  '),
      greeting: std.join(' ', [std.asciiUpper(app), 'says', std.format('%05d', i)]),
    },
  },
}
"#;

/// [`LIB`] with `%` formatting replaced by concatenation.
fn plain_lib() -> String {
    LIB.replace(
        "'registry.invalid/%s/%s:1.%d.0' % [app, c, i % 10]",
        "'registry.invalid/' + app + '/' + c + ':1.' + std.toString(i % 10) + '.0'",
    )
    .replace("'VAR_%d' % k", "'VAR_' + std.toString(k)")
    .replace(
        "'%dm' % (100 * (1 + i % 4))",
        "std.toString(100 * (1 + i % 4)) + 'm'",
    )
    .replace(
        "'%dMi' % (64 * (1 + i % 8))",
        "std.toString(64 * (1 + i % 8)) + 'Mi'",
    )
    .replace("std.format('%05d', i)", "std.toString(i)")
}

fn main_program(apps: usize) -> String {
    format!(
        "local k = import 'k.libsonnet';\nlocal names = ['app-' + std.toString(i) for i in std.range(1, {apps})];\n\
         std.flattenArrays([\n  [k.deployment(n, i), k.service(n), k.configMap(n, i)]\n  for i in std.range(0, std.length(names) - 1)\n  for n in [names[i]]\n])\n"
    )
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let apps: usize = std::env::var("BENCH_JSONNET_APPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runs: usize = std::env::var("BENCH_JSONNET_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let go = std::env::var("GO_JSONNET")
        .map_err(|_| anyhow::anyhow!("GO_JSONNET is not set (tests/realenv/install builds it)"))?;
    for (variant, lib) in [
        ("formatting", LIB.to_string()),
        ("concatenating", plain_lib()),
    ] {
        measure(variant, &lib, apps, runs, &go)?;
    }
    Ok(())
}

fn measure(variant: &str, lib: &str, apps: usize, runs: usize, go: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("k.libsonnet"), lib)?;
    std::fs::write(dir.path().join("main.jsonnet"), main_program(apps))?;

    let evaluation = Evaluation::new(dir.path(), Path::new("main.jsonnet"));
    let mut ours = Vec::new();
    let mut our_output = serde_json::Value::Null;
    for _ in 0..runs {
        let started = Instant::now();
        our_output = evaluate(&evaluation).map_err(|e| anyhow::anyhow!("{e}"))?;
        ours.push(started.elapsed());
    }
    let mut theirs = Vec::new();
    let mut their_output = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = Command::new(go)
            .arg("main.jsonnet")
            .current_dir(dir.path())
            .output()?;
        theirs.push(started.elapsed());
        anyhow::ensure!(
            output.status.success(),
            "go-jsonnet failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        their_output = output.stdout;
    }
    let their_value: serde_json::Value = serde_json::from_slice(&their_output)?;
    anyhow::ensure!(
        their_value == our_output,
        "mooring's and go-jsonnet's outputs differ ({variant})"
    );
    let objects = our_output.as_array().map_or(0, Vec::len);
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "JSONNET {variant}: {objects} objects ({:.1} MiB of JSON), median of {runs}: mooring {:.0} ms, go-jsonnet {:.0} ms; mooring/go-jsonnet = {:.3}",
        their_output.len() as f64 / (1024.0 * 1024.0),
        ours.as_secs_f64() * 1000.0,
        theirs.as_secs_f64() * 1000.0,
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    Ok(())
}
