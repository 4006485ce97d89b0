//! `POST /api/webhook` (Argo CD's path): Git hosts announce pushes, and the Applications they
//! concern are refreshed at once instead of at their next poll.
//!
//! - `providers`: which host sent it (by header), its proof of the configured secret (HMAC or
//!   token, compared in constant time), and the pushes in its payload.
//! - `secrets`: the Secret `mooring-webhook` with Argo CD's key names, watched (rotation needs no
//!   restart). A provider without a secret is off: its requests are refused, never trusted.
//! - `matching`: repository URL, ref and changed paths against each Application.
//!
//! The handler is bounded (body size, read timeout, a rate limit per peer, a queue) and answers
//! `202` before any work. A worker coalesces the pushes of one (repository, ref) for a short
//! window, lists the Applications, and sets the `mooring.dev/refresh` annotation on each one
//! concerned: the Application controller's watch wakes it on every replica's leader.
//!
//! On the leader, the first push of a window also starts fetching the pushed ref into the Git
//! cache the Application controller reads (one fetch per repository and revision, while the
//! window is still open): the refreshed Applications then find the commit there and do not ask
//! the remote again. The commit applied is always the one the remote names for the ref in that
//! fetch, never the payload's `after` on its own word: a forged or replayed payload cannot
//! make the agent deploy a commit the branch does not point to.

pub mod matching;
pub mod providers;
pub mod secrets;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use mooring_crds::application::Application;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{Semaphore, mpsc, watch};

use self::providers::{Event, GitRef, Provider, Push, Refusal};
use self::secrets::SharedSecrets;
use crate::sealed_secrets::api::RateLimiter;

/// The annotation whose change wakes an Application (as `argocd app get --refresh`).
pub const REFRESH_ANNOTATION: &str = "mooring.dev/refresh";
/// How the webhook's refresh values start (`webhook <time>`).
pub const REFRESH_PREFIX: &str = "webhook ";
/// How many pushes may wait for the worker; beyond it requests get 503.
const QUEUE: usize = 1024;
/// How many (repository, ref) windows may be open at once.
const MAX_PENDING: usize = 10_000;
/// How long reading one request body may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many (repository, revision) pairs one push fetches ahead (the Applications of more
/// fetch on their own).
const MAX_FETCHED_AHEAD: usize = 8;
/// How many windows may be refreshing at once.
const REFRESHING: usize = 4;

/// Fetches a repository's revision into the cache the Application controller reads, as a
/// reconcile would (same credentials, same checks); returns the commit, or why not.
pub trait Prefetch: Send + Sync + 'static {
    /// Fetches `revision` of `repo_url` now.
    fn prefetch<'a>(
        &'a self,
        repo_url: &'a str,
        revision: &'a str,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Fetching ahead, on the leader only: another replica's cache is not the one that syncs.
#[derive(Clone)]
pub struct Prefetcher {
    /// The Git cache of the Application controller.
    pub source: Arc<dyn Prefetch>,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
}

/// Labels of `mooring_webhook_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `github`, `gitlab`, `gogs`, `bitbucket`, `bitbucketserver`, `azuredevops` or `unknown`.
    pub provider: String,
    /// `accepted`, `ping`, `ignored`, `unauthorized`, `disabled`, `too_large`, `bad_request`,
    /// `rate_limited`, `unavailable`.
    pub outcome: String,
}

/// The webhook's limits and window (from the flags).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The largest body accepted (413 beyond it).
    pub max_payload_bytes: usize,
    /// Pushes of one (repository, ref) within this window cause one refresh.
    pub coalesce_window: Duration,
    /// Requests per second per peer address.
    pub rate_limit: f64,
    /// Burst of that limit.
    pub rate_limit_burst: u32,
}

#[derive(Clone)]
struct HandlerState {
    secrets: SharedSecrets,
    pushes: mpsc::Sender<Push>,
    limiter: Arc<RateLimiter>,
    max_payload_bytes: usize,
    requests: Family<RequestLabels, Counter>,
}

/// Where the worker finds Applications.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Only Applications with these labels.
    pub selector: Option<String>,
}

/// The route, and the tasks behind it (the secret watch and the refresh worker), which run until
/// the agent stops.
pub fn start(
    client: kube::Client,
    agent_namespace: String,
    scope: Scope,
    settings: WebhookSettings,
    requests: Family<RequestLabels, Counter>,
    prefetcher: Option<Prefetcher>,
) -> (Router, impl Future<Output = ()> + Send + 'static) {
    let shared = SharedSecrets::default();
    let (pushes, queue) = mpsc::channel(QUEUE);
    let state = HandlerState {
        secrets: shared.clone(),
        pushes,
        limiter: Arc::new(RateLimiter::new(
            settings.rate_limit,
            settings.rate_limit_burst,
        )),
        max_payload_bytes: settings.max_payload_bytes,
        requests,
    };
    let router = Router::new()
        .route("/api/webhook", post(receive))
        .with_state(state);
    let tasks = async move {
        tokio::join!(
            secrets::watch(client.clone(), agent_namespace, shared),
            refresh_worker(
                Refresher {
                    client,
                    scope,
                    prefetcher,
                },
                settings.coalesce_window,
                queue
            ),
        );
    };
    (router, tasks)
}

/// Answers with `status` and `message`, counting the outcome.
fn answer(
    state: &HandlerState,
    provider: Option<Provider>,
    outcome: &str,
    status: StatusCode,
    message: String,
) -> Response {
    state
        .requests
        .get_or_create(&RequestLabels {
            provider: provider.map_or("unknown", Provider::label).to_owned(),
            outcome: outcome.to_owned(),
        })
        .inc();
    (status, format!("{message}\n")).into_response()
}

async fn receive(
    State(state): State<HandlerState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let provider = Provider::detect(&headers);
    let peer = peer.ip().to_string();
    if !state.limiter.allow("/api/webhook", &peer, &peer) {
        return answer(
            &state,
            provider,
            "rate_limited",
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests".into(),
        );
    }
    let Some(provider) = provider else {
        return answer(
            &state,
            None,
            "bad_request",
            StatusCode::BAD_REQUEST,
            "unknown webhook provider (no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event, \
             X-Gogs-Event, X-Event-Key, X-Hook-UUID or X-Vss-Activityid header)"
                .into(),
        );
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = |state: &HandlerState| {
        answer(
            state,
            Some(provider),
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("payload larger than {} bytes", state.max_payload_bytes),
        )
    };
    if declared.is_some_and(|n| n > state.max_payload_bytes) {
        return too_large(&state);
    }
    let body = match tokio::time::timeout(
        READ_TIMEOUT,
        axum::body::to_bytes(body, state.max_payload_bytes),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return too_large(&state),
        Err(_) => {
            return answer(
                &state,
                Some(provider),
                "bad_request",
                StatusCode::REQUEST_TIMEOUT,
                "payload not received in time".into(),
            );
        }
    };
    let Some(secrets) = state.secrets.current() else {
        return answer(
            &state,
            Some(provider),
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook secrets not loaded yet".into(),
        );
    };
    match providers::authenticate(provider, &secrets, &headers, &body) {
        Ok(()) => {}
        Err(Refusal::NotConfigured) => {
            return answer(
                &state,
                Some(provider),
                "disabled",
                StatusCode::FORBIDDEN,
                format!(
                    "{} webhooks are off: no {} in Secret {}",
                    provider.label(),
                    provider.secret_key(),
                    secrets::SECRET_NAME
                ),
            );
        }
        Err(refusal) => {
            let what = if refusal == Refusal::Missing {
                "missing"
            } else {
                "wrong"
            };
            return answer(
                &state,
                Some(provider),
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                format!("{what} {} signature or token", provider.label()),
            );
        }
    }
    match providers::parse(provider, &headers, &body) {
        Ok(Event::Ping) => answer(
            &state,
            Some(provider),
            "ping",
            StatusCode::OK,
            "pong".into(),
        ),
        Ok(Event::Ignored(kind)) => answer(
            &state,
            Some(provider),
            "ignored",
            StatusCode::OK,
            format!("event {kind:?} ignored: only pushes refresh"),
        ),
        Ok(Event::Pushes(pushes)) => {
            let count = pushes.len();
            for push in pushes {
                if state.pushes.try_send(push).is_err() {
                    return answer(
                        &state,
                        Some(provider),
                        "unavailable",
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many pushes waiting".into(),
                    );
                }
            }
            answer(
                &state,
                Some(provider),
                "accepted",
                StatusCode::ACCEPTED,
                format!("{count} push(es) accepted"),
            )
        }
        Err(error) => answer(
            &state,
            Some(provider),
            "bad_request",
            StatusCode::BAD_REQUEST,
            error.to_string(),
        ),
    }
}

/// What one coalescing window has collected for one (repository, ref).
struct Pending {
    push: Push,
    /// The fetch the first push started: the commits it found.
    ahead: Option<tokio::task::JoinHandle<BTreeSet<String>>>,
}

impl Pending {
    /// Adds a later push of the same (repository, ref): the newest commit, every file (or no
    /// list once one push had none).
    fn merge(&mut self, later: Push) {
        for url in later.repo_urls {
            if !self.push.repo_urls.contains(&url) && self.push.repo_urls.len() < 8 {
                self.push.repo_urls.push(url);
            }
        }
        self.push.after = later.after;
        self.push.default_branch = later.default_branch.or(self.push.default_branch.take());
        self.push.changed_files = match (self.push.changed_files.take(), later.changed_files) {
            (Some(mut files), Some(more)) => {
                files.extend(more);
                (files.len() <= providers::MAX_TRACKED_FILES).then_some(files)
            }
            _ => None,
        };
    }
}

type Key = (String, GitRef);

/// What the worker needs to refresh Applications.
#[derive(Clone)]
struct Refresher {
    client: kube::Client,
    scope: Scope,
    prefetcher: Option<Prefetcher>,
}

/// Collects pushes per (repository, ref) for `window` after the first one, then refreshes the
/// Applications they concern once.
async fn refresh_worker(refresher: Refresher, window: Duration, mut queue: mpsc::Receiver<Push>) {
    let mut pending: HashMap<Key, Pending> = HashMap::new();
    let (due_tx, mut due) = mpsc::unbounded_channel::<Key>();
    let slots = Arc::new(Semaphore::new(REFRESHING));
    loop {
        tokio::select! {
            push = queue.recv() => {
                let Some(push) = push else { return };
                let Some(first_url) = push.repo_urls.first() else { continue };
                let key = (matching::normalize_repo_url(first_url), push.git_ref.clone());
                if let Some(open) = pending.get_mut(&key) {
                    open.merge(push);
                } else if pending.len() < MAX_PENDING {
                    let ahead = refresher.leading_prefetch().map(|source| {
                        tokio::spawn(fetch_ahead(refresher.clone(), source, push.clone()))
                    });
                    pending.insert(key.clone(), Pending { push, ahead });
                    let due_tx = due_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(window).await;
                        let _ = due_tx.send(key);
                    });
                } else {
                    tracing::warn!("too many webhook pushes pending; one dropped");
                }
            }
            key = due.recv() => {
                let Some(key) = key else { return };
                let Some(Pending { push, ahead }) = pending.remove(&key) else { continue };
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
                let refresher = refresher.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    refresher.finish_fetch(ahead, &push).await;
                    refresher.refresh(&push).await;
                });
            }
        }
    }
}

impl Refresher {
    /// The cache to fetch ahead into, if this replica leads.
    fn leading_prefetch(&self) -> Option<Arc<dyn Prefetch>> {
        let prefetcher = self.prefetcher.as_ref()?;
        let leading = *prefetcher.leading.borrow();
        leading.then(|| Arc::clone(&prefetcher.source))
    }

    /// Waits for the fetch the window's first push started; fetches once more if the window's
    /// newest push names a commit that fetch did not find (a later push in the window).
    async fn finish_fetch(
        &self,
        ahead: Option<tokio::task::JoinHandle<BTreeSet<String>>>,
        push: &Push,
    ) {
        let Some(ahead) = ahead else { return };
        let found = ahead.await.unwrap_or_default();
        let Some(after) = &push.after else { return };
        if found.contains(after) {
            return;
        }
        if let Some(source) = self.leading_prefetch() {
            fetch_ahead(self.clone(), source, push.clone()).await;
        }
    }

    /// The Applications `push` concerns.
    async fn concerned(&self, push: &Push) -> Vec<Application> {
        let api: Api<Application> = match &self.scope.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut params = ListParams::default();
        if let Some(selector) = &self.scope.selector {
            params = params.labels(selector);
        }
        let apps = match api.list(&params).await {
            Ok(list) => list.items,
            Err(error) => {
                tracing::warn!(%error, "failed to list Applications for a webhook push");
                return Vec::new();
            }
        };
        let repos = push_repos(push);
        apps.into_iter()
            .filter(|app| matching::concerns(app, push, &repos))
            .collect()
    }

    /// Sets the refresh annotation on every Application `push` concerns.
    async fn refresh(&self, push: &Push) {
        let stamp = jiff::Timestamp::now().to_string();
        let mut refreshed = 0usize;
        for app in self.concerned(push).await {
            let (Some(namespace), Some(name)) = (&app.metadata.namespace, &app.metadata.name)
            else {
                continue;
            };
            let patch = serde_json::json!({
                "metadata": {"annotations": {REFRESH_ANNOTATION: format!("{REFRESH_PREFIX}{stamp}")}}
            });
            let namespaced: Api<Application> = Api::namespaced(self.client.clone(), namespace);
            match namespaced
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Ok(_) => refreshed += 1,
                Err(error) => {
                    tracing::warn!(%error, application = %format!("{namespace}/{name}"), "failed to request a refresh")
                }
            }
        }
        tracing::info!(
            repository = %push_repos(push).iter().next().map(String::as_str).unwrap_or_default(),
            git_ref = ?push.git_ref,
            after = push.after.as_deref().unwrap_or_default(),
            refreshed,
            "webhook push handled"
        );
    }
}

fn push_repos(push: &Push) -> BTreeSet<String> {
    push.repo_urls
        .iter()
        .map(|url| matching::normalize_repo_url(url))
        .collect()
}

/// Fetches each (repository URL, revision) of the Applications `push` concerns once, as they
/// name them (the cache is keyed by their exact URL); returns the commits the remote named.
async fn fetch_ahead(
    refresher: Refresher,
    source: Arc<dyn Prefetch>,
    push: Push,
) -> BTreeSet<String> {
    let pairs: BTreeSet<(String, String)> = refresher
        .concerned(&push)
        .await
        .into_iter()
        .map(|app| {
            let source = app.spec.source;
            let revision = source.target_revision.unwrap_or_else(|| "HEAD".into());
            (source.repo_url, revision)
        })
        .collect();
    let mut found = BTreeSet::new();
    for (url, revision) in pairs.into_iter().take(MAX_FETCHED_AHEAD) {
        match source.prefetch(&url, &revision).await {
            Ok(commit) => {
                found.insert(commit);
            }
            // The Applications' own reconciles will meet (and report) the same trouble.
            Err(error) => tracing::debug!(%error, "fetching ahead of a webhook refresh failed"),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(after: &str, files: Option<&[&str]>) -> Push {
        Push {
            repo_urls: vec!["https://h/o/r".into()],
            git_ref: GitRef::Branch("main".into()),
            after: Some(after.into()),
            default_branch: Some("main".into()),
            changed_files: files.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn coalesced_pushes_keep_the_newest_commit_and_every_file() {
        let mut pending = Pending {
            push: push("one", Some(&["a/x"])),
            ahead: None,
        };
        pending.merge(push("two", Some(&["b/y"])));
        assert_eq!(pending.push.after.as_deref(), Some("two"));
        let files = pending.push.changed_files.clone().unwrap();
        assert!(files.contains("a/x") && files.contains("b/y"));
        // One push without a list makes the window's list unknown.
        pending.merge(push("three", None));
        assert_eq!(pending.push.changed_files, None);
        pending.merge(push("four", Some(&["c/z"])));
        assert_eq!(pending.push.changed_files, None);
    }
}
