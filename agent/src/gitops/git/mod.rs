//! Git sources: one shallow checkout per (repository URL, revision), shared by every Application.
//!
//! [`GitCache::resolve`] first asks the remote where the revision points (a ref listing, cheap), and
//! fetches — shallow, depth 1, only that ref — only when the commit changed. A full commit SHA
//! that is already checked out needs no network at all: commits are immutable.
//!
//! Transports: https/http with basic auth or a token, ssh with a private key and **strict**
//! known_hosts through the system `ssh` (gix has no ssh library), and `file://` for tests. gix's
//! network calls are blocking, so they run in `spawn_blocking` with a timeout.
//!
//! The checkout is a jail: tree entries that would escape their directory are refused, and the
//! files are written read-only. Whether a symlink leaves the checkout is checked where files are
//! read, by the renderer (see `crate::gitops::render`).

mod credentials;
mod remote;
mod ssh;
mod tree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::metrics::{GitMetrics, GitOutcomeLabels};

pub use credentials::credentials_for;

/// Credentials for one repository (or, from a `repo-creds` Secret, a URL prefix).
///
/// Every secret field is zeroized on drop; `Debug` shows which kinds of credentials are present,
/// never their values.
#[derive(Clone, Default)]
pub struct RepoCredentials {
    /// https: the user name (a token needs one too; `git` is used when only a password is set).
    pub username: Option<Zeroizing<String>>,
    /// https: the password or access token.
    pub password: Option<Zeroizing<String>>,
    /// ssh: the private key, PEM or OpenSSH format.
    pub ssh_private_key: Option<Zeroizing<String>>,
    /// ssh: the `known_hosts` lines the server's host key must match (strict checking: without
    /// them no ssh server is trusted).
    pub known_hosts: Option<String>,
}

impl std::fmt::Debug for RepoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("RepoCredentials")
            .field("username", &present(self.username.is_some()))
            .field("password", &present(self.password.is_some()))
            .field("ssh_private_key", &present(self.ssh_private_key.is_some()))
            .field(
                "known_hosts",
                &self.known_hosts.as_ref().map(|hosts| hosts.lines().count()),
            )
            .finish()
    }
}

/// Bounds on what one repository may cost the agent.
#[derive(Clone, Debug)]
pub struct GitLimits {
    /// One ref check plus fetch plus checkout, end to end.
    pub timeout: Duration,
    /// Total bytes of the files of one checkout (a repository is not a place for disk images).
    pub max_checkout_bytes: u64,
    /// Number of files and directories in one checkout.
    pub max_checkout_entries: usize,
    /// Packs one cached repository may collect (each fetch of a new commit adds one) before it
    /// is started afresh, which bounds its disk use: a shallow checkout needs no old objects.
    pub max_packs: usize,
    /// Accept `file://` URLs and local paths. Off by default: an Application could otherwise
    /// read any git repository on the agent's file system. Tests and the local demo turn it on.
    pub allow_file_urls: bool,
}

impl Default for GitLimits {
    fn default() -> Self {
        GitLimits {
            // Argo CD's repo-server gives git 90 s by default; a shallow fetch needs far less.
            timeout: Duration::from_secs(90),
            max_checkout_bytes: 512 * 1024 * 1024,
            max_checkout_entries: 100_000,
            max_packs: 32,
            allow_file_urls: false,
        }
    }
}

/// A commit checked out on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// The full SHA of the commit.
    pub commit: String,
    /// The commit's tree, read-only. Stays valid until the cache has moved on by two more commits
    /// of the same (URL, revision).
    pub root: PathBuf,
}

/// Counters that show how much network work the cache did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GitStats {
    /// Ref listings sent to remotes (the cheap check).
    pub remote_checks: u64,
    /// Pack fetches (only when a commit was new).
    pub fetches: u64,
}

/// Why a repository could not be resolved. Every variant names the URL (credentials removed).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The URL cannot be used.
    #[error("invalid repository URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, credentials removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server refused the credentials, or none were given where some are needed.
    #[error("failed to authenticate to {url}: {detail}")]
    AuthenticationFailed {
        /// The URL, credentials removed.
        url: String,
        /// What the transport said.
        detail: String,
    },
    /// The ssh server's host key is not in the known_hosts of the repository credentials.
    #[error("host key verification failed for {url}: {detail}")]
    HostKeyMismatch {
        /// The URL, credentials removed.
        url: String,
        /// What ssh said.
        detail: String,
    },
    /// The revision is neither a branch, a tag nor a commit of the repository.
    #[error("revision {revision:?} not found in {url}")]
    RefNotFound {
        /// The URL, credentials removed.
        url: String,
        /// The targetRevision asked for.
        revision: String,
    },
    /// The server could not be reached or broke off the connection.
    #[error("failed to reach {url}: {detail}")]
    Unreachable {
        /// The URL, credentials removed.
        url: String,
        /// What the transport said.
        detail: String,
    },
    /// The whole operation took longer than [`GitLimits::timeout`].
    #[error("git operation on {url} timed out after {after:?}")]
    Timeout {
        /// The URL, credentials removed.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// The server answered, but the fetch failed.
    #[error("failed to fetch {revision:?} from {url}: {detail}")]
    Fetch {
        /// The URL, credentials removed.
        url: String,
        /// The targetRevision.
        revision: String,
        /// What went wrong.
        detail: String,
    },
    /// A tree entry would leave the checkout, or the checkout is over a limit.
    #[error("refused {file:?} from {url}: {reason}")]
    Jail {
        /// The URL, credentials removed.
        url: String,
        /// The path inside the repository.
        file: String,
        /// Why it was refused.
        reason: String,
    },
    /// The repository credentials Secret is unusable.
    #[error("invalid repository credentials in Secret {secret}: {reason}")]
    InvalidCredentials {
        /// `namespace/name` of the Secret.
        secret: String,
        /// What is wrong (never a value).
        reason: String,
    },
    /// The repository credentials Secrets could not be listed.
    #[error("failed to list repository credential Secrets in namespace {namespace}")]
    ListSecrets {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The shared known_hosts ConfigMap could not be read.
    #[error("failed to read the ssh known_hosts ConfigMap {config_map}")]
    ReadKnownHosts {
        /// `namespace/name` of the ConfigMap.
        config_map: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The local cache directory could not be written.
    #[error("failed to {step} {path}")]
    Storage {
        /// What was being done.
        step: StorageStep,
        /// The local path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The step on the local cache that failed, for [`GitError::Storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageStep {
    /// Creating a directory.
    Create,
    /// Writing a file of the checkout.
    Write,
    /// Creating a symlink of the checkout.
    CreateSymlink,
    /// Making a file or directory of the checkout read-only.
    MakeReadOnly,
    /// Moving a finished checkout into place.
    RenameIntoPlace,
    /// Removing an unfinished checkout.
    Remove,
    /// Removing a cached repository that cannot be opened.
    RemoveBrokenRepository,
    /// Initialising the cached bare repository.
    InitRepository,
    /// Writing the private ssh configuration of one fetch.
    PrepareSsh,
}

impl std::fmt::Display for StorageStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageStep::Create => "create",
            StorageStep::Write => "write",
            StorageStep::CreateSymlink => "create symlink",
            StorageStep::MakeReadOnly => "make read-only",
            StorageStep::RenameIntoPlace => "rename into place",
            StorageStep::Remove => "remove",
            StorageStep::RemoveBrokenRepository => "remove a broken repository at",
            StorageStep::InitRepository => "initialise a repository in",
            StorageStep::PrepareSsh => "prepare the ssh configuration in",
        })
    }
}

impl GitError {
    /// Whether trying again soon may help (the network, the server or the disk); `false` means
    /// something must change first (credentials, host key, revision, the repository content).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitError::Unreachable { .. }
                | GitError::Timeout { .. }
                | GitError::Fetch { .. }
                | GitError::ListSecrets { .. }
                | GitError::ReadKnownHosts { .. }
                | GitError::Storage { .. }
        )
    }

    /// A CamelCase word for condition reasons, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            GitError::InvalidUrl { .. } => "InvalidRepositoryURL",
            GitError::AuthenticationFailed { .. } => "AuthenticationFailed",
            GitError::HostKeyMismatch { .. } => "HostKeyMismatch",
            GitError::RefNotFound { .. } => "RevisionNotFound",
            GitError::Unreachable { .. } => "RepositoryUnreachable",
            GitError::Timeout { .. } => "GitTimeout",
            GitError::Fetch { .. } => "FetchFailed",
            GitError::Jail { .. } => "CheckoutRefused",
            GitError::InvalidCredentials { .. } => "InvalidRepositoryCredentials",
            GitError::ListSecrets { .. } => "RepositoryCredentialsUnavailable",
            GitError::ReadKnownHosts { .. } => "RepositoryCredentialsUnavailable",
            GitError::Storage { .. } => "GitCacheFailed",
        }
    }
}

/// What the caller asked for in `targetRevision`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Revision {
    /// The remote's default branch (`HEAD`, or an empty targetRevision).
    Head,
    /// A full commit SHA: immutable, so a checkout of it never needs a network check again.
    Commit(String),
    /// A branch or tag name, or a full ref (`refs/heads/main`).
    Ref(String),
}

impl Revision {
    fn parse(revision: &str) -> Revision {
        let revision = revision.trim();
        if revision.is_empty() || revision == "HEAD" {
            Revision::Head
        } else if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
            Revision::Commit(revision.to_ascii_lowercase())
        } else {
            Revision::Ref(revision.to_string())
        }
    }
}

/// The URL without user info, fit for errors, logs and status.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                // ssh user names are not secret and help to debug; passwords are.
                Some((user, host)) if scheme.starts_with("ssh") && !user.contains(':') => {
                    format!("{scheme}://{user}@{host}{path}")
                }
                Some((_, host)) => format!("{scheme}://{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// One (URL, revision) entry: its bare repository and the trees checked out from it.
#[derive(Debug, Default)]
struct Entry {
    /// The last commit checked out, newest last, at most [`KEPT_TREES`].
    trees: Vec<String>,
    /// When the remote was last asked for the revision, and the commit it named.
    looked: Option<(tokio::time::Instant, String)>,
}

/// Trees kept per entry: the current one and the one before, which a render that started just
/// before the switch may still be reading.
const KEPT_TREES: usize = 2;

/// The agent's Git cache: a directory with one bare repository and its checkouts per (repository
/// URL, revision), shared by all Applications. Concurrent resolves of the same pair wait for each
/// other; different pairs run in parallel.
#[derive(Debug)]
pub struct GitCache {
    dir: PathBuf,
    limits: GitLimits,
    entries: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
    remote_checks: Arc<AtomicU64>,
    fetches: Arc<AtomicU64>,
    metrics: GitMetrics,
}

impl GitCache {
    /// A cache in `dir` (created on first use). Anything left in it by an earlier process is
    /// reused only after the same check a fresh entry gets.
    pub fn new(dir: PathBuf, limits: GitLimits) -> Self {
        GitCache {
            dir,
            limits,
            entries: std::sync::Mutex::default(),
            remote_checks: Arc::default(),
            fetches: Arc::default(),
            metrics: GitMetrics::default(),
        }
    }

    /// Reports operations and their durations into the agent's metrics.
    pub fn with_metrics(mut self, metrics: GitMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// How much network work was done so far.
    pub fn stats(&self) -> GitStats {
        GitStats {
            remote_checks: self.remote_checks.load(Ordering::Relaxed),
            fetches: self.fetches.load(Ordering::Relaxed),
        }
    }

    /// The checkout of `commit` if `revision` of `url` resolved to it before and its tree is
    /// still on disk; no network.
    pub fn checked_out(&self, url: &str, revision: &str, commit: &str) -> Option<Checkout> {
        let root = tree_dir(
            &self.dir.join(entry_key(url, &Revision::parse(revision))),
            commit,
        );
        root.is_dir().then(|| Checkout {
            commit: commit.to_string(),
            root,
        })
    }

    /// Checks out `revision` (branch, tag, full commit SHA or `HEAD`) of `url`.
    ///
    /// A cheap remote-ref check (ls-remote) comes first; the shallow single-ref fetch and the
    /// checkout happen only if the commit changed. A full SHA already checked out is returned
    /// without any network call.
    pub async fn resolve(
        &self,
        url: &str,
        revision: &str,
        credentials: Option<&RepoCredentials>,
    ) -> Result<Checkout, GitError> {
        self.resolve_recent(url, revision, credentials, Duration::ZERO)
            .await
    }

    /// [`GitCache::resolve`], but a branch, tag or `HEAD` the remote was asked about less than
    /// `max_age` ago is answered from that look, without a network call: Applications of one
    /// repository refreshed together (a webhook push) share one look.
    pub async fn resolve_recent(
        &self,
        url: &str,
        revision: &str,
        credentials: Option<&RepoCredentials>,
        max_age: Duration,
    ) -> Result<Checkout, GitError> {
        let shown_url = redact_url(url);
        let parsed = Revision::parse(revision);
        remote::check_url(url, &shown_url, self.limits.allow_file_urls)?;
        let key = entry_key(url, &parsed);
        let entry = {
            let mut entries = self
                .entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(entries.entry(key.clone()).or_default())
        };
        // Held until the blocking work finishes, even when the caller gives up on a timeout:
        // the next resolve of this entry must not touch the repository while it still runs.
        let mut guard = entry.lock_owned().await;
        let entry_dir = self.dir.join(&key);
        if let Some((at, commit)) = &guard.looked
            && at.elapsed() < max_age
            && !matches!(parsed, Revision::Commit(_))
        {
            let root = tree_dir(&entry_dir, commit);
            if root.is_dir() {
                return Ok(Checkout {
                    commit: commit.clone(),
                    root,
                });
            }
        }
        if let Revision::Commit(commit) = &parsed {
            let root = tree_dir(&entry_dir, commit);
            // A tree on disk is complete (written aside, then renamed), also one an earlier
            // process wrote: a commit never changes, so no network is needed.
            if root.is_dir() {
                if !guard.trees.contains(commit) {
                    remember_tree(&mut guard, &entry_dir, commit.clone());
                }
                return Ok(Checkout {
                    commit: commit.clone(),
                    root,
                });
            }
        }

        let job = remote::Job {
            url: url.to_string(),
            shown_url: shown_url.clone(),
            revision: parsed,
            revision_text: revision.to_string(),
            credentials: credentials.cloned(),
            entry_dir: entry_dir.clone(),
            limits: self.limits.clone(),
            interrupt: Arc::new(AtomicBool::new(false)),
            remote_checks: Arc::clone(&self.remote_checks),
            fetches: Arc::clone(&self.fetches),
            fetched: Arc::new(AtomicBool::new(false)),
        };
        let started = tokio::time::Instant::now();
        let fetched = Arc::clone(&job.fetched);
        let commit = self
            .run_job(job, guard, entry_dir, &shown_url, revision)
            .await;
        self.record(started.elapsed(), fetched.load(Ordering::Relaxed), &commit);
        let commit = commit?;
        Ok(Checkout {
            root: tree_dir(&self.dir.join(&key), &commit),
            commit,
        })
    }

    /// Counts a resolve that went to the remote: a ref check only, or a fetch.
    fn record(
        &self,
        elapsed: std::time::Duration,
        fetched: bool,
        result: &Result<String, GitError>,
    ) {
        let operation = if fetched { "fetch" } else { "check" };
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => error.reason(),
        };
        self.metrics
            .operations
            .get_or_create(&GitOutcomeLabels {
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        let histogram = if fetched {
            &self.metrics.fetch_seconds
        } else {
            &self.metrics.check_seconds
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Runs the blocking ref check / fetch / checkout with the timeout; the entry stays locked
    /// until the worker is done, even after a timeout.
    async fn run_job(
        &self,
        job: remote::Job,
        mut guard: tokio::sync::OwnedMutexGuard<Entry>,
        entry_dir: PathBuf,
        shown_url: &str,
        revision: &str,
    ) -> Result<String, GitError> {
        let shown_url = shown_url.to_string();
        let started = tokio::time::Instant::now();
        let interrupt = Arc::clone(&job.interrupt);
        let (done, finished) = tokio::sync::oneshot::channel();
        let handle = tokio::task::spawn_blocking(move || job.run());
        tokio::spawn(async move {
            let outcome = handle.await;
            let commit = match &outcome {
                Ok(Ok(commit)) => Some(commit.clone()),
                _ => None,
            };
            if let Some(commit) = commit {
                guard.looked = Some((started, commit.clone()));
                remember_tree(&mut guard, &entry_dir, commit);
            }
            drop(guard);
            let _ = done.send(outcome);
        });
        let outcome = match tokio::time::timeout(self.limits.timeout, finished).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => {
                return Err(GitError::Fetch {
                    url: shown_url,
                    revision: revision.to_string(),
                    detail: "the git worker stopped".into(),
                });
            }
            Err(_) => {
                // Stops a pack download between chunks; ssh and http give up on their own
                // (ServerAliveInterval, the request timeout).
                interrupt.store(true, Ordering::Relaxed);
                return Err(GitError::Timeout {
                    url: shown_url,
                    after: self.limits.timeout,
                });
            }
        };
        outcome.map_err(|join| GitError::Fetch {
            url: shown_url.clone(),
            revision: revision.to_string(),
            detail: format!("the git worker failed: {join}"),
        })?
    }
}

/// Records `commit` as the current tree of the entry and deletes every other tree on disk but
/// the one before (including trees an earlier process left behind).
fn remember_tree(entry: &mut Entry, entry_dir: &Path, commit: String) {
    entry.trees.retain(|kept| kept != &commit);
    entry.trees.push(commit);
    while entry.trees.len() > KEPT_TREES {
        entry.trees.remove(0);
    }
    let Ok(on_disk) = std::fs::read_dir(entry_dir.join("trees")) else {
        return;
    };
    for tree in on_disk.filter_map(Result::ok) {
        let name = tree.file_name().to_string_lossy().into_owned();
        if entry.trees.contains(&name) {
            continue;
        }
        if let Err(error) = tree::remove(&tree.path()) {
            tracing::warn!(%error, tree = %name, "failed to delete an old checkout");
        }
    }
}

fn tree_dir(entry_dir: &Path, commit: &str) -> PathBuf {
    entry_dir.join("trees").join(commit)
}

/// A directory name for (URL, revision): readable start, hash for uniqueness.
fn entry_key(url: &str, revision: &Revision) -> String {
    let revision = match revision {
        Revision::Head => "HEAD",
        Revision::Commit(sha) => sha,
        Revision::Ref(name) => name,
    };
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("{url}\n{revision}").as_bytes(),
    );
    let hash: String = digest.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let readable: String = redact_url(url)
        .rsplit('/')
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(32)
        .collect();
    format!("{readable}-{hash}")
}

#[cfg(test)]
mod tests;
