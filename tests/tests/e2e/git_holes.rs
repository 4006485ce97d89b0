//! Git's holes, closed and proven through the agent: credentials never follow a redirect to
//! another origin, and trees with two entries of one name never write outside the checkout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mooring_crds::application::Application;
use mooring_e2e::gitops::{ApplicationManifest, gitops_agent_args};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, git};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a recording server saw: each request's first line and its `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A loopback HTTP server answering every request with `respond(has_authorization)`, recording
/// what it saw. Returns its base URL.
async fn recording_server(
    respond: impl Fn(bool) -> String + Send + Sync + 'static,
) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let first = text.lines().next().unwrap_or_default().to_string();
                let authorization = text
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map(|l| l.to_string());
                let has = authorization.is_some();
                record.lock().unwrap().push((first, authorization));
                let _ = stream.write_all(respond(has).as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, seen)
}

fn unauthorized() -> String {
    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
}

#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_origin() {
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "git-redirect").await.unwrap();
    // The second origin: records whatever arrives, always asks for credentials.
    let (sink, sink_seen) = recording_server(|_| unauthorized()).await;
    // The configured origin redirects the first request (git follows a redirect of the
    // initial request, as `http.followRedirects=initial`); the second origin then asks for
    // credentials, for its own URL.
    let target = sink.clone();
    let (origin, origin_seen) = recording_server(move |_| {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {target}/repo.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    })
    .await;
    let url = format!("{origin}/repo.git");
    ns.http_credentials(&env, &url, "s3cr3t-for-the-origin-only")
        .await
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
    let _agent = RunningAgent::start_with(args).await.unwrap();
    let app = ApplicationManifest::new("redirected", ns.name(), &url, ".")
        .application()
        .unwrap();
    ns.apply_application(&app).await.unwrap();
    let failed = ns
        .wait_for_application(
            "Application redirected failing",
            "redirected",
            Duration::from_secs(90),
            |app: &Application| {
                app.status
                    .as_ref()
                    .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Synced"))
            },
        )
        .await
        .unwrap();
    let message = failed.status.unwrap().conditions[0].message.clone();
    assert!(!message.contains("s3cr3t"), "{message}");
    let at_sink = sink_seen.lock().unwrap().clone();
    eprintln!(
        "origin saw {:?}; the other origin saw {at_sink:?}",
        origin_seen.lock().unwrap()
    );
    assert!(
        !at_sink.is_empty(),
        "the redirect was followed (else this test proves nothing)"
    );
    assert!(
        at_sink.iter().all(|(_, auth)| auth.is_none()),
        "the other origin received credentials: {at_sink:?}"
    );
}

/// Writes a raw tree (entries in the order given, duplicates allowed) into `bare`; its id.
fn raw_tree(bare: &std::path::Path, entries: &[(&str, &str, &str)]) -> String {
    let mut bytes = Vec::new();
    for (mode, name, id) in entries {
        bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        for i in (0..id.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&id[i..i + 2], 16).unwrap());
        }
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    git(
        bare,
        &[
            "hash-object",
            "-t",
            "tree",
            "--literally",
            "-w",
            file.path().to_str().unwrap(),
        ],
    )
    .unwrap()
}

fn blob(bare: &std::path::Path, content: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), content).unwrap();
    git(bare, &["hash-object", "-w", file.path().to_str().unwrap()]).unwrap()
}

#[tokio::test]
async fn a_tree_with_two_entries_of_one_name_fails_with_the_jail_error_and_writes_nothing_outside()
{
    let env = RealEnv::load().unwrap();
    let ns = TestNamespace::create(&env, "git-dup-tree").await.unwrap();
    let repo = GitRepo::create(&env, "git-dup-tree").unwrap();
    repo.commit_files(&[("readme", "x\n")], "first").unwrap();
    let bare = std::path::Path::new(env.var("GIT_REPO_ROOT").unwrap()).join(&repo.name);
    // A symlink `a` to a directory outside the checkout, then a directory `a` with a manifest.
    let outside = tempfile::tempdir().unwrap();
    let link = blob(&bare, outside.path().to_str().unwrap());
    let manifest = blob(
        &bare,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: escaped\n",
    );
    let inner = raw_tree(&bare, &[("100644", "escaped.yaml", &manifest)]);
    let root = raw_tree(&bare, &[("120000", "a", &link), ("40000", "a", &inner)]);
    let commit = git(
        &bare,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@mooring.invalid",
            "commit-tree",
            &root,
            "-m",
            "crafted",
        ],
    )
    .unwrap();
    git(&bare, &["update-ref", "refs/heads/main", &commit]).unwrap();
    let url = repo.http_url(&env).unwrap();
    ns.http_credentials(&env, &url, env.var("GIT_HTTP_PASSWORD").unwrap())
        .await
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
    let _agent = RunningAgent::start_with(args).await.unwrap();
    let app = ApplicationManifest::new("crafted", ns.name(), &url, "a")
        .application()
        .unwrap();
    ns.apply_application(&app).await.unwrap();
    let failed = ns
        .wait_for_application(
            "Application crafted failing",
            "crafted",
            Duration::from_secs(90),
            |app: &Application| {
                app.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.message.contains("two entries"))
                })
            },
        )
        .await
        .unwrap();
    let message = failed.status.unwrap().conditions[0].message.clone();
    assert!(
        message.contains("\"a\"") || message.contains(" a:") || message.contains(" a "),
        "{message}"
    );
    let escaped: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert!(
        escaped.is_empty(),
        "written outside the checkout: {escaped:?}"
    );
    assert!(
        ns.api::<k8s_openapi::api::core::v1::ConfigMap>()
            .get_opt("escaped")
            .await
            .unwrap()
            .is_none()
    );
}
