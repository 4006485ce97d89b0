//! The blocking part: ref check, shallow fetch and checkout of one (URL, revision) with gix.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use gix::bstr::ByteSlice;
use gix::protocol::handshake::Ref;
use gix::remote::Direction;
use gix::remote::fetch::{Shallow, Tags};

use super::{GitError, GitLimits, RepoCredentials, Revision, StorageStep, ssh, tree};

/// Everything one resolve needs, owned, to move into `spawn_blocking`.
pub(super) struct Job {
    pub url: String,
    pub shown_url: String,
    pub revision: Revision,
    pub revision_text: String,
    pub credentials: Option<RepoCredentials>,
    pub entry_dir: PathBuf,
    pub limits: GitLimits,
    pub interrupt: Arc<AtomicBool>,
    pub remote_checks: Arc<AtomicU64>,
    pub fetches: Arc<AtomicU64>,
    /// Set when this job downloaded a pack (for the metrics: a fetch, not only a ref check).
    pub fetched: Arc<AtomicBool>,
}

/// The schemes mooring fetches from. `git://` is unauthenticated and unencrypted; `ext::` runs
/// commands: both refused.
pub(super) fn check_url(url: &str, shown_url: &str, allow_file: bool) -> Result<(), GitError> {
    let invalid = |reason: &str| GitError::InvalidUrl {
        url: shown_url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = gix::url::parse(url.as_bytes().as_bstr())
        .map_err(|_| invalid("not a git URL (use https://, ssh:// or git@host:path)"))?;
    match parsed.scheme {
        gix::url::Scheme::Https | gix::url::Scheme::Http | gix::url::Scheme::Ssh => Ok(()),
        gix::url::Scheme::File if allow_file => Ok(()),
        gix::url::Scheme::File => Err(invalid(
            "local repositories are off (the agent's --git-allow-file-urls turns them on)",
        )),
        _ => Err(invalid(
            "unsupported scheme (use https://, ssh:// or git@host:path)",
        )),
    }
}

/// What the ref check found.
struct Target {
    /// The commit (or, for an unpeeled tag, the object) the revision points to.
    object: gix::ObjectId,
}

impl Job {
    /// Checks the remote, fetches if needed, checks out; returns the commit.
    pub fn run(self) -> Result<String, GitError> {
        let repo_dir = self.entry_dir.join("repo.git");
        let repo = self.open_or_init(&repo_dir)?;
        let ssh = match gix::url::parse(self.url.as_bytes().as_bstr()) {
            Ok(url) if url.scheme == gix::url::Scheme::Ssh => Some(
                ssh::Session::new(self.credentials.as_ref()).map_err(|source| {
                    GitError::Storage {
                        step: StorageStep::PrepareSsh,
                        path: self.entry_dir.clone(),
                        source,
                    }
                })?,
            ),
            _ => None,
        };
        let result = self.fetch_and_check_out(&repo, ssh.as_ref());
        match (result, &ssh) {
            (Err(error), Some(session)) => Err(session.explain(error, &self.shown_url)),
            (result, _) => result,
        }
    }

    fn open_or_init(&self, repo_dir: &Path) -> Result<gix::Repository, GitError> {
        let storage = |step, source| GitError::Storage {
            step,
            path: repo_dir.to_path_buf(),
            source,
        };
        // Isolated: no system or user git config, no environment (url rewrites, credential
        // helpers, proxies or an ssh command from the host must not apply).
        let options = gix::open::Options::isolated();
        if repo_dir.join("HEAD").is_file()
            && pack_count(repo_dir) <= self.limits.max_packs
            && let Ok(repo) = gix::open_opts(repo_dir, options.clone())
        {
            return Ok(repo);
        }
        if repo_dir.exists() {
            std::fs::remove_dir_all(repo_dir)
                .map_err(|e| storage(StorageStep::RemoveBrokenRepository, e))?;
        }
        std::fs::create_dir_all(repo_dir).map_err(|e| storage(StorageStep::Create, e))?;
        gix::ThreadSafeRepository::init_opts(
            repo_dir,
            gix::create::Kind::Bare,
            gix::create::Options::default(),
            options,
        )
        .map(gix::Repository::from)
        .map_err(|error| {
            storage(
                StorageStep::InitRepository,
                std::io::Error::other(error.to_string()),
            )
        })
    }

    /// The fetch refspecs for the revision: where to look on the remote, where to keep it locally.
    fn refspecs(&self) -> Result<Vec<String>, GitError> {
        Ok(match &self.revision {
            Revision::Head => vec!["+HEAD:refs/mooring/HEAD".into()],
            Revision::Commit(sha) => vec![sha.clone()],
            Revision::Ref(name) => {
                // A name is spliced into a refspec: refuse anything that is not a plain ref name
                // (globs, `:`, `^`), so the revision cannot widen or redirect the fetch.
                let full = if name.starts_with("refs/") {
                    name.clone()
                } else {
                    format!("refs/heads/{name}")
                };
                if gix::validate::reference::name(full.as_bytes().as_bstr()).is_err() {
                    return Err(GitError::RefNotFound {
                        url: self.shown_url.clone(),
                        revision: self.revision_text.clone(),
                    });
                }
                if name.starts_with("refs/") {
                    vec![format!("+{name}:refs/mooring/ref")]
                } else {
                    // git's own order for an ambiguous name: the tag wins over the branch.
                    vec![
                        format!("+refs/tags/{name}:refs/mooring/tags/{name}"),
                        format!("+refs/heads/{name}:refs/mooring/heads/{name}"),
                    ]
                }
            }
        })
    }

    fn fetch_and_check_out(
        &self,
        repo: &gix::Repository,
        ssh: Option<&ssh::Session>,
    ) -> Result<String, GitError> {
        let refspecs = self.refspecs()?;
        let remote = repo
            .remote_at_without_url_rewrite(self.url.as_str())
            .map_err(|e| self.invalid_url(e))?
            .with_fetch_tags(Tags::None)
            .with_refspecs(refspecs.iter().map(String::as_str), Direction::Fetch)
            .map_err(|_| GitError::RefNotFound {
                url: self.shown_url.clone(),
                revision: self.revision_text.clone(),
            })?;

        let transport = gix::protocol::transport::client::blocking_io::connect::connect(
            self.url.as_str(),
            gix::protocol::transport::client::blocking_io::connect::Options {
                version: gix::protocol::transport::Protocol::V2,
                ssh: ssh.map(ssh::Session::connect_options).unwrap_or_default(),
                trace: false,
            },
        )
        .map_err(|e| self.classify(&e))?;
        let mut connection = remote.to_connection_with_transport(transport);
        connection.set_transport_options(Box::new(http_options(&self.limits)));
        if let Some((account, origin)) = self.http_account()? {
            connection.set_credentials(move |action| match action {
                // Only for the origin the credentials were configured for: a redirect to another
                // host (or port, or scheme) gets none.
                gix::credentials::helper::Action::Get(context)
                    if Origin::of_context(&context).as_ref() == Some(&origin) =>
                {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: account.clone(),
                        next: context.into(),
                    }))
                }
                // Store/Erase: the credentials live in a Secret, not in a helper.
                _ => Ok(None),
            });
        } else {
            // No prompt, no helper: a server that wants credentials gets none.
            connection.set_credentials(|_| Ok(None));
        }

        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| self.classify(&e))?;
        self.remote_checks.fetch_add(1, Ordering::Relaxed);
        let target = self.target(prepare.ref_map())?;

        let target_commit = target.object.to_string();
        // A tree on disk is complete (written aside, then renamed): this commit needs no pack,
        // also when an earlier process checked it out.
        if tree_dir(&self.entry_dir, &target_commit).is_dir() {
            // Dropping `prepare` ends the conversation without asking for a pack.
            return Ok(target_commit);
        }

        let depth = NonZeroU32::MIN;
        prepare
            .with_shallow(Shallow::DepthAtRemote(depth))
            .receive(gix::progress::Discard, &self.interrupt)
            .map_err(|e| self.classify(&e))?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.fetched.store(true, Ordering::Relaxed);

        let commit = repo
            .find_object(target.object)
            .and_then(|object| object.peel_to_commit())
            .map_err(|e| GitError::Fetch {
                url: self.shown_url.clone(),
                revision: self.revision_text.clone(),
                detail: format!("the fetched revision is not a commit: {e}"),
            })?;
        let commit_id = commit.id.to_string();
        let root = tree_dir(&self.entry_dir, &commit_id);
        if !root.is_dir() {
            let tree_id = commit.tree_id().map_err(|e| GitError::Fetch {
                url: self.shown_url.clone(),
                revision: self.revision_text.clone(),
                detail: format!("the commit has no tree: {e}"),
            })?;
            tree::check_out(repo, tree_id.detach(), &root, &self.limits, &self.shown_url)?;
        }
        Ok(commit_id)
    }

    /// The object the revision points to on the remote, from the ref listing.
    fn target(&self, ref_map: &gix::remote::fetch::RefMap) -> Result<Target, GitError> {
        let not_found = || GitError::RefNotFound {
            url: self.shown_url.clone(),
            revision: self.revision_text.clone(),
        };
        if let Revision::Commit(sha) = &self.revision {
            return gix::ObjectId::from_hex(sha.as_bytes())
                .map(|object| Target { object })
                .map_err(|_| not_found());
        }
        // Mappings follow the order of our refspecs, which is the preference order.
        let mut best: Option<(usize, gix::ObjectId)> = None;
        for mapping in &ref_map.mappings {
            let gix::protocol::fetch::refmap::Source::Ref(remote_ref) = &mapping.remote else {
                continue;
            };
            let object = match remote_ref {
                // A peeled annotated tag: the commit it names.
                Ref::Peeled { object, .. } => *object,
                Ref::Direct { object, .. } => *object,
                Ref::Symbolic { object, .. } => *object,
                Ref::Unborn { .. } => continue,
            };
            let index = match mapping.spec_index {
                gix::protocol::fetch::refmap::SpecIndex::ExplicitInRemote(index) => index,
                gix::protocol::fetch::refmap::SpecIndex::Implicit(_) => continue,
            };
            if best.is_none_or(|(kept, _)| index < kept) {
                best = Some((index, object));
            }
        }
        best.map(|(_, object)| Target { object })
            .ok_or_else(not_found)
    }

    /// The https account, if the credentials have one. Plain http gets credentials only on a
    /// loopback host (a test server, a local proxy): anywhere else they would cross the network
    /// readable by anyone on the path.
    /// The account for https (or loopback http) basic auth, and the origin it is for.
    fn http_account(&self) -> Result<Option<(gix::sec::identity::Account, Origin)>, GitError> {
        let Some(credentials) = self.credentials.as_ref() else {
            return Ok(None);
        };
        let Some(password) = credentials.password.as_ref() else {
            return Ok(None);
        };
        let url =
            gix::url::parse(self.url.as_bytes().as_bstr()).map_err(|e| self.invalid_url(e))?;
        if url.scheme == gix::url::Scheme::Http && !url.host().is_some_and(is_loopback) {
            return Err(GitError::InvalidUrl {
                url: self.shown_url.clone(),
                reason:
                    "credentials are not sent over plain http (only to a loopback host); use https"
                        .into(),
            });
        }
        let username = credentials
            .username
            .as_ref()
            .map(|u| u.to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "git".to_string());
        let account = gix::sec::identity::Account {
            username,
            password: password.to_string(),
            oauth_refresh_token: None,
        };
        Ok(Some((account, Origin::of_url(&url))))
    }

    fn invalid_url(&self, error: impl std::fmt::Display) -> GitError {
        GitError::InvalidUrl {
            url: self.shown_url.clone(),
            reason: scrub(&error.to_string(), &self.url, &self.shown_url),
        }
    }

    /// Maps a gix error to what went wrong, by its classification first and its text second.
    fn classify(&self, error: &gix::Error) -> GitError {
        let detail = scrub(
            &error
                .iter_errors()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": "),
            &self.url,
            &self.shown_url,
        );
        let url = self.shown_url.clone();
        let lower = detail.to_ascii_lowercase();
        if error.is_unauthenticated()
            || error.is_permission_denied()
            || lower.contains("401")
            || lower.contains("authentication")
            || lower.contains("permission denied")
        {
            return GitError::AuthenticationFailed { url, detail };
        }
        if lower.contains("none of the refspec")
            || lower.contains("not our ref")
            || lower.contains("couldn't find remote ref")
        {
            return GitError::RefNotFound {
                url,
                revision: self.revision_text.clone(),
            };
        }
        if error.is_retryable()
            || lower.contains("connection refused")
            || lower.contains("could not resolve")
            || lower.contains("failed to resolve")
            || lower.contains("timed out")
            || lower.contains("connect")
            || lower.contains("handshake")
            || lower.contains("end of file")
            || lower.contains("does not appear to be a git repository")
            || lower.contains("404")
        {
            return GitError::Unreachable { url, detail };
        }
        GitError::Fetch {
            url,
            revision: self.revision_text.clone(),
            detail,
        }
    }
}

/// Packs in the repository's object database.
pub(super) fn pack_count(repo_dir: &Path) -> usize {
    std::fs::read_dir(repo_dir.join("objects/pack"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().extension().is_some_and(|e| e == "pack"))
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
pub(super) fn is_loopback_for_tests(host: &str) -> bool {
    is_loopback(host)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn tree_dir(entry_dir: &Path, commit: &str) -> PathBuf {
    super::tree_dir(entry_dir, commit)
}

/// Replaces the full URL (which may carry a password) by its redacted form.
fn scrub(text: &str, url: &str, shown_url: &str) -> String {
    if url == shown_url {
        text.to_string()
    } else {
        text.replace(url, shown_url)
    }
}

/// Where credentials may go: scheme, host and port (the port explicit or the scheme's default),
/// compared exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn of_url(url: &gix::Url) -> Origin {
        Origin {
            scheme: url.scheme.as_str().to_ascii_lowercase(),
            host: url.host().unwrap_or_default().to_ascii_lowercase(),
            port: url.port_or_default(),
        }
    }

    /// The origin a credential request is for: its `url`, else its protocol and host (with
    /// the port, when not the default); `None` when it names neither.
    fn of_context(context: &gix::credentials::protocol::Context) -> Option<Origin> {
        if let Some(url) = context.url.as_ref() {
            return gix::url::parse(url.as_bstr())
                .ok()
                .map(|url| Origin::of_url(&url));
        }
        let (protocol, host) = (context.protocol.as_deref()?, context.host.as_deref()?);
        gix::url::parse(format!("{protocol}://{host}/").as_bytes().as_bstr())
            .ok()
            .map(|url| Origin::of_url(&url))
    }
}

/// HTTP transport options: a request timeout as a backstop (gix's reqwest client has only a
/// connect timeout), no proxy from the environment.
fn http_options(
    limits: &GitLimits,
) -> gix::protocol::transport::client::blocking_io::http::Options {
    use gix::protocol::transport::client::blocking_io::http;
    let timeout = limits.timeout;
    let configure: Box<http::reqwest::ConfigureClientFn> =
        Box::new(move |builder| Ok(builder.timeout(timeout).no_proxy()));
    let backend = http::reqwest::Options {
        configure_client: Some(configure),
        configure_request: None,
    };
    http::Options {
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        user_agent: Some(format!("mooring/{}", env!("CARGO_PKG_VERSION"))),
        backend: Some(Arc::new(std::sync::Mutex::new(backend))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::Origin;
    use gix::bstr::ByteSlice;

    fn origin(url: &str) -> Origin {
        Origin::of_url(&gix::url::parse(url.as_bytes().as_bstr()).unwrap())
    }

    fn context(
        url: Option<&str>,
        protocol: &str,
        host: &str,
    ) -> gix::credentials::protocol::Context {
        gix::credentials::protocol::Context {
            url: url.map(Into::into),
            protocol: Some(protocol.into()),
            host: Some(host.into()),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_are_for_the_configured_origin_only() {
        let configured = origin("https://git.example/org/repo.git");
        let asked = |url, protocol, host| Origin::of_context(&context(url, protocol, host));
        assert_eq!(
            asked(Some("https://git.example/other.git"), "https", "x"),
            Some(configured.clone())
        );
        assert_eq!(
            asked(None, "https", "git.example"),
            Some(configured.clone())
        );
        assert_eq!(
            asked(None, "https", "GIT.example:443"),
            Some(configured.clone())
        );
        for (url, protocol, host) in [
            (
                Some("https://evil.example/org/repo.git"),
                "https",
                "git.example",
            ),
            (
                Some("https://git.example:8443/org/repo.git"),
                "https",
                "git.example",
            ),
            (
                Some("http://git.example/org/repo.git"),
                "https",
                "git.example",
            ),
            (None, "https", "git.example.evil.example"),
        ] {
            assert_ne!(
                asked(url, protocol, host),
                Some(configured.clone()),
                "{url:?} {host}"
            );
        }
        let nothing = gix::credentials::protocol::Context::default();
        assert_eq!(Origin::of_context(&nothing), None);
    }
}
