//! Template, YAML and glob bombs from Git and from SealedSecrets: each is refused with an error
//! naming the object, the agent's memory stays bounded, and it keeps serving `/healthz` and
//! syncing everything else. The agent runs as its own process so its peak RSS can be read.
//! How long each bomb takes to be refused is printed (measured, not asserted).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, PostParams};
use mooring_crds::application::Application;
use mooring_crds::sealed_secret::SealedSecret;
use mooring_e2e::gitops::ApplicationManifest;
use mooring_e2e::{AgentProcess, GitRepo, RealEnv, TestNamespace, wait_for};
use mooring_sealing::SealingCertificate;

/// Peak resident memory of process `pid` (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib / 1024.0
}

/// A SealedSecret `name` with one sealed value and `template` as its `spec.template.data`.
fn templated(cert: &str, ns: &str, name: &str, template: &str) -> SealedSecret {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".into(), "p4ss".into())])),
        ..Default::default()
    };
    let cert = SealingCertificate::from_pem(cert.as_bytes()).unwrap();
    let mut sealed =
        mooring_sealing::secret::seal_secret(&secret, cert.public_key(), None, false).unwrap();
    let mut value = serde_json::to_value(&sealed).unwrap();
    value["spec"]["template"] = serde_json::json!({"data": {"out": template}});
    sealed = serde_json::from_value(value).unwrap();
    sealed
}

/// Waits for SealedSecret `name`'s Synced condition to be False; returns its reason and message.
async fn refused(ns: &TestNamespace, name: &str) -> (String, String) {
    let api = ns.api::<SealedSecret>();
    wait_for(
        &format!("SealedSecret {name} refused"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let sealed = api.get(name).await.ok()?;
                let value = serde_json::to_value(&sealed).ok()?;
                let condition = value["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Synced" && c["status"] == "False")?
                    .clone();
                Some((
                    condition["reason"].as_str()?.to_string(),
                    condition["message"].as_str()?.to_string(),
                ))
            }
        },
    )
    .await
    .unwrap()
}

/// A ConfigMap whose value is a "billion laughs" over a 64 KiB scalar: 10 levels of ten
/// aliases each would be 64 KiB × 10^6 once expanded.
fn yaml_bomb() -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: laughs\n  annotations:\n    l0: &l0 \"{}\"\n",
        "x".repeat(64 * 1024)
    );
    for level in 1..=6 {
        let previous = format!("*l{}", level - 1);
        let list = [previous.as_str(); 10].join(", ");
        text.push_str(&format!("    l{level}: &l{level} [{list}]\n"));
    }
    text.push_str("data:\n  lol: *l6\n");
    text
}

#[tokio::test]
async fn bombs_are_refused_and_the_agent_keeps_serving_and_syncing() {
    let env = RealEnv::load().unwrap();
    mooring_agent::install::apply_crds(&env.admin_client().await.unwrap(), Duration::from_secs(60))
        .await
        .unwrap();
    let ns = TestNamespace::create(&env, "bombs").await.unwrap();

    let repo = GitRepo::create(&env, "bombs").unwrap();
    repo.write("yaml-bomb/laughs.yaml", &yaml_bomb()).unwrap();
    let braces = "{a,b}".repeat(40);
    let matching = "ab".repeat(20);
    repo.write(
        &format!("globs/{matching}.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: globbed\ndata:\n  ok: \"yes\"\n",
    )
    .unwrap();
    repo.write(
        "good/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\ndata:\n  level: info\n",
    )
    .unwrap();
    let (url, head) = repo
        .serve_over_http(&env, "bombs and a good app", &[&ns])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("git-cache");
    let agent = AgentProcess::start(
        std::path::Path::new(env.var("KUBECONFIG").unwrap()),
        ns.name(),
        &[
            "--git-cache-dir",
            cache.to_str().unwrap(),
            "--default-poll-interval",
            "2s",
        ],
    )
    .await
    .unwrap();
    let pid = agent.pid().unwrap();
    let started_mib = peak_rss_mib(pid);
    let cert = agent.certificate().await.unwrap();

    // Template bombs: a replace chain squaring its size per stage, nested ranges, a multibyte
    // character inside an action.
    let bombs = [
        (
            "squares",
            r#"{{ $a := "xxxxxxxxxx" }}{{ $b := replace "x" $a $a }}{{ $c := replace "x" $b $b }}{{ $d := replace "x" $c $c }}{{ len $d }}"#,
        ),
        (
            "nested",
            "{{ range 1000 }}{{ range 1000 }}{{ range 1000 }}x{{ end }}{{ end }}{{ end }}",
        ),
        ("multibyte", "{{ .password é }}"),
    ];
    let sealed_secrets = ns.api::<SealedSecret>();
    let started = Instant::now();
    for (name, template) in bombs {
        sealed_secrets
            .create(
                &PostParams::default(),
                &templated(&cert, ns.name(), name, template),
            )
            .await
            .unwrap();
    }
    for (name, _) in bombs {
        let (reason, message) = refused(&ns, name).await;
        eprintln!(
            "template bomb {name}: refused after {:?}: {reason}",
            started.elapsed()
        );
        assert_eq!(reason, "TemplateFailed", "{name}: {message}");
        assert!(message.contains("\"out\""), "names the key: {message}");
        assert!(
            !message.contains("p4ss"),
            "no value in the message: {message}"
        );
    }

    // The YAML bomb, the brace glob and a good Application.
    let started = Instant::now();
    let apply = |name: &'static str, path: &'static str| {
        let app = ApplicationManifest::new(name, ns.name(), &url, path)
            .application()
            .unwrap();
        let ns = &ns;
        async move { ns.apply_application(&app).await.unwrap() }
    };
    apply("yaml-bomb", "yaml-bomb").await;
    let mut globs = ApplicationManifest::new("globs", ns.name(), &url, "globs")
        .application()
        .unwrap();
    let mut spec = serde_json::to_value(&globs.spec).unwrap();
    spec["source"]["directory"] = serde_json::json!({"include": format!("{braces}.yaml")});
    globs.spec = serde_json::from_value(spec).unwrap();
    ns.apply_application(&globs).await.unwrap();
    apply("good", "good").await;

    let bomb = ns
        .wait_for_application(
            "yaml-bomb refused",
            "yaml-bomb",
            Duration::from_secs(90),
            |app: &Application| {
                app.status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| {
                        c.status == mooring_crds::conditions::ConditionStatus::False
                            && c.message.contains("laughs.yaml")
                    })
                })
            },
        )
        .await
        .unwrap();
    eprintln!("YAML bomb refused after {:?}", started.elapsed());
    let message = &bomb.status.unwrap().conditions[0].message;
    assert!(
        message.contains("aliases expand to more than the render's budget"),
        "{message}"
    );
    ns.wait_for_synced_at("globs", &head).await.unwrap();
    eprintln!("brace glob synced after {:?}", started.elapsed());
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("globbed")
            .await
            .unwrap()
            .is_some()
    );
    ns.wait_for_synced_at("good", &head).await.unwrap();
    assert!(
        ns.api::<ConfigMap>()
            .get_opt("laughs")
            .await
            .unwrap()
            .is_none()
    );

    // Still serving, with bounded memory.
    let health = reqwest::get(format!("http://{}/healthz", agent.addr))
        .await
        .unwrap();
    assert!(health.status().is_success());
    let grown = peak_rss_mib(pid) - started_mib;
    eprintln!("agent peak RSS: {started_mib:.1} MiB when started, grew {grown:.1} MiB");
    assert!(
        grown < 50.0,
        "the bombs grew the agent's peak RSS by {grown:.1} MiB"
    );
    agent.stop().await.unwrap();
}
