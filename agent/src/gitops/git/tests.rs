//! Unit tests against `file://` repositories made with the git CLI in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A work tree plus a bare repository the cache fetches from.
struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    cache: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let bare = dir.path().join("origin.git");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["config", "user.name", "t"]);
        git(&work, &["config", "user.email", "t@mooring.invalid"]);
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        let cache = dir.path().join("cache");
        Fixture {
            _dir: dir,
            work,
            bare,
            cache,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes `files`, commits, pushes all branches and tags; returns the commit.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.push();
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn push(&self) {
        git(&self.work, &["push", "-q", "--force", "origin", "--all"]);
        git(&self.work, &["push", "-q", "--force", "origin", "--tags"]);
    }

    fn cache(&self) -> GitCache {
        GitCache::new(self.cache.clone(), local())
    }
}

/// Limits with `file://` allowed, as the unit tests fetch from local repositories.
fn local() -> GitLimits {
    GitLimits {
        allow_file_urls: true,
        ..GitLimits::default()
    }
}

fn read(checkout: &Checkout, path: &str) -> String {
    std::fs::read_to_string(checkout.root.join(path)).unwrap()
}

#[tokio::test]
async fn branch_tag_sha_and_head_resolve_to_their_commits() {
    let repo = Fixture::new();
    let first = repo.commit(&[("app/cm.yaml", "v: 1\n")], "first");
    git(&repo.work, &["tag", "-a", "-m", "annotated", "v1"]);
    git(&repo.work, &["tag", "light"]);
    git(&repo.work, &["checkout", "-q", "-b", "feature"]);
    let feature = repo.commit(&[("app/cm.yaml", "v: feature\n")], "feature");
    git(&repo.work, &["checkout", "-q", "main"]);
    let second = repo.commit(&[("app/cm.yaml", "v: 2\n")], "second");
    let cache = repo.cache();
    let url = repo.url();

    let main = cache.resolve(&url, "main", None).await.unwrap();
    assert_eq!(main.commit, second);
    assert_eq!(read(&main, "app/cm.yaml"), "v: 2\n");
    let head = cache.resolve(&url, "HEAD", None).await.unwrap();
    assert_eq!(head.commit, second);
    let empty = cache.resolve(&url, "", None).await.unwrap();
    assert_eq!(empty.commit, second);
    let branch = cache.resolve(&url, "feature", None).await.unwrap();
    assert_eq!(branch.commit, feature);
    assert_eq!(read(&branch, "app/cm.yaml"), "v: feature\n");
    let full_ref = cache
        .resolve(&url, "refs/heads/feature", None)
        .await
        .unwrap();
    assert_eq!(full_ref.commit, feature);
    let annotated = cache.resolve(&url, "v1", None).await.unwrap();
    assert_eq!(
        annotated.commit, first,
        "an annotated tag peels to its commit"
    );
    assert_eq!(read(&annotated, "app/cm.yaml"), "v: 1\n");
    let lightweight = cache.resolve(&url, "light", None).await.unwrap();
    assert_eq!(lightweight.commit, first);
    let pinned = cache.resolve(&url, &first, None).await.unwrap();
    assert_eq!(pinned.commit, first);
    assert_eq!(read(&pinned, "app/cm.yaml"), "v: 1\n");
    let upper = cache
        .resolve(&url, &first.to_ascii_uppercase(), None)
        .await
        .unwrap();
    assert_eq!(upper.commit, first);
}

#[tokio::test]
async fn an_unchanged_remote_is_checked_but_not_fetched_and_a_new_commit_is() {
    let repo = Fixture::new();
    let first = repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let cache = repo.cache();
    let url = repo.url();

    let one = cache.resolve(&url, "main", None).await.unwrap();
    assert_eq!(one.commit, first);
    assert_eq!(
        cache.stats(),
        GitStats {
            remote_checks: 1,
            fetches: 1
        }
    );

    let again = cache.resolve(&url, "main", None).await.unwrap();
    assert_eq!(again, one);
    assert_eq!(
        cache.stats(),
        GitStats {
            remote_checks: 2,
            fetches: 1
        },
        "the second resolve only listed refs"
    );

    let second = repo.commit(&[("a.yaml", "v: 2\n")], "second");
    let two = cache.resolve(&url, "main", None).await.unwrap();
    assert_eq!(two.commit, second);
    assert_eq!(read(&two, "a.yaml"), "v: 2\n");
    assert_eq!(cache.stats().fetches, 2);
    // The previous tree stays readable for a render that started before the switch.
    assert_eq!(read(&one, "a.yaml"), "v: 1\n");

    let third = repo.commit(&[("a.yaml", "v: 3\n")], "third");
    let three = cache.resolve(&url, "main", None).await.unwrap();
    assert_eq!(three.commit, third);
    assert!(
        !one.root.exists(),
        "trees older than the last two are deleted"
    );
    assert!(two.root.exists());
}

#[tokio::test]
async fn a_pinned_commit_already_checked_out_needs_no_network() {
    let repo = Fixture::new();
    let first = repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let cache = repo.cache();
    cache.resolve(&repo.url(), &first, None).await.unwrap();
    let before = cache.stats();
    // Even with the remote gone, the commit is still there: commits are immutable.
    std::fs::remove_dir_all(&repo.bare).unwrap();
    let again = cache.resolve(&repo.url(), &first, None).await.unwrap();
    assert_eq!(again.commit, first);
    assert_eq!(cache.stats(), before);
    // Also for the cache of a restarted agent on the same directory.
    let restarted = repo.cache();
    assert_eq!(
        restarted.resolve(&repo.url(), &first, None).await.unwrap(),
        again
    );
    assert_eq!(restarted.stats(), GitStats::default());
}

#[tokio::test]
async fn a_missing_revision_names_the_revision_and_the_url() {
    let repo = Fixture::new();
    repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let cache = repo.cache();
    for revision in ["no-such-branch", "refs/heads/nope", "bad name*"] {
        let error = cache
            .resolve(&repo.url(), revision, None)
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "RevisionNotFound", "{revision}: {error}");
        let message = error.to_string();
        assert!(message.contains(&repo.url()), "{message}");
        assert!(!error.is_retryable());
    }
    let missing_commit = "0123456789abcdef0123456789abcdef01234567";
    let error = cache
        .resolve(&repo.url(), missing_commit, None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, GitError::RefNotFound { .. } | GitError::Fetch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&repo.url()), "{error}");
}

#[tokio::test]
async fn a_missing_repository_is_unreachable_and_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("cache"), local());
    let url = format!("file://{}/nothing-here.git", dir.path().display());
    let error = cache.resolve(&url, "main", None).await.unwrap_err();
    assert!(error.to_string().contains(&url), "{error}");
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn local_repositories_are_refused_unless_allowed() {
    let repo = Fixture::new();
    repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let strict = GitCache::new(repo.cache.clone(), GitLimits::default());
    for url in [repo.url(), repo.bare.display().to_string()] {
        let error = strict.resolve(&url, "main", None).await.unwrap_err();
        assert_eq!(error.reason(), "InvalidRepositoryURL", "{url}: {error}");
        assert!(
            error.to_string().contains("--git-allow-file-urls"),
            "{error}"
        );
    }
    assert_eq!(strict.stats(), GitStats::default());
    repo.cache()
        .resolve(&repo.url(), "main", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn unsupported_schemes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().to_path_buf(), GitLimits::default());
    for url in ["ext::sh -c touch% /tmp/pwned", "git://example.com/repo.git"] {
        let error = cache.resolve(url, "main", None).await.unwrap_err();
        assert_eq!(error.reason(), "InvalidRepositoryURL", "{url}: {error}");
    }
}

#[tokio::test]
async fn the_checkout_is_read_only_and_keeps_symlinks_as_links() {
    let repo = Fixture::new();
    std::fs::create_dir_all(repo.work.join("app")).unwrap();
    std::os::unix::fs::symlink("../shared.yaml", repo.work.join("app/link.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", repo.work.join("app/escape.yaml")).unwrap();
    repo.commit(
        &[
            ("shared.yaml", "v: shared\n"),
            ("app/run.sh", "#!/bin/sh\n"),
        ],
        "links",
    );
    let cache = repo.cache();
    let checkout = cache.resolve(&repo.url(), "main", None).await.unwrap();
    let link = std::fs::symlink_metadata(checkout.root.join("app/link.yaml")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(checkout.root.join("app/escape.yaml")).unwrap(),
        PathBuf::from("/etc/passwd")
    );
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::metadata(checkout.root.join("shared.yaml")).unwrap();
    assert_eq!(file.permissions().mode() & 0o777, 0o444);
    let dir = std::fs::metadata(checkout.root.join("app")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o555);
}

#[tokio::test]
async fn a_checkout_over_the_size_limit_is_refused_naming_the_file() {
    let repo = Fixture::new();
    repo.commit(
        &[
            ("small.yaml", "v: 1\n"),
            ("big/blob.bin", &"x".repeat(4096)),
        ],
        "big",
    );
    let limits = GitLimits {
        max_checkout_bytes: 1024,
        ..local()
    };
    let cache = GitCache::new(repo.cache.clone(), limits);
    let error = cache.resolve(&repo.url(), "main", None).await.unwrap_err();
    match &error {
        GitError::Jail { file, .. } => assert_eq!(file, "big/blob.bin"),
        other => panic!("expected a refusal naming the file, got {other:?}"),
    }
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn concurrent_resolves_of_one_revision_share_one_fetch() {
    let repo = Fixture::new();
    let first = repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let cache = std::sync::Arc::new(repo.cache());
    let url = repo.url();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cache = std::sync::Arc::clone(&cache);
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            cache.resolve(&url, "main", None).await.unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().commit, first);
    }
    assert_eq!(cache.stats().fetches, 1);
}

#[test]
fn urls_lose_their_passwords() {
    assert_eq!(
        redact_url("https://user:token@git.example.com/org/repo.git"),
        "https://git.example.com/org/repo.git"
    );
    assert_eq!(
        redact_url("ssh://git@git.example.com:2222/repo.git"),
        "ssh://git@git.example.com:2222/repo.git"
    );
    assert_eq!(
        redact_url("https://git.example.com/a@b"),
        "https://git.example.com/a@b"
    );
}

#[test]
fn revisions_are_parsed_like_argo_cd() {
    assert_eq!(Revision::parse(""), Revision::Head);
    assert_eq!(Revision::parse("HEAD"), Revision::Head);
    let sha = "0123456789ABCDEF0123456789abcdef01234567";
    assert_eq!(
        Revision::parse(sha),
        Revision::Commit(sha.to_ascii_lowercase())
    );
    // Short SHAs are names: a shallow fetch cannot resolve them.
    assert_eq!(Revision::parse("0123456"), Revision::Ref("0123456".into()));
    assert_eq!(Revision::parse("v1.2.3"), Revision::Ref("v1.2.3".into()));
}

#[test]
fn credentials_debug_shows_no_secret() {
    let credentials = RepoCredentials {
        username: Some(Zeroizing::new("robot".into())),
        password: Some(Zeroizing::new("s3cret".into())),
        ssh_private_key: Some(Zeroizing::new("-----BEGIN KEY-----".into())),
        known_hosts: Some("host ssh-ed25519 AAAA".into()),
    };
    let shown = format!("{credentials:?}");
    assert!(!shown.contains("robot") && !shown.contains("s3cret") && !shown.contains("BEGIN"));
}

#[tokio::test]
async fn credentials_are_not_sent_over_plain_http_to_a_remote_host() {
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().to_path_buf(), GitLimits::default());
    let credentials = RepoCredentials {
        username: Some(Zeroizing::new("robot".into())),
        password: Some(Zeroizing::new("s3cret".into())),
        ..Default::default()
    };
    // Refused before any connection: the host does not even need to exist.
    let error = cache
        .resolve(
            "http://git.example.invalid/repo.git",
            "main",
            Some(&credentials),
        )
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "InvalidRepositoryURL", "{error}");
    assert!(error.to_string().contains("https"), "{error}");
    assert!(remote::is_loopback_for_tests("127.0.0.1"));
    assert!(remote::is_loopback_for_tests("[::1]"));
    assert!(remote::is_loopback_for_tests("localhost"));
    assert!(!remote::is_loopback_for_tests("10.0.0.1"));
}

#[tokio::test]
async fn a_repository_with_too_many_packs_starts_afresh_and_keeps_working() {
    let repo = Fixture::new();
    repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let limits = GitLimits {
        max_packs: 2,
        ..local()
    };
    let cache = GitCache::new(repo.cache.clone(), limits);
    let url = repo.url();
    let mut most_packs = 0;
    for round in 2..8 {
        let commit = repo.commit(&[("a.yaml", &format!("v: {round}\n"))], "next");
        let checkout = cache.resolve(&url, "main", None).await.unwrap();
        assert_eq!(checkout.commit, commit);
        assert_eq!(read(&checkout, "a.yaml"), format!("v: {round}\n"));
        for entry in std::fs::read_dir(&repo.cache).unwrap() {
            let packs = remote::pack_count(&entry.unwrap().path().join("repo.git"));
            most_packs = most_packs.max(packs);
        }
    }
    assert!(
        (2..=3).contains(&most_packs),
        "each fetch adds a pack, and they are bounded: saw {most_packs}"
    );
    assert_eq!(cache.stats().fetches, 6);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_naming_the_url() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let limits = GitLimits {
        timeout: std::time::Duration::from_millis(500),
        ..local()
    };
    let cache = GitCache::new(dir.path().to_path_buf(), limits);
    let url = format!("http://{address}/repo.git");
    let started = std::time::Instant::now();
    let error = cache.resolve(&url, "main", None).await.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(matches!(error, GitError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains(&url), "{error}");
    assert!(error.is_retryable());
    silent.abort();
}

#[tokio::test]
async fn a_new_process_reuses_the_checkout_on_disk_and_cleans_up_what_it_does_not_need() {
    let repo = Fixture::new();
    repo.commit(&[("a.yaml", "v: 1\n")], "first");
    let url = repo.url();
    let old = repo.cache().resolve(&url, "main", None).await.unwrap();
    let second = repo.commit(&[("a.yaml", "v: 2\n")], "second");
    let current = repo.cache().resolve(&url, "main", None).await.unwrap();
    assert_eq!(current.commit, second);
    let third = repo.commit(&[("a.yaml", "v: 3\n")], "third");
    let newest = repo.cache().resolve(&url, "main", None).await.unwrap();
    assert_eq!(newest.commit, third);
    // Each GitCache above is a new process's cache on the same directory.
    assert!(
        !old.root.exists(),
        "a tree an earlier process left is deleted"
    );

    let restarted = repo.cache();
    let again = restarted.resolve(&url, "main", None).await.unwrap();
    assert_eq!(again, newest);
    assert_eq!(
        restarted.stats(),
        GitStats {
            remote_checks: 1,
            fetches: 0
        },
        "the tree on disk needs no fetch"
    );
}

/// Writes a raw tree object (entries as git encodes them, in the order given, duplicates
/// allowed) into `repo`; returns its id.
fn raw_tree(repo: &Path, entries: &[(&str, &str, &str)]) -> String {
    let mut bytes = Vec::new();
    for (mode, name, id) in entries {
        bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        let id: Vec<u8> = (0..id.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
            .collect();
        bytes.extend_from_slice(&id);
    }
    let file = repo.join("raw-tree");
    std::fs::write(&file, bytes).unwrap();
    let id = git(
        repo,
        &[
            "hash-object",
            "-t",
            "tree",
            "--literally",
            "-w",
            file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(file).unwrap();
    id
}

fn blob(repo: &Path, content: &str) -> String {
    let file = repo.join("raw-blob");
    std::fs::write(&file, content).unwrap();
    let id = git(repo, &["hash-object", "-w", file.to_str().unwrap()]);
    std::fs::remove_file(file).unwrap();
    id
}

#[tokio::test]
async fn a_tree_with_two_entries_of_one_name_is_refused_and_writes_nothing_outside() {
    let repo = Fixture::new();
    repo.commit(&[("readme", "x\n")], "first");
    let outside = tempfile::tempdir().unwrap();
    let link = blob(&repo.bare, outside.path().to_str().unwrap());
    let file = blob(&repo.bare, "escaped\n");
    let inner = raw_tree(&repo.bare, &[("100644", "escaped.yaml", &file)]);
    // A symlink `a` to a directory outside the checkout, then a directory `a`; and the other
    // order, then a file of the same name.
    for entries in [
        vec![
            ("120000", "a", link.as_str()),
            ("40000", "a", inner.as_str()),
        ],
        vec![
            ("120000", "a", link.as_str()),
            ("100644", "a", file.as_str()),
        ],
    ] {
        let root = raw_tree(&repo.bare, &entries);
        let commit = git(
            &repo.bare,
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
        );
        git(&repo.bare, &["update-ref", "refs/heads/main", &commit]);
        let error = repo
            .cache()
            .resolve(&repo.url(), "main", None)
            .await
            .unwrap_err();
        match &error {
            GitError::Jail { file, reason, .. } => {
                assert_eq!(file, "a");
                assert!(reason.contains("two entries"), "{reason}");
            }
            other => panic!("expected the jail error, got {other:?}"),
        }
        let escaped: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(
            escaped.is_empty(),
            "written outside the checkout: {escaped:?}"
        );
    }
}
