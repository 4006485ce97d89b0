//! `kubeseal` (mooring's and upstream's) against a running agent through the API server's service
//! proxy, as users run it: the agent serves HTTP from a test host (its own network namespace,
//! because the API server refuses loopback endpoints), a Service `mooring` points at it, and
//! kubeseal finds the certificate and the verify/rotate endpoints through
//! `/api/v1/namespaces/<ns>/services/http:mooring:http/proxy/…`.

use std::collections::BTreeMap;
use std::process::{Output, Stdio};

use std::time::Duration;
use tokio::io::AsyncWriteExt;

use k8s_openapi::api::core::v1::{
    Container, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod,
    PodSchedulingGate, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort as SlicePort, EndpointSlice};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::{RealEnv, RunningAgent, TestHost, TestNamespace};

/// The agent's port inside its test host.
const AGENT_PORT: u16 = 8080;

/// A namespace with an agent on a test host and a Service `mooring` (port `http`) in front of it.
struct Cluster {
    env: RealEnv,
    ns: TestNamespace,
    agent: RunningAgent,
    _host: TestHost,
}

impl Cluster {
    async fn start(prefix: &str) -> Cluster {
        Self::start_with(prefix, |_| {}).await
    }

    /// The same, with the agent's flags adjusted by `adjust`.
    async fn start_with(
        prefix: &str,
        adjust: impl FnOnce(&mut mooring_agent::cli::RunArgs),
    ) -> Cluster {
        let env = RealEnv::load().unwrap();
        mooring_agent::install::apply_crds(
            &env.admin_client().await.unwrap(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let ns = TestNamespace::create(&env, prefix).await.unwrap();
        let host = TestHost::create().unwrap();
        let mut args = mooring_e2e::agent(&env, ns.name()).unwrap();
        adjust(&mut args);
        let agent = RunningAgent::start_with_on(args, host.listen(AGENT_PORT).unwrap())
            .await
            .unwrap();
        expose(&ns, &host).await;
        Cluster {
            env,
            ns,
            agent,
            _host: host,
        }
    }

    /// Runs `program` with `args` and `stdin`, with the admin kubeconfig. Asynchronously: the
    /// agent runs on this test's runtime and must keep serving meanwhile.
    async fn run(&self, program: &std::path::Path, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env("KUBECONFIG", self.env.var("KUBECONFIG").unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        match input.write_all(stdin).await {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        drop(input);
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the command finished within 60s")
            .unwrap()
    }

    async fn kubeseal(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut all = vec![
            "--controller-namespace",
            self.ns.name(),
            "--controller-name",
            "mooring",
        ];
        all.extend_from_slice(args);
        self.run(&mooring_e2e::binary("kubeseal").unwrap(), &all, stdin)
            .await
    }
}

/// The Service `mooring` with port `http`, and its endpoints at the test host, as a cluster's
/// kubelet and endpoint controllers would record them. The API server proxies only to addresses
/// that belong to a Pod with that IP, and no kubelet runs the agent at the test host: the test
/// records the Pod and its IP itself. A scheduling gate keeps the Pod off the kwok Nodes, whose
/// kwok would report an IP of its own.
async fn expose(ns: &TestNamespace, host: &TestHost) {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("mooring-agent".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "mooring".into(),
                image: Some("mooring:test".into()),
                ..Default::default()
            }],
            scheduling_gates: Some(vec![PodSchedulingGate {
                name: "mooring.dev/runs-at-the-test-host".into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pods = ns.api::<Pod>();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = host.address().to_string();
    let status = serde_json::json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(
        "mooring-agent",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
    let pod_ref = ObjectReference {
        kind: Some("Pod".into()),
        name: Some("mooring-agent".into()),
        namespace: Some(ns.name().into()),
        ..Default::default()
    };

    let service = Service {
        metadata: ObjectMeta {
            name: Some("mooring".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(AGENT_PORT),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some("mooring".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: host.address().to_string(),
                target_ref: Some(pod_ref.clone()),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: i32::from(AGENT_PORT),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    ns.api::<Endpoints>()
        .create(&PostParams::default(), &endpoints)
        .await
        .unwrap();
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("mooring-1".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".into(),
                "mooring".into(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![host.address().to_string()],
            target_ref: Some(pod_ref),
            ..Default::default()
        }]),
        ports: Some(vec![SlicePort {
            name: Some("http".into()),
            port: Some(i32::from(AGENT_PORT)),
            ..Default::default()
        }]),
    };
    ns.api::<EndpointSlice>()
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
}

fn secret_yaml(name: &str, namespace: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque\nstringData:\n  {key}: {value}\n"
    )
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn mooring_kubeseal_fetches_seals_validates_and_re_encrypts_through_the_service_proxy() {
    let cluster = Cluster::start("kubeseal").await;
    let ns = cluster.ns.name().to_string();

    let fetched = succeeded(&cluster.kubeseal(&["--fetch-cert"], b"").await);
    assert_eq!(
        fetched,
        cluster.agent.certificate().await.unwrap(),
        "the agent's certificate, via the proxy"
    );

    // Seal without --cert: the certificate comes from the cluster.
    let input = secret_yaml("db", &ns, "password", "p4ss-via-proxy");
    let sealed_yaml = succeeded(&cluster.kubeseal(&["-o", "yaml"], input.as_bytes()).await);
    assert!(!sealed_yaml.contains("p4ss-via-proxy"));
    let sealed: SealedSecret = serde_saphyr::from_str(&sealed_yaml).unwrap();
    cluster
        .ns
        .api::<SealedSecret>()
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();
    cluster
        .ns
        .wait_for_secret("db", "password", b"p4ss-via-proxy")
        .await
        .unwrap();

    // --validate: 200 → success; a renamed copy cannot be opened → upstream's message.
    succeeded(
        &cluster
            .kubeseal(&["--validate"], sealed_yaml.as_bytes())
            .await,
    );
    let renamed = sealed_yaml.replace("name: db", "name: other");
    let invalid = cluster.kubeseal(&["--validate"], renamed.as_bytes()).await;
    assert!(!invalid.status.success());
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("unable to decrypt sealed secret"));

    // --re-encrypt gives a SealedSecret that still opens (and still only under its name).
    let rotated = succeeded(
        &cluster
            .kubeseal(&["--re-encrypt", "-o", "yaml"], sealed_yaml.as_bytes())
            .await,
    );
    assert_ne!(rotated, sealed_yaml, "fresh session keys");
    succeeded(&cluster.kubeseal(&["--validate"], rotated.as_bytes()).await);
    cluster.agent_stop().await;
}

#[tokio::test]
async fn kubeseal_re_encrypts_files_in_place_takes_cert_urls_and_explains_a_wrong_service() {
    let cluster = Cluster::start("kubeseal-files").await;
    let ns = cluster.ns.name().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sealed.yaml");
    let file_arg = file.to_str().unwrap();

    // --cert as an http:// URL (the agent's own endpoint), written to a .yaml file.
    let cert_url = format!("http://{}/v1/cert.pem", cluster.agent.addr);
    let input = secret_yaml("web", &ns, "tls-pass", "url-cert");
    succeeded(
        &cluster
            .kubeseal(&["--cert", &cert_url, "-w", file_arg], input.as_bytes())
            .await,
    );
    let before = std::fs::read_to_string(&file).unwrap();
    assert!(
        before.starts_with("---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\n"),
        "{before}"
    );

    // --re-encrypt with only -f rewrites the file in place, through /v1/rotate.
    let quiet = succeeded(
        &cluster
            .kubeseal(&["--re-encrypt", "-f", file_arg], b"")
            .await,
    );
    assert_eq!(quiet, "", "in-place: nothing on stdout");
    let after = std::fs::read_to_string(&file).unwrap();
    assert_ne!(after, before);
    assert!(
        !after.contains("creationTimestamp") && !after.contains("generation:"),
        "{after}"
    );
    // The deprecated --rotate alias still works (to stdout).
    succeeded(
        &cluster
            .kubeseal(&["--rotate", "-o", "yaml"], after.as_bytes())
            .await,
    );
    let sealed: SealedSecret = serde_saphyr::from_str(&after).unwrap();
    cluster
        .ns
        .api::<SealedSecret>()
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();
    cluster
        .ns
        .wait_for_secret("web", "tls-pass", b"url-cert")
        .await
        .unwrap();

    // A wrong --controller-name is explained, naming the flag.
    let binary = mooring_e2e::binary("kubeseal").unwrap();
    let wrong = cluster
        .run(
            &binary,
            &[
                "--fetch-cert",
                "--controller-namespace",
                &ns,
                "--controller-name",
                "nope",
            ],
            b"",
        )
        .await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains(&format!("{ns}/nope")) && stderr.contains("--controller-name"),
        "{stderr}"
    );
    cluster.agent_stop().await;
}

#[tokio::test]
async fn upstream_kubeseal_seals_against_mooring_and_mooring_unseals() {
    let cluster = Cluster::start("upstream-kubeseal").await;
    let ns = cluster.ns.name().to_string();
    let upstream = std::path::PathBuf::from(cluster.env.var("UPSTREAM_KUBESEAL").unwrap());

    let input = secret_yaml("api", &ns, "token", "from-upstream-kubeseal");
    let output = cluster
        .run(
            &upstream,
            &[
                "--controller-namespace",
                &ns,
                "--controller-name",
                "mooring",
                "--format",
                "json",
            ],
            input.as_bytes(),
        )
        .await;
    let sealed_json = succeeded(&output);
    let sealed: SealedSecret = serde_json::from_str(&sealed_json).unwrap();
    cluster
        .ns
        .api::<SealedSecret>()
        .create(&PostParams::default(), &sealed)
        .await
        .unwrap();
    cluster
        .ns
        .wait_for_secret("api", "token", b"from-upstream-kubeseal")
        .await
        .unwrap();

    // Upstream's --validate works against mooring too.
    let validate = cluster
        .run(
            &upstream,
            &[
                "--controller-namespace",
                &ns,
                "--controller-name",
                "mooring",
                "--validate",
            ],
            sealed_json.as_bytes(),
        )
        .await;
    succeeded(&validate);
    cluster.agent_stop().await;
}

impl Cluster {
    async fn agent_stop(self) {
        self.agent.stop().await.unwrap();
    }
}

/// POSTs `body` to the agent's `path` through the API server's service proxy, claiming to come
/// from `forwarded_for`; the status code.
async fn through_proxy(cluster: &Cluster, path: &str, forwarded_for: &str, body: Vec<u8>) -> u16 {
    let uri = format!(
        "/api/v1/namespaces/{}/services/http:mooring:http/proxy{path}",
        cluster.ns.name()
    );
    let request = http::Request::post(uri)
        .header("x-forwarded-for", forwarded_for)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body))
        .unwrap();
    // kube retries 429s by default; this test counts them.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cluster.env.var("KUBECONFIG").unwrap()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    let response = client.send(request).await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn verify_is_limited_per_caller_whatever_x_forwarded_for_claims() {
    // A burst of 5 and almost no refill, so the count does not depend on the test's speed.
    let cluster = Cluster::start_with("kubeseal-limit", |args| {
        args.rate_limit = 0.001;
        args.rate_limit_burst = 5;
    })
    .await;
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
        "metadata": {"name": "db", "namespace": cluster.ns.name()},
        "spec": {"encryptedData": {"password": "AgBy3i4OJSWK+PiTySYZZA=="}},
    }))
    .unwrap();
    let mut codes = Vec::new();
    for n in 0..25 {
        let claimed = format!("203.0.113.{n}");
        codes.push(through_proxy(&cluster, "/v1/verify", &claimed, body.clone()).await);
    }
    let limited = codes.iter().filter(|code| **code == 429).count();
    assert_eq!(
        limited, 20,
        "5 requests of one caller pass (409: cannot unseal), the other 20 get 429: {codes:?}"
    );
    assert!(codes[..5].iter().all(|code| *code == 409), "{codes:?}");

    // Too many values in one request: refused before any RSA work.
    let values: serde_json::Map<String, serde_json::Value> = (0..101)
        .map(|n| {
            (
                format!("k{n}"),
                serde_json::json!("AgBy3i4OJSWK+PiTySYZZA=="),
            )
        })
        .collect();
    let many = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret",
        "metadata": {"name": "db", "namespace": cluster.ns.name()},
        "spec": {"encryptedData": values},
    }))
    .unwrap();
    let other = Cluster::start_with("kubeseal-values", |_| {}).await;
    assert_eq!(
        through_proxy(&other, "/v1/verify", "198.51.100.1", many).await,
        413
    );
    other.agent_stop().await;
    cluster.agent_stop().await;
}
