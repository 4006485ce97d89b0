//! Which Git host sent a request (by header, in Argo CD's order), whether it proves the
//! configured secret, and the pushes its payload describes.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use serde_json::Value;

use super::secrets::{SecretBytes, WebhookSecrets};

/// GitHub lists at most this many commits in a push event; a payload with as many may be
/// truncated.
const GITHUB_MAX_COMMITS: usize = 2048;
/// GitHub lists at most this many files per commit (added, modified and removed together).
const GITHUB_MAX_FILES: usize = 3000;
/// More changed files than this are not tracked: the push refreshes as if it had no list.
pub const MAX_TRACKED_FILES: usize = 10_000;

/// The Git hosts understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (and GitHub Enterprise).
    GitHub,
    /// GitLab.
    GitLab,
    /// Gitea, Forgejo and Gogs.
    Gogs,
    /// Bitbucket Server / Data Center.
    BitbucketServer,
    /// Bitbucket Cloud.
    Bitbucket,
    /// Azure DevOps.
    AzureDevOps,
}

impl Provider {
    /// The `provider` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gogs => "gogs",
            Provider::BitbucketServer => "bitbucketserver",
            Provider::Bitbucket => "bitbucket",
            Provider::AzureDevOps => "azuredevops",
        }
    }

    /// The provider of a request, by its headers (Argo CD's order: Gitea/Gogs also send GitHub's
    /// headers, Bitbucket Cloud also sends `X-Event-Key`).
    pub fn detect(headers: &HeaderMap) -> Option<Provider> {
        let has = |name: &str| headers.contains_key(name);
        if has("x-vss-activityid") {
            Some(Provider::AzureDevOps)
        } else if has("x-gitea-event") || has("x-gogs-event") {
            Some(Provider::Gogs)
        } else if has("x-github-event") {
            Some(Provider::GitHub)
        } else if has("x-gitlab-event") {
            Some(Provider::GitLab)
        } else if has("x-hook-uuid") {
            Some(Provider::Bitbucket)
        } else if has("x-event-key") {
            Some(Provider::BitbucketServer)
        } else {
            None
        }
    }

    /// The Secret key that turns this provider on.
    pub fn secret_key(self) -> &'static str {
        match self {
            Provider::GitHub => "webhook.github.secret",
            Provider::GitLab => "webhook.gitlab.secret",
            Provider::Gogs => "webhook.gogs.secret",
            Provider::BitbucketServer => "webhook.bitbucketserver.secret",
            Provider::Bitbucket => "webhook.bitbucket.uuid",
            Provider::AzureDevOps => "webhook.azuredevops.username/password",
        }
    }
}

/// Why a request was not authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No secret is configured for the provider: it is off.
    NotConfigured,
    /// The request carries no signature or token.
    Missing,
    /// The signature or token is wrong.
    Mismatch,
}

/// Whether the request proves `provider`'s configured secret.
pub fn authenticate(
    provider: Provider,
    secrets: &WebhookSecrets,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let configured = |secret: &Option<SecretBytes>| -> Result<Vec<u8>, Refusal> {
        secret
            .as_ref()
            .map(|s| s.to_vec())
            .ok_or(Refusal::NotConfigured)
    };
    match provider {
        Provider::GitHub => {
            let key = configured(&secrets.github)?;
            let signature = header("x-hub-signature-256").ok_or(Refusal::Missing)?;
            verify_hmac(&key, body, signature.strip_prefix("sha256="))
        }
        Provider::BitbucketServer => {
            let key = configured(&secrets.bitbucket_server)?;
            let signature = header("x-hub-signature").ok_or(Refusal::Missing)?;
            verify_hmac(&key, body, signature.strip_prefix("sha256="))
        }
        Provider::Gogs => {
            let key = configured(&secrets.gogs)?;
            let signature = header("x-gitea-signature")
                .or_else(|| header("x-gogs-signature"))
                .ok_or(Refusal::Missing)?;
            verify_hmac(&key, body, Some(signature))
        }
        Provider::GitLab => {
            let token = configured(&secrets.gitlab)?;
            let given = header("x-gitlab-token").ok_or(Refusal::Missing)?;
            equal_secrets(&token, given.as_bytes())
        }
        Provider::Bitbucket => {
            let uuid = configured(&secrets.bitbucket)?;
            let given = header("x-hook-uuid").ok_or(Refusal::Missing)?;
            equal_secrets(&uuid, given.as_bytes())
        }
        Provider::AzureDevOps => {
            let (username, password) = secrets
                .azure_devops
                .as_ref()
                .ok_or(Refusal::NotConfigured)?;
            let given = header("authorization").ok_or(Refusal::Missing)?;
            let encoded = given
                .strip_prefix("Basic ")
                .or_else(|| given.strip_prefix("basic "))
                .ok_or(Refusal::Mismatch)?;
            use base64::Engine as _;
            let decoded = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| Refusal::Mismatch)?,
            );
            let mut expected = zeroize::Zeroizing::new(username.to_vec());
            expected.push(b':');
            expected.extend_from_slice(password);
            equal_secrets(&expected, &decoded)
        }
    }
}

/// Checks a hex HMAC-SHA256 of `body` under `key` in constant time.
fn verify_hmac(key: &[u8], body: &[u8], hex_signature: Option<&str>) -> Result<(), Refusal> {
    let tag = hex_signature
        .and_then(decode_hex)
        .ok_or(Refusal::Mismatch)?;
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::verify(&key, body, &tag).map_err(|_| Refusal::Mismatch)
}

/// Compares two secrets in constant time (their SHA-256 digests, so that the length does not
/// show either).
fn equal_secrets(expected: &[u8], given: &[u8]) -> Result<(), Refusal> {
    use aws_lc_rs::digest::{SHA256, digest};
    let (a, b) = (digest(&SHA256, expected), digest(&SHA256, given));
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_ref(), b.as_ref())
        .map_err(|_| Refusal::Mismatch)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A pushed ref.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GitRef {
    /// A branch, by its short name.
    Branch(String),
    /// A tag, by its short name.
    Tag(String),
}

impl GitRef {
    /// `refs/heads/x` → branch `x`, `refs/tags/x` → tag `x`; anything else is no ref a source
    /// can follow.
    pub fn parse(full: &str) -> Option<GitRef> {
        if let Some(branch) = full.strip_prefix("refs/heads/") {
            Some(GitRef::Branch(branch.to_owned()))
        } else {
            full.strip_prefix("refs/tags/")
                .map(|tag| GitRef::Tag(tag.to_owned()))
        }
    }
}

/// One ref moved in one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The repository's URLs as the payload names them (web, https clone, ssh clone).
    pub repo_urls: Vec<String>,
    /// The ref that moved.
    pub git_ref: GitRef,
    /// The commit the ref points to now, when the payload says.
    pub after: Option<String>,
    /// The repository's default branch, when the payload says (`HEAD` sources need it).
    pub default_branch: Option<String>,
    /// The files the push added, modified or removed; `None` when the payload has no list or
    /// the list may be truncated.
    pub changed_files: Option<BTreeSet<String>>,
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A host checking the hook (GitHub `ping`, Bitbucket Server `diagnostics:ping`).
    Ping,
    /// Refs moved.
    Pushes(Vec<Push>),
    /// An event that moves no ref (issues, merge requests…): accepted and ignored.
    Ignored(String),
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the {provider} payload: {reason}")]
pub struct PayloadError {
    /// The provider label.
    pub provider: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// The event of an authenticated request.
pub fn parse(provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<Event, PayloadError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let error = |reason: String| PayloadError {
        provider: provider.label(),
        reason,
    };
    let event = match provider {
        Provider::GitHub => header("x-github-event"),
        Provider::GitLab => header("x-gitlab-event"),
        Provider::Gogs => {
            let gitea = header("x-gitea-event");
            if gitea.is_empty() {
                header("x-gogs-event")
            } else {
                gitea
            }
        }
        Provider::Bitbucket | Provider::BitbucketServer => header("x-event-key"),
        Provider::AzureDevOps => String::new(),
    };
    match (provider, event.as_str()) {
        (Provider::GitHub, "ping") | (Provider::BitbucketServer, "diagnostics:ping") => {
            return Ok(Event::Ping);
        }
        (Provider::GitHub | Provider::Gogs, "push")
        | (Provider::GitLab, "Push Hook" | "Tag Push Hook")
        | (Provider::Bitbucket, "repo:push")
        | (Provider::BitbucketServer, "repo:refs_changed")
        | (Provider::AzureDevOps, _) => {}
        (Provider::GitLab, "System Hook") => {}
        (_, other) => return Ok(Event::Ignored(other.chars().take(64).collect())),
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| error(format!("not JSON: {e}")))?;
    // GitLab's system hooks carry every kind of instance event; only pushes move refs.
    if provider == Provider::GitLab && event == "System Hook" {
        let kind = payload["event_name"].as_str().unwrap_or_default();
        if kind != "push" && kind != "tag_push" {
            return Ok(Event::Ignored(kind.chars().take(64).collect()));
        }
    }
    let pushes = match provider {
        Provider::GitHub | Provider::Gogs => github_like(provider, &payload),
        Provider::GitLab => gitlab(&payload),
        Provider::BitbucketServer => bitbucket_server(&payload),
        Provider::Bitbucket => bitbucket_cloud(&payload),
        Provider::AzureDevOps => {
            if payload["eventType"].as_str() != Some("git.push") {
                let kind = payload["eventType"].as_str().unwrap_or_default();
                return Ok(Event::Ignored(kind.chars().take(64).collect()));
            }
            azure_devops(&payload)
        }
    };
    let pushes = pushes.ok_or_else(|| error("no repository URL or ref".into()))?;
    Ok(Event::Pushes(pushes))
}

fn strings<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The files added, modified or removed by `commits`; `None` beyond `per_commit` files in one
/// commit or [`MAX_TRACKED_FILES`] in all.
fn changed_files(commits: &[Value], per_commit: usize) -> Option<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    for commit in commits {
        let mut in_commit = 0;
        for list in ["added", "modified", "removed"] {
            for file in commit[list].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                files.insert(file.as_str()?.to_owned());
                in_commit += 1;
            }
        }
        if in_commit >= per_commit || files.len() > MAX_TRACKED_FILES {
            return None;
        }
    }
    Some(files)
}

/// GitHub, Gitea and Gogs: `ref`, `after`, `repository.{html_url,clone_url,ssh_url}`,
/// `commits[].{added,modified,removed}`.
fn github_like(provider: Provider, payload: &Value) -> Option<Vec<Push>> {
    let repository = &payload["repository"];
    let repo_urls = strings([
        &repository["html_url"],
        &repository["clone_url"],
        &repository["ssh_url"],
        &repository["url"],
    ]);
    let git_ref = GitRef::parse(payload["ref"].as_str()?)?;
    let commits = payload["commits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut files = changed_files(commits, GITHUB_MAX_FILES);
    // GitHub truncates at 2048 commits; Gitea and Gogs list a few and give the total.
    let listed_all = match provider {
        Provider::GitHub => commits.len() < GITHUB_MAX_COMMITS,
        _ => payload["total_commits"]
            .as_u64()
            .is_none_or(|total| total <= commits.len() as u64),
    };
    // A push that lists no commit (a new branch at an old commit, a forced push back) says
    // nothing about its files.
    if !listed_all || commits.is_empty() {
        files = None;
    }
    (!repo_urls.is_empty()).then(|| {
        vec![Push {
            repo_urls,
            git_ref,
            after: payload["after"].as_str().map(str::to_owned),
            default_branch: repository["default_branch"].as_str().map(str::to_owned),
            changed_files: files,
        }]
    })
}

/// GitLab: `ref`, `checkout_sha`/`after`, `project.{web_url,git_http_url,git_ssh_url}`,
/// `commits` (at most 20, `total_commits_count` tells).
fn gitlab(payload: &Value) -> Option<Vec<Push>> {
    let project = &payload["project"];
    let repository = &payload["repository"];
    let repo_urls = strings([
        &project["web_url"],
        &project["git_http_url"],
        &project["git_ssh_url"],
        &repository["homepage"],
        &repository["git_http_url"],
        &repository["git_ssh_url"],
    ]);
    let git_ref = GitRef::parse(payload["ref"].as_str()?)?;
    let commits = payload["commits"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let complete = !commits.is_empty()
        && payload["total_commits_count"]
            .as_u64()
            .is_none_or(|total| total <= commits.len() as u64);
    let files = if complete {
        changed_files(commits, usize::MAX)
    } else {
        None
    };
    let after = payload["checkout_sha"]
        .as_str()
        .or_else(|| payload["after"].as_str())
        .map(str::to_owned);
    (!repo_urls.is_empty()).then(|| {
        vec![Push {
            repo_urls,
            git_ref,
            after,
            default_branch: project["default_branch"].as_str().map(str::to_owned),
            changed_files: files,
        }]
    })
}

/// Bitbucket Server: `repository.links.{clone,self}[].href`, `changes[].{refId,toHash}`; no
/// file list, no default branch.
fn bitbucket_server(payload: &Value) -> Option<Vec<Push>> {
    let links = &payload["repository"]["links"];
    let repo_urls = strings(
        ["clone", "self"]
            .iter()
            .flat_map(|kind| links[*kind].as_array().into_iter().flatten())
            .map(|link| &link["href"]),
    );
    let pushes: Vec<Push> = payload["changes"]
        .as_array()?
        .iter()
        .filter_map(|change| {
            let full = change["refId"]
                .as_str()
                .or_else(|| change["ref"]["id"].as_str())?;
            Some(Push {
                repo_urls: repo_urls.clone(),
                git_ref: GitRef::parse(full)?,
                after: change["toHash"].as_str().map(str::to_owned),
                default_branch: None,
                changed_files: None,
            })
        })
        .collect();
    (!repo_urls.is_empty() && !pushes.is_empty()).then_some(pushes)
}

/// Bitbucket Cloud: `repository.links.html.href` (or `full_name`), `push.changes[].new`; no file
/// list, no default branch.
fn bitbucket_cloud(payload: &Value) -> Option<Vec<Push>> {
    let repository = &payload["repository"];
    let mut repo_urls = strings([&repository["links"]["html"]["href"]]);
    if let Some(full_name) = repository["full_name"].as_str() {
        repo_urls.push(format!("https://bitbucket.org/{full_name}"));
    }
    let pushes: Vec<Push> = payload["push"]["changes"]
        .as_array()?
        .iter()
        .filter_map(|change| {
            let new = &change["new"];
            let name = new["name"].as_str()?.to_owned();
            let git_ref = match new["type"].as_str()? {
                "branch" => GitRef::Branch(name),
                "tag" | "annotated_tag" => GitRef::Tag(name),
                _ => return None,
            };
            Some(Push {
                repo_urls: repo_urls.clone(),
                git_ref,
                after: new["target"]["hash"].as_str().map(str::to_owned),
                default_branch: None,
                changed_files: None,
            })
        })
        .collect();
    (!repo_urls.is_empty() && !pushes.is_empty()).then_some(pushes)
}

/// Azure DevOps `git.push`: `resource.repository.{remoteUrl,sshUrl}`,
/// `resource.refUpdates[].{name,newObjectId}`; no file list.
fn azure_devops(payload: &Value) -> Option<Vec<Push>> {
    let repository = &payload["resource"]["repository"];
    let repo_urls = strings([&repository["remoteUrl"], &repository["sshUrl"]]);
    let default_branch = repository["defaultBranch"]
        .as_str()
        .and_then(GitRef::parse)
        .and_then(|r| match r {
            GitRef::Branch(b) => Some(b),
            GitRef::Tag(_) => None,
        });
    let pushes: Vec<Push> = payload["resource"]["refUpdates"]
        .as_array()?
        .iter()
        .filter_map(|update| {
            Some(Push {
                repo_urls: repo_urls.clone(),
                git_ref: GitRef::parse(update["name"].as_str()?)?,
                after: update["newObjectId"].as_str().map(str::to_owned),
                default_branch: default_branch.clone(),
                changed_files: None,
            })
        })
        .collect();
    (!repo_urls.is_empty() && !pushes.is_empty()).then_some(pushes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use zeroize::Zeroizing;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn sign(key: &[u8], body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
        aws_lc_rs::hmac::sign(&key, body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn secrets() -> WebhookSecrets {
        let s = |v: &str| Some(Zeroizing::new(v.as_bytes().to_vec()));
        WebhookSecrets {
            github: s("gh"),
            gitlab: s("gl"),
            bitbucket: s("{uuid}"),
            bitbucket_server: s("bbs"),
            gogs: s("gogs"),
            azure_devops: Some((
                Zeroizing::new(b"user".to_vec()),
                Zeroizing::new(b"pass".to_vec()),
            )),
        }
    }

    #[test]
    fn github_signature_is_checked() {
        let body = br#"{"zen":"hi"}"#;
        let good = format!("sha256={}", sign(b"gh", body));
        let h = headers(&[("x-github-event", "ping"), ("x-hub-signature-256", &good)]);
        assert_eq!(Provider::detect(&h), Some(Provider::GitHub));
        assert_eq!(authenticate(Provider::GitHub, &secrets(), &h, body), Ok(()));
        let wrong = format!("sha256={}", sign(b"other", body));
        let h = headers(&[("x-github-event", "ping"), ("x-hub-signature-256", &wrong)]);
        assert_eq!(
            authenticate(Provider::GitHub, &secrets(), &h, body),
            Err(Refusal::Mismatch)
        );
        let h = headers(&[("x-github-event", "ping")]);
        assert_eq!(
            authenticate(Provider::GitHub, &secrets(), &h, body),
            Err(Refusal::Missing)
        );
        assert_eq!(
            authenticate(Provider::GitHub, &WebhookSecrets::default(), &h, body),
            Err(Refusal::NotConfigured)
        );
    }

    #[test]
    fn the_other_providers_check_their_proofs() {
        let body = b"{}";
        let s = secrets();
        let gitea = headers(&[
            ("x-gitea-event", "push"),
            ("x-gitea-signature", &sign(b"gogs", body)),
        ]);
        assert_eq!(Provider::detect(&gitea), Some(Provider::Gogs));
        assert_eq!(authenticate(Provider::Gogs, &s, &gitea, body), Ok(()));
        let bbs = format!("sha256={}", sign(b"bbs", body));
        let bbs = headers(&[
            ("x-event-key", "repo:refs_changed"),
            ("x-hub-signature", &bbs),
        ]);
        assert_eq!(Provider::detect(&bbs), Some(Provider::BitbucketServer));
        assert_eq!(
            authenticate(Provider::BitbucketServer, &s, &bbs, body),
            Ok(())
        );
        let gl = headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "gl")]);
        assert_eq!(authenticate(Provider::GitLab, &s, &gl, body), Ok(()));
        let gl = headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "g")]);
        assert_eq!(
            authenticate(Provider::GitLab, &s, &gl, body),
            Err(Refusal::Mismatch)
        );
        let bb = headers(&[("x-event-key", "repo:push"), ("x-hook-uuid", "{uuid}")]);
        assert_eq!(Provider::detect(&bb), Some(Provider::Bitbucket));
        assert_eq!(authenticate(Provider::Bitbucket, &s, &bb, body), Ok(()));
        // "user:pass"
        let az = headers(&[
            ("x-vss-activityid", "1"),
            ("authorization", "Basic dXNlcjpwYXNz"),
        ]);
        assert_eq!(Provider::detect(&az), Some(Provider::AzureDevOps));
        assert_eq!(authenticate(Provider::AzureDevOps, &s, &az, body), Ok(()));
        let az = headers(&[
            ("x-vss-activityid", "1"),
            ("authorization", "Basic dXNlcjpwYXN6"),
        ]);
        assert_eq!(
            authenticate(Provider::AzureDevOps, &s, &az, body),
            Err(Refusal::Mismatch)
        );
        assert_eq!(Provider::detect(&headers(&[("x-other", "1")])), None);
    }

    #[test]
    fn github_push_lists_files_unless_truncated() {
        let body = serde_json::json!({
            "ref": "refs/heads/main", "after": "abc",
            "repository": {"html_url": "https://github.com/o/r", "default_branch": "main"},
            "commits": [{"added": ["a/x.yaml"], "modified": ["b/y.yaml"], "removed": []}]
        });
        let h = headers(&[("x-github-event", "push")]);
        let Event::Pushes(pushes) =
            parse(Provider::GitHub, &h, body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a push")
        };
        assert_eq!(pushes[0].git_ref, GitRef::Branch("main".into()));
        assert_eq!(pushes[0].default_branch.as_deref(), Some("main"));
        let files = pushes[0].changed_files.clone().unwrap();
        assert!(files.contains("a/x.yaml") && files.contains("b/y.yaml"));
        let many: Vec<Value> = (0..GITHUB_MAX_COMMITS)
            .map(|_| serde_json::json!({"added": ["a"]}))
            .collect();
        let body = serde_json::json!({
            "ref": "refs/tags/v1", "repository": {"html_url": "https://github.com/o/r"},
            "commits": many
        });
        let Event::Pushes(pushes) =
            parse(Provider::GitHub, &h, body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a push")
        };
        assert_eq!(pushes[0].git_ref, GitRef::Tag("v1".into()));
        assert_eq!(pushes[0].changed_files, None);
    }

    #[test]
    fn bitbucket_and_azure_pushes_have_no_files() {
        let body = serde_json::json!({
            "repository": {"full_name": "o/r", "links": {"html": {"href": "https://bitbucket.org/o/r"}}},
            "push": {"changes": [{"new": {"name": "main", "type": "branch", "target": {"hash": "abc"}}}]}
        });
        let h = headers(&[("x-event-key", "repo:push")]);
        let Event::Pushes(pushes) =
            parse(Provider::Bitbucket, &h, body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a push")
        };
        assert_eq!(pushes[0].changed_files, None);
        let body = serde_json::json!({
            "eventType": "git.push",
            "resource": {
                "repository": {"remoteUrl": "https://dev.azure.com/o/p/_git/r", "defaultBranch": "refs/heads/main"},
                "refUpdates": [{"name": "refs/heads/main", "newObjectId": "abc"}]
            }
        });
        let Event::Pushes(pushes) = parse(
            Provider::AzureDevOps,
            &HeaderMap::new(),
            body.to_string().as_bytes(),
        )
        .unwrap() else {
            panic!("not a push")
        };
        assert_eq!(pushes[0].default_branch.as_deref(), Some("main"));
        assert_eq!(pushes[0].after.as_deref(), Some("abc"));
    }

    #[test]
    fn gitlab_system_hooks_refresh_only_on_pushes() {
        let h = headers(&[("x-gitlab-event", "System Hook")]);
        let body = serde_json::json!({"event_name": "project_create"});
        assert!(matches!(
            parse(Provider::GitLab, &h, body.to_string().as_bytes()).unwrap(),
            Event::Ignored(_)
        ));
        let body = serde_json::json!({
            "event_name": "tag_push", "ref": "refs/tags/v2", "checkout_sha": "abc",
            "project": {"git_ssh_url": "git@gitlab.example.com:o/r.git"}, "commits": []
        });
        let Event::Pushes(pushes) =
            parse(Provider::GitLab, &h, body.to_string().as_bytes()).unwrap()
        else {
            panic!("not a push")
        };
        assert_eq!(pushes[0].git_ref, GitRef::Tag("v2".into()));
        assert_eq!(
            pushes[0].changed_files, None,
            "no commits listed: no file list"
        );
    }
}
