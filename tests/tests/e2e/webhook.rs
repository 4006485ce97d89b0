//! `POST /api/webhook` end to end: Git hosts' signed push events against an in-process agent
//! whose Applications poll only once an hour, so every sync seen within seconds is the
//! webhook's doing.
//!
//! Status codes: 202 a push accepted, 200 a ping, 401 a missing or wrong signature or token, 403
//! a provider with no secret configured (off), 413 a body over the limit, 400 no known provider.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::application::Application;
use mooring_e2e::gitops::gitops_agent_args;
use mooring_e2e::webhook::{github_payload, github_push_headers, hmac_sha256_hex as hmac, web_url};
use mooring_e2e::{GitRepo, RealEnv, RunningAgent, TestNamespace, git, wait_for};
use serde_json::{Value, json};

const GITHUB: &str = "github-secret";
const GITLAB: &str = "gitlab-token";
const GOGS: &str = "gogs-secret";
const BITBUCKET_SERVER: &str = "bitbucket-server-secret";
const BITBUCKET_UUID: &str = "{2f7a1c9e-0000-4000-8000-000000000001}";
const AZURE_USER: &str = "azure-user";
const AZURE_PASSWORD: &str = "azure-password";
const REFRESH: &str = "mooring.dev/refresh";

/// A repository with `apps/a` and `apps/b`, an Application for each (polling hourly), the
/// Secret `mooring-webhook` with every provider's secret, and an agent.
struct Fixture {
    ns: TestNamespace,
    repo: GitRepo,
    url: String,
    agent: RunningAgent,
    http: reqwest::Client,
    _cache: tempfile::TempDir,
}

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

impl Fixture {
    async fn start(prefix: &str) -> (Fixture, String) {
        let env = RealEnv::load().unwrap();
        let ns = TestNamespace::create(&env, prefix).await.unwrap();
        let repo = GitRepo::create(&env, ns.name()).unwrap();
        repo.write("apps/a/configmap.yaml", &configmap("a", "1"))
            .unwrap();
        repo.write("apps/b/configmap.yaml", &configmap("b", "1"))
            .unwrap();
        let (url, first) = repo
            .serve_over_http(&env, "two apps", &[&ns])
            .await
            .unwrap();
        write_secret(&ns, webhook_secrets(GITHUB, true)).await;
        let cache = tempfile::tempdir().unwrap();
        let mut args = gitops_agent_args(&env, ns.name(), cache.path()).unwrap();
        args.default_poll_interval = Duration::from_secs(3600);
        let agent = RunningAgent::start_with(args).await.unwrap();
        for app in ["a", "b"] {
            create_application(&ns, app, &url).await;
        }
        for app in ["app-a", "app-b"] {
            ns.wait_for_synced_at(app, &first).await.unwrap();
        }
        let fixture = Fixture {
            ns,
            repo,
            url,
            agent,
            http: reqwest::Client::new(),
            _cache: cache,
        };
        fixture.settle().await;
        (fixture, first)
    }

    /// Waits until the Application controller has been idle for a second, so that what a step
    /// observes is that step's doing (the drift watches' first list wakes the Applications once
    /// more after their first sync; that look reuses the commit, see
    /// `a_sync_does_not_look_at_the_remote_again`).
    async fn settle(&self) {
        let reconciles = "mooring_controller_reconciles_total{controller=\"application\"";
        let in_flight = "mooring_controller_reconciles_in_flight{controller=\"application\"";
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = self.metric(reconciles).await;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.metric(reconciles).await;
            if now == last && self.metric(in_flight).await == 0.0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the controller never became idle"
            );
            last = now;
        }
    }

    /// Sends `body` with `headers` to the agent's `/api/webhook`; returns the status code.
    async fn send(&self, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
        let mut request = self
            .http
            .post(format!("http://{}/api/webhook", self.agent.addr))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// A GitHub push of `after` to `git_ref` changing `files`, signed with `secret`.
    async fn github_push(&self, secret: &str, git_ref: &str, after: &str, files: &[&str]) -> u16 {
        let body = github_payload(&self.url, git_ref, after, files);
        let headers = github_push_headers(secret, &body);
        self.send(&headers, body).await
    }

    /// Commits a new value of app `app`'s ConfigMap; returns the commit.
    fn change(&self, app: &str, value: &str) -> String {
        self.repo
            .commit_files(
                &[(
                    &format!("apps/{app}/configmap.yaml"),
                    &configmap(app, value),
                )],
                &format!("{app}: {value}"),
            )
            .unwrap()
    }

    /// Waits (at most 20 s; the poll interval is an hour) until `app`'s ConfigMap holds `value`;
    /// returns how long that took.
    async fn wait_for_value(&self, app: &str, value: &str) -> Duration {
        let started = Instant::now();
        let api = self.ns.api::<ConfigMap>();
        wait_for(
            &format!("ConfigMap {app} to hold {value}"),
            Duration::from_secs(20),
            || async {
                let cm = api.get_opt(app).await.ok()??;
                (cm.data?.get("value")? == value).then_some(())
            },
        )
        .await
        .unwrap();
        started.elapsed()
    }

    async fn value(&self, app: &str) -> String {
        let cm = self.ns.api::<ConfigMap>().get(app).await.unwrap();
        cm.data.unwrap().remove("value").unwrap()
    }

    async fn refresh_annotation(&self, app: &str) -> Option<String> {
        let app = self.ns.api::<Application>().get(app).await.unwrap();
        app.metadata.annotations?.remove(REFRESH)
    }

    async fn metric(&self, name: &str) -> f64 {
        self.agent.metric(name).await.unwrap()
    }
}

fn webhook_secrets(github: &str, gitlab: bool) -> BTreeMap<String, String> {
    let mut data = BTreeMap::from([
        ("webhook.github.secret".into(), github.into()),
        ("webhook.gogs.secret".into(), GOGS.into()),
        (
            "webhook.bitbucketserver.secret".into(),
            BITBUCKET_SERVER.into(),
        ),
        ("webhook.bitbucket.uuid".into(), BITBUCKET_UUID.into()),
        ("webhook.azuredevops.username".into(), AZURE_USER.into()),
        ("webhook.azuredevops.password".into(), AZURE_PASSWORD.into()),
    ]);
    if gitlab {
        data.insert("webhook.gitlab.secret".into(), GITLAB.into());
    }
    data
}

/// Creates or replaces the Secret `mooring-webhook` with `data`.
async fn write_secret(ns: &TestNamespace, data: BTreeMap<String, String>) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("mooring-webhook".into()),
            ..Default::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>()
        .patch(
            "mooring-webhook",
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

async fn create_application(ns: &TestNamespace, app: &str, url: &str) {
    create_application_at(
        ns,
        &format!("app-{app}"),
        url,
        "main",
        &format!("apps/{app}"),
    )
    .await;
}

async fn create_application_at(
    ns: &TestNamespace,
    name: &str,
    url: &str,
    revision: &str,
    path: &str,
) {
    let application: Application = serde_json::from_value(json!({
        "apiVersion": "mooring.dev/v1alpha1", "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "pollInterval": "1h",
            "source": {"repoURL": url, "targetRevision": revision, "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": ns.name()},
            "syncPolicy": {"automated": {"prune": true}},
        },
    }))
    .unwrap();
    ns.api::<Application>()
        .create(&PostParams::default(), &application)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sync_does_not_look_at_the_remote_again() {
    // Two Applications of one repository and branch, each resolved once: their own status
    // writes (and the objects they applied) wake neither of them for a second look.
    let (f, _) = Fixture::start("webhook-quiet").await;
    assert_eq!(f.metric("mooring_git_operations_total{").await, 2.0);
}

#[tokio::test]
async fn applications_refreshed_by_one_push_share_one_look_at_the_remote() {
    // The window's first push fetches the ref into the cache; both Applications it refreshes
    // find the commit there instead of each asking the remote (two looks before).
    let (f, _) = Fixture::start("webhook-shared").await;
    let operations = "mooring_git_operations_total{";
    let before = f.metric(operations).await;
    let second = f
        .repo
        .commit_files(
            &[
                ("apps/a/configmap.yaml", &configmap("a", "2")),
                ("apps/b/configmap.yaml", &configmap("b", "2")),
            ],
            "both apps",
        )
        .unwrap();
    let files = ["apps/a/configmap.yaml", "apps/b/configmap.yaml"];
    assert_eq!(
        f.github_push(GITHUB, "refs/heads/main", &second, &files)
            .await,
        202
    );
    for app in ["app-a", "app-b"] {
        f.ns.wait_for_synced_at(app, &second).await.unwrap();
    }
    f.settle().await;
    assert_eq!(
        f.metric(operations).await - before,
        1.0,
        "one look, one fetch"
    );
    assert_eq!(
        f.metric("mooring_git_operations_total{operation=\"fetch\"")
            .await,
        2.0,
        "the first sync's fetch and the push's"
    );
}

#[tokio::test]
async fn a_signed_github_push_syncs_at_once_and_only_the_app_it_touches() {
    let (f, first) = Fixture::start("webhook-github").await;
    let ping = serde_json::to_vec(&json!({"zen": "hi"})).unwrap();
    let signature = format!("sha256={}", hmac(GITHUB, &ping));
    let headers = [
        ("x-github-event", "ping".to_owned()),
        ("x-hub-signature-256", signature),
    ];
    assert_eq!(f.send(&headers, ping).await, 200);

    let second = f.change("a", "2");
    assert_eq!(
        f.github_push(
            GITHUB,
            "refs/heads/main",
            &second,
            &["apps/a/configmap.yaml"]
        )
        .await,
        202
    );
    let took = f.wait_for_value("a", "2").await;
    f.ns.wait_for_synced_at("app-a", &second).await.unwrap();
    eprintln!("webhook to applied: {took:?}");
    // app-b's path was not touched: it was not even asked to look.
    assert_eq!(f.refresh_annotation("app-b").await, None);
    let b = f.ns.api::<Application>().get("app-b").await.unwrap();
    assert_eq!(
        b.status.unwrap().sync.unwrap().revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        f.metric("mooring_webhook_requests_total{provider=\"github\",outcome=\"accepted\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn refused_and_unrelated_pushes_sync_nothing() {
    let (f, first) = Fixture::start("webhook-refused").await;
    let second = f.change("a", "2");
    let body = github_payload(
        &f.url,
        "refs/heads/main",
        &second,
        &["apps/a/configmap.yaml"],
    );
    let event = ("x-github-event", "push".to_owned());
    // Wrong signature, missing signature.
    assert_eq!(
        f.github_push("not-the-secret", "refs/heads/main", &second, &[])
            .await,
        401
    );
    assert_eq!(
        f.send(std::slice::from_ref(&event), body.clone()).await,
        401
    );
    // Over the 1 MiB limit (correctly signed: the size is refused before anything else).
    let mut large = body.clone();
    large.extend(std::iter::repeat_n(b' ', 1024 * 1024 + 1));
    let signed = (
        "x-hub-signature-256",
        format!("sha256={}", hmac(GITHUB, &large)),
    );
    assert_eq!(f.send(&[event.clone(), signed], large).await, 413);
    // No provider's header.
    assert_eq!(f.send(&[], body.clone()).await, 400);
    // Correctly signed, but another branch, and a path no Application watches.
    assert_eq!(
        f.github_push(
            GITHUB,
            "refs/heads/dev",
            &second,
            &["apps/a/configmap.yaml"]
        )
        .await,
        202
    );
    assert_eq!(
        f.github_push(GITHUB, "refs/heads/main", &second, &["apps/c/x.yaml"])
            .await,
        202
    );
    // A push for app-b comes after them: once it synced, they were handled.
    let third = f.change("b", "2");
    assert_eq!(
        f.github_push(
            GITHUB,
            "refs/heads/main",
            &third,
            &["apps/b/configmap.yaml"]
        )
        .await,
        202
    );
    f.wait_for_value("b", "2").await;
    assert_eq!(f.refresh_annotation("app-a").await, None);
    assert_eq!(f.value("a").await, "1");
    let a = f.ns.api::<Application>().get("app-a").await.unwrap();
    assert_eq!(
        a.status.unwrap().sync.unwrap().revision.as_deref(),
        Some(first.as_str())
    );
    for (outcome, count) in [("unauthorized", 2.0), ("too_large", 1.0), ("accepted", 3.0)] {
        let name =
            format!("mooring_webhook_requests_total{{provider=\"github\",outcome=\"{outcome}\"");
        assert_eq!(f.metric(&name).await, count, "{outcome}");
    }
    assert_eq!(
        f.metric("mooring_webhook_requests_total{provider=\"unknown\",outcome=\"bad_request\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_rotated_secret_takes_effect_without_a_restart() {
    let (f, _) = Fixture::start("webhook-rotate").await;
    let ping = |secret: &str| {
        let body = serde_json::to_vec(&json!({"zen": "hi"})).unwrap();
        let headers = vec![
            ("x-github-event", "ping".to_owned()),
            (
                "x-hub-signature-256",
                format!("sha256={}", hmac(secret, &body)),
            ),
        ];
        (headers, body)
    };
    let (headers, body) = ping(GITHUB);
    assert_eq!(f.send(&headers, body).await, 200);
    // Rotate GitHub's secret and remove GitLab's.
    write_secret(&f.ns, webhook_secrets("rotated", false)).await;
    wait_for(
        "the rotated secret to be accepted",
        Duration::from_secs(20),
        || async {
            let (headers, body) = ping("rotated");
            (f.send(&headers, body).await == 200).then_some(())
        },
    )
    .await
    .unwrap();
    let (headers, body) = ping(GITHUB);
    assert_eq!(f.send(&headers, body).await, 401);
    let gitlab = [
        ("x-gitlab-event", "Push Hook".to_owned()),
        ("x-gitlab-token", GITLAB.to_owned()),
    ];
    assert_eq!(
        f.send(&gitlab, b"{}".to_vec()).await,
        403,
        "GitLab is off without a secret"
    );

    let second = f.change("a", "2");
    assert_eq!(
        f.github_push(
            "rotated",
            "refs/heads/main",
            &second,
            &["apps/a/configmap.yaml"]
        )
        .await,
        202
    );
    f.wait_for_value("a", "2").await;
}

#[tokio::test]
async fn a_burst_of_pushes_causes_one_fetch() {
    let (f, _) = Fixture::start("webhook-burst").await;
    let fetches = "mooring_git_operations_total{operation=\"fetch\"";
    let before = f.metric(fetches).await;
    let mut commits = Vec::new();
    for n in 0..20 {
        commits.push(f.change("a", &format!("burst-{n}")));
    }
    for commit in &commits {
        assert_eq!(
            f.github_push(
                GITHUB,
                "refs/heads/main",
                commit,
                &["apps/a/configmap.yaml"]
            )
            .await,
            202
        );
    }
    f.wait_for_value("a", "burst-19").await;
    let last = commits.last().unwrap();
    f.ns.wait_for_synced_at("app-a", last).await.unwrap();
    assert_eq!(
        f.metric(fetches).await - before,
        1.0,
        "20 pushes, one fetch"
    );
}

/// A provider's push of `after` on `main`, its headers and body.
fn provider_push(provider: &str, url: &str, after: &str) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let refs = "refs/heads/main";
    let file = "apps/a/configmap.yaml";
    let payload: Value = match provider {
        "gitlab" => json!({
            "object_kind": "push", "ref": refs, "after": after, "checkout_sha": after,
            "project": {"web_url": web_url(url), "git_http_url": url, "default_branch": "main"},
            "commits": [{"id": after, "added": [], "modified": [file], "removed": []}],
            "total_commits_count": 1,
        }),
        "gitea" => json!({
            "ref": refs, "after": after,
            "repository": {"html_url": web_url(url), "clone_url": url, "default_branch": "main"},
            "commits": [{"id": after, "added": [], "modified": [file], "removed": []}],
            "total_commits": 1,
        }),
        "bitbucketserver" => json!({
            "eventKey": "repo:refs_changed",
            "repository": {"links": {"clone": [{"href": url, "name": "http"}]}},
            "changes": [{"ref": {"id": refs, "type": "BRANCH"}, "refId": refs, "toHash": after, "type": "UPDATE"}],
        }),
        "bitbucket" => json!({
            "repository": {"full_name": "mooring/none", "links": {"html": {"href": web_url(url)}}},
            "push": {"changes": [{"new": {"type": "branch", "name": "main", "target": {"hash": after}}}]},
        }),
        _ => json!({
            "eventType": "git.push",
            "resource": {
                "repository": {"remoteUrl": url, "defaultBranch": refs},
                "refUpdates": [{"name": refs, "newObjectId": after}],
            },
        }),
    };
    let body = serde_json::to_vec(&payload).unwrap();
    use base64::Engine as _;
    let headers = match provider {
        "gitlab" => vec![
            ("x-gitlab-event", "Push Hook".to_owned()),
            ("x-gitlab-token", GITLAB.to_owned()),
        ],
        "gitea" => vec![
            ("x-gitea-event", "push".to_owned()),
            ("x-github-event", "push".to_owned()),
            ("x-gitea-signature", hmac(GOGS, &body)),
        ],
        "bitbucketserver" => vec![
            ("x-event-key", "repo:refs_changed".to_owned()),
            (
                "x-hub-signature",
                format!("sha256={}", hmac(BITBUCKET_SERVER, &body)),
            ),
        ],
        "bitbucket" => vec![
            ("x-event-key", "repo:push".to_owned()),
            ("x-hook-uuid", BITBUCKET_UUID.to_owned()),
        ],
        _ => vec![
            ("x-vss-activityid", "e2e".to_owned()),
            (
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{AZURE_USER}:{AZURE_PASSWORD}"))
                ),
            ),
        ],
    };
    (headers, body)
}

#[tokio::test]
async fn every_providers_signed_push_syncs() {
    let (f, _) = Fixture::start("webhook-providers").await;
    for provider in [
        "gitlab",
        "gitea",
        "bitbucketserver",
        "bitbucket",
        "azuredevops",
    ] {
        let before = f.refresh_annotation("app-a").await;
        let commit = f.change("a", provider);
        let (headers, body) = provider_push(provider, &f.url, &commit);
        assert_eq!(f.send(&headers, body.clone()).await, 202, "{provider}");
        let took = f.wait_for_value("a", provider).await;
        eprintln!("{provider}: webhook to applied in {took:?}");
        f.ns.wait_for_synced_at("app-a", &commit).await.unwrap();
        assert!(
            f.refresh_annotation("app-a")
                .await
                .is_some_and(|a| Some(&a) != before.as_ref()),
            "{provider}: the sync was not the webhook's"
        );
        f.settle().await;
        // The same push with its proof broken is refused.
        let broken: Vec<(&str, String)> = headers
            .iter()
            .map(|(name, value)| {
                let value = if [
                    "x-gitlab-token",
                    "x-gitea-signature",
                    "x-hub-signature",
                    "x-hook-uuid",
                    "authorization",
                ]
                .contains(name)
                {
                    format!("{value}0")
                } else {
                    value.clone()
                };
                (*name, value)
            })
            .collect();
        assert_eq!(
            f.send(&broken, body).await,
            401,
            "{provider} with a broken proof"
        );
    }
}

#[tokio::test]
async fn a_gitlab_tag_push_syncs_the_app_that_follows_the_tag() {
    let (f, first) = Fixture::start("webhook-tag").await;
    let tag = |commit: &str| {
        git(f.repo.work_dir(), &["tag", "-f", "v1", commit]).unwrap();
        git(f.repo.work_dir(), &["push", "-q", "-f", "origin", "v1"]).unwrap();
    };
    tag(&first);
    // A third Application follows tag v1 of app-a's path, into its own ConfigMap name.
    f.repo
        .write("release/configmap.yaml", &configmap("release", "1"))
        .unwrap();
    let with_release = f.repo.commit("release path").unwrap();
    tag(&with_release);
    create_application_at(&f.ns, "app-release", &f.url, "v1", "release").await;
    f.ns.wait_for_synced_at("app-release", &with_release)
        .await
        .unwrap();
    f.settle().await;
    let main_before = f.refresh_annotation("app-a").await;

    let moved = f
        .repo
        .commit_files(
            &[("release/configmap.yaml", &configmap("release", "2"))],
            "release 2",
        )
        .unwrap();
    tag(&moved);
    let body = serde_json::to_vec(&json!({
        "object_kind": "tag_push", "ref": "refs/tags/v1", "after": moved, "checkout_sha": moved,
        "project": {"git_http_url": f.url, "default_branch": "main"},
        "commits": [], "total_commits_count": 0,
    }))
    .unwrap();
    let headers = [
        ("x-gitlab-event", "Tag Push Hook".to_owned()),
        ("x-gitlab-token", GITLAB.to_owned()),
    ];
    assert_eq!(f.send(&headers, body).await, 202);
    f.wait_for_value("release", "2").await;
    f.ns.wait_for_synced_at("app-release", &moved)
        .await
        .unwrap();
    // The Applications on branch main were not asked to look.
    assert_eq!(f.refresh_annotation("app-a").await, main_before);
}
