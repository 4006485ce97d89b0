//! The render sandbox: kustomize (code from Git) runs through `mooring render-exec`, confined by
//! Landlock to its checkout, so a kustomization or a plugin cannot read the agent's
//! ServiceAccount token or anything else on the agent's filesystem.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, binary, wait_for};

/// `mooring render-exec --required --read <dir> -- /bin/cat <file>`: its exit status and stderr.
fn cat_confined(allowed: &std::path::Path, file: &std::path::Path) -> (bool, String) {
    let output = Command::new(binary("mooring").unwrap())
        .args(["render-exec", "--required", "--read"])
        .arg(allowed)
        .args(["--", "/bin/cat"])
        .arg(file)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn render_exec_reads_what_it_is_given_and_nothing_else() {
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(allowed.path().join("kustomization.yaml"), "resources: []\n").unwrap();
    std::fs::write(outside.path().join("token"), "not-a-real-token").unwrap();

    let (ok, stderr) = cat_confined(allowed.path(), &allowed.path().join("kustomization.yaml"));
    assert!(
        ok,
        "a file inside the allowed directory is readable: {stderr}"
    );

    let (ok, stderr) = cat_confined(allowed.path(), &outside.path().join("token"));
    assert!(
        !ok,
        "a file outside the allowed directory must not be readable"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // What the agent's ServiceAccount token would be, in a cluster.
    let (ok, _) = cat_confined(allowed.path(), std::path::Path::new("/proc/self/environ"));
    assert!(!ok, "/proc is not in reach either");
}

/// A stand-in for kustomize that tries to read `token` and prints a ConfigMap saying whether it
/// could: the agent's renders go through the sandbox, so the ConfigMap says `unreadable`.
fn token_thief(dir: &std::path::Path, token: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("kustomize");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif cat '{}' >/dev/null 2>&1; then seen=readable; else seen=unreadable; fi\n\
             printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: sandbox-probe\\ndata:\\n  token: %s\\n' \"$seen\"\n",
            token.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn a_kustomization_cannot_read_the_agents_token() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "render-sandbox").await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token = secrets.path().join("token");
    std::fs::write(&token, "not-a-real-token").unwrap();

    let repo = GitRepo::create(&env, "render-sandbox").unwrap();
    repo.write("app/kustomization.yaml", "resources: []\n")
        .unwrap();
    let (url, head) = repo
        .serve_over_http(&env, "a kustomization", &[&ns])
        .await
        .unwrap();

    let mut args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
    args.kustomize_path = token_thief(tools.path(), &token);
    args.render_sandbox = mooring_agent::gitops::render::SandboxMode::Required;
    let _agent = RunningAgent::start_with(args).await.unwrap();

    let app = ApplicationManifest::new("probe", ns.name(), &url, "app")
        .application()
        .unwrap();
    ns.apply_application(&app).await.unwrap();
    ns.wait_for_synced_at("probe", &head).await.unwrap();

    let configmaps = ns.api::<ConfigMap>();
    let seen = wait_for(
        "ConfigMap sandbox-probe",
        std::time::Duration::from_secs(30),
        || {
            let configmaps = configmaps.clone();
            async move {
                let cm = configmaps.get_opt("sandbox-probe").await.ok()??;
                cm.data?.get("token").cloned()
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        seen, "unreadable",
        "the renderer read a file outside its checkout"
    );
}
