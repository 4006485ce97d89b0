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
//! concerned: the Application controller's watch wakes it on every replica's leader, and its
//! reconcile fetches the new commit.

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
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use mooring_crds::application::Application;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

use self::providers::{Event, GitRef, Provider, Push, Refusal};
use self::secrets::SharedSecrets;
use crate::sealed_secrets::api::RateLimiter;

/// The annotation whose change wakes an Application (as `argocd app get --refresh`).
pub const REFRESH_ANNOTATION: &str = "mooring.dev/refresh";
/// How many pushes may wait for the worker; beyond it requests get 503.
const QUEUE: usize = 1024;
/// How many (repository, ref) windows may be open at once.
const MAX_PENDING: usize = 10_000;
/// How long reading one request body may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
            refresh_worker(client, scope, settings.coalesce_window, queue),
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

/// Collects pushes per (repository, ref) for `window` after the first one, then refreshes the
/// Applications they concern once.
async fn refresh_worker(
    client: kube::Client,
    scope: Scope,
    window: Duration,
    mut queue: mpsc::Receiver<Push>,
) {
    let mut pending: HashMap<Key, Pending> = HashMap::new();
    let (due_tx, mut due) = mpsc::unbounded_channel::<Key>();
    loop {
        tokio::select! {
            push = queue.recv() => {
                let Some(push) = push else { return };
                let Some(first_url) = push.repo_urls.first() else { continue };
                let key = (matching::normalize_repo_url(first_url), push.git_ref.clone());
                if let Some(open) = pending.get_mut(&key) {
                    open.merge(push);
                } else if pending.len() < MAX_PENDING {
                    pending.insert(key.clone(), Pending { push });
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
                if let Some(Pending { push }) = pending.remove(&key) {
                    refresh(&client, &scope, &push).await;
                }
            }
        }
    }
}

/// Sets the refresh annotation on every Application `push` concerns.
async fn refresh(client: &kube::Client, scope: &Scope, push: &Push) {
    let api: Api<Application> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default();
    if let Some(selector) = &scope.selector {
        params = params.labels(selector);
    }
    let apps = match api.list(&params).await {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "failed to list Applications for a webhook push");
            return;
        }
    };
    let repos: BTreeSet<String> = push
        .repo_urls
        .iter()
        .map(|url| matching::normalize_repo_url(url))
        .collect();
    let stamp = jiff::Timestamp::now().to_string();
    let mut refreshed = 0usize;
    for app in apps
        .iter()
        .filter(|app| matching::concerns(app, push, &repos))
    {
        let (Some(namespace), Some(name)) = (&app.metadata.namespace, &app.metadata.name) else {
            continue;
        };
        let patch = serde_json::json!({
            "metadata": {"annotations": {REFRESH_ANNOTATION: format!("webhook {stamp}")}}
        });
        let namespaced: Api<Application> = Api::namespaced(client.clone(), namespace);
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
        repository = %repos.iter().next().map(String::as_str).unwrap_or_default(),
        git_ref = ?push.git_ref,
        after = push.after.as_deref().unwrap_or_default(),
        refreshed,
        "webhook push handled"
    );
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
