//! Set-up for Application tests: manifests as users write them, an agent that syncs from Git,
//! and waiting for an Application's status.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use mooring_crds::application::{Application, HealthState, HealthStatus, SyncState};

use crate::{GitRepo, RealEnv, TestNamespace, wait_for};

/// An Application manifest as users (and Argo CD users, but for `apiVersion`) write it: project
/// `default`, revision `main`, this cluster as destination, automated sync with prune.
#[derive(Clone, Debug)]
pub struct ApplicationManifest<'a> {
    name: &'a str,
    namespace: &'a str,
    repo_url: &'a str,
    path: &'a str,
    self_heal: bool,
    create_namespace: bool,
}

impl<'a> ApplicationManifest<'a> {
    /// Application `name` in `namespace` of `path` in `repo_url`, syncing into `namespace`, with
    /// self-heal.
    pub fn new(
        name: &'a str,
        namespace: &'a str,
        repo_url: &'a str,
        path: &'a str,
    ) -> ApplicationManifest<'a> {
        ApplicationManifest {
            name,
            namespace,
            repo_url,
            path,
            self_heal: true,
            create_namespace: false,
        }
    }

    /// The same with `selfHeal` set to `self_heal`.
    pub fn self_heal(self, self_heal: bool) -> ApplicationManifest<'a> {
        ApplicationManifest { self_heal, ..self }
    }

    /// The same with the sync option `CreateNamespace=true`.
    pub fn create_namespace(self) -> ApplicationManifest<'a> {
        ApplicationManifest {
            create_namespace: true,
            ..self
        }
    }

    /// The manifest as YAML, as it would be committed.
    pub fn yaml(&self) -> String {
        let ApplicationManifest {
            name,
            namespace,
            repo_url,
            path,
            self_heal,
            create_namespace,
        } = self;
        let options = if *create_namespace {
            "    syncOptions:\n      - CreateNamespace=true\n"
        } else {
            ""
        };
        format!(
            "apiVersion: mooring.dev/v1alpha1
kind: Application
metadata:
  name: {name}
  namespace: {namespace}
spec:
  project: default
  source:
    repoURL: {repo_url}
    targetRevision: main
    path: {path}
  destination:
    server: https://kubernetes.default.svc
    namespace: {namespace}
  syncPolicy:
    automated:
      prune: true
      selfHeal: {self_heal}
{options}"
        )
    }

    /// The manifest as an object.
    pub fn application(&self) -> anyhow::Result<Application> {
        Ok(serde_saphyr::from_str(&self.yaml())?)
    }
}

/// Arguments for an in-process agent for `namespace` (see [`crate::agent`]) that renders with
/// the realenv's pinned kustomize, keeps its Git cache in `cache` and polls every 2 s.
pub fn agent_with_git(
    env: &RealEnv,
    namespace: &str,
    cache: &Path,
) -> anyhow::Result<mooring_agent::cli::RunArgs> {
    let mut args = crate::agent(env, namespace)?;
    args.kustomize_path = env.var("KUSTOMIZE")?.into();
    args.git_cache_dir = Some(cache.to_path_buf());
    args.default_poll_interval = Duration::from_secs(2);
    Ok(args)
}

/// The same, running only the Application controller.
pub fn gitops_agent_args(
    env: &RealEnv,
    namespace: &str,
    cache: &Path,
) -> anyhow::Result<mooring_agent::cli::RunArgs> {
    let mut args = agent_with_git(env, namespace, cache)?;
    args.controllers = vec![mooring_agent::cli::ControllerKind::Gitops];
    Ok(args)
}

impl TestNamespace {
    /// A repository credential Secret `name` as Argo CD's
    /// (`argocd.argoproj.io/secret-type: repository`) holding `data`.
    pub async fn repository_credentials(
        &self,
        name: &str,
        data: BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([(
                    "argocd.argoproj.io/secret-type".into(),
                    "repository".into(),
                )])),
                ..Default::default()
            },
            string_data: Some(data),
            ..Default::default()
        };
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await?;
        Ok(())
    }

    /// The realenv git server's user with `password` for `url`, as Secret `repo-http`.
    pub async fn http_credentials(
        &self,
        env: &RealEnv,
        url: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        self.repository_credentials(
            "repo-http",
            BTreeMap::from([
                ("type".into(), "git".into()),
                ("url".into(), url.into()),
                ("username".into(), env.var("GIT_HTTP_USER")?.into()),
                ("password".into(), password.into()),
            ]),
        )
        .await
    }

    /// Applies `app` as `kubectl apply --server-side --force-conflicts` does (a user
    /// bootstrapping).
    pub async fn apply_application(&self, app: &Application) -> anyhow::Result<Application> {
        let name = app.metadata.name.as_deref().unwrap_or_default();
        Ok(self
            .api::<Application>()
            .patch(
                name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(app),
            )
            .await?)
    }

    /// Asks for a look at Application `name` now (annotation `mooring.dev/refresh` set to
    /// `value`), as `argocd app get --refresh` does.
    pub async fn request_refresh(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let annotation = serde_json::json!({
            "metadata": {"annotations": {"mooring.dev/refresh": value}}
        });
        self.api::<Application>()
            .patch(name, &PatchParams::default(), &Patch::Merge(annotation))
            .await?;
        Ok(())
    }

    /// Waits (at most `timeout`, described as `what`) until Application `name` is one `check`
    /// takes, and returns it; a timeout names its last status.
    pub async fn wait_for_application(
        &self,
        what: &str,
        name: &str,
        timeout: Duration,
        check: impl Fn(&Application) -> bool,
    ) -> anyhow::Result<Application> {
        let api: Api<Application> = self.api();
        let waited = wait_for(what, timeout, || async {
            api.get_opt(name).await.ok()?.filter(|app| check(app))
        })
        .await;
        match waited {
            Ok(app) => Ok(app),
            Err(error) => {
                let status = match api.get_opt(name).await {
                    Ok(Some(app)) => serde_json::to_string_pretty(&app.status)?,
                    other => format!("{other:?}"),
                };
                Err(anyhow::anyhow!("{error:#}; status: {status}"))
            }
        }
    }

    /// Waits (at most 90 s) until Application `name` has condition `type_` with `reason`;
    /// returns the Application and the condition's message.
    pub async fn wait_for_app_condition(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
    ) -> anyhow::Result<(Application, String)> {
        let message = |app: &Application| -> Option<String> {
            let status = app.status.as_ref()?;
            let found = status
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.reason == reason)?;
            Some(found.message.clone())
        };
        let what = format!("Application {name} condition {type_}/{reason}");
        let app = self
            .wait_for_application(&what, name, Duration::from_secs(90), |app| {
                message(app).is_some()
            })
            .await?;
        let text = message(&app).unwrap_or_default();
        Ok((app, text))
    }

    /// Waits (at most `timeout`) until Application `name` reports health `state`, and returns
    /// it.
    pub async fn wait_for_health(
        &self,
        name: &str,
        state: HealthState,
        timeout: Duration,
    ) -> anyhow::Result<Application> {
        let what = format!("Application {name} {state:?}");
        self.wait_for_application(&what, name, timeout, |app| has_health(app, state))
            .await
    }

    /// Waits (at most 90 s) until Application `name` reports `revision` Synced.
    pub async fn wait_for_synced_at(
        &self,
        name: &str,
        revision: &str,
    ) -> anyhow::Result<Application> {
        let what = format!("Application {name} Synced at {revision}");
        self.wait_for_application(&what, name, Duration::from_secs(90), |app| {
            is_synced(app) && sync_revision(app) == Some(revision)
        })
        .await
    }
}

/// The health `app` last reported.
pub fn health(app: &Application) -> Option<&HealthStatus> {
    app.status.as_ref()?.health.as_ref()
}

/// Whether `app` reports health `state`.
pub fn has_health(app: &Application, state: HealthState) -> bool {
    health(app).is_some_and(|h| h.status == state)
}

/// Whether `app` reports Synced.
pub fn is_synced(app: &Application) -> bool {
    app.status
        .as_ref()
        .and_then(|s| s.sync.as_ref())
        .is_some_and(|s| s.status == SyncState::Synced)
}

/// The revision `app` last reported in its sync status.
fn sync_revision(app: &Application) -> Option<&str> {
    app.status.as_ref()?.sync.as_ref()?.revision.as_deref()
}

impl GitRepo {
    /// Commits the work tree with `message` and gives each of `namespaces` the realenv git
    /// server's credentials for the repository's smart-HTTP URL: the URL and the commit.
    pub async fn serve_over_http(
        &self,
        env: &RealEnv,
        message: &str,
        namespaces: &[&TestNamespace],
    ) -> anyhow::Result<(String, String)> {
        let head = self.commit(message)?;
        let url = self.http_url(env)?;
        for namespace in namespaces {
            namespace
                .http_credentials(env, &url, env.var("GIT_HTTP_PASSWORD")?)
                .await?;
        }
        Ok((url, head))
    }
}
