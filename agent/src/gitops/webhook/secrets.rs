//! The webhook secrets: the Secret `mooring-webhook` in the agent's namespace, with Argo CD's key
//! names, watched so that a rotated secret takes effect without a restart.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use zeroize::Zeroizing;

/// The Secret's name (Argo CD keeps the same keys in `argocd-secret`).
pub const SECRET_NAME: &str = "mooring-webhook";

/// One secret value, zeroized on drop, never shown.
pub type SecretBytes = Zeroizing<Vec<u8>>;

/// The configured secret of each provider; a provider with none is off.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// `webhook.github.secret`: the HMAC key of `X-Hub-Signature-256`.
    pub github: Option<SecretBytes>,
    /// `webhook.gitlab.secret`: the token in `X-Gitlab-Token`.
    pub gitlab: Option<SecretBytes>,
    /// `webhook.bitbucket.uuid`: the hook UUID in `X-Hook-UUID`.
    pub bitbucket: Option<SecretBytes>,
    /// `webhook.bitbucketserver.secret`: the HMAC key of `X-Hub-Signature`.
    pub bitbucket_server: Option<SecretBytes>,
    /// `webhook.gogs.secret`: the HMAC key of `X-Gitea-Signature` / `X-Gogs-Signature`.
    pub gogs: Option<SecretBytes>,
    /// `webhook.azuredevops.username` and `webhook.azuredevops.password`: basic auth.
    pub azure_devops: Option<(SecretBytes, SecretBytes)>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("github", &self.github.is_some())
            .field("gitlab", &self.gitlab.is_some())
            .field("bitbucket", &self.bitbucket.is_some())
            .field("bitbucket_server", &self.bitbucket_server.is_some())
            .field("gogs", &self.gogs.is_some())
            .field("azure_devops", &self.azure_devops.is_some())
            .finish()
    }
}

impl WebhookSecrets {
    /// The secrets in `secret`'s data. Empty values count as not configured (an empty HMAC key
    /// would let anyone sign).
    pub fn from_secret(secret: &Secret) -> WebhookSecrets {
        let value = |key: &str| -> Option<SecretBytes> {
            let bytes = secret.data.as_ref()?.get(key)?;
            let trimmed = bytes.0.trim_ascii();
            (!trimmed.is_empty()).then(|| Zeroizing::new(trimmed.to_vec()))
        };
        WebhookSecrets {
            github: value("webhook.github.secret"),
            gitlab: value("webhook.gitlab.secret"),
            bitbucket: value("webhook.bitbucket.uuid"),
            bitbucket_server: value("webhook.bitbucketserver.secret"),
            gogs: value("webhook.gogs.secret"),
            azure_devops: value("webhook.azuredevops.username")
                .zip(value("webhook.azuredevops.password")),
        }
    }
}

/// The current secrets, shared by the handler and the watch; `None` until the first list.
#[derive(Clone, Default)]
pub struct SharedSecrets(Arc<RwLock<Option<WebhookSecrets>>>);

impl SharedSecrets {
    /// The secrets now (`None`: not read yet).
    pub fn current(&self) -> Option<WebhookSecrets> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the secrets.
    pub fn set(&self, secrets: WebhookSecrets) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(secrets);
    }
}

/// Watches Secret [`SECRET_NAME`] in `namespace` and keeps `shared` current; a deleted Secret
/// turns every provider off. Runs until the stream ends (the agent stops).
pub async fn watch(client: kube::Client, namespace: String, shared: SharedSecrets) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={SECRET_NAME}"));
    let mut initial: Option<WebhookSecrets> = None;
    // Backoff between failed watches (no RBAC for it, the API server away): one warning per try.
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => initial = Some(WebhookSecrets::default()),
            Ok(watcher::Event::InitApply(secret)) => {
                initial = Some(WebhookSecrets::from_secret(&secret))
            }
            Ok(watcher::Event::InitDone) => {
                let secrets = initial.take().unwrap_or_default();
                tracing::info!(?secrets, "webhook secrets loaded");
                shared.set(secrets);
            }
            Ok(watcher::Event::Apply(secret)) => {
                let secrets = WebhookSecrets::from_secret(&secret);
                tracing::info!(?secrets, "webhook secrets changed");
                shared.set(secrets);
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::info!("webhook secret deleted; every provider is off");
                shared.set(WebhookSecrets::default());
            }
            Err(error) => {
                tracing::warn!(%error, secret = SECRET_NAME, "failed to watch the webhook secret");
            }
        }
    }
}
