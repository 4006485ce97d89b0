//! Git sources and rendering against the real git servers of `tests/realenv/up`: smart HTTP with
//! basic auth and sshd with a fixed host key. Each test pushes a repository of its own (a unique
//! name under GIT_REPO_ROOT) in the seed's layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, PostParams};
use mooring_agent::gitops::git::{GitCache, GitError, GitLimits, RepoCredentials, credentials_for};
use mooring_agent::gitops::render::{
    Kustomize, KustomizeOptions, RenderLimits, RenderOptions, render,
};
use mooring_crds::application::{ApplicationSource, KustomizeSource};
use mooring_e2e::{GitRepo, RealEnv, TestNamespace};
use zeroize::Zeroizing;

/// The layout of the README's Quickstart repository: an app-of-apps root, Application
/// manifests, and a Kustomize app with a base and two overlays.
fn seed_files(replicas_staging: u32) -> Vec<(&'static str, String)> {
    vec![
        (
            "bootstrap/root-app.yaml",
            "apiVersion: mooring.dev/v1alpha1\nkind: Application\nmetadata:\n  name: root\n  namespace: argocd\nspec:\n  project: default\n  source:\n    repoURL: https://git.example.test/infra/k8s-manifests.git\n    targetRevision: main\n    path: argocd-apps\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: argocd\n".into(),
        ),
        (
            "argocd-apps/platform-api.yaml",
            "apiVersion: mooring.dev/v1alpha1\nkind: Application\nmetadata:\n  name: platform-api\n  namespace: argocd\nspec:\n  project: default\n  source:\n    repoURL: https://git.example.test/infra/k8s-manifests.git\n    targetRevision: main\n    path: apps/platform-api/overlays/production\n  destination:\n    server: https://kubernetes.default.svc\n    namespace: platform-api\n  syncPolicy:\n    automated:\n      prune: true\n      selfHeal: true\n".into(),
        ),
        (
            "apps/platform-api/base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: platform-api\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: platform-api\n  template:\n    metadata:\n      labels:\n        app: platform-api\n    spec:\n      containers:\n      - name: api\n        image: registry.example.test/platform-api:1.0.0\n        ports:\n        - containerPort: 8080\n".into(),
        ),
        (
            "apps/platform-api/base/service.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: platform-api\nspec:\n  selector:\n    app: platform-api\n  ports:\n  - port: 80\n    targetPort: 8080\n".into(),
        ),
        (
            "apps/platform-api/base/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n- service.yaml\n".into(),
        ),
        (
            "apps/platform-api/overlays/staging/kustomization.yaml",
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: platform-api-staging\nnamePrefix: staging-\nresources:\n- ../../base\nreplicas:\n- name: platform-api\n  count: {replicas_staging}\n"
            ),
        ),
        (
            "apps/platform-api/overlays/production/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: platform-api\nresources:\n- ../../base\nreplicas:\n- name: platform-api\n  count: 3\nimages:\n- name: registry.example.test/platform-api\n  newTag: 1.0.1\n".into(),
        ),
    ]
}

fn commit_seed(repo: &GitRepo, replicas_staging: u32, message: &str) -> String {
    let files = seed_files(replicas_staging);
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    repo.commit_files(&borrowed, message).unwrap()
}

fn http_credentials(env: &RealEnv, password: &str) -> RepoCredentials {
    RepoCredentials {
        username: Some(Zeroizing::new(
            env.var("GIT_HTTP_USER").unwrap().to_string(),
        )),
        password: Some(Zeroizing::new(password.to_string())),
        ..Default::default()
    }
}

fn ssh_credentials(key: &Path, known_hosts: &str) -> RepoCredentials {
    RepoCredentials {
        ssh_private_key: Some(Zeroizing::new(std::fs::read_to_string(key).unwrap())),
        known_hosts: Some(known_hosts.to_string()),
        ..Default::default()
    }
}

/// Every file under `dir` with its size and modification time: equal before and after means
/// nothing was written.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let metadata = std::fs::symlink_metadata(entry.path()).unwrap();
            if metadata.is_dir() {
                stack.push(entry.path());
            }
            files.insert(entry.path(), (metadata.len(), metadata.modified().unwrap()));
        }
    }
    files
}

/// The cache's repository holding `commit` has exactly one commit of history: the fetch was
/// shallow (gix silently fetches everything from a server that speaks only protocol v0/v1).
fn assert_shallow(cache_dir: &Path, commit: &str) {
    let repos: Vec<PathBuf> = std::fs::read_dir(cache_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path().join("repo.git"))
        .filter(|repo| repo.is_dir())
        .collect();
    let counts: Vec<String> = repos
        .iter()
        .filter_map(|repo| {
            let output = Command::new("git")
                .arg("--git-dir")
                .arg(repo)
                .args(["rev-list", "--count", commit])
                .output()
                .unwrap();
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
        })
        .collect();
    assert_eq!(
        counts,
        ["1"],
        "one cached repository has {commit}, with no history"
    );
}

#[tokio::test]
async fn http_with_basic_auth_checks_out_fetches_only_new_commits_and_picks_them_up()
-> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let repo = GitRepo::create(&env, "http")?;
    let first = commit_seed(&repo, 2, "seed");
    let cache_dir = tempfile::tempdir()?;
    let cache = GitCache::new(cache_dir.path().to_path_buf(), GitLimits::default());
    let url = repo.http_url(&env)?;
    let credentials = http_credentials(&env, env.var("GIT_HTTP_PASSWORD")?);

    let checkout = cache.resolve(&url, "main", Some(&credentials)).await?;
    assert_eq!(checkout.commit, first);
    assert!(
        std::fs::read_to_string(checkout.root.join("apps/platform-api/base/service.yaml"))?
            .contains("kind: Service")
    );
    assert_shallow(cache_dir.path(), &first);
    let after_first = cache.stats();
    assert_eq!((after_first.remote_checks, after_first.fetches), (1, 1));

    // No new commit: one ref listing, no fetch, and not a byte written to the cache.
    let before = snapshot(cache_dir.path());
    let again = cache.resolve(&url, "main", Some(&credentials)).await?;
    assert_eq!(again, checkout);
    let after_second = cache.stats();
    assert_eq!(after_second.remote_checks, 2);
    assert_eq!(after_second.fetches, 1, "an unchanged ref is not fetched");
    assert_eq!(snapshot(cache_dir.path()), before, "nothing was written");

    // A new commit is picked up, with only its own ref fetched, shallow.
    let second = commit_seed(&repo, 5, "staging: 5 replicas");
    let updated = cache.resolve(&url, "main", Some(&credentials)).await?;
    assert_eq!(updated.commit, second);
    assert_eq!(cache.stats().fetches, 2);
    assert_shallow(cache_dir.path(), &second);
    assert!(
        std::fs::read_to_string(
            updated
                .root
                .join("apps/platform-api/overlays/staging/kustomization.yaml")
        )?
        .contains("count: 5")
    );
    // The pinned first commit by SHA, over the network once, then from the cache alone.
    let pinned = cache.resolve(&url, &first, Some(&credentials)).await?;
    assert_eq!(pinned.commit, first);
    let checks = cache.stats().remote_checks;
    cache.resolve(&url, &first, Some(&credentials)).await?;
    assert_eq!(cache.stats().remote_checks, checks);
    Ok(())
}

#[tokio::test]
async fn http_with_a_wrong_or_no_password_is_authentication_failed_naming_the_url()
-> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let repo = GitRepo::create(&env, "http-auth")?;
    commit_seed(&repo, 2, "seed");
    let cache_dir = tempfile::tempdir()?;
    let cache = GitCache::new(cache_dir.path().to_path_buf(), GitLimits::default());
    let url = repo.http_url(&env)?;

    for credentials in [Some(http_credentials(&env, "not-the-password")), None] {
        let error = cache
            .resolve(&url, "main", credentials.as_ref())
            .await
            .unwrap_err();
        assert!(
            matches!(error, GitError::AuthenticationFailed { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(&url), "{message}");
        assert!(!message.contains("not-the-password"), "{message}");
        assert_eq!(error.reason(), "AuthenticationFailed");
        assert!(!error.is_retryable());
    }
    // A password inside the URL never reaches the message either.
    let inline = url.replacen("http://", "http://mooring:inline-secret@", 1);
    let error = cache.resolve(&inline, "nope", None).await.unwrap_err();
    assert!(!error.to_string().contains("inline-secret"), "{error}");

    let missing = cache
        .resolve(
            &url,
            "no-such-branch",
            Some(&http_credentials(&env, env.var("GIT_HTTP_PASSWORD")?)),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.reason(), "RevisionNotFound", "{missing}");
    assert!(missing.to_string().contains("no-such-branch"));
    Ok(())
}

#[tokio::test]
async fn ssh_with_key_and_known_hosts_checks_out_and_a_wrong_host_key_is_refused()
-> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let repo = GitRepo::create(&env, "ssh")?;
    let first = commit_seed(&repo, 2, "seed");
    let cache_dir = tempfile::tempdir()?;
    let cache = GitCache::new(cache_dir.path().to_path_buf(), GitLimits::default());
    let url = repo.ssh_url(&env)?;
    let key = PathBuf::from(env.var("GIT_SSH_KEY")?);
    let known_hosts = std::fs::read_to_string(env.var("GIT_SSH_KNOWN_HOSTS")?)?;

    let checkout = cache
        .resolve(&url, "main", Some(&ssh_credentials(&key, &known_hosts)))
        .await?;
    assert_eq!(checkout.commit, first);
    assert!(checkout.root.join("bootstrap/root-app.yaml").is_file());
    assert_shallow(cache_dir.path(), &first);
    let second = commit_seed(&repo, 4, "more replicas");
    let updated = cache
        .resolve(&url, "main", Some(&ssh_credentials(&key, &known_hosts)))
        .await?;
    assert_eq!(updated.commit, second);

    // Another host key for the same host and port: a mismatch, as after a server swap.
    let other = tempfile::tempdir()?;
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("host"))
        .status()?;
    assert!(status.success());
    let host = known_hosts.split_whitespace().next().unwrap();
    let other_key = std::fs::read_to_string(other.path().join("host.pub"))?;
    let other_key: Vec<&str> = other_key.split_whitespace().take(2).collect();
    let wrong_known_hosts = format!("{host} {}\n", other_key.join(" "));
    let fresh = GitCache::new(cache_dir.path().join("fresh"), GitLimits::default());
    for hosts in [wrong_known_hosts.as_str(), ""] {
        let error = fresh
            .resolve(&url, "main", Some(&ssh_credentials(&key, hosts)))
            .await
            .unwrap_err();
        assert!(
            matches!(error, GitError::HostKeyMismatch { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains(&url), "{error}");
        assert_eq!(error.reason(), "HostKeyMismatch");
    }

    // The right host, a key the server does not know.
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(other.path().join("client"))
        .status()?;
    assert!(status.success());
    let error = fresh
        .resolve(
            &url,
            "main",
            Some(&ssh_credentials(&other.path().join("client"), &known_hosts)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, GitError::AuthenticationFailed { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&url), "{error}");
    Ok(())
}

fn labelled_secret(name: &str, label: (&str, &str), data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(label.0.into(), label.1.into())])),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[tokio::test]
async fn credentials_come_from_argo_and_mooring_labelled_secrets() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let ns = TestNamespace::create(&env, "git-creds").await?;
    let repo = GitRepo::create(&env, "creds")?;
    let first = commit_seed(&repo, 2, "seed");
    let http_url = repo.http_url(&env)?;
    let ssh_url = repo.ssh_url(&env)?;
    let secrets = ns.api::<Secret>();
    // Argo CD's own repository Secret, unchanged.
    secrets
        .create(
            &PostParams::default(),
            &labelled_secret(
                "argocd-repo",
                ("argocd.argoproj.io/secret-type", "repository"),
                &[
                    ("url", &http_url),
                    ("username", env.var("GIT_HTTP_USER")?),
                    ("password", env.var("GIT_HTTP_PASSWORD")?),
                ],
            ),
        )
        .await?;
    // A mooring credential template for everything on the ssh server.
    let ssh_prefix = env.var("GIT_SSH_URL")?.to_string();
    let key = std::fs::read_to_string(env.var("GIT_SSH_KEY")?)?;
    let known_hosts = std::fs::read_to_string(env.var("GIT_SSH_KNOWN_HOSTS")?)?;
    secrets
        .create(
            &PostParams::default(),
            &labelled_secret(
                "ssh-template",
                ("mooring.dev/secret-type", "repo-creds"),
                &[
                    ("url", &ssh_prefix),
                    ("sshPrivateKey", &key),
                    ("known_hosts", &known_hosts),
                ],
            ),
        )
        .await?;

    let client = ns.client();
    let cache_dir = tempfile::tempdir()?;
    let cache = GitCache::new(cache_dir.path().to_path_buf(), GitLimits::default());
    let http = credentials_for(&client, ns.name(), &http_url).await?;
    assert!(http.as_ref().is_some_and(|c| c.password.is_some()));
    assert_eq!(
        cache
            .resolve(&http_url, "main", http.as_ref())
            .await?
            .commit,
        first
    );

    let ssh = credentials_for(&client, ns.name(), &ssh_url).await?;
    assert!(ssh.as_ref().is_some_and(|c| c.ssh_private_key.is_some()));
    assert_eq!(
        cache.resolve(&ssh_url, "main", ssh.as_ref()).await?.commit,
        first
    );

    let none = credentials_for(
        &client,
        ns.name(),
        "https://elsewhere.example.test/repo.git",
    )
    .await?;
    assert!(none.is_none());

    // An Argo CD repository Secret for this ssh URL with a key only: it wins over the
    // template, and without known_hosts no host key is trusted...
    secrets
        .create(
            &PostParams::default(),
            &labelled_secret(
                "argocd-ssh-repo",
                ("argocd.argoproj.io/secret-type", "repository"),
                &[("url", &ssh_url), ("sshPrivateKey", &key)],
            ),
        )
        .await?;
    let fresh = GitCache::new(cache_dir.path().join("fresh"), GitLimits::default());
    let keyed = credentials_for(&client, ns.name(), &ssh_url).await?;
    assert!(keyed.as_ref().is_some_and(|c| c.known_hosts.is_none()));
    let error = fresh
        .resolve(&ssh_url, "main", keyed.as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(error, GitError::HostKeyMismatch { .. }),
        "{error:?}"
    );
    // ...until Argo CD's known-hosts ConfigMap lists the server.
    ns.api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("argocd-ssh-known-hosts-cm".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "ssh_known_hosts".into(),
                    known_hosts.clone(),
                )])),
                ..Default::default()
            },
        )
        .await?;
    let trusted = credentials_for(&client, ns.name(), &ssh_url).await?;
    assert_eq!(
        trusted.as_ref().and_then(|c| c.known_hosts.as_deref()),
        Some(known_hosts.as_str())
    );
    assert_eq!(
        fresh
            .resolve(&ssh_url, "main", trusted.as_ref())
            .await?
            .commit,
        first
    );
    Ok(())
}

fn real_kustomize(env: &RealEnv) -> anyhow::Result<Kustomize> {
    Ok(Kustomize::new(
        PathBuf::from(env.var("KUSTOMIZE")?),
        Duration::from_secs(60),
        2,
    ))
}

#[tokio::test]
async fn the_seed_overlays_render_with_the_pinned_kustomize() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let repo = GitRepo::create(&env, "kustomize")?;
    commit_seed(&repo, 2, "seed");
    let cache_dir = tempfile::tempdir()?;
    let cache = GitCache::new(cache_dir.path().to_path_buf(), GitLimits::default());
    let credentials = http_credentials(&env, env.var("GIT_HTTP_PASSWORD")?);
    let checkout = cache
        .resolve(&repo.http_url(&env)?, "main", Some(&credentials))
        .await?;
    let options = RenderOptions {
        limits: RenderLimits {
            kustomize: real_kustomize(&env)?,
            ..Default::default()
        },
        ..Default::default()
    };

    let staging = render(
        &checkout.root,
        "apps/platform-api/overlays/staging",
        &options,
    )
    .await?;
    let mut kinds: Vec<(String, String, String)> = staging
        .iter()
        .map(|o| {
            (
                o.types.as_ref().unwrap().kind.clone(),
                o.metadata.name.clone().unwrap(),
                o.metadata.namespace.clone().unwrap(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            (
                "Deployment".into(),
                "staging-platform-api".into(),
                "platform-api-staging".into()
            ),
            (
                "Service".into(),
                "staging-platform-api".into(),
                "platform-api-staging".into()
            ),
        ]
    );
    let deployment = staging
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "Deployment")
        .unwrap();
    assert_eq!(deployment.data["spec"]["replicas"], 2);

    // Argo CD's kustomize options on top of the production overlay.
    let with_options = RenderOptions {
        kustomize: KustomizeOptions {
            name_suffix: Some("-blue".into()),
            images: vec!["registry.example.test/platform-api:2.0.0".into()],
            common_labels: BTreeMap::from([("team".into(), "platform".into())]),
            ..Default::default()
        },
        ..options.clone()
    };
    let production = render(
        &checkout.root,
        "apps/platform-api/overlays/production",
        &with_options,
    )
    .await?;
    let deployment = production
        .iter()
        .find(|o| o.types.as_ref().unwrap().kind == "Deployment")
        .unwrap();
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some("platform-api-blue")
    );
    assert_eq!(deployment.data["spec"]["replicas"], 3);
    assert_eq!(
        deployment.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.test/platform-api:2.0.0"
    );
    assert_eq!(
        deployment.data["spec"]["selector"]["matchLabels"]["team"],
        "platform"
    );
    assert!(
        !checkout
            .root
            .join("apps/platform-api/overlays/production/kustomization.yaml.orig")
            .exists()
            && std::fs::read_to_string(
                checkout
                    .root
                    .join("apps/platform-api/overlays/production/kustomization.yaml")
            )?
            .contains("newTag: 1.0.1"),
        "the checkout is not edited"
    );

    // The Application manifests are a plain directory.
    let apps = render(&checkout.root, "argocd-apps", &options).await?;
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].types.as_ref().unwrap().kind, "Application");
    assert_eq!(
        apps[0].data["spec"]["source"]["path"],
        "apps/platform-api/overlays/production"
    );
    Ok(())
}

#[tokio::test]
async fn kustomize_with_a_remote_base_is_refused_and_broken_input_names_the_file()
-> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let dir = tempfile::tempdir()?;
    let write = |path: &str, content: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write(
        "remote/kustomization.yaml",
        "resources:\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.8.2\n",
    );
    write("broken/kustomization.yaml", "resources:\n- cm.yaml\n");
    write(
        "broken/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {a: 1\n",
    );
    let options = RenderOptions {
        limits: RenderLimits {
            kustomize: real_kustomize(&env)?,
            ..Default::default()
        },
        ..Default::default()
    };
    let error = render(dir.path(), "remote", &options).await.unwrap_err();
    assert_eq!(error.reason(), "RemoteBaseRefused", "{error}");
    assert!(
        error.to_string().contains("remote/kustomization.yaml"),
        "{error}"
    );

    let error = render(dir.path(), "broken", &options).await.unwrap_err();
    assert_eq!(error.reason(), "KustomizeFailed", "{error}");
    assert!(error.to_string().contains("cm.yaml"), "{error}");
    Ok(())
}

#[tokio::test]
async fn an_application_source_is_fetched_and_rendered_in_one_call() -> anyhow::Result<()> {
    let env = RealEnv::load()?;
    let ns = TestNamespace::create(&env, "git-source").await?;
    let repo = GitRepo::create(&env, "source")?;
    let commit = commit_seed(&repo, 2, "seed");
    let url = repo.http_url(&env)?;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &labelled_secret(
                "repo",
                ("argocd.argoproj.io/secret-type", "repository"),
                &[
                    ("url", &url),
                    ("username", env.var("GIT_HTTP_USER")?),
                    ("password", env.var("GIT_HTTP_PASSWORD")?),
                ],
            ),
        )
        .await?;
    let cache_dir = tempfile::tempdir()?;
    let cache = GitCache::new(cache_dir.path().to_path_buf(), GitLimits::default());
    let limits = RenderLimits {
        kustomize: real_kustomize(&env)?,
        ..Default::default()
    };
    let source = ApplicationSource {
        repo_url: url.clone(),
        target_revision: Some("main".into()),
        path: Some("apps/platform-api/overlays/staging".into()),
        kustomize: Some(KustomizeSource {
            name_suffix: Some("-v2".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rendered = mooring_agent::gitops::source::fetch_and_render(
        &ns.client(),
        ns.name(),
        &cache,
        &source,
        &limits,
    )
    .await?;
    assert_eq!(rendered.checkout.commit, commit);
    let mut names: Vec<String> = rendered
        .objects
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["staging-platform-api-v2", "staging-platform-api-v2"]
    );

    let broken = ApplicationSource {
        path: Some("../outside".into()),
        ..source.clone()
    };
    let error = mooring_agent::gitops::source::fetch_and_render(
        &ns.client(),
        ns.name(),
        &cache,
        &broken,
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "InvalidSourcePath", "{error}");
    assert!(!error.is_retryable());
    Ok(())
}
